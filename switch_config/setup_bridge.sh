#!/usr/bin/env bash
# Prepare an Open vSwitch bridge for the ftcp controller (as root). Idempotent.
#
#   switch_config/setup_bridge.sh BRIDGE [options]
#     --controller TARGET   OpenFlow controller (default tcp:127.0.0.1:6653)
#     --datapath TYPE       netdev (userspace, default: works without the kernel
#                           module) or system (kernel datapath)
#     --dpid HEX            16 hex digits (default: OVS picks one)
#     --port IFACE[:OFPORT] attach IFACE, optionally at a fixed OpenFlow port
#                           number (what services.yaml refers to); repeatable
#     --mirror IFACE        IFACE (attached with --port) is a backup's mirror port:
#                           it is put on VLAN 4094, which no other port uses, so the
#                           switch's own flooding (broadcasts, unknown unicast) never
#                           reaches it; ftcp's mirror flows output to it all the same
#
# The bridge speaks OpenFlow 1.3 only and runs fail_mode=secure: with the
# controller away it keeps the installed flows (mirrors keep mirroring) and never
# falls back to a plain learning switch that would bypass ftcp's fencing.
set -euo pipefail
usage() { sed -n '4,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
BR="$1"; shift
CONTROLLER=tcp:127.0.0.1:6653 DATAPATH=netdev DPID="" PORTS=() MIRRORS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --controller) CONTROLLER="$2"; shift 2 ;;
        --datapath) DATAPATH="$2"; shift 2 ;;
        --dpid) DPID="$2"; shift 2 ;;
        --port) PORTS+=("$2"); shift 2 ;;
        --mirror) MIRRORS+=("$2"); shift 2 ;;
        -h|--help) usage ;;
        *) echo "setup_bridge: unknown option $1" >&2; usage ;;
    esac
done
case "$DATAPATH" in netdev|system) ;; *) echo "setup_bridge: --datapath must be netdev or system" >&2; exit 2 ;; esac
if [ -n "$DPID" ] && ! [[ "$DPID" =~ ^[0-9a-fA-F]{16}$ ]]; then
    echo "setup_bridge: --dpid must be 16 hex digits, got '$DPID'" >&2; exit 2
fi
ovs-vsctl --timeout=5 show >/dev/null 2>&1 || { echo "setup_bridge: Open vSwitch is not running (try: /usr/share/openvswitch/scripts/ovs-ctl start)" >&2; exit 1; }

args=(--may-exist add-br "$BR" -- set bridge "$BR" datapath_type="$DATAPATH" protocols=OpenFlow13 fail_mode=secure)
[ -n "$DPID" ] && args+=(other-config:datapath-id="$DPID")
ovs-vsctl "${args[@]}"
for spec in "${PORTS[@]}"; do
    iface="${spec%%:*}"
    pargs=(--may-exist add-port "$BR" "$iface")
    if [ "$iface" != "$spec" ]; then pargs+=(-- set interface "$iface" ofport_request="${spec#*:}"); fi
    ovs-vsctl "${pargs[@]}"
    # netdev datapath on veth: TCP breaks unless checksum offload is off on the hosts' ends.
    echo "setup_bridge: attached $iface (turn checksum offload off on the host end: ethtool -K <iface> tx off)"
done
for iface in "${MIRRORS[@]}"; do
    # OpenFlow 1.3 has no per-port no-flood flag; an access VLAN nobody else is on does it
    ovs-vsctl set port "$iface" tag=4094
    echo "setup_bridge: $iface is a mirror port (VLAN 4094: no flooded frames)"
done
# Only set the controller when it changed: setting it again drops the connection.
if [ "$(ovs-vsctl get-controller "$BR")" != "$CONTROLLER" ]; then
    ovs-vsctl set-controller "$BR" "$CONTROLLER"
fi
echo "setup_bridge: $BR datapath=$DATAPATH OpenFlow13 fail_mode=secure controller=$CONTROLLER"
ovs-ofctl -O OpenFlow13 show "$BR" | grep -E '^ *[0-9]+\(' || true

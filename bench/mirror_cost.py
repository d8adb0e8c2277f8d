"""What the switch's mirror alone costs, for every userspace datapath this machine has.

    sudo .venv/bin/python -m bench.mirror_cost [--trials 3] [--seconds 3]
    sudo .venv/bin/python -m bench.mirror_cost --smoke --out DIR   # afpacket only, one 1 s trial (CI)

No ftcp at all: one netdev bridge, three network namespaces (client, server, a mirror
sink nobody reads), iperf3 client -> server with plain forwarding and with every packet
also output to the sink's port, which is what ftcp's mirror flows make OVS do. Trials
alternate between the two so drift is shared. Each datapath configuration:

  * afpacket      -- "system" ports (AF_PACKET), offloads off: what the lab uses;
  * afpacket+tso  -- the same with other_config:userspace-tso-enable and offloads on;
  * afxdp-nonpmd  -- AF_XDP ports polled by the main thread;
  * afxdp         -- AF_XDP ports polled by a PMD thread.

Writes bench/results/mirror_cost.json (commit, dirty flag, arguments, mode first) and
mirror_cost.png (mirror_cost-smoke.* with --smoke; --out for another directory). The
ratio mirrored / plain is the ceiling of protected / unprotected throughput for any
backup agent on this machine (docs/benchmarks.md).

It restarts Open vSwitch (userspace TSO is read at start) and builds its own bridge, so
the whole run holds the machine's lab lock. An iperf3 run that fails is kept with its
error and counted; exit status 0 only if every one gave a number.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import bench_parser, lab_lock, provenance, write
from topology.processes import OVS_CTL, LabError, Ovs, wait_for

BRIDGE, HOSTS = "br-mcost", ("mc1", "mc2", "mc3")  # client, server, mirror sink
CONFIGS = {
    "afpacket": {"type": "system", "tso": False},
    "afpacket+tso": {"type": "system", "tso": True},
    "afxdp-nonpmd": {"type": "afxdp-nonpmd", "tso": False},
    "afxdp": {"type": "afxdp", "tso": False},
}


def sh(cmd: str, check: bool = True) -> str:
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise LabError(f"{cmd!r} failed: {out.stderr.strip()}")
    return out.stdout


def restart_ovs(tso: bool):
    # userspace-tso-enable is read when ovs-vswitchd starts.
    if not Ovs.running():
        sh(f"{OVS_CTL} start --system-id=random")
    if tso:
        sh("ovs-vsctl set Open_vSwitch . other_config:userspace-tso-enable=true")
    else:
        sh("ovs-vsctl remove Open_vSwitch . other_config userspace-tso-enable")
    sh(f"{OVS_CTL} restart --system-id=random")


def teardown():
    sh(f"ovs-vsctl --if-exists del-br {BRIDGE}", check=False)
    for host in HOSTS:
        sh(f"ip netns pids {host} 2>/dev/null | xargs -r kill -9", check=False)
        sh(f"ip netns del {host}", check=False)


def build(config: dict):
    sh(f"ovs-vsctl add-br {BRIDGE} -- set bridge {BRIDGE} datapath_type=netdev fail_mode=secure")
    for i, host in enumerate(HOSTS, 1):
        intf, port = f"{host}-eth0", f"{host}-sw"
        sh(f"ip netns add {host}")
        sh(f"ip link add {intf} type veth peer name {port}")
        sh(f"ip link set {intf} netns {host}")
        sh(f"ip -n {host} addr add 10.77.0.{i}/24 dev {intf}")
        sh(f"ip -n {host} link set lo up; ip -n {host} link set {intf} up; ip link set {port} up")
        if not config["tso"]:
            # Without userspace TSO the netdev datapath forwards a frame whose checksum
            # the kernel left to the NIC unfilled.
            sh(f"ip netns exec {host} ethtool -K {intf} tx off rx off sg off tso off gso off gro off")
        sh(f"ovs-vsctl add-port {BRIDGE} {port} -- set interface {port} ofport_request={i} type={config['type']}")
    sh(f"ip netns exec {HOSTS[1]} iperf3 -s -D")
    wait_for(lambda: "5201" in sh(f"ip netns exec {HOSTS[1]} ss -ltn"), 10, "iperf3 to listen")


def set_flows(mirror: bool):
    sink = ",output:3" if mirror else ""
    flows = f"priority=10,in_port=1,actions=output:2{sink}\npriority=10,in_port=2,actions=output:1{sink}\n"
    subprocess.run(["ovs-ofctl", "replace-flows", BRIDGE, "-"], input=flows, text=True, check=True)


def iperf(seconds: float, reverse: bool) -> float:
    out = sh(f"ip netns exec {HOSTS[0]} iperf3 -c 10.77.0.2 -t {seconds} -J {'-R' if reverse else ''}")
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def run_config(name: str, config: dict, trials: int, seconds: float) -> list:
    restart_ovs(config["tso"])
    teardown()
    build(config)
    rows = []
    try:
        for trial in range(trials):
            for direction in ("upload", "download"):
                for mirror in ((False, True) if trial % 2 == 0 else (True, False)):
                    row = {"config": name, "trial": trial, "direction": direction, "mirror": mirror}
                    try:
                        set_flows(mirror)
                        row["gbps"] = round(iperf(seconds, direction == "download"), 4)
                    except (LabError, subprocess.CalledProcessError, ValueError, KeyError) as e:
                        row["error"] = repr(e)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    finally:
        teardown()
    return rows


def summarise(rows: list) -> dict:
    """Medians over the runs that gave a number (``runs``/``failed`` count them all)."""
    summary = {}
    for name in dict.fromkeys(r["config"] for r in rows):
        for direction in ("upload", "download"):
            chosen = [r for r in rows if r["config"] == name and r["direction"] == direction]
            values = {m: [r["gbps"] for r in chosen if r["mirror"] == m and "gbps" in r] for m in (False, True)}
            if not values[False] or not values[True]:
                summary.setdefault(name, {})[direction] = {"runs": len(chosen), "failed": len(chosen)}
                continue
            med = {m: statistics.median(v) for m, v in values.items()}
            summary.setdefault(name, {})[direction] = {
                "runs": len(chosen), "failed": sum("gbps" not in r for r in chosen),
                "plain_gbps": round(med[False], 3), "mirrored_gbps": round(med[True], 3),
                "ratio": round(med[True] / med[False], 3)}
    return summary


def plot(summary: dict, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n in summary if all("ratio" in summary[n][d] for d in ("upload", "download"))]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.2
    for k, (direction, mirror, label) in enumerate([("upload", "plain_gbps", "upload, plain"),
                                                    ("upload", "mirrored_gbps", "upload, mirrored"),
                                                    ("download", "plain_gbps", "download, plain"),
                                                    ("download", "mirrored_gbps", "download, mirrored")]):
        ax.bar([i + (k - 1.5) * width for i in range(len(names))],
               [summary[n][direction][mirror] for n in names], width, label=label)
    for i, name in enumerate(names):
        ratios = " / ".join(f"{summary[name][d]['ratio']:.2f}" for d in ("upload", "download"))
        top = max(summary[name][d][m] for d in ("upload", "download") for m in ("plain_gbps", "mirrored_gbps"))
        ax.annotate(f"ratio {ratios}", (i, top), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("iperf3 throughput, Gbit/s (median)")
    ax.set_title("OVS userspace datapath: plain forwarding vs every packet also mirrored")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = bench_parser("mirror_cost", __doc__, out="dir", smoke="afpacket only, one 1 s trial (for CI)")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("mirror_cost: needs root (namespaces, Open vSwitch)", file=sys.stderr)
        return 2
    if args.smoke:
        args.configs, args.trials, args.seconds = ["afpacket"], 1, 1.0
    name = "mirror_cost-smoke" if args.smoke else "mirror_cost"
    data = provenance(args, ["bench/mirror_cost.py", *argv], "smoke" if args.smoke else "full")
    rows = []
    with lab_lock() as waited:
        data["lock_wait_s"] = waited
        was_running = Ovs.running()
        try:
            for config in args.configs:
                try:
                    rows += run_config(config, CONFIGS[config], args.trials, args.seconds)
                except LabError as e:   # a configuration that could not be built: kept, and the run fails
                    data.setdefault("errors", {})[config] = repr(e)
        finally:
            teardown()
            restart_ovs(tso=False)  # leave Open vSwitch as the lab expects it
            if not was_running:
                sh(f"{OVS_CTL} stop", check=False)
    summary = summarise(rows)
    out = Path(args.out)
    failed = sum("gbps" not in r for r in rows)
    data.update(summary=summary, runs=len(rows), failed=failed, ok=not failed and not data.get("errors") and bool(rows),
                rows=rows)
    write(out / f"{name}.json", data)
    plot(summary, out / f"{name}.png")
    print(json.dumps({k: data.get(k) for k in ("summary", "failed", "errors", "ok")}, indent=1))
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

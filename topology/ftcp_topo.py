"""Mininet lab topology for ftcp: one OVS switch, clients, a primary, a backup.

    mn --custom topology/ftcp_topo.py --topo ftcp --controller remote \\
       --switch ovs,datapath=user,protocols=OpenFlow13

Self-contained on purpose: ``mn --custom`` exec()s this file, so it imports only
Mininet. Port numbers on s1 are fixed (switch_config/services-lab.yaml relies on them):

    s1-eth1  c1   10.0.0.1          s1-eth3  p1  10.0.0.10  (primary)
    s1-eth2  c2   10.0.0.2          s1-eth4  b1  10.0.0.20  (backup data iface b1-eth0)
    (more clients: s1-eth6.., c3..)  s1-eth5  b1  no IP      (backup mirror iface b1-eth1)
                                    s1-eth30 b2  10.0.0.30  (with backups=2: b2-eth0)
                                    s1-eth31 b2  no IP      (b2-eth1)
"""
from mininet.node import Host
from mininet.topo import Topo

PRIMARY_PORT, BACKUP_DATA_PORT, MIRROR_PORT = 3, 4, 5
# backup host bN: its address, MAC and (data port, mirror port) on s1
BACKUPS = {"b1": ("10.0.0.20", "00:00:00:00:00:20", (4, 5)), "b2": ("10.0.0.30", "00:00:00:00:00:30", (30, 31))}


class LabHost(Host):
    """A host whose ifaces have checksum offload off.

    With OVS's userspace datapath on veth pairs, TCP fails (ping works) unless tx
    checksum offload is off: the kernel leaves the checksum to a NIC that does not
    exist, and the netdev datapath forwards the packet with the checksum unfilled.
    """

    def config(self, mirror_intf=None, takeover_intf=None, **params):
        result = super().config(**params)
        for intf in self.intfList():
            if intf.name != "lo":
                self.cmd(f"ethtool -K {intf.name} tx off rx off sg off tso off gso off gro off >/dev/null 2>&1")
        if mirror_intf:
            self.setup_mirror_intf(mirror_intf)
        if takeover_intf:
            self.setup_takeover_route(takeover_intf)
        return result

    def setup_takeover_route(self, name, initcwnd=128):
        # A socket rebuilt with TCP_REPAIR starts with the initial cwnd (10 segments)
        # while the primary's unacknowledged bytes already count as in flight: with more
        # than 10 of them it may send nothing new, so no SACK tells it what the client
        # lacks, and it waits for its 1 s initial retransmission timeout. The route's
        # initcwnd is what connect() gives the socket (docs/failover.md).
        for route in self.cmd(f"ip -4 route show dev {name} scope link").splitlines():
            if route.strip():
                self.cmd(f"ip route change {route.strip()} dev {name} initcwnd {initcwnd}")

    def setup_mirror_intf(self, name):
        # The mirror iface only listens: no address, no IPv6 chatter, promiscuous so
        # the copies (addressed to the primary's MAC) are all delivered to capture.
        self.cmd(f"sysctl -qw net.ipv6.conf.{name}.disable_ipv6=1")
        self.cmd(f"ip addr flush dev {name}; ip link set {name} promisc on up")


class FtcpTopo(Topo):
    """c1..cN clients, p1 primary, b1 (and b2) backups with a data and a mirror iface each."""

    def build(self, clients=2, backups=1):
        s1 = self.addSwitch("s1", dpid="0000000000000001", protocols="OpenFlow13")
        client_ports = [1, 2] + list(range(6, 6 + max(0, clients - 2)))
        for i in range(1, clients + 1):
            host = self.addHost(f"c{i}", cls=LabHost, ip=f"10.0.0.{i}/24", mac=f"00:00:00:00:00:{i:02x}")
            self.addLink(host, s1, port2=client_ports[i - 1])
        p1 = self.addHost("p1", cls=LabHost, ip="10.0.0.10/24", mac="00:00:00:00:00:10")
        self.addLink(p1, s1, port2=PRIMARY_PORT)
        for name in list(BACKUPS)[:backups]:
            address, mac, (data, mirror) = BACKUPS[name]
            host = self.addHost(name, cls=LabHost, ip=f"{address}/24", mac=mac, mirror_intf=f"{name}-eth1",
                                takeover_intf=f"{name}-eth0")
            self.addLink(host, s1, port1=0, port2=data)
            self.addLink(host, s1, port1=1, port2=mirror)


topos = {"ftcp": FtcpTopo}

"""The switch mirrors both directions of a protected connection to the backup's
mirror iface, byte for byte, and nothing of an unprotected one."""
import re
import threading

from tests.support import pcap
from topology.lab import PRIMARY_IP, SERVICES, Lab, wait_for

PROTECTED, UNPROTECTED = 7000, 7001


def test_mirror_carries_every_byte_of_protected_and_none_of_unprotected(run_dir):
    with Lab(service_cmd=SERVICES["echo"], service_port=PROTECTED, run_dir=run_dir,
             extra_primary_cmds=((SERVICES["echo"], UNPROTECTED),)) as lab:
        cap_file = lab.run_dir / "mirror.pcap"
        tcpdump = lab.popen("b1", f"exec tcpdump -i b1-eth1 -n -U -B 65536 -w {cap_file} tcp", "tcpdump")
        wait_for(lambda: "listening on" in tcpdump.log.read_text(), 10, "tcpdump to listen on b1-eth1",
                 failed=tcpdump.died)

        results = {}

        def client(host, port, nbytes, seed):
            results[host] = lab.client(host, "echo", PRIMARY_IP, port, "--bytes", nbytes, "--seed", seed)
        threads = [threading.Thread(target=client, args=("c1", PROTECTED, 4_000_000, "p")),
                   threading.Thread(target=client, args=("c2", UNPROTECTED, 2_000_000, "u"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        prot, unprot = results["c1"], results["c2"]
        assert prot["ok"] and unprot["ok"], results
        assert prot["sent"] == prot["received"] == 4_000_000

        client_end = ("10.0.0.1", prot["local_port"])
        server_end = (PRIMARY_IP, PROTECTED)

        def closed_both_ways():
            c2s, s2c = pcap.connection(cap_file, client_end, server_end)
            # Both FINs captured and acknowledged: nothing of this connection can follow.
            return (c2s, s2c) if c2s.acked_fin and s2c.acked_fin else None
        c2s, s2c = wait_for(closed_both_ways, 30, "the mirror to capture both FINs and their ACKs", interval=0.3)

        assert c2s.sha256() == prot["sent_sha256"], "client->server bytes on the mirror differ from what c1 sent"
        assert s2c.sha256() == prot["received_sha256"], "server->client bytes on the mirror differ from what c1 got"

        for ip, tcp in pcap.tcp_segments(cap_file):
            assert UNPROTECTED not in (tcp.sport, tcp.dport), f"unprotected traffic mirrored: {ip.summary()}"
            assert "10.0.0.2" not in (ip.src, ip.dst), f"c2's traffic mirrored: {ip.summary()}"

        tcpdump.proc.send_signal(2)
        tcpdump.proc.wait(10)
        stats = tcpdump.log.read_text()
        dropped = re.search(r"(\d+) packets? dropped by kernel", stats)
        assert dropped and dropped.group(1) == "0", stats

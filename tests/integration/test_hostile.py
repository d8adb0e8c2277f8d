"""Hostile input from the clients' side, in the real lab: c2 forges segments with
other hosts' addresses (tests/support/forge.py, raw IPv4 through c2's own port) while
c1 runs requests against the primary. No forged segment fails over a healthy primary,
closes or feeds c1's record, or reaches the log; when the primary then really fails,
c1's connection is taken over and every answer it gets is right."""
import contextlib
import re
import shlex
import signal
import subprocess
import sys

import pytest

from ftcp.common.store import Store
from tests.support.faults import PORT, done, events, requests
from topology.lab import PRIMARY_IP, ROOT, SERVICES, Lab, wait_for

PROBE_IP = "10.0.0.254"
PRIMARY_MAC = "00:00:00:00:00:10"


@pytest.fixture
def lab(run_dir):
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir) as lab:
        yield lab


def forge(lab, *args) -> int:
    """tests/support/forge.py on c2 (the attacker); how many segments it sent."""
    cmd = f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m tests.support.forge --iface c2-eth0 " \
        + " ".join(shlex.quote(str(a)) for a in args)
    rc, out, err = lab.run("c2", cmd, timeout=120)
    assert rc == 0, err
    return int(out.strip())


def c1_conn(store) -> dict:
    """c1's live connection record (with its sequence numbers: the test knows them, the
    attacker would have to guess)."""
    def find():
        rows = store.conn_fields("b1", store.service_conns("demo", "b1"),
                                 ("client_ip", "client_port", "status", "c2s_next", "s2c_next", "c2s_logged"))
        return next((dict(r, id=cid) for cid, r in rows.items() if r["client_ip"] == "10.0.0.1"
                     and r["c2s_next"] is not None), None)
    return wait_for(find, 10, "c1's connection in Redis")


def ofport(name: str) -> str:
    """The switch's OpenFlow port number for one of its interfaces, as snoop prints it."""
    return subprocess.run(["ovs-vsctl", "get", "Interface", name, "ofport"], capture_output=True, text=True,
                          check=True).stdout.strip()


def received_on(name: str) -> int:
    """Packets the switch has received on one of its ports."""
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-ports", "s1", name], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split("rx pkts=")[1].split(",")[0])


@contextlib.contextmanager
def packet_ins(lab):
    """What the switch sends the controller while the block runs, as ovs-ofctl snoop
    decodes it: yields a function that returns the packet-ins so far, each as (the
    port it came in on, the packet's summary)."""
    path = lab.run_dir / "s1-snoop.txt"
    with open(path, "w") as out:
        proc = subprocess.Popen(["stdbuf", "-oL", "ovs-ofctl", "-O", "OpenFlow13", "snoop", "s1"], stdout=out,
                                stderr=subprocess.STDOUT)

    def seen() -> list:
        lines = path.read_text().splitlines()
        return [(re.search(r" in_port=(\S+)", head)[1], packet) for head, packet in zip(lines, lines[1:])
                if head.startswith("OFPT_PACKET_IN ")]
    try:
        wait_for(seen, 10, "the snoop's first packet-in")
        yield seen
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def probe_answers(ins: list) -> list:
    """The packet-ins that look like answers to probes: from the service to the probe address."""
    return [i for i in ins if f"nw_src={PRIMARY_IP}," in i[1] and f"nw_dst={PROBE_IP}," in i[1]
            and f"tp_src={PORT}," in i[1]]


def agent_stat(store, name) -> int:
    return int((store.agent("b1") or {}).get(name) or 0)


def test_forged_probe_answers_from_a_client_port_condemn_nothing(lab):
    store = Store(lab.redis.url)
    client = requests(lab, count=3000)
    with packet_ins(lab) as seen:
        from_c2 = received_on("s1-eth2")
        # a RST "from the service" to the probe address for 4000 probe source ports,
        # with a random acknowledgement; and SYN-ACKs that would acquit a dying server
        sent = forge(lab, "--src", f"{PRIMARY_IP}:{PORT}", "--dst", f"{PROBE_IP}:0", "--flags", "RA",
                     "--dports", "20000-23999", "--random-ack")
        sent += forge(lab, "--src", f"{PRIMARY_IP}:{PORT}", "--dst", f"{PROBE_IP}:0", "--flags", "SA",
                      "--dports", "20000-20999", "--random-ack", "--random-seq")
        assert sent == 5000
        wait_for(lambda: received_on("s1-eth2") - from_c2 >= sent, 10, "the switch to take in every forged segment")
        # the second of two more answers came in after the last forged segment, and
        # reaches the controller after anything a forged segment made the switch send
        later = len(probe_answers(seen())) + 2
        wait_for(lambda: len(probe_answers(seen())) >= later, 10, "answers to two more probes")
    ins = seen()
    # none of them reached the controller: the probe-answer flow takes only the
    # primary's port, and nothing else sends it what comes in on a client's
    assert [i for i in ins if i[0] != ofport("s1-eth3")] == [], ins[:5]
    assert probe_answers(ins), ins[:5]     # and the real answers did, as the snoop saw them
    res = client.result()
    assert res["ok"] and res["requests"] == 3000, res
    assert store.service("demo")["status"] == "protected", store.service("demo")
    assert events(store, "service_failing-over") == []
    # and the real failure after it is still detected and masked
    client = requests(lab, count=3000)
    lab.fail_primary("crash")
    done(store)
    res = client.result()
    assert res["ok"] and res["requests"] == 3000, res


def test_blind_segments_with_a_victim_s_addresses_change_nothing_and_it_is_taken_over(lab):
    store = Store(lab.redis.url)
    client = requests(lab, count=6000)
    conn = c1_conn(store)
    victim, service = f"10.0.0.1:{conn['client_port']}", f"{PRIMARY_IP}:{PORT}"
    to_primary = ("--dst-mac", PRIMARY_MAC)
    rejected_before = agent_stat(store, "out_of_window") + agent_stat(store, "bad_checksum")
    # RSTs and FINs at random sequence numbers, ACKs of data the server never sent
    forge(lab, *to_primary, "--src", victim, "--dst", service, "--flags", "R", "--random-seq", "--count", 200)
    forge(lab, *to_primary, "--src", victim, "--dst", service, "--flags", "FA", "--random-seq", "--random-ack",
          "--count", 200)
    forge(lab, *to_primary, "--src", victim, "--dst", service, "--flags", "A", "--seq", conn["c2s_next"],
          "--ack", (conn["s2c_next"] + (1 << 30)) & 0xFFFFFFFF, "--count", 50)
    # a request the client never sent, at the next sequence number, with a bad checksum
    now = c1_conn(store)
    forge(lab, *to_primary, "--src", victim, "--dst", service, "--flags", "PA", "--seq", now["c2s_next"], "--ack",
          now["s2c_next"], "--payload", "GET 5000000 evil\n", "--bad-checksum", "--count", 20)
    wait_for(lambda: agent_stat(store, "out_of_window") + agent_stat(store, "bad_checksum") >= rejected_before + 400,
             10, "the agent to count the forged segments it refused")
    record = c1_conn(store)
    assert record["status"] == "protected", record
    lab.fail_primary("link")
    svc = done(store)
    res = client.result()
    # every answer checked by the client: a logged "GET 5000000 evil" would have made
    # the replica answer a request the client never sent (diverged, then reset)
    assert res["ok"] and res["requests"] == 6000, res
    assert svc["taken"] == "1"

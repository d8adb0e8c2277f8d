"""Hostile input from the clients' side, in the real lab: c2 forges segments with
other hosts' addresses (tests/support/forge.py, raw IPv4 through c2's own port) while
c1 runs requests against the primary. No forged segment fails over a healthy primary,
closes or feeds c1's record, or reaches the log; when the primary then really fails,
c1's connection is taken over and every answer it gets is right."""
import shlex
import sys

import pytest

from ftcp.common.store import Store
from tests.support.faults import PORT, done, events, flows_with, packets, requests
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
        rows = store.conn_fields("b1", store.service_conns("demo", "b1"), ("client_ip", "client_port", "status", "c2s_next",
                                                                "s2c_next", "c2s_logged"))
        return next((dict(r, id=cid) for cid, r in rows.items() if r["client_ip"] == "10.0.0.1"
                     and r["c2s_next"] is not None), None)
    return wait_for(find, 10, "c1's connection in Redis")


def probe_answers(lab) -> int:
    """Packets the switch sent the controller as answers to probes."""
    return sum(packets(line) for line in flows_with(lab, f"nw_dst={PROBE_IP}", "CONTROLLER"))


def agent_stat(store, name) -> int:
    return int((store.agent("b1") or {}).get(name) or 0)


def test_forged_probe_answers_from_a_client_port_condemn_nothing(lab):
    store = Store(lab.redis.url)
    client = requests(lab, count=3000)
    before = probe_answers(lab)
    # a RST "from the service" to the probe address for every probe source port, with a
    # random acknowledgement; and SYN-ACKs that would acquit a dying server
    sent = forge(lab, "--src", f"{PRIMARY_IP}:{PORT}", "--dst", f"{PROBE_IP}:0", "--flags", "RA",
                 "--sports", "20000-23999", "--random-ack")
    sent += forge(lab, "--src", f"{PRIMARY_IP}:{PORT}", "--dst", f"{PROBE_IP}:0", "--flags", "SA",
                  "--sports", "20000-20999", "--random-ack", "--random-seq")
    assert sent == 5000
    # none of them reached the controller: the probe-answer flow takes only the
    # primary's port (its counter moved by the real answers alone, ~20 a second)
    assert probe_answers(lab) - before < 1000
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

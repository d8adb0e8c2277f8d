"""The backup agent in the real lab: Redis holds an exact record of every protected
connection, checked byte for byte against the client and number for number against
the primary's kernel (ss -tin inside p1's namespace)."""
import hashlib
import json
import re
import signal

import pytest

from ftcp.common.store import Store
from tests.support.held_client import HeldClient, ScriptedClient, conn_id
from topology.lab import PRIMARY_IP, SERVICES, Lab, LabError, wait_for

PORT = 7000


def kernel_view(lab):
    """The primary's own numbers for each established connection, by client port."""
    out = lab.host("p1").cmd(f"ss -tinH state established '( sport = :{PORT} )'")
    found = {}
    for block in re.split(r"\n(?=\S)", out.strip()):
        peer = re.search(r"10\.0\.0\.1:(\d+)\s", block)
        if not peer:
            continue
        info = {k: int(v) for k, v in re.findall(r"\b(bytes_acked|bytes_received|bytes_sent):(\d+)", block)}
        ws = re.search(r"wscale:(\d+),(\d+)", block)
        info["wscale"] = (int(ws.group(1)), int(ws.group(2))) if ws else (0, 0)
        found[int(peer.group(1))] = info
    return found


def caught_up(store, conns):
    """Wait until Redis has every client byte and every client ACK of each connection."""
    def check():
        states = {name: store.conn("b1", conn_id(c["local_port"])) for name, c in conns.items()}
        return states if all(s and int(s["c2s_logged"]) == conns[n]["sent"] and int(s["c2s_stored"]) ==
                             conns[n]["sent"] and int(s["s2c_acked"]) == conns[n]["received"]
                             for n, s in states.items()) else None
    try:
        return wait_for(check, 20, "the agent to log every byte into Redis", interval=0.05)
    except LabError:   # wait_for's timeout alone: an error while checking is a failure of its own
        states = [(n, store.conn("b1", conn_id(c["local_port"]))) for n, c in conns.items()]
        pytest.fail(f"Redis never caught up: {states}")


def assert_logs_exact(store, conns):
    for name, c in conns.items():
        log = store.conn_log("b1", conn_id(c["local_port"]))
        assert hashlib.sha256(log).hexdigest() == c["sent_sha256"], f"{name}: Redis log differs from what was sent"


def test_agent_records_concurrent_connections_exactly(run_dir):
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir) as lab:
        store = Store(lab.redis.url)
        client = HeldClient(lab)
        try:
            conns = client.result()
            states = caught_up(store, conns)
            assert_logs_exact(store, conns)
            kernel = kernel_view(lab)
            for name, c in conns.items():
                st, k = states[name], kernel[c["local_port"]]
                assert st["status"] == "protected" and st["reason"] == "", (name, st)
                assert st["state"] == "established" and st["service"] == "demo"
                # The primary received exactly the bytes in the log ...
                assert int(st["c2s_logged"]) == k["bytes_received"], (name, st, k)
                # ... and the client acknowledged exactly the server bytes the agent
                # recorded (on a passive socket Linux's bytes_acked counts payload only).
                assert int(st["s2c_acked"]) == k["bytes_acked"], (name, st, k)
                assert int(st["s2c_sent"]) == k["bytes_acked"], (name, st, k)
                # ss prints wscale:<snd>,<rcv>: the client's shift, then the server's.
                assert (int(st["wscale_c"]), int(st["wscale_s"])) == k["wscale"], (name, st, k)
                # Timestamps and SACK from the client kernel's TCP_INFO (this machine's ss
                # does not print them).
                assert bool(int(st["ts_ok"])) == bool(c["tcpi_options"] & 1), (name, st, c)
                assert bool(int(st["sack_ok"])) == bool(c["tcpi_options"] & 2), (name, st, c)
                assert json.loads(st["c_opts"])["mss"] == 1460 and json.loads(st["s_opts"])["mss"] == 1460
                assert int(st["isn_c"]) != int(st["isn_s"])
            ids = {conn_id(c["local_port"]) for c in conns.values()}
            assert ids <= store.service_conns("demo", "b1")

            conns = client.say("resume")  # the idle connection wakes up
            caught_up(store, conns)
            assert_logs_exact(store, conns)

            conns = client.say("close")
            wait_for(lambda: all(store.conn("b1", i)["state"] == "closed" for i in ids), 20, "closed connections")
            assert_logs_exact(store, conns)
        finally:
            client.proc.kill()
        assert lab.stop_agent() == 0
        beat = store.agent("b1")
        assert beat["stopped"] and beat["kernel_drops"] == "0" and beat["lost_conns"] == "0"


def test_connection_older_than_the_agent_is_unprotected(run_dir):
    with Lab(service_cmd=SERVICES["echo"], service_port=PORT, run_dir=run_dir, agent=False) as lab:
        old = ScriptedClient(lab, "older")
        try:
            port = int(old.line())
            lab.start_agent()
            store = Store(lab.redis.url)
            assert old.go() == "done"
            fresh = lab.client("c2", "echo", PRIMARY_IP, PORT, "--bytes", 5000)
            assert fresh["ok"]
            cid = conn_id(port)
            state = wait_for(lambda: store.conn("b1", cid), 10, "the old connection's record")
            assert state["status"] == "unprotected"
            assert state["reason"] == "no SYN seen (connection predates capture)"
            assert store.conn_log("b1", cid) == b""
            new = wait_for(lambda: store.conn("b1", f"10.0.0.2:{fresh['local_port']}-{PRIMARY_IP}:{PORT}"), 10,
                           "new conn")
            assert new["status"] == "protected"
        finally:
            old.kill()


def test_redis_outage_loses_only_what_did_not_fit(run_dir):
    """Redis stops answering mid-transfer. With a 1 MiB buffer the 3 MB upload cannot
    be held and is marked unprotected; the small connections lose nothing."""
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir,
             agent_args=("--buffer", "1M")) as lab:
        store = Store(lab.redis.url)
        client = HeldClient(lab)
        lab.redis.proc.send_signal(signal.SIGSTOP)
        try:
            conns = client.result()
            # Keep Redis away until the agent has noticed (its write timed out).
            wait_for(lambda: "cannot write to Redis" in (lab.run_dir / "agent.log").read_text(), 15,
                     "the agent to report the Redis outage")
        finally:
            lab.redis.proc.send_signal(signal.SIGCONT)
        try:
            def settled():
                states = {n: store.conn("b1", conn_id(c["local_port"])) for n, c in conns.items()}
                return states if all(states.values()) and int(states["reqresp"]["c2s_stored"]) == \
                    conns["reqresp"]["sent"] else None
            states = wait_for(settled, 30, "the agent to write after Redis returned")
            up = states["upload"]
            assert up["status"] == "unprotected" and up["reason"].startswith("redis unavailable"), up
            for name in ("download", "reqresp", "idle"):
                st = states[name]
                assert st["status"] == "protected", (name, st)
                log = store.conn_log("b1", conn_id(conns[name]["local_port"]))
                assert hashlib.sha256(log).hexdigest() == conns[name]["sent_sha256"], name
            wait_for(lambda: int(store.agent("b1")["redis_errors"]) > 0, 5, "the heartbeat to count the errors")
            assert "Redis is back" in (lab.run_dir / "agent.log").read_text()
        finally:
            client.proc.kill()

"""The relay (ftcp/agent/relay.py) against what can go wrong around it: its descriptor
limit, messages that are not what they should be, an agent that does not read. Whatever
comes in, the relay goes on and so does every session it holds; what a bad message
brought is closed (a RST for a socket the relay alone held), never relayed to the wrong
client. Real relays (processes where they may die), real sockets."""
import socket
import time

import pytest

from ftcp.agent.handoff import RelayClient
from tests.support.taken_over import Pairs, is_reset, open_fds, relay_process, send_raw
from topology.processes import wait_for


@pytest.fixture
def pairs():
    p = Pairs()
    yield p
    p.close()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "relay.sock")


@pytest.fixture
def relay_proc(path, tmp_path):
    procs = []

    def start(nofile=None):
        proc = relay_process(path, str(tmp_path / "relay.log"), nofile=nofile)
        procs.append(proc)
        return proc
    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def relay_log(tmp_path) -> str:
    return open(tmp_path / "relay.log").read()


# --- its descriptor limit ----------------------------------------------------------------

def test_the_relay_raises_its_descriptor_limit(relay_proc):
    proc = relay_proc(nofile=(64, 4096))
    limits = open(f"/proc/{proc.pid}/limits").read()
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    assert line.split()[3] == "4096", line


def test_the_relay_survives_its_fd_limit_and_keeps_what_it_holds(path, tmp_path, pairs, relay_proc):
    """Each session costs the relay 2 descriptors. Here the limit is 40 (hard: it cannot
    be raised): after a dozen sessions a handed-over message arrives with no SCM_RIGHTS
    (the kernel could not install the descriptors: MSG_CTRUNC). That drops the agent's
    connection, not the relay: the sessions it holds go on."""
    proc = relay_proc(nofile=40)
    first, first_peer, first_replica_peer = pairs.session("first")
    agent = RelayClient(path)
    assert agent.hand_over([first]) == []
    for i in range(30):
        s, _peer, _rpeer = pairs.session(f"s{i}")
        for rest in agent.hand_over([s]):
            rest.close()
        time.sleep(0.02)
        if proc.poll() is not None:
            break
    time.sleep(0.5)
    alive = proc.poll() is None
    if alive:
        first_replica_peer.sendall(b"still there?")
    state = is_reset(first_peer, timeout=1.0)
    assert alive, f"the relay died at its fd limit (exit {proc.returncode}); first client: {state}; " \
                  f"log tail: {relay_log(tmp_path)[-600:]!r}"
    assert state == "open" and "MSG_CTRUNC" in relay_log(tmp_path)


def test_at_its_fd_limit_the_relay_waits_to_accept_and_then_does(path, tmp_path, relay_proc):
    """accept fails with EMFILE while the limit is reached: the relay neither dies nor
    spins, and accepts the waiting agent once descriptors are free again."""
    proc = relay_proc(nofile=40)
    conns = []
    for _ in range(40):                      # more agent connections than it has descriptors for
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        conns.append(c)
    wait_for(lambda: "cannot accept" in relay_log(tmp_path), 5, "the relay to hit its limit", interval=0.05)
    for c in conns[:-1]:
        c.close()
    last = conns[-1]
    last.settimeout(5)
    last.sendall(b'{"cmd": "list"}\n')
    assert last.recv(1000) == b'{"cmd":"sessions","ids":[]}\n'
    assert proc.poll() is None
    cpu = sum(map(int, open(f"/proc/{proc.pid}/stat").read().split(")")[1].split()[11:13]))
    assert cpu < 200, f"the relay spun at its limit ({cpu} ticks of CPU)"
    last.close()


def test_descriptors_beyond_what_a_message_carries_are_closed(path, tmp_path, pairs, relay_proc):
    """A message with three descriptors overflows the two-descriptor ancillary buffer
    (MSG_CTRUNC): the kernel closes what did not fit, the relay what did, and drops
    that connection."""
    proc = relay_proc()
    agent = RelayClient(path)
    assert agent.held() == []
    before = open_fds(proc.pid)
    a, b, c = (socket.socketpair() for _ in range(3))
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bad.connect(path)
    send_raw(bad, b"{", fds=(a[0].fileno(), b[0].fileno(), c[0].fileno()))
    bad.settimeout(5)
    assert bad.recv(100) == b""            # dropped
    wait_for(lambda: open_fds(proc.pid) == before, 5, "the relay to close what came", interval=0.05)
    assert proc.poll() is None and agent.held() == []


# --- messages that are not what they should be ---------------------------------------------

@pytest.mark.parametrize("line", [b"[1]\n", b"null\n", b'"adopt"\n', b"{not json\n",
                                  b'{"cmd": "adopt", "id": "x", "fds": 2}\n'],
                         ids=["array", "null", "string", "not-json", "adopt-without-descriptors"])
def test_a_malformed_message_does_not_kill_the_relay_and_its_sessions(path, pairs, relay_proc, line):
    """Valid JSON that is not an object, or an adopt line that says fds but carries none,
    once escaped Reader.read and killed the relay, resetting every client it held."""
    proc = relay_proc()
    held, held_peer, _ = pairs.session("held")
    agent = RelayClient(path)
    assert agent.hand_over([held]) == []
    wait_for(lambda: agent.held() == ["held"], 5, "the relay to hold it", interval=0.05)
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bad.connect(path)
    bad.sendall(line)
    time.sleep(1.0)
    alive = proc.poll() is None
    state = is_reset(held_peer, timeout=1.0)
    assert alive and state == "open", f"relay alive: {alive}; the held client: {state}"
    assert agent.held() == ["held"]

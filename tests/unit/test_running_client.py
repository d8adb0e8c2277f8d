"""topology.clients.RunningClient's stall is the client's own: services/client.py run
here against a paced stream server on loopback, a real pause in the stream is what it
reports, and a harness that blocks meanwhile adds nothing to it."""
import fcntl
import socket
import subprocess
import threading
import time

import pytest

from services.demo_server import stream_bytes
from topology.clients import RunningClient

CHUNK, EVERY = 2048, 0.002      # ~1 MB/s in 2 KB writes: a read every 2 ms, nothing piles up in buffers
CHUNKS = 450                     # ~0.9 s of stream


class Loopback:
    """A Mininet host stand-in: the client runs in this namespace."""

    @staticmethod
    def popen(argv, **kw):
        return subprocess.Popen(argv, **kw)


@pytest.fixture
def server():
    """A demo-protocol stream server (GET <n> <seed>) that writes a chunk every EVERY
    seconds and, if ``pause`` is set to (after chunk k, seconds), stops that long once."""
    listener = socket.create_server(("127.0.0.1", 0))
    box = {"pause": None}

    def serve():
        conn, _ = listener.accept()
        with conn:
            words = conn.makefile("rb").readline().split()
            data = stream_bytes(int(words[1]), words[2].decode())
            for k, at in enumerate(range(0, len(data), CHUNK)):
                conn.sendall(data[at:at + CHUNK])
                if box["pause"] and k == box["pause"][0]:
                    time.sleep(box["pause"][1])    # the stall under test: the server stops sending
                time.sleep(EVERY)
            while conn.recv(65536):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    box["port"] = listener.getsockname()[1]
    yield box
    thread.join(10)
    listener.close()


def stream(server, progress=0.02) -> RunningClient:
    return RunningClient(Loopback(), "stream", "127.0.0.1", server["port"], "--bytes", CHUNK * CHUNKS,
                         "--seed", "s", "--progress", progress)


def test_the_stall_is_the_pause_the_stream_had(server):
    server["pause"] = (150, 0.5)
    client = stream(server)
    client.wait_progress(received=CHUNK * 10)
    res = client.result()
    assert res["ok"] and res["received"] == CHUNK * CHUNKS, res
    # the client read the chunk before the pause as soon as it came (nothing is
    # buffered at this rate), and the one after it when it came; the margins are for
    # a loaded machine's scheduling, far from the 2 ms of a meter that missed the pause
    assert 400 <= res["stall_ms"] < 800, res["stall_ms"]


def test_a_harness_that_blocks_while_the_client_runs_adds_nothing(server):
    client = stream(server, progress=0.0001)     # a progress line at nearly every read
    # a pipe of one page: the client's progress lines fill it in a fraction of the
    # block below, so a harness that left them unread would stall the client for real
    fcntl.fcntl(client.proc.stderr, fcntl.F_SETPIPE_SZ, 4096)
    client.wait_progress(received=CHUNK * 10)
    time.sleep(1.0)   # the harness busy elsewhere (a forger, a REST call): the subject of this test
    res = client.result()
    assert res["ok"] and res["received"] == CHUNK * CHUNKS, res
    # left unread, the pipe stalls the client ~0.5 s; timed by the harness's reads, ~1 s
    assert res["stall_ms"] < 300, res["stall_ms"]

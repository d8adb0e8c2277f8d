#!/usr/bin/env python3
"""Test client for the agent tests: several concurrent connections to the demo
service, driven in phases from stdin, keeping the sockets open in between so the
primary's kernel can be asked about them.

    multi_client.py HOST PORT            then, on stdin:
      (start)   every connection runs its traffic; prints {"phase": "traffic", ...}
      resume    the idle connection talks again;   prints {"phase": "resume", ...}
      close     all connections close;             prints {"phase": "closed"}
"""
import hashlib
import json
import os
import random
import socket
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "services"))
from client import Conn  # noqa: E402
from demo_server import stream_bytes  # noqa: E402

UPLOAD = 3_000_000
DOWNLOAD = 3_000_000


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def upload(c):
    body = random.Random("upload").randbytes(UPLOAD)
    c.send(f"PUT {len(body)}\n".encode() + body)
    expect(c.read_line() == f"OK {hashlib.sha256(body).hexdigest()}\n".encode(), "upload answer")


def download(c):
    c.send(f"GET {DOWNLOAD} dl\n".encode())
    expect(c.read_exact(DOWNLOAD) == stream_bytes(DOWNLOAD, "dl"), "download bytes")


def reqresp(c, n=300):
    for i in range(n):
        c.send(f"PING {i}\n".encode())
        expect(c.read_line() == f"PONG {i}\n".encode(), f"pong {i}")


def idle(c):
    c.send(b"PING idle\n")
    expect(c.read_line() == b"PONG idle\n", "idle pong")


def report(conns):
    out = {}
    for name, c in conns.items():
        # The client kernel's own view of the negotiated options (struct tcp_info:
        # byte 5 is tcpi_options, TCPI_OPT_TIMESTAMPS=1, TCPI_OPT_SACK=2, TCPI_OPT_WSCALE=4).
        info = c.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        out[name] = dict(c.report(), tcpi_options=info[5])
    return out


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    kinds = {"upload": upload, "download": download, "reqresp": reqresp, "idle": idle}
    conns = {name: Conn(host, port, 30) for name in kinds}
    errors = []

    def run(name):
        try:
            kinds[name](conns[name])
        except Exception as e:  # reported, not raised: the test reads the JSON
            errors.append(f"{name}: {e!r}")
    threads = [threading.Thread(target=run, args=(n,)) for n in kinds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"phase": "traffic", "errors": errors, "conns": report(conns)}), flush=True)
    for line in sys.stdin:
        if line.strip() == "resume":
            try:
                reqresp(conns["idle"], 20)
            except Exception as e:
                errors.append(f"idle resume: {e!r}")
            print(json.dumps({"phase": "resume", "errors": errors, "conns": report(conns)}), flush=True)
        elif line.strip() == "close":
            for c in conns.values():
                c.sock.shutdown(socket.SHUT_WR)
                while c.read(65536):
                    pass
            print(json.dumps({"phase": "closed", "errors": errors, "conns": report(conns)}), flush=True)
            for c in conns.values():
                c.sock.close()
            return


if __name__ == "__main__":
    main()

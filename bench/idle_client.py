#!/usr/bin/env python3
"""Open N connections to an echo server, exchange a few bytes on each, hold them.

    idle_client.py HOST PORT N      prints {"ports": [...], "ok": true} when all are
                                    open and echoed, then waits for a line on stdin
                                    and closes them all.
"""
import json
import resource
import socket
import sys


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    conns, ok = [], True
    for i in range(count):
        s = socket.create_connection((host, port), timeout=30)
        msg = f"hello {i}\n".encode()
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            data = s.recv(100)
            if not data:
                break
            got += data
        ok = ok and got == msg
        conns.append(s)
    print(json.dumps({"ok": ok, "ports": [s.getsockname()[1] for s in conns]}), flush=True)
    sys.stdin.readline()
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()

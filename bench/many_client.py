#!/usr/bin/env python3
"""N connections to the demo service, each in a PING/PONG loop, all in one thread.

    many_client.py HOST PORT N SECONDS [--pause MS]

Every connection sends "PING <conn> <k>\\n", waits for "PONG <conn> <k>\\n", pauses,
and repeats, for SECONDS after all N are open. Prints one JSON line: whether every
answer was right, and per connection the wall-clock time of every answer, so the
caller can find when each connection resumed after a failover.
"""
import json
import resource
import selectors
import socket
import sys
import time


def main():
    host, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    pause = float(sys.argv[6]) / 1000 if len(sys.argv) > 6 and sys.argv[5] == "--pause" else 0.02
    want = count + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(count):
        s = socket.create_connection((host, port), timeout=30)
        s.setblocking(False)
        conns.append({"sock": s, "k": 0, "buf": b"", "due": 0.0, "waiting": False, "answers": []})
        sel.register(s, selectors.EVENT_READ, i)
    print(json.dumps({"opened": count, "t0": time.time()}), flush=True)
    ok, errors = True, []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = time.monotonic()
        for i, c in enumerate(conns):
            if not c["waiting"] and not c.get("dead") and now >= c["due"]:
                try:
                    c["sock"].send(f"PING {i} {c['k']}\n".encode())
                except OSError as e:   # a connection that fails is reported, not fatal
                    ok, c["dead"] = False, True
                    errors.append(f"conn {i}: send: {e!r}")
                    continue
                c["waiting"] = True
        for key, _ in sel.select(timeout=0.005):
            i = key.data
            c = conns[i]
            try:
                data = c["sock"].recv(4096)
            except BlockingIOError:
                continue
            except OSError as e:
                ok, c["dead"] = False, True
                errors.append(f"conn {i}: recv: {e!r}")
                sel.unregister(c["sock"])
                continue
            if not data:
                ok = False
                errors.append(f"conn {i}: EOF")
                sel.unregister(c["sock"])
                continue
            c["buf"] += data
            while b"\n" in c["buf"]:
                line, c["buf"] = c["buf"].split(b"\n", 1)
                if line != f"PONG {i} {c['k']}".encode():
                    ok = False
                    errors.append(f"conn {i}: wrong answer {line[:40]!r}")
                c["answers"].append(time.time())
                c["k"] += 1
                c["waiting"] = False
                c["due"] = time.monotonic() + pause
    for c in conns:
        c["sock"].close()
    print(json.dumps({"ok": ok, "errors": errors[:20], "answers": [c["answers"] for c in conns]}), flush=True)


if __name__ == "__main__":
    main()

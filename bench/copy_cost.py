"""What relaying bytes costs by itself, without a lab: 1 GB over loopback through ftcp's
Splicer (ftcp/agent/takeover.py), a plain recv/send loop and splice(2) through a pipe,
each in a process of its own whose CPU time is read; bench/relay_bench.py runs it after
its labs (``copy_costs``)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

WRITER = """
import socket, sys
n, block = int(sys.argv[2]), bytes(1 << 20)
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for i in range(0, n, len(block)):
    s.sendall(block[:min(len(block), n - i)])
s.shutdown(socket.SHUT_WR)
s.recv(1)
"""
READER = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
buf, got = bytearray(1 << 18), 0
while True:
    k = s.recv_into(buf)
    if not k:
        break
    got += k
print(got)
"""
COPIERS = ("splicer", "recv_send", "splice")


def copy_cost(nbytes: int, how: str) -> dict:
    """What relaying one byte costs by itself, without the lab: a writer process sends
    ``nbytes`` over loopback TCP to this process, which passes them on over a second
    connection to a reader process, either with ftcp's Splicer (the relay's own code:
    recv into a buffer, send at the next selector round), a blocking recv_into/sendall
    loop (the same two copies, no selector), or splice(2) through a pipe (no copy into
    userspace). The CPU time is this process's (every thread) while the bytes pass."""
    import fcntl
    import socket

    from ftcp.agent.takeover import Session, Splicer
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(listeners[0].getsockname()[1]), str(nbytes)])
    reader = subprocess.Popen([sys.executable, "-c", READER, str(listeners[1].getsockname()[1])],
                              stdout=subprocess.PIPE, text=True)
    try:
        src, dst = (lst.accept()[0] for lst in listeners)
        for lst in listeners:
            lst.close()
        c0, t0 = time.process_time(), time.monotonic()
        if how == "splicer":
            session = Session("copy-cost", None, 0, dst)
            session.client = src
            src.setblocking(False)
            dst.setblocking(False)
            splicer = Splicer(server_alive=lambda _addr: True)
            splicer.start()
            splicer.add([session])
            got = int(reader.communicate(timeout=600)[0])
            c1, t1 = time.process_time(), time.monotonic()
            splicer.stop()
        else:
            if how == "splice":
                r, w = os.pipe()
                fcntl.fcntl(w, 1031, 1 << 20)     # F_SETPIPE_SZ: a 1 MiB pipe
                while True:
                    n = os.splice(src.fileno(), w, 1 << 20)
                    if not n:
                        break
                    while n:
                        n -= os.splice(r, dst.fileno(), n)
                os.close(r)
                os.close(w)
            else:
                buf = bytearray(1 << 16)
                view = memoryview(buf)
                while True:
                    n = src.recv_into(buf)
                    if not n:
                        break
                    dst.sendall(view[:n])
            dst.shutdown(socket.SHUT_WR)
            got = int(reader.communicate(timeout=600)[0])
            c1, t1 = time.process_time(), time.monotonic()
        src.close()
        dst.close()
        writer.wait(60)
    finally:
        for proc in (writer, reader):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if got != nbytes:
        raise ValueError(f"{how}: the reader got {got} of {nbytes} bytes")
    gb = nbytes / 1e9
    return {"how": how, "bytes": nbytes, "seconds": t1 - t0, "gbps": nbytes * 8 / (t1 - t0) / 1e9,
            "cpu_s": round(c1 - c0, 4), "cpu_s_per_gb": round((c1 - c0) / gb, 4)}


def copy_costs(args) -> dict:
    """copy_cost for each way of relaying, trials interleaved. Failed trials are kept."""
    trials = []
    for i in range(args.copy_trials):
        for how in (COPIERS if i % 2 == 0 else COPIERS[::-1]):
            try:
                trials.append(dict(copy_cost(args.copy_bytes, how), trial=i, outcome="ok"))
            except (OSError, ValueError, subprocess.SubprocessError) as e:
                trials.append({"how": how, "trial": i, "outcome": "failed", "error": repr(e)})
            print(json.dumps(trials[-1]), flush=True)
    summary = {}
    for how in COPIERS:
        ok = [t for t in trials if t["how"] == how and t["outcome"] == "ok"]
        summary[how] = {"trials": len([t for t in trials if t["how"] == how]), "ok": len(ok),
                        "cpu_s_per_gb": stats([t["cpu_s_per_gb"] for t in ok]),
                        "gbps": stats([t["gbps"] for t in ok])}
    return {"bytes": args.copy_bytes, "trials": trials, "summary": summary}


def stats(values: list) -> dict:
    """Median, minimum and maximum of a few values (None for none)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else None

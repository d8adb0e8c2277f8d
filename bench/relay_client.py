#!/usr/bin/env python3
"""One connection to services/demo_server.py, opened now and measured later, on command
(stdlib only; bench/relay_bench.py runs it on a lab client host).

    relay_client.py HOST PORT

Connects (TCP_NODELAY), pings once and prints {"opened": true, "local_port": P}. Then
reads commands from stdin, one a line, and answers each with one JSON line, so that the
connection can be opened before a failover and measured after it:

    download N SEED   GET N SEED: seconds from the request to the last byte, the SHA-256
                      of what came (the caller compares it with the stream's)
    upload N SEED     PUT N bytes (a 1 MiB block of Random(SEED) repeated): seconds from
                      the request's first byte to the server's "OK <sha256>", checked
    rtt K             K "PING i" -> "PONG i" exchanges, each timed (µs) and checked
    close             FIN; prints how the server's side ended: "eof" (a FIN after
                      nothing more), "reset", "timeout" or "data" (bytes came)

A failed command prints {"ok": false, "error": ...} and the client exits 1.
"""
import hashlib
import json
import random
import socket
import sys
import time

BLOCK = 1 << 20
clock = time.perf_counter


def say(**fields):
    print(json.dumps(fields), flush=True)


def read_line(sock, buf: bytearray) -> bytes:
    """One line from the server (a PONG or an OK), keeping what came after it in ``buf``."""
    while b"\n" not in buf:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("EOF from the server in the middle of an answer")
        buf += data
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


def download(sock, n: int, seed: str) -> dict:
    digest, got = hashlib.sha256(), 0
    buf = bytearray(1 << 18)
    view = memoryview(buf)
    t0 = clock()
    sock.sendall(f"GET {n} {seed}\n".encode())
    while got < n:
        k = sock.recv_into(view, min(len(buf), n - got))
        if not k:
            raise ConnectionError(f"EOF from the server after {got} of {n} bytes")
        digest.update(view[:k])
        got += k
    seconds = clock() - t0
    return {"ok": True, "bytes": got, "seconds": seconds, "gbps": got * 8 / seconds / 1e9,
            "sha256": digest.hexdigest()}


def upload(sock, n: int, seed: str) -> dict:
    block = random.Random(seed).randbytes(BLOCK)
    expected = hashlib.sha256()
    for i in range(0, n, BLOCK):   # before the clock starts
        expected.update(block[:min(BLOCK, n - i)])
    want = f"OK {expected.hexdigest()}".encode()
    t0 = clock()
    sock.sendall(f"PUT {n}\n".encode())
    for i in range(0, n, BLOCK):
        sock.sendall(block[:min(BLOCK, n - i)])
    answer = read_line(sock, bytearray())
    seconds = clock() - t0
    if answer != want:
        return {"ok": False, "error": f"the server answered {answer[:80]!r}, not the upload's SHA-256"}
    return {"ok": True, "bytes": n, "seconds": seconds, "gbps": n * 8 / seconds / 1e9}


def rtt(sock, count: int) -> dict:
    samples, buf = [], bytearray()
    for i in range(count):
        t0 = clock()
        sock.sendall(b"PING %d\n" % i)
        answer = read_line(sock, buf)
        samples.append((clock() - t0) * 1e6)
        if answer != b"PONG %d" % i:
            return {"ok": False, "error": f"exchange {i}: answer {answer[:80]!r}"}
    if buf:
        return {"ok": False, "error": f"bytes after the last answer: {bytes(buf[:80])!r}"}
    return {"ok": True, "count": count, "rtt_us": [round(s, 2) for s in samples]}


def close(sock) -> dict:
    sock.shutdown(socket.SHUT_WR)
    try:
        data = sock.recv(100)
        end = "data" if data else "eof"
    except ConnectionResetError:
        end = "reset"
    except socket.timeout:
        end = "timeout"
    sock.close()
    return {"ok": end == "eof", "end": end}


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        sock = socket.create_connection((host, port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"PING open\n")
        if read_line(sock, bytearray()) != b"PONG open":
            raise ConnectionError("wrong answer to the first ping")
        say(opened=True, local_port=sock.getsockname()[1])
    except OSError as e:
        say(opened=False, ok=False, error=repr(e))
        return 1
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "download":
                result = download(sock, int(words[1]), words[2])
            elif words[0] == "upload":
                result = upload(sock, int(words[1]), words[2])
            elif words[0] == "rtt":
                result = rtt(sock, int(words[1]))
            elif words[0] == "close":
                result = close(sock)
            else:
                result = {"ok": False, "error": f"unknown command {words[0]!r}"}
        except OSError as e:
            result = {"ok": False, "error": repr(e)}
        say(cmd=words[0], **result)
        if not result["ok"]:
            return 1
        if words[0] == "close":
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

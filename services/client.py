#!/usr/bin/env python3
"""Test/demo client (stdlib only). Prints one JSON line with what it sent and got.

    client.py echo HOST PORT --bytes N [--seed S] [--chunk C]
        send N deterministic bytes to an echo server while reading the echo back
    client.py reqresp HOST PORT --count K [--interval SEC]
        K PING/GET/PUT requests against services/demo_server.py, each checked
    client.py stream HOST PORT --bytes N [--seed S] [--progress SEC]
        GET N bytes from services/demo_server.py, printing progress lines
    client.py upload HOST PORT --bytes N [--seed S] [--progress SEC]
        PUT N bytes to services/demo_server.py and check the SHA-256 it answers
    client.py clock HOST PORT --count K [--interval SEC]
        K "T i" lines to services/clock_server.py, each answer "T i <its time>" checked
    client.py http HOST PORT --count K [--path /20000.bin] [--interval SEC]
        K HTTP/1.1 GETs on one keep-alive connection to services/web_server.py;
        every response's status, headers (a well-formed Date) and body are checked

--progress SEC prints "client: <bytes received> <bytes sent>" to stderr every SEC.
The JSON's "gaps" are the silences (> 10 ms) between reads that brought data; in
upload mode also those of the server's acknowledgements (the kernel's bytes_acked).

Exit status 0 only if the connection ended cleanly and every answer was right;
the JSON carries sha256 of all bytes sent and received so callers can compare.
"""
import argparse
import hashlib
import json
import os
import random
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo_server import stream_bytes  # noqa: E402


class Conn:
    """A TCP connection that hashes everything it sends and receives."""

    def __init__(self, host, port, timeout, progress=0.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sent = hashlib.sha256()
        self.recv = hashlib.sha256()
        self.nsent = self.nrecv = 0
        self.progress = progress
        self._last = time.monotonic()
        # The longest silence between two reads that brought data: the stall a user
        # of this connection saw (a failover shows up here).
        self.max_gap = 0.0
        self.gap_at = 0
        self._last_data = None
        self.gaps = []   # (wall time the silence began, ms, bytes received by then), gaps > 10 ms
        self.by_second = {}   # wall second -> the longest silence that began in it (any length)

    def _gap(self, began: float, gap: float, at: int):
        second = int(began)
        if gap > self.by_second.get(second, 0.0):
            self.by_second[second] = gap
        if gap > self.max_gap:
            self.max_gap, self.gap_at = gap, at
        if gap > 0.01 and len(self.gaps) < 1000:
            self.gaps.append((round(began, 6), round(gap * 1000, 3), at))

    def _tick(self):
        if self.progress and time.monotonic() - self._last >= self.progress:
            self._last = time.monotonic()
            print(f"client: {self.nrecv} {self.nsent}", file=sys.stderr, flush=True)

    def send(self, data):
        self.sock.sendall(data)
        self.sent.update(data)
        self.nsent += len(data)
        self._tick()

    def read(self, n):
        data = self.sock.recv(n)
        if data:
            now = time.monotonic()
            if self._last_data is not None:
                gap = now - self._last_data
                self._gap(time.time() - gap, gap, self.nrecv)
            self._last_data = now
        self.recv.update(data)
        self.nrecv += len(data)
        self._tick()
        return data

    def read_exact(self, n):
        parts = []
        while n:
            data = self.read(min(n, 65536))
            if not data:
                raise ConnectionError("unexpected EOF from server")
            parts.append(data)
            n -= len(data)
        return b"".join(parts)

    def read_line(self):
        buf = bytearray()
        while not buf.endswith(b"\n"):
            data = self.read(1)
            if not data:
                raise ConnectionError("unexpected EOF from server")
            buf += data
        return bytes(buf)

    def bytes_acked(self) -> int:
        # struct tcp_info: tcpi_bytes_acked is the u64 at offset 120 (Linux >= 4.1).
        return struct.unpack_from("=Q", self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 192), 120)[0]

    def watch_acks(self, period: float = 0.001):
        """For a sender the stall is the silence of the peer's acknowledgements: sample
        the kernel's count of acknowledged bytes and record its silences as gaps, in
        the same form as those between reads. Stops when the socket is closed."""
        def sample():
            last, since = 0, time.monotonic()
            while True:
                try:
                    acked = self.bytes_acked()
                except OSError:
                    return
                now = time.monotonic()
                if acked != last:
                    if last:
                        self._gap(time.time() - (now - since), now - since, acked)
                    last, since = acked, now
                time.sleep(period)
        threading.Thread(target=sample, daemon=True).start()

    def report(self, **extra):
        try:
            local_port = self.sock.getsockname()[1]
        except OSError:
            local_port = None
        out = {"local_port": local_port, "sent": self.nsent, "received": self.nrecv,
               "sent_sha256": self.sent.hexdigest(), "received_sha256": self.recv.hexdigest(),
               "max_gap_ms": round(self.max_gap * 1000, 3), "max_gap_at": self.gap_at, "gaps": self.gaps,
               "max_gap_ms_by_second": {str(k): round(v * 1000, 3) for k, v in sorted(self.by_second.items())}}
        out.update(extra)
        return out


def run_echo(conn, args):
    payload = random.Random(args.seed).randbytes(args.bytes)
    expected = hashlib.sha256(payload).hexdigest()
    error = []

    def writer():
        try:
            for i in range(0, len(payload), args.chunk):
                conn.send(payload[i:i + args.chunk])
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            error.append(repr(e))

    t = threading.Thread(target=writer)
    t.start()
    while conn.read(65536):
        pass
    t.join()
    ok = not error and conn.nrecv == args.bytes and conn.recv.hexdigest() == expected
    return conn.report(ok=ok, error=error[0] if error else None, payload_sha256=expected)


def run_reqresp(conn, args):
    for i in range(args.count):
        kind = i % 3
        if kind == 0:
            conn.send(f"PING {i}\n".encode())
            good = conn.read_line() == f"PONG {i}\n".encode()
        elif kind == 1:
            conn.send(f"GET 1000 s{i}\n".encode())
            good = conn.read_exact(1000) == stream_bytes(1000, f"s{i}")
        else:
            body = random.Random(i).randbytes(1000)
            conn.send(f"PUT {len(body)}\n".encode() + body)
            good = conn.read_line() == f"OK {hashlib.sha256(body).hexdigest()}\n".encode()
        if not good:
            return conn.report(ok=False, error=f"wrong answer to request {i}")
        if args.interval:
            time.sleep(args.interval)
    conn.sock.shutdown(socket.SHUT_WR)
    if conn.read(1):
        return conn.report(ok=False, error="bytes after the last answer")
    return conn.report(ok=True, requests=args.count)


def run_stream(conn, args):
    conn.send(f"GET {args.bytes} {args.seed}\n".encode())
    expected = hashlib.sha256(stream_bytes(args.bytes, str(args.seed))).hexdigest()
    while conn.nrecv < args.bytes:
        if not conn.read(65536):
            return conn.report(ok=False, error="unexpected EOF from server")
    conn.sock.shutdown(socket.SHUT_WR)
    if conn.read(1):
        return conn.report(ok=False, error="bytes after the stream")
    return conn.report(ok=conn.recv.hexdigest() == expected, expected_sha256=expected)


def run_upload(conn, args):
    body = random.Random(args.seed).randbytes(args.bytes)
    conn.watch_acks()
    conn.send(f"PUT {len(body)}\n".encode())
    for i in range(0, len(body), args.chunk):
        conn.send(body[i:i + args.chunk])
    answer = conn.read_line()
    conn.sock.shutdown(socket.SHUT_WR)
    if conn.read(1):
        return conn.report(ok=False, error="bytes after the answer")
    expected = f"OK {hashlib.sha256(body).hexdigest()}\n".encode()
    return conn.report(ok=answer == expected, answer=answer.decode(errors="replace").strip())


def run_clock(conn, args):
    for i in range(args.count):
        conn.send(f"T {i}\n".encode())
        words = conn.read_line().split()
        try:
            good = words[:2] == [b"T", str(i).encode()] and len(words) == 3 and abs(float(words[2]) - time.time()) < 60
        except ValueError:
            good = False
        if not good:
            return conn.report(ok=False, error=f"wrong answer to request {i}: {b' '.join(words)!r}", requests=i)
        if args.interval:
            time.sleep(args.interval)
    return conn.report(ok=True, requests=args.count)


def run_http(conn, args):
    """HTTP/1.1 keep-alive: every GET on this one connection (a reset or a close ends
    the run: it is never reopened), each body compared with the file's bytes."""
    from email.utils import parsedate_to_datetime
    size = int(args.path.rsplit("/", 1)[-1].split(".")[0])
    expected = stream_bytes(size, f"web-{size}")
    request = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nUser-Agent: ftcp-lab\r\n\r\n".encode()
    buf = bytearray()
    dates = []

    def fill():
        data = conn.read(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        buf.extend(data)

    for i in range(args.count):
        conn.send(request)
        while b"\r\n\r\n" not in buf:
            fill()
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]))
        if lines[0] != "HTTP/1.1 200 OK" or headers.get("content-length") != str(size):
            return conn.report(ok=False, error=f"response {i}: {lines[0]!r}, content-length "
                                               f"{headers.get('content-length')}", requests=i)
        try:
            dates.append(parsedate_to_datetime(headers["date"]).timestamp())
        except (KeyError, TypeError, ValueError):
            return conn.report(ok=False, error=f"response {i}: no well-formed Date: {headers.get('date')!r}",
                               requests=i)
        buf[:] = rest
        while len(buf) < size:
            fill()
        if buf[:size] != expected:
            return conn.report(ok=False, error=f"response {i}: the body differs from the file", requests=i)
        del buf[:size]
        if headers.get("connection", "").lower() == "close":
            return conn.report(ok=False, error=f"response {i}: the server closes the connection", requests=i)
        if args.interval:
            time.sleep(args.interval)
    conn.sock.shutdown(socket.SHUT_WR)
    if buf or conn.read(1):
        return conn.report(ok=False, error="bytes after the last response", requests=args.count)
    return conn.report(ok=True, requests=args.count, first_date=min(dates, default=None),
                       last_date=max(dates, default=None))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["echo", "reqresp", "stream", "upload", "http", "clock"])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--bytes", type=int, default=1 << 20)
    ap.add_argument("--seed", default="1")
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--progress", type=float, default=0.0)
    ap.add_argument("--path", default="/20000.bin", help="http: the file to GET (/<size>.bin)")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    conn = None
    try:
        conn = Conn(args.host, args.port, args.timeout, args.progress)
        runner = {"echo": run_echo, "reqresp": run_reqresp, "stream": run_stream, "upload": run_upload,
                  "http": run_http, "clock": run_clock}[args.mode]
        result = runner(conn, args)
    except OSError as e:
        result = conn.report(ok=False, error=repr(e)) if conn is not None else {"ok": False, "error": repr(e)}
    print(json.dumps(result), flush=True)
    sys.exit(0 if result.get("ok") else 1)


if __name__ == "__main__":
    main()

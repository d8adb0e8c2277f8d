#!/usr/bin/env python3
"""Deterministic request/response + streaming demo service (stdlib only).

Line protocol, one request per line; the same requests always give the same bytes,
so a replica fed the same client bytes produces the same output:

    GET <n> <seed>\\n    -> n bytes of a deterministic stream (SHA-256 counter mode)
    PUT <n>\\n<n bytes>  -> "OK <sha256 hex of the n bytes>\\n"
    PING <text>\\n       -> "PONG <text>\\n"
    anything else       -> "ERR <reason>\\n"

    python3 services/demo_server.py --port 7000
"""
import argparse
import hashlib
import random
import socket
import socketserver

BLOCK = 32


def stream_bytes(n: int, seed: str, offset: int = 0) -> bytes:
    """Bytes [offset, offset+n) of the deterministic stream named by seed."""
    out = bytearray()
    first, skip = divmod(offset, BLOCK)
    counter = first
    key = seed.encode()
    while len(out) < n + skip:
        out += hashlib.sha256(key + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[skip:skip + n])


class DemoHandler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            line = self.rfile.readline(4096)
            if not line:
                break
            words = line.decode("ascii", "replace").split()
            try:
                self.answer(words)
            except (BrokenPipeError, ConnectionResetError):
                return
        self.connection.shutdown(socket.SHUT_WR)

    def answer(self, words):
        cmd = words[0].upper() if words else ""
        if cmd == "GET" and len(words) == 3 and words[1].isdigit():
            n, sent = int(words[1]), 0
            while sent < n:
                chunk = min(65536, n - sent)
                self.wfile.write(stream_bytes(chunk, words[2], sent))
                sent += chunk
        elif cmd == "PUT" and len(words) == 2 and words[1].isdigit():
            n, digest = int(words[1]), hashlib.sha256()
            while n:
                data = self.rfile.read(min(65536, n))
                if not data:
                    return
                digest.update(data)
                n -= len(data)
            self.wfile.write(f"OK {digest.hexdigest()}\n".encode())
        elif cmd == "PING":
            salt = f" {random.getrandbits(32):08x}" if self.server.nondeterministic else ""
            self.wfile.write(("PONG " + " ".join(words[1:]) + salt + "\n").encode())
        else:
            self.wfile.write(b"ERR unknown request\n")
        self.wfile.flush()


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024
    nondeterministic = False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=7000)
    ap.add_argument("--nondeterministic", action="store_true",
                    help="add random bytes to PONG answers (breaks the determinism ftcp needs)")
    args = ap.parse_args()
    with Server((args.host, args.port), DemoHandler) as srv:
        srv.nondeterministic = args.nondeterministic
        print(f"demo server listening on {args.host}:{args.port}", flush=True)
        srv.serve_forever()


if __name__ == "__main__":
    main()

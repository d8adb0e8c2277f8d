#!/usr/bin/env python3
"""1-byte request/response round trips over one connection to an echo server.

    latency_client.py HOST PORT COUNT    prints {"rtt_us": [...]} (one per round trip)
"""
import json
import socket
import sys
import time


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    s = socket.create_connection((host, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    clock = time.perf_counter_ns
    for _ in range(100):  # warm up: ARP, caches, the server's thread
        s.sendall(b"x")
        s.recv(1)
    for _ in range(count):
        t0 = clock()
        s.sendall(b"x")
        if s.recv(1) != b"x":
            raise SystemExit("echo server answered wrongly")
        rtts.append((clock() - t0) / 1000.0)
    s.close()
    print(json.dumps({"rtt_us": rtts}))


if __name__ == "__main__":
    main()

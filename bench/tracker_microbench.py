"""Micro-benchmark of the capture hot path: parse_frame + Tracker.feed + take_c2s.

Builds ~200k frames in memory (a few bulk client->server connections, 1448-byte payloads
with the NOP,NOP,TS option Linux sends, the server ACKing every second segment as delayed
ACK does, a little reordering) and prints JSON on stdout.

    .venv/bin/python bench/tracker_microbench.py [--frames N] [--conns N] [--repeat N] [--profile]
"""
from __future__ import annotations

import cProfile
import gc
import hashlib
import json
import pstats
import random
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_parser, provenance, results_file, write  # noqa: E402
from ftcp.agent.packet import (ACK, PSH, SYN, internet_checksum, ip_int, parse_frame,  # noqa: E402
                               tcp_pseudo_header)
from ftcp.agent.tracker import Tracker  # noqa: E402

MSS = 1448
SVC_IP = ip_int("10.0.0.2")
SVC_PORT = 7000
MAC_C = bytes.fromhex("020000000001")
MAC_S = bytes.fromhex("020000000002")
_ETH_IP = b"\x08\x00"
_IP = struct.Struct("!BBHHHBBHII")
_TCP = struct.Struct("!HHIIBBHHH")
_TS = struct.Struct("!III")


def frame(src, dst, sport, dport, seq, ack, flags, payload=b"", ts=None, syn=False, window=502):
    if syn:
        opts = b"\x02\x04\x05\xb4\x04\x02" + b"\x08\x0a" + struct.pack("!II", ts[0], ts[1]) + b"\x01\x03\x03\x07"
    elif ts is not None:
        opts = _TS.pack(0x0101080A, ts[0], ts[1])
    else:
        opts = b""
    tcp = _TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (20 + len(opts)) // 4 << 4, flags,
                    window, 0, 0) + opts
    check = internet_checksum(tcp_pseudo_header(src, dst, len(tcp) + len(payload)) + tcp + payload)
    tcp = tcp[:16] + struct.pack("!H", check) + tcp[18:]
    total = 20 + len(tcp) + len(payload)
    ip = _IP.pack(0x45, 0, total, 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    mac_d, mac_s = (MAC_S, MAC_C) if dst == SVC_IP else (MAC_C, MAC_S)
    return mac_d + mac_s + _ETH_IP + ip + tcp + payload


def build(n_frames, n_conns, seed=1):
    rnd = random.Random(seed)
    frames = []
    sent = {}
    state = []
    for i in range(n_conns):
        cip = ip_int(f"10.0.1.{i + 1}")
        cport = 40000 + i
        isn_c = rnd.getrandbits(32)
        isn_s = rnd.getrandbits(32)
        frames.append(frame(cip, SVC_IP, cport, SVC_PORT, isn_c, 0, SYN, ts=(1000, 0), syn=True, window=64240))
        frames.append(frame(SVC_IP, cip, SVC_PORT, cport, isn_s, isn_c + 1, SYN | ACK, ts=(5000, 1000),
                            syn=True, window=65160))
        frames.append(frame(cip, SVC_IP, cport, SVC_PORT, isn_c + 1, isn_s + 1, ACK, ts=(1001, 5000)))
        state.append({"cip": cip, "cport": cport, "seq": isn_c + 1, "ack": isn_s + 1, "tc": 1002, "ts": 5001,
                      "n": 0, "held": None})
        sent[(cip, cport)] = hashlib.sha256()
    # a pool of payload bytes to slice from, so frames differ without random() per byte
    pool = rnd.randbytes(1 << 20)
    while len(frames) < n_frames:
        st = state[rnd.randrange(n_conns)]
        pos = rnd.randrange(len(pool) - MSS)
        payload = pool[pos:pos + MSS]
        sent[(st["cip"], st["cport"])].update(payload)
        f = frame(st["cip"], SVC_IP, st["cport"], SVC_PORT, st["seq"], st["ack"], PSH | ACK, payload,
                  ts=(st["tc"], st["ts"]))
        st["seq"] += MSS
        st["tc"] += 1
        st["n"] += 1
        if st["held"] is not None:
            # the held-back segment arrives one later: a swap, as a reordering network gives
            frames.append(f)
            frames.append(st["held"])
            st["held"] = None
        elif rnd.random() < 0.002:
            st["held"] = f
        else:
            frames.append(f)
        if st["n"] % 2 == 0 and st["held"] is None:
            frames.append(frame(SVC_IP, st["cip"], SVC_PORT, st["cport"], st["ack"], st["seq"], ACK,
                                ts=(st["ts"], st["tc"] - 1), window=3000))
            st["ts"] += 1
    digests = {k: h.hexdigest() for k, h in sent.items()}
    return frames, digests, {(s["cip"], s["cport"]) for s in state if s["held"] is not None}


def run(frames, batch=256):
    """The timed loop: what the capture thread and the writer do. Hashing happens afterwards."""
    tracker = Tracker({(SVC_IP, SVC_PORT): "bench"}, log_cap=1 << 40)
    chunks = {}
    feed = tracker.feed
    take_dirty = tracker.take_dirty
    now = 1000.0
    t0 = time.perf_counter()
    i = 0
    for f in frames:
        feed(parse_frame(f), now)
        i += 1
        if i == batch:
            i = 0
            for c in take_dirty():
                data = c.take_c2s()
                if data:
                    chunks.setdefault(c.id, []).append(data)
    for c in take_dirty():
        data = c.take_c2s()
        if data:
            chunks.setdefault(c.id, []).append(data)
    elapsed = time.perf_counter() - t0
    got = {}
    for cid, parts in chunks.items():
        h = got[cid] = hashlib.sha256()
        for part in parts:
            h.update(part)
    return elapsed, tracker, got


def time_parse(frames):
    t0 = time.perf_counter()
    for f in frames:
        parse_frame(f)
    return time.perf_counter() - t0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = bench_parser("tracker_microbench", __doc__, smoke="5,000 frames, one repeat (for CI)")
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-gc", action="store_true", help="time with the cyclic GC off")
    ap.add_argument("--profile", action="store_true", help="cProfile one run, stats on stderr")
    args = ap.parse_args(argv)
    if args.smoke:
        args.frames, args.repeat = 5000, 1
    out = results_file(args.out, "tracker_microbench", args.smoke)
    data = provenance(args, ["bench/tracker_microbench.py", *argv], "smoke" if args.smoke else "full")

    frames, digests, unfinished = build(args.frames, args.conns)
    n = len(frames)
    gc.collect()
    if args.no_gc:
        gc.disable()
    if args.profile:
        pr = cProfile.Profile()
        pr.enable()
        run(frames)
        pr.disable()
        pstats.Stats(pr, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    best = None
    for _ in range(args.repeat):
        elapsed, tracker, got = run(frames)
        best = elapsed if best is None or elapsed < best else best
    parse_best = min(time_parse(frames) for _ in range(args.repeat))
    gc.enable()

    conns = list(tracker.conns.values())
    ok = all(
        got.get(c.id) is not None and got[c.id].hexdigest() == digests[(c.client_ip, c.client_port)]
        for c in conns if (c.client_ip, c.client_port) not in unfinished
    )
    payload_bytes = sum(c.c2s_logged for c in conns)
    data.update({
        "frames": n,
        "connections": len(conns),
        "seconds": round(best, 4),
        "packets_per_s": round(n / best),
        "us_per_packet": round(best / n * 1e6, 3),
        "parse_only_us_per_packet": round(parse_best / n * 1e6, 3),
        "payload_MB": round(payload_bytes / 1e6, 1),
        "payload_Mbit_per_s": round(payload_bytes * 8 / best / 1e6),
        "all_protected": all(c.status == "protected" for c in conns),
        "streams_match_sha256": ok,
        "gc": not args.no_gc,
        "python": sys.version.split()[0],
        "ok": ok,
    })
    write(out, data)
    print(json.dumps(data, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

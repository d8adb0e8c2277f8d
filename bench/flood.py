"""The backup agent's memory under a client-side flood, while a real connection stays protected.

    sudo .venv/bin/python -m bench.flood [--plot] [--smoke]

One lab (the demo service on p1 and b1, the agent with its default limits). c1 runs
request/response against the primary (services/client.py reqresp, one request every
5 ms) all through the run. c2, the attacker, then sends through its own switch port:
(a) ``--syns`` SYNs to the service from spoofed 10.0.1.X, 10,000 source ports each;
(b) ``--acks`` ACK-only segments, random seq/ack, from spoofed 10.0.2.X; (c) ``--ooo``
one-byte segments on one real connection c2 opened to the service, segment i at
c2s_next + 2 + i (a hole at c2s_next, never filled). (a) and (b) are
tests/support/forge.py; forge cannot step the sequence number, so (c) is sent by this
file (``ooo-send``, with forge's segment builder, run on c2). Every 0.5 s it samples the
agent's RSS and CPU, Redis's used_memory and records, and the agent's heartbeat
(conns, refused, evicted, ooo_total, out_of_window, bad_checksum, kernel_drops,
packets). ``--settle`` s after the floods (longer than the agent's 10 s embryonic
timeout) the primary's link goes down; the run passes only if c1's client finished
with every answer right and its connection was taken over. Results:
bench/results/flood.json (flood-smoke.json with --smoke) and, with --plot, flood.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import RESULTS, lab_lock, provenance, write
from ftcp.agent.tracker import Limits
from ftcp.store import Store, svc_conns_key
from topology.lab import PRIMARY_IP, ROOT, SERVICES, Lab, LabError, failover_settled, wait_for

PORT, SVC, PRIMARY_MAC, INTERVAL = 7000, f"{PRIMARY_IP}:7000", "00:00:00:00:00:10", 0.005
ON_C2 = f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m "
BEAT = ("conns", "refused", "evicted", "ooo_total", "out_of_window", "bad_checksum", "kernel_drops", "packets")
# c2's own connection to the service: one PING answered, then it waits (never sends again)
HOLD = ("import socket; s = socket.create_connection(('10.0.0.10', 7000)); s.sendall(b'PING hold\\n'); "
        "print(s.recv(100), s.getsockname(), flush=True); s.recv(1)")


def ooo_send(iface, src, dst, seq, ack, count) -> int:
    """On c2: ``count`` one-byte PA segments src->dst at seq, seq+1, ...; prints how many."""
    from tests.support.forge import address, segment
    (s, sport), (d, dport) = address(src), address(dst)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    own = bytes.fromhex(Path(f"/sys/class/net/{iface}/address").read_text().strip().replace(":", ""))
    eth = bytes.fromhex(PRIMARY_MAC.replace(":", "")) + own + b"\x08\x00"
    for i in range(int(count)):
        sock.send(eth + segment(s, d, sport, dport, int(seq) + i, int(ack), 0x18, b"x"))
    print(count)
    return 0


def on_c2(lab, module: str, *args) -> int:
    rc, out, err = lab.run("c2", ON_C2 + module + " " + " ".join(shlex.quote(str(a)) for a in args), timeout=900)
    if rc:
        raise LabError(f"{module} on c2 failed ({rc}): {err[-500:]}")
    return int(out.strip())


def port_stats() -> dict:
    """{port: [rx packets, rx drops, tx packets, tx drops]} of the switch ("?" counts as 0)."""
    text = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-ports", "s1"], capture_output=True, text=True).stdout
    pattern = r"port\s+(\d+): rx pkts=(\S+), bytes=\S+, drop=(\S+),.*?\n\s+tx pkts=(\S+), bytes=\S+, drop=(\S+),"
    return {int(m[0]): [int(v) if v.isdigit() else 0 for v in m[1:]] for m in re.findall(pattern, text)}


class Sampler(threading.Thread):
    """Every 0.5 s: agent RSS and CPU, Redis memory and records, the heartbeat, c1's progress."""

    def __init__(self, lab, pid: int, client, t0: float):
        super().__init__(daemon=True)
        self.lab, self.pid, self.client, self.t0 = lab, pid, client, t0
        self.samples, self.stop = [], threading.Event()
        import redis
        self.redis = redis.Redis.from_url(lab.redis.url)   # the URL carries the lab Redis's password

    def run(self):
        r, store = self.redis, Store(self.lab.redis.url)
        hz, last = os.sysconf("SC_CLK_TCK"), None
        while not self.stop.wait(0.5):
            now = time.time()
            status = Path(f"/proc/{self.pid}/status").read_text()
            ticks = sum(map(int, Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
            beat = store.agent_state("b1") or {}
            s = {"t": round(now - self.t0, 2), "agent_rss_kb": int(re.search(r"VmRSS:\s+(\d+)", status)[1]),
                 "agent_cpu": round((ticks - last[1]) / hz / (now - last[0]), 2) if last else None,
                 "redis_used": int(r.info("memory")["used_memory"]), "redis_records": r.scard(svc_conns_key("demo")),
                 "redis_keys": r.dbsize(), "c1_received": self.client.received, **{k: beat.get(k) for k in BEAT}}
            last = (now, ticks)
            self.samples.append(s)


def finish(client, box: dict, timeout: float):
    """Reads c1's progress all along (a full stderr pipe would stall it) and then its result."""
    try:
        box["result"] = client.result(timeout=timeout)
    except (LabError, OSError, ValueError) as e:
        box["result"] = {"ok": False, "error": f"harness: {e!r}"}


def gap_max(result: dict, lo: float, hi: float):
    """c1's longest silence between reads that began in the whole seconds [lo, hi) (wall time)."""
    ms = [v for k, v in (result.get("max_gap_ms_by_second") or {}).items() if int(lo) <= int(k) < hi]
    return max(ms) if ms else None


def experiment(args, data: dict) -> None:
    with lab_lock() as waited:
        data["lock_wait_s"] = waited
        with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=args.run_dir) as lab:
            store = Store(lab.redis.url)
            pid = int(store.agent("b1")["pid"])   # the agent's own os.getpid()
            data["agent_process"] = {"heartbeat_pid": pid, "lab_pid": lab.agent.pid,
                                     "cmdline": Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()}
            client = lab.start_client("c1", "reqresp", PRIMARY_IP, PORT, "--count", args.requests, "--interval",
                                      INTERVAL, "--progress", 0.02)
            box = {}
            drain = threading.Thread(target=finish, args=(client, box, args.requests * INTERVAL * 4 + 300))
            drain.start()
            wait_for(lambda: client.received > 0, 15, "c1's first answers")
            t0 = time.time()
            sampler = Sampler(lab, pid, client, t0)
            sampler.start()
            time.sleep(args.baseline)   # the quiet start of the time series

            def flood(name, runs):
                before, began = port_stats(), time.time()
                sent = sum(run() for run in runs)
                end, after = time.time(), port_stats()
                delta = lambda port, i: after[port][i] - before[port][i]
                # what the switch took in from c2's port (and dropped there), what it sent the mirror
                data["floods"].append({"name": name, "sent": sent, "start": round(began - t0, 2),
                                       "end": round(end - t0, 2), "rate_per_s": round(sent / (end - began)),
                                       "switch_rx_from_c2": delta(2, 0), "switch_rx_drops_c2": delta(2, 1),
                                       "mirrored": delta(5, 2), "mirror_tx_drops": delta(5, 3)})
                print(f"{name}: {sent} sent in {end - began:.1f} s", flush=True)

            def forge(i, n, src, *more):
                return lambda: on_c2(lab, "tests.support.forge", "--iface", "c2-eth0", "--dst-mac", PRIMARY_MAC,
                                     "--src", f"{src}.{i + 1}:0", "--dst", SVC, "--sports", f"20000-{20000 + n - 1}",
                                     "--seed", i, *more)
            chunks = lambda total: [(i, min(10_000, total - i * 10_000)) for i in range(-(-total // 10_000))]
            flood("syn", [forge(i, n, "10.0.1", "--flags", "S", "--random-seq") for i, n in chunks(args.syns)])
            flood("ack", [forge(i, n, "10.0.2", "--flags", "A", "--random-seq", "--random-ack")
                          for i, n in chunks(args.acks)])
            lab.popen("c2", f"exec python3 -c {shlex.quote(HOLD)}", "hold")
            hold = wait_for(lambda: next((dict(r, id=cid) for cid, r in store.conn_fields(
                store.service_conns("demo"), ("client_ip", "client_port", "c2s_next", "s2c_next", "c2s_logged")).items()
                if r.get("client_ip") == "10.0.0.2" and r.get("c2s_logged") == 10), None), 15, "c2's connection")
            data["c2_conn"] = hold
            flood("ooo", [lambda: on_c2(lab, "bench.flood", "ooo-send", "c2-eth0", f"10.0.0.2:{hold['client_port']}",
                                        SVC, hold["c2s_next"] + 2, hold["s2c_next"], args.ooo)])
            time.sleep(args.settle)   # the embryonic records' timeout, seen in the time series
            fields = ("client_ip", "status", "reason", "ooo_bytes")
            conns = store.conn_fields(store.service_conns("demo"), fields)
            c1_id = next((cid for cid, r in conns.items() if r["client_ip"] == "10.0.0.1"), None)
            data["before_failure"] = {"service": store.service("demo")["status"], "conns": conns,
                                      "c1_running": client.proc.poll() is None}
            failed_at = time.time()
            data["failed_at"] = round(failed_at - t0, 2)
            lab.fail_primary("link")
            svc = wait_for(lambda: failover_settled(store), 30, "the failover")
            drain.join()
            sampler.stop.set()
            sampler.join()
            data["agent_vmhwm_kb"] = int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1])
            data["redis_used_memory_peak"] = int(sampler.redis.info("memory")["used_memory_peak"])
            data["final_heartbeat"] = store.agent_state("b1")
    failed = json.loads(svc.get("failed") or "{}")
    data["takeover"] = {"status": svc.get("status"), "step": svc.get("step"), "taken": svc.get("taken"),
                        "failed": failed, "timeline_ms": json.loads(svc.get("timeline_ms") or "{}"),
                        "c1_conn": c1_id, "c1_taken": bool(c1_id) and c1_id not in failed and int(svc.get("taken") or 0) > 0
                        and svc.get("status") == "failed-over"}
    res = box["result"]
    floods = data["floods"]
    data["client"] = {k: res.get(k) for k in ("ok", "error", "requests", "received", "sent", "stall_ms", "max_gap_ms")}
    data["client"]["max_gap_ms_by_phase"] = {
        "baseline": gap_max(res, t0, floods[0]["start"] + t0), "floods": gap_max(res, floods[0]["start"] + t0,
                                                                                 floods[-1]["end"] + t0 + 1),
        "settle": gap_max(res, floods[-1]["end"] + t0 + 1, failed_at), "failover": gap_max(res, failed_at, failed_at + 3)}
    data["samples"] = sampler.samples
    col = lambda k: [s[k] for s in sampler.samples if s.get(k) is not None]
    data["maxima"] = {k: max(col(k), default=None) for k in ("agent_rss_kb", "redis_used", "redis_records", "redis_keys",
                                                              "conns", "ooo_total", "agent_cpu")}
    first = sampler.samples[0] if sampler.samples else {}
    data["counters"] = {k: (data["final_heartbeat"] or {}).get(k) for k in BEAT}
    data["counters"]["kernel_drops_during_run"] = data["counters"]["kernel_drops"] - (first.get("kernel_drops") or 0)


def plot(data: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    s = data["samples"]
    t = [x["t"] for x in s]
    fig, (top, low) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    top.plot(t, [x["agent_rss_kb"] / 1024 for x in s], label="agent RSS")
    top.plot(t, [x["redis_used"] / 2 ** 20 for x in s], label="Redis used_memory")
    top.set_ylabel("MiB")
    low.plot(t, [x["conns"] or 0 for x in s], label="agent records (conns)")
    low.plot(t, [x["redis_records"] for x in s], label="records in Redis")
    low.plot(t, [(x["ooo_total"] or 0) / 1024 for x in s], label="out-of-order KiB held (ooo_total)")
    low.set_yscale("symlog")
    low.set_xlabel("seconds")
    for ax in (top, low):
        for f, color in zip(data["floods"], ("tab:orange", "tab:purple", "tab:green")):
            ax.axvspan(f["start"], f["end"], color=color, alpha=0.2, label=f"{f['name']} flood: {f['sent']:,}"
                       if ax is top else None)
        ax.axvline(data["failed_at"], color="red", ls="--", label="primary link down" if ax is top else None)
        ax.legend(fontsize=8, loc="upper left")
    c, k = data["client"], data["takeover"]
    fig.suptitle(f"backup agent under a client-side flood (commit {data['commit'][:8]}"
                 f"{', dirty' if data['dirty'] else ''}): c1 ok={c['ok']}, taken over={k['c1_taken']}, "
                 f"kernel drops={data['counters']['kernel_drops_during_run']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ooo-send"]:
        return ooo_send(*argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--syns", type=int, default=100_000)
    ap.add_argument("--acks", type=int, default=100_000)
    ap.add_argument("--ooo", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=30_000, help="c1's requests, one per 5 ms: outlasting the floods")
    ap.add_argument("--baseline", type=float, default=3.0)
    ap.add_argument("--settle", type=float, default=12.0, help="seconds from the last flood to the failure")
    ap.add_argument("--smoke", action="store_true", help="tiny floods (for CI)")
    ap.add_argument("--out", help="default bench/results/flood.json (flood-smoke.json with --smoke)")
    ap.add_argument("--plot", action="store_true", help="also draw the .png next to the JSON")
    ap.add_argument("--run-dir", default="/run/ftcp-flood")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("flood: the lab needs root", file=sys.stderr)
        return 2
    if args.smoke:
        args.syns, args.acks, args.ooo, args.requests, args.baseline, args.settle = 2000, 2000, 5000, 4000, 1, 2
    out = Path(args.out) if args.out else RESULTS / ("flood-smoke.json" if args.smoke else "flood.json")
    data = provenance(args, ["bench/flood.py", *argv], "smoke" if args.smoke else "full")
    data.update(limits=dataclasses.asdict(Limits()), agent_args="defaults", floods=[])
    experiment(args, data)
    data["ok"] = bool(data["client"]["ok"] and data["takeover"]["c1_taken"])
    data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write(out, data)
    if args.plot:
        plot(data, out.with_suffix(".png"))
    print(json.dumps({k: data[k] for k in ("floods", "maxima", "counters", "client", "takeover", "ok")}, indent=1))
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

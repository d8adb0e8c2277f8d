"""Benchmark of failover in the real lab: client-observed stall per failure type,
a time-sequence plot of one failover, and 1,000 connections failing over at once.

    .venv/bin/python -m bench.failover_bench [--trials 30] [--conns 1000]

Every trial is a fresh lab: a client streams from the demo service; after 3 MB the
primary fails (link down, server killed, or host silent); the stall is the longest
silence between two reads that brought data, measured by the client itself. With
``--traffic upload`` the client uploads 40 MB instead (PUT, fails after 6 MB) and
the stall is the silence of the acknowledgements its kernel got (TCP_INFO
bytes_acked). Every trial also checks the whole stream byte for byte (SHA-256) and
that the client saw no error. Writes bench/results/failover_bench.json (commit, dirty
flag, arguments, mode first) and failover_*.png; with --smoke, failover_bench-smoke.json
and failover_*-smoke.png (one link-down trial, the time-sequence trial and 20
connections at once; --out for another directory).

Every lab lives under the machine's lab lock. A trial that fails (the lab, the client,
the failover) is kept with outcome "failed" and its error, and counted; the stall
statistics are over the trials that were masked. Exit status 0 only if every trial was
masked and every connection of the many-connections trial resumed.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench.common import bench_parser, lab_lock, not_root, percentile, provenance, tail, write
from ftcp.common.store import Store
from topology.clients import RunningClient
from topology.lab import PRIMARY_IP, ROOT, SERVICES, Lab, LabError, failover_settled, wait_for

PORT = 7000
FAILURES = ("link", "crash", "silent")


def failed_over(store):
    return failover_settled(store)


def stall_trial(run_dir: str, failure: str, capture: Path = None, traffic: str = "stream", lab_cls=Lab) -> dict:
    """One stall trial under the lab lock. Never raises for a failed trial: it comes back
    with outcome "failed" and, if the harness failed, ``harness_error``."""
    rec = {"failure": failure, "traffic": traffic}
    try:
        with lab_lock() as waited:
            rec["lock_wait_s"] = waited
            rec.update(_stall_trial(lab_cls, run_dir, failure, capture, traffic))
    except (LabError, OSError, ValueError, KeyError):
        rec.update(ok=False, stall_ms=None, harness_error=traceback.format_exc(limit=-8))
    rec["outcome"] = "masked" if rec["ok"] and rec.get("status") == "failed-over" else "failed"
    return rec


def _stall_trial(lab_cls, run_dir: str, failure: str, capture: Path, traffic: str) -> dict:
    with lab_cls(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir) as lab:
        store = Store(lab.redis.url)
        dump = None
        if capture is not None:
            dump = lab.popen("c1", f"exec tcpdump -i c1-eth0 -n -U -s 128 -w {capture} tcp port {PORT}", "tcpdump")
            wait_for(lambda: "listening on" in dump.log.read_text(), 10, "tcpdump")
        if traffic == "stream":
            client = RunningClient(lab.host("c1"), "stream", PRIMARY_IP, PORT, "--bytes", 15_000_000,
                                   "--progress", 0.01)
            client.wait_progress(received=3_000_000)
        else:  # upload: the stall is the silence of the acknowledgements the client gets
            client = RunningClient(lab.host("c1"), "upload", PRIMARY_IP, PORT, "--bytes", 40_000_000,
                                   "--progress", 0.01)
            client.wait_progress(sent=6_000_000)
        failed_at = time.time()
        lab.fail_primary(failure)
        svc = wait_for(lambda: failed_over(store), 15, "the failover")
        res = client.result()
        if dump is not None:
            dump.proc.send_signal(2)
            dump.proc.wait(10)
        # The stall: the silence that spans the failure (last byte before it to first
        # byte after it), from the client's own list of silences; and separately the
        # longest silence anywhere in the stream. Bytes already in flight still arrive
        # for a few ms after the failure, so it is the longest of the silences that end
        # after the failure and begin within a second of it (the first one may be a
        # natural 10 ms pause that ends just before a silent host's blackhole takes
        # effect).
        around = [g for g in res.get("gaps", []) if g[0] + g[1] / 1000 >= failed_at and g[0] <= failed_at + 1.0]
        stall = max(g[1] for g in around) if around else None
        return {"failure": failure, "traffic": traffic, "ok": res["ok"], "error": res.get("error"),
                "stall_ms": stall,
                "max_gap_ms": res.get("max_gap_ms"), "max_gap_at": res.get("max_gap_at"),
                "status": svc["status"], "reason": svc.get("reason"),
                "takeover_s": float(svc.get("takeover_seconds") or 0), "failed_at": failed_at,
                "timeline_ms": json.loads(svc.get("timeline_ms") or "{}"),
                "received": res["received"], "sent": res["sent"]}


def many_trial(run_dir: str, count: int, pause_ms: int, seconds: float = 12) -> dict:
    """The many-connections trial under the lab lock; a failed one comes back with
    outcome "failed" and the harness's error."""
    rec = {"connections": count, "pause_ms": pause_ms, "client_seconds": seconds}
    try:
        with lab_lock() as waited:
            rec["lock_wait_s"] = waited
            rec.update(_many_trial(run_dir, count, pause_ms, seconds))
    except (LabError, OSError, ValueError, KeyError):
        rec.update(ok=False, harness_error=traceback.format_exc(limit=-8))
    rec["outcome"] = ("ok" if rec["ok"] and rec.get("status") == "failed-over" and rec.get("resumed") == count
                      else "failed")
    return rec


def _many_trial(run_dir: str, count: int, pause_ms: int, seconds: float) -> dict:
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=run_dir) as lab:
        store = Store(lab.redis.url)
        proc = lab.host("c1").popen(["python3", str(ROOT / "bench/many_client.py"), PRIMARY_IP, str(PORT),
                                     str(count), str(seconds), "--pause", str(pause_ms)],
                                    stdout=subprocess.PIPE, text=True)
        opened = json.loads(proc.stdout.readline())
        ids_ready = wait_for(lambda: len(store.service_conns("demo", "b1")) >= count or None, 60,
                             f"{count} connections recorded")
        time.sleep(2.0)  # a warm-up, not a synchronisation: every connection pings the primary a while
        failed_at = time.time()
        lab.fail_primary("link")
        svc = wait_for(lambda: failed_over(store), 30, "the failover", interval=0.005)
        go_at = time.time()   # the agent's gone is recorded (at most 5 ms late): the backup has gone
        result = json.loads(proc.stdout.read().strip().splitlines()[-1])
        proc.wait(30)
    # A connection has resumed at its first answer after the failover was recorded;
    # answers that were in flight at the failure do not count.
    resumed = []
    for answers in result["answers"]:
        after = [t for t in answers if t > go_at]
        resumed.append(after[0] - failed_at if after else None)
    done = sorted(r for r in resumed if r is not None)
    return {"connections": count, "pause_ms": pause_ms, "requests_per_s": round(count * 1000 / pause_ms),
            "ok": result["ok"], "errors": result["errors"], "taken": int(svc.get("taken", 0)),
            "status": svc["status"], "takeover_s": float(svc.get("takeover_seconds") or 0),
            "failover_recorded_s": go_at - failed_at, "resumed": len(done),
            "first_resume_s": done[0] if done else None, "last_resume_s": done[-1] if done else None,
            "p50_resume_s": percentile(done, 50) if done else None,
            "p90_resume_s": percentile(done, 90) if done else None,
            "spread_s": (done[-1] - done[0]) if done else None, "opened": opened["opened"],
            "recorded_before": bool(ids_ready)}


def time_sequence_plot(capture: Path, failed_at: float, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scapy.layers.inet import IP, TCP
    from scapy.utils import RawPcapReader
    from scapy.layers.l2 import Ether
    data, acks = [], []
    isn_s = None
    for raw, meta in RawPcapReader(str(capture)):
        t = meta.sec + meta.usec / 1e6 if hasattr(meta, "usec") else meta.tshigh
        pkt = Ether(raw)
        if IP not in pkt or TCP not in pkt:
            continue
        tcp = pkt[TCP]
        if pkt[IP].src == PRIMARY_IP:
            if tcp.flags & 0x02:
                isn_s = tcp.seq
            elif isn_s is not None and len(tcp.payload):
                data.append((t - failed_at, ((tcp.seq - isn_s) % 2**32) / 1e6))
        else:
            if isn_s is not None and tcp.flags & 0x10:
                acks.append((t - failed_at, ((tcp.ack - isn_s) % 2**32) / 1e6))
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.scatter([a for a, _ in data], [b for _, b in data], s=2, label="server data segments (seq, MB)")
    ax.plot([a for a, _ in acks], [b for _, b in acks], color="tab:orange", lw=1, label="client ACK (MB)")
    ax.axvline(0, color="red", ls="--", label="primary fails (link down)")
    ax.set_xlim(-0.3, 0.6)
    ax.set_xlabel("seconds from the failure")
    ax.set_ylabel("server->client sequence, MB from the ISN")
    ax.set_title("One failover as the client sees it (tcpdump on c1)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def stall_plot(summary, trials, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 4.5))
    names = {"link": "link down", "crash": "process crash", "silent": "silent host"}
    columns = [(f, "stream", summary[f]) for f in FAILURES if summary.get(f)]
    columns += [(f, "upload", s) for f, s in summary.get("upload", {}).items()]
    for i, (failure, traffic, stats) in enumerate(columns):
        values = [t["stall_ms"] for t in trials if t["failure"] == failure and t.get("traffic", "stream") == traffic
                  and t["stall_ms"] is not None]
        ax.scatter([i] * len(values), values, s=10, alpha=0.6)
        if stats["p50_ms"] is not None:
            ax.hlines(stats["p50_ms"], i - 0.3, i + 0.3, color="black")
        ax.hlines(stats["target_p50_ms"], i - 0.3, i + 0.3, color="red", ls="--")
    ax.set_xticks(range(len(columns)), [f"{names[f]}\n{'download' if t == 'stream' else 'upload'}"
                                        for f, t, _ in columns])
    ax.set_ylabel("client-observed stall, ms (black: p50, red: target p50)")
    ax.set_yscale("log")
    ax.set_title("Failover stall per trial")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _timeline_medians(trials) -> dict:
    """Median ms after the failure was seen of each failover step (controller timeline)."""
    steps = {}
    for t in trials:
        for step, ms in (t.get("timeline_ms") or {}).items():
            steps.setdefault(step, []).append(ms)
    return {step: statistics.median(values) for step, values in steps.items()}


def _summary(trials, failure: str, traffic: str, target_ms: float):
    """Stall statistics over the masked trials with a stall; every trial counted. The
    high end is the maximum, plus the 99th percentile from 100 stalls on."""
    chosen = [t for t in trials if t["failure"] == failure and t.get("traffic", "stream") == traffic]
    if not chosen:
        return None
    masked = [t for t in chosen if t.get("outcome", "masked") == "masked"]
    values = [t["stall_ms"] for t in masked if t["stall_ms"] is not None]
    gaps = [t["max_gap_ms"] for t in masked if t.get("max_gap_ms")]
    return {"trials": len(chosen), "masked": len(masked), "failed": len(chosen) - len(masked),
            "with_stall": len(values), "p50_ms": statistics.median(values) if values else None,
            **({"max_ms": max(values), **tail(values, "ms")} if values else {}), "target_p50_ms": target_ms,
            "byte_exact_no_error": sum(1 for t in chosen if t["ok"]),
            "takeover_p50_ms": statistics.median(t["takeover_s"] for t in masked) * 1000 if masked else None,
            "longest_silence_anywhere_p50_ms": statistics.median(gaps) if gaps else None,
            "timeline_p50_ms": _timeline_medians(masked)}


def verdict(trials: list, seq_trial, many) -> list:
    """What went wrong: the run passes when this is empty."""
    problems = [f"stall trial {i} ({t['failure']}, {t.get('traffic', 'stream')}) failed"
                for i, t in enumerate(trials) if t.get("outcome") == "failed"]
    if seq_trial is not None and seq_trial["outcome"] != "masked":
        problems.append("the time-sequence trial failed")
    if many is not None and many["outcome"] != "ok":
        problems.append(f"many connections: {many.get('resumed')} of {many['connections']} resumed, "
                        f"client ok {many.get('ok')}, status {many.get('status')}")
    return problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = bench_parser("failover_bench", __doc__, out="dir", run_dir="/run/ftcp-bench",
                      smoke="one link-down stall trial, the time-sequence trial, 20 connections for 6 s (for CI)")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--pause-ms", type=int, default=200,
                    help="each of the --conns connections pings, waits for the answer, pauses this long")
    ap.add_argument("--many-seconds", type=float, default=12.0,
                    help="how long the --conns connections run after they are all open")
    ap.add_argument("--only-many", action="store_true", help="only the many-connections trial")
    ap.add_argument("--trials-from", nargs="+",
                    help="take the stall trials from earlier runs' output (JSON lines), e.g. of --trials-only")
    ap.add_argument("--trials-only", action="store_true", help="run the stall trials, print them, stop")
    ap.add_argument("--failures", nargs="+", choices=FAILURES, default=list(FAILURES),
                    help="the failures to run stall trials of (default: all)")
    ap.add_argument("--traffic", nargs="+", choices=("stream", "upload"), default=["stream"],
                    help="what the client does in the stall trials: stream (download) and/or upload")
    args = ap.parse_args(argv)
    if not_root("failover_bench"):
        return 2
    if args.smoke:
        args.trials, args.failures, args.traffic, args.conns, args.many_seconds = 1, ["link"], ["stream"], 20, 6.0
    suffix = "-smoke" if args.smoke else ""
    mode = "smoke" if args.smoke else "only-many" if args.only_many else "full"
    data = provenance(args, ["bench/failover_bench.py", *argv], mode)
    data["agent_args"] = "the lab's defaults"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trials = []
    if args.only_many:
        args.trials = 0
    if args.trials_from:
        trials = [json.loads(line) for path in args.trials_from for line in Path(path).read_text().splitlines()
                  if line.startswith('{"failure"')]
        args.trials = 0
    for i in range(args.trials):
        for traffic in args.traffic:
            for failure in args.failures:  # interleaved, so drift is shared by all of them
                trial = stall_trial(args.run_dir, failure, traffic=traffic)
                trials.append(trial)
                print(json.dumps(trial), flush=True)
    if args.trials_only:
        return 0 if all(t["outcome"] == "masked" for t in trials) else 1
    seq_trial = None
    if not args.only_many:
        capture = Path(args.run_dir + "-pcap")
        capture.mkdir(parents=True, exist_ok=True)
        seq_trial = stall_trial(args.run_dir, "link", capture=capture / "failover.pcap")
        if seq_trial["outcome"] == "masked":
            time_sequence_plot(capture / "failover.pcap", seq_trial["failed_at"],
                               out / f"failover_timeseq{suffix}.png")
    many = many_trial(args.run_dir, args.conns, args.pause_ms, args.many_seconds)
    print(json.dumps(many), flush=True)
    if args.only_many:
        # Re-run of the many-connections trial alone: update that entry of the results.
        path = out / "failover_bench.json"
        old = json.loads(path.read_text())
        old["summary"]["many"] = dict(many, rerun=data)
        write(path, old)
        return 0 if many["outcome"] == "ok" else 1
    from ftcp.common.config import load
    lab_probe = load(ROOT / "switch_config/services-lab.yaml").probe
    probe = {"interval_ms": lab_probe.interval * 1000, "misses": lab_probe.misses}
    targets = {"link": 50.0, "crash": 100.0, "silent": probe["interval_ms"] * probe["misses"] + 50.0}
    summary = {failure: _summary(trials, failure, "stream", targets[failure]) for failure in FAILURES}
    uploads = {failure: _summary(trials, failure, "upload", targets[failure]) for failure in FAILURES}
    summary["upload"] = {failure: value for failure, value in uploads.items() if value}
    summary["many"] = many
    summary["probe"] = probe
    data["problems"] = verdict(trials, seq_trial, many)
    data["ok"] = not data["problems"]
    data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data.update(summary=summary, trials=trials, timeseq_trial=seq_trial)
    write(out / f"failover_bench{suffix}.json", data)
    stall_plot(summary, trials, out / f"failover_stall{suffix}.png")
    print(json.dumps({k: data[k] for k in ("summary", "problems", "ok")}, indent=1))
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

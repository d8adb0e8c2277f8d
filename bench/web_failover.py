"""Keep-alive HTTP across failures of the primary: masked fraction and stall, in the real lab.

    .venv/bin/python -m bench.web_failover [--trials 20] [--strict-trials 5] [--plot]

Each trial is a fresh lab (the lab's ``web`` service: Debian's nginx serving a 20 KB
file on the primary and the backup) and one HTTP/1.1 keep-alive client on c1 that
fetches the file every 3 ms, checking every response whole (services/client.py http).
The failure comes once the two servers' outputs are known to differ -- a ``Date``
written in another second, seen by the agent (``divergent_bytes`` in Redis with
``divergence: aligned``; the connection unprotected with ``strict``) -- plus a random
0-0.5 s, so every trial fails over a connection whose Dates differed.

For each failure type (link, crash, silent) it runs ``--trials`` trials with
``divergence: aligned`` and ``--strict-trials`` with ``strict``, interleaved round by
round so machine drift hits both alike. Per trial it records the outcome -- masked
(the client finished every request with every byte right), reset (the connection was
reset: the client saw no wrong byte), or failed (anything else: a wrong byte, a hang,
a harness error, all kept, never dropped) -- and two silences from the client's own
gaps between reads: the stall (the longest silence that began within 0.2 s of the
failure) and the baseline (the longest in the whole seconds before it, in the same
trial: what the client sees without a failover). Results: bench/results/web_failover.json (commit, dirty flag,
arguments, mode) and, with --plot, bench/results/web_failover.png.
"""
from __future__ import annotations

import json
import random
import statistics
import sys
import time
import traceback

from bench.common import bench_parser, lab_lock, not_root, provenance, results_file, write
from ftcp.common.store import Store
from topology.lab import PRIMARY_IP, SERVICES, Lab, LabError, failover_settled, wait_for

PORT = 7000
REQUESTS = 2000
FAILURES = ("link", "crash", "silent")


def _conn(store) -> dict:
    rows = store.conn_fields("b1", store.service_conns("demo", "b1"), ("status", "reason", "divergent_bytes"))
    return next(iter(rows.values())) if len(rows) == 1 else {}


def _differs(store, divergence: str):
    """The connection's record once the servers' outputs were seen to differ."""
    conn = _conn(store)
    if divergence == "aligned":
        return conn if (conn.get("divergent_bytes") or 0) > 0 or conn.get("status") == "unprotected" else None
    return conn if conn.get("status") == "unprotected" else None


def outcome_of(result: dict) -> str:
    if result.get("ok"):
        return "masked"
    if "ConnectionResetError" in (result.get("error") or ""):
        return "reset"
    return "failed"


def silences(result: dict, failed_at: float) -> tuple:
    """(stall, baseline) in ms from the client's gaps between reads: the longest
    silence that began within 0.2 s of the failure (the client lists those over
    10 ms), and the longest that began in a whole second before the failure's (the
    client keeps each second's longest, of any length)."""
    near = [ms for began, ms, _ in result.get("gaps") or [] if failed_at - 0.2 <= began <= failed_at + 5]
    before = [ms for second, ms in (result.get("max_gap_ms_by_second") or {}).items()
              if int(second) + 1 < failed_at - 0.2]
    return (max(near) if near else None), (max(before) if before else None)


def trial(index: int, failure: str, divergence: str, delay: float, run_dir: str) -> dict:
    rec = {"index": index, "failure": failure, "divergence": divergence, "delay_s": round(delay, 3)}
    began = time.monotonic()
    try:
        with lab_lock() as waited:
            rec["lock_wait_s"] = waited
            with Lab(service_cmd=SERVICES["web"], service_port=PORT, run_dir=run_dir, divergence=divergence) as lab:
                store = Store(lab.redis.url)
                client = lab.start_client("c1", "http", PRIMARY_IP, PORT, "--count", REQUESTS, "--interval", 0.003,
                                          "--progress", 0.02)
                started = time.time()
                seen = wait_for(lambda: _differs(store, divergence), 10, "the outputs to differ")
                rec["differed_after_s"] = round(time.time() - started, 3)
                time.sleep(delay)   # the moment of the failure is the experiment's variable
                rec["before_failure"] = _conn(store) or seen
                rec["failed_at"] = time.time()
                lab.fail_primary(failure)
                svc = wait_for(lambda: failover_settled(store), 15, "the failover")
                result = client.result()
                rec.update(status=svc.get("status"), taken=svc.get("taken"), reason=svc.get("reason"),
                           timeline_ms=json.loads(svc.get("timeline_ms") or "{}"))
        rec.update(ok=result["ok"], client_error=result.get("error"), requests=result.get("requests"),
                   received=result["received"], outcome=outcome_of(result))
        rec["stall_ms"], rec["baseline_ms"] = silences(result, rec["failed_at"])
    except (LabError, OSError, ValueError, KeyError):
        rec.update(outcome="failed", error=traceback.format_exc(limit=-8))
    rec["trial_s"] = round(time.monotonic() - began - rec.get("lock_wait_s", 0), 1)
    return rec


def summarize(trials: list) -> dict:
    out = {}
    for failure in FAILURES:
        for divergence in ("aligned", "strict"):
            chosen = [t for t in trials if t["failure"] == failure and t["divergence"] == divergence]
            if not chosen:
                continue
            masked = [t for t in chosen if t["outcome"] == "masked"]
            stalls = [t["stall_ms"] for t in masked if t.get("stall_ms") is not None]
            base = [t["baseline_ms"] for t in masked if t.get("baseline_ms") is not None]
            out[f"{failure} {divergence}"] = {
                "trials": len(chosen), "masked": len(masked),
                "reset": sum(t["outcome"] == "reset" for t in chosen),
                "failed": sum(t["outcome"] == "failed" for t in chosen),
                # fewer than 100 trials: the maximum, not a percentile
                "stall_ms_median": round(statistics.median(stalls), 1) if stalls else None,
                "stall_ms_max": round(max(stalls), 1) if stalls else None,
                "baseline_ms_median": round(statistics.median(base), 1) if base else None,
                "stall_over_baseline": (round(statistics.median(stalls) / statistics.median(base), 2)
                                        if stalls and base and statistics.median(base) else None),
            }
    return out


def plot(data: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [f for f in FAILURES if f"{f} aligned" in data["summary"]]
    for i, failure in enumerate(names):
        for j, divergence in enumerate(("aligned", "strict")):
            s = data["summary"].get(f"{failure} {divergence}")
            if s:
                x = i + (j - 0.5) * 0.38
                left.bar(x, s["masked"] / s["trials"], width=0.36, color="tab:green" if j == 0 else "tab:gray",
                         label=divergence if i == 0 else None)
                left.text(x, s["masked"] / s["trials"] + 0.02, f"{s['masked']}/{s['trials']}", ha="center")
        stalls = [t["stall_ms"] for t in data["trials"] if t["failure"] == failure and t["divergence"] == "aligned"
                  and t["outcome"] == "masked" and t.get("stall_ms") is not None]
        base = [t["baseline_ms"] for t in data["trials"] if t["failure"] == failure and t["divergence"] == "aligned"
                and t["outcome"] == "masked"]
        right.scatter([i - 0.1] * len(stalls), stalls, color="tab:red", s=14,
                      label="stall at failover" if i == 0 else None)
        right.scatter([i + 0.1] * len(base), base, color="tab:blue", s=14,
                      label="longest silence before it" if i == 0 else None)
    left.set_xticks(range(len(names)), names)
    left.set_ylim(0, 1.15)
    left.set_ylabel("keep-alive connections masked")
    left.legend(title="divergence")
    right.set_xticks(range(len(names)), names)
    right.set_yscale("log")
    right.set_ylabel("ms (client's longest gap between reads)")
    right.legend()
    fig.suptitle(f"nginx, HTTP/1.1 keep-alive GET every 3 ms, failure of the primary "
                 f"(commit {data['commit'][:8]}{', dirty' if data['dirty'] else ''})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = bench_parser("web_failover", __doc__, smoke="one aligned crash trial (for CI)", run_dir="/run/ftcp-webbench",
                      plot="also draw the .png next to the JSON (bench/results/web_failover.png)")
    ap.add_argument("--trials", type=int, default=20, help="aligned trials per failure type")
    ap.add_argument("--strict-trials", type=int, default=5, help="strict trials per failure type")
    ap.add_argument("--failures", default=",".join(FAILURES))
    ap.add_argument("--seed", default="1")
    args = ap.parse_args(argv)
    if not_root("web_failover"):
        return 2
    failures = [f for f in args.failures.split(",") if f]
    if any(f not in FAILURES for f in failures):
        ap.error(f"--failures: each one of {', '.join(FAILURES)}")
    if args.smoke:
        failures, args.trials, args.strict_trials = ["crash"], 1, 0
    out = results_file(args.out, "web_failover", args.smoke)
    data = provenance(args, sys.argv if argv is None else ["bench/web_failover.py", *argv],
                      "smoke" if args.smoke else "full")
    data.update(agent_args="the lab's defaults", requests_per_client=REQUESTS, trials=[], summary={})
    rng = random.Random(args.seed)
    index = 0
    for round_ in range(max(args.trials, args.strict_trials)):
        for failure in failures:
            for divergence, wanted in (("aligned", args.trials), ("strict", args.strict_trials)):
                if round_ >= wanted:
                    continue
                rec = trial(index, failure, divergence, rng.uniform(0, 0.5), args.run_dir)
                index += 1
                data["trials"].append(rec)
                data["summary"] = summarize(data["trials"])
                write(out, data)
                print(f"trial {rec['index']:3d} {failure:<6} {divergence:<7} {rec['outcome']:<6} "
                      f"stall {rec.get('stall_ms')} ms (baseline {rec.get('baseline_ms')}) "
                      f"{rec.get('client_error') or rec.get('error') or ''}"[:200], flush=True)
    data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write(out, data)
    if args.plot:
        plot(data, out.with_suffix(".png"))
    print(json.dumps(data["summary"], indent=1))
    return 0 if all(t["outcome"] != "failed" for t in data["trials"]) else 1


if __name__ == "__main__":
    sys.exit(main())

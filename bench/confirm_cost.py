"""What the failover *confirmation* settings cost in client-observed stall, in the real lab.

    .venv/bin/python -m bench.confirm_cost [--trials 15] [--out bench/results/confirm_cost.json]
    .venv/bin/python -m bench.confirm_cost --smoke --out FILE   # one trial per setting (CI)

Two pairs of settings, each trial a fresh lab (bench.failover_bench.stall_trial: c1
streams 15 MB from the demo service, the primary fails after 3 MB, the stall is the
silence around the failure as the client measured it, every byte checked by SHA-256):

* ``probe.refusals`` 1 vs 2 on the "crash" failure (the server is SIGKILLed, its kernel
  answers the probes with RSTs; with 2 the first RST re-probes at once and only the
  second condemns);
* ``probe.link_confirm`` 0 vs 0.05 s on the "link" failure (the primary's link goes
  down; with 0.05 the failover waits until it has stayed down 50 ms).

Interleaved, A, B, A, B ... per round (crash refusals=1, crash refusals=2, link 0,
link 0.05), so machine drift hits both settings of a pair alike. Each Lab is created
with ``probe=`` overrides of the services file's probe section and lives entirely under
the machine's lab lock (stall_trial takes it; waiting is normal).

Per trial it keeps what stall_trial returns (ok, stall_ms, status, ...), the controller's
timeline_ms and reason from the service's final record in Redis (read before the lab
stops), the probe section the lab actually
ran with, the service_* events with their times relative to the failure (the timeline
starts at "detected", i.e. *after* the confirmation; the events show the confirmation
itself), and the ftcp lines of ryu.log about the failover. A trial that fails (lab,
failover, client not byte-exact) is kept with its error, never dropped; the summary's
stall statistics count only the trials that passed. Each trial's ryu.log is also kept
in <run-dir>-logs/ (emptied at the start of a run). "commit" is HEAD at the start,
"commit_at_last_trial" at the last one: every lab runs the code on disk when it starts.
Exit status 0 only if every trial passed.
"""
from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path

import yaml

from bench import failover_bench
from bench.common import bench_parser, git, not_root, provenance, results_file, write
from bench.failover_bench import stall_trial
from ftcp.common.store import Store
from topology.lab import Lab, wait_for

RUN_DIR = "/run/ftcp-confirm"
STREAM_BYTES = 15_000_000        # what stall_trial's stream client asks for
# (name, failure, probe overrides); pairs are (A, B) in this order
SETTINGS = (
    ("crash refusals=1", "crash", {"refusals": 1}),
    ("crash refusals=2", "crash", {"refusals": 2}),
    ("link link_confirm=0", "link", {"link_confirm": 0.0}),
    ("link link_confirm=0.05", "link", {"link_confirm": 0.05}),
)
PAIRS = (("crash refusals=1", "crash refusals=2"), ("link link_confirm=0", "link link_confirm=0.05"))
LOG_KEEP = ("failing over", "refused", "link", "held", "releasing", "is failed-over", "is failover-failed",
            "no failover", "ERROR", "Traceback", "error")


class _EvidenceLab(Lab):
    """A Lab with the probe overrides of the trial; on exit it keeps, for the trial
    record, the service events from Redis and the ryu.log lines about the failover."""

    probe_override: dict = {}
    last: dict = {}

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("probe", dict(self.probe_override))
        super().__init__(*args, **kwargs)

    def __enter__(self):
        try:
            return super().__enter__()
        except BaseException:
            self._keep_log(_EvidenceLab.last)   # the next lab would empty the run dir
            raise

    def __exit__(self, *exc):
        info = _EvidenceLab.last
        try:
            try:
                info["probe_effective"] = yaml.safe_load(self.config_path.read_text()).get("probe")
            except Exception as e:   # evidence only
                info["probe_effective_error"] = repr(e)
            try:
                store = Store(self.redis.url)
                if exc[0] is None:
                    try:
                        wait_for(lambda: (store.service("demo") or {}).get("timeline_ms"), 3, "timeline_ms")
                    except Exception:
                        pass
                info["final_record"] = store.service("demo")
                info["events"] = [dict(record, id=event_id) for event_id, record in store.events()
                                  if record.get("kind", "").startswith(("service_", "link_flap", "failover_"))]
            except Exception as e:
                info["events_error"] = repr(e)
            return super().__exit__(*exc)
        finally:
            self._keep_log(info)

    def _keep_log(self, info: dict):
        try:
            log = self.run_dir / "ryu.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            info["ryu_log"] = [line for line in text.splitlines()
                               if any(k in line for k in LOG_KEEP) and "cookie=" not in line][:60]
            keep = Path(str(self.run_dir) + "-logs")
            keep.mkdir(parents=True, exist_ok=True)
            if log.exists():
                shutil.copy(log, keep / f"trial-{info.get('index', 'x')}-ryu.log")
        except Exception as e:
            info["ryu_log_error"] = repr(e)


def confirm_trial(index: int, setting: str, failure: str, probe: dict, run_dir: str) -> dict:
    """bench.failover_bench.stall_trial (under the lab lock) with the probe overrides and
    the evidence of _EvidenceLab; never raises for a failed trial."""
    lab_cls = type("TrialLab", (_EvidenceLab,), {"probe_override": probe})
    _EvidenceLab.last = {"index": index}
    rec = {"index": index, "setting": setting, "failure": failure, "probe": probe,
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    began = time.monotonic()
    try:
        result = stall_trial(run_dir, failure, lab_cls=lab_cls)
        result["client_error"] = result.pop("error", None)   # "error" here is the harness's
        harness = result.pop("harness_error", None)
        rec.update(result)
        if harness:
            rec["error"] = harness
    except KeyboardInterrupt:
        raise
    except Exception:
        rec["error"] = traceback.format_exc()
    info = _EvidenceLab.last
    info.pop("index", None)
    rec.update(info)
    rec["trial_s"] = round(time.monotonic() - began - rec.get("lock_wait_s", 0), 3)
    final = rec.get("final_record") or {}
    if final:
        # the final record, not the early one stall_trial read (see _EvidenceLab.__exit__)
        rec["timeline_ms_read_by_stall_trial"] = rec.get("timeline_ms")
        rec["timeline_ms"] = json.loads(final.get("timeline_ms") or "{}")
        rec["reason"] = final.get("reason", rec.get("reason"))
        rec["final_status"] = final.get("status")
    if "failed_at" in rec:
        for e in rec.get("events", []):
            e["after_failure_ms"] = round((float(e["time"]) - rec["failed_at"]) * 1000, 1)
        # when the controller recorded the verdict (its timeline's "detected", plus the
        # recorder's delay): unlike the timeline, this includes the confirmation
        first = [e["after_failure_ms"] for e in rec.get("events", []) if e.get("kind") == "service_failing-over"]
        rec["failing_over_recorded_after_failure_ms"] = first[0] if first else None
    # The check: the client finished without error with every byte (SHA-256, the
    # client's own "ok"), all of the stream, and the service failed over.
    problems = []
    if "error" in rec:
        problems.append("harness error")
    else:
        if not rec.get("ok"):
            problems.append(f"client not ok: {rec.get('client_error')}")
        if rec.get("received") != STREAM_BYTES:
            problems.append(f"received {rec.get('received')} of {STREAM_BYTES} bytes")
        if rec.get("status") != "failed-over" or rec.get("final_status", "failed-over") != "failed-over":
            problems.append(f"service {rec.get('status')} / final {rec.get('final_status')}")
        if rec.get("stall_ms") is None:
            problems.append("no silence > 10 ms around the failure in the client's gaps")
    rec["passed"] = not problems
    rec["problems"] = problems
    return rec


def summarize(trials: list) -> dict:
    out = {}
    for name, failure, probe in SETTINGS:
        chosen = [t for t in trials if t["setting"] == name]
        good = [t for t in chosen if t["passed"]]
        stalls = [t["stall_ms"] for t in good]
        fenced = [t["timeline_ms"]["fenced"] for t in good if "fenced" in (t.get("timeline_ms") or {})]
        verdict = [t["failing_over_recorded_after_failure_ms"] for t in good
                   if t.get("failing_over_recorded_after_failure_ms") is not None]
        out[name] = {
            "failure": failure, "probe": probe, "trials": len(chosen), "n": len(good),
            "failed": [{"index": t["index"], "problems": t["problems"], "error": t.get("error")}
                       for t in chosen if not t["passed"]],
            "median_stall_ms": statistics.median(stalls) if stalls else None,
            "max_stall_ms": max(stalls) if stalls else None,
            "min_stall_ms": min(stalls) if stalls else None,
            "median_fenced_ms": statistics.median(fenced) if fenced else None,   # timeline: detected -> fenced
            "median_failing_over_recorded_after_failure_ms": statistics.median(verdict) if verdict else None,
            "median_timeline_ms": failover_bench._timeline_medians(good),
            "reasons": sorted({t.get("reason") or "" for t in good}),
        }
    out["ratios_median_stall_B_over_A"] = {}
    for a, b in PAIRS:
        sa, sb = out[a]["median_stall_ms"], out[b]["median_stall_ms"]
        out["ratios_median_stall_B_over_A"][f"{b} / {a}"] = (sb / sa) if sa and sb is not None else None
    return out


def table(summary: dict) -> str:
    def f(v):
        return "-" if v is None else f"{v:.1f} ms"
    rows = ["| setting | n | median stall | max stall | median detected->fenced | median failure->verdict recorded |",
            "|---|---|---|---|---|---|"]
    for name, _, _ in SETTINGS:
        s = summary[name]
        n = f"{s['n']}" + (f" (+{len(s['failed'])} failed)" if s["failed"] else "")
        rows.append(f"| {name} | {n} | {f(s['median_stall_ms'])} | {f(s['max_stall_ms'])} | "
                    f"{f(s['median_fenced_ms'])} | {f(s['median_failing_over_recorded_after_failure_ms'])} |")
    rows.append("")
    for a, b in PAIRS:
        sa, sb = summary[a]["median_stall_ms"], summary[b]["median_stall_ms"]
        ratio = f"{sb / sa:.2f}" if sa and sb is not None else "-"
        rows.append(f"ratio of medians B/A, {b} / {a}: {ratio}")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = bench_parser("confirm_cost", __doc__, smoke="one trial per setting (for CI)", run_dir=RUN_DIR)
    ap.add_argument("--trials", type=int, default=15, help="trials per setting (4 settings, interleaved)")
    args = ap.parse_args(argv)
    if not_root("confirm_cost"):
        return 2
    if args.smoke:
        args.trials = 1
    out = results_file(args.out, "confirm_cost", args.smoke)
    keep = Path(args.run_dir + "-logs")
    shutil.rmtree(keep, ignore_errors=True)
    doc = provenance(args, ["bench/confirm_cost.py", *(sys.argv[1:] if argv is None else argv)],
                     "smoke" if args.smoke else "full" if args.trials >= 15 else "short")
    doc.update(method={"order": "interleaved per round: " + ", ".join(n for n, _, _ in SETTINGS),
                       "stall": "bench.failover_bench.stall_trial: longest client silence (> 10 ms) that ends "
                                "after the failure and begins within 1 s of it",
                       "client": "stream 15 MB, --progress 0.01, primary fails after 3 MB"},
               agent_args="the lab's defaults", trials=[], summary=None)
    index = 0
    for _ in range(args.trials):
        for name, failure, probe in SETTINGS:
            rec = confirm_trial(index, name, failure, probe, args.run_dir)
            index += 1
            doc["trials"].append(rec)
            print(json.dumps({k: rec.get(k) for k in ("index", "setting", "passed", "problems", "stall_ms",
                                                      "timeline_ms", "reason", "lock_wait_s",
                                                      "failing_over_recorded_after_failure_ms")}), flush=True)
            doc["summary"] = summarize(doc["trials"])
            doc["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            # each lab runs the code on disk when it starts: a commit during the run shows here
            doc["commit_at_last_trial"] = git("rev-parse", "HEAD")
            write(out, doc)   # after every trial: an interrupted run keeps its data
    print(table(doc["summary"]))
    return 0 if all(t["passed"] for t in doc["trials"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())

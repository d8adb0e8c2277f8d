"""The chaos command line (python -m bench.chaos): the trials in order, or those --only
names, each run and appended, the results rewritten after every trial so --resume can
carry on an interrupted run from its file."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import bench.chaos
from bench.chaos import RESULTS, RUN_DIR
from bench.chaos.draw import SIZES
from bench.chaos.report import markdown, summarize
from bench.chaos.trial import run_trial
from bench.common import bench_parser, git, not_root, provenance, results_file, write


def main(argv=None) -> int:
    ap = bench_parser("chaos", bench.chaos.__doc__, smoke="2 trials (for CI), results in chaos-smoke.json",
                      run_dir=RUN_DIR)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", default="1", help="trial i draws from random.Random('<seed>:<i>')")
    ap.add_argument("--resume", metavar="FILE", help="carry on the run recorded in FILE (its seed, into it)")
    ap.add_argument("--evidence", default=str(RESULTS / "chaos-evidence"))
    ap.add_argument("--deadline", type=float, default=60.0, help="a client not done this long after its start hung")
    ap.add_argument("--client-timeout", type=float, default=45.0, help="client.py --timeout (socket silence)")
    ap.add_argument("--settle", type=float, default=15.0,
                    help="seconds to wait, after the clients, for the record to be final")
    ap.add_argument("--keep-all", action="store_true", help="keep evidence of every trial")
    ap.add_argument("--only", type=int, nargs="+", metavar="I", help="run only these trial numbers (to rerun one)")
    ap.add_argument("--force", action="append", metavar="KEY=VALUE",
                    help="replace a draw in every trial, e.g. moment=handshake, fault=controller_kill, "
                         "mix=stream+upload, fault_offset_s=-0.5 (recorded in the trial)")
    args = ap.parse_args(argv)
    if not_root("chaos"):
        return 2
    if args.smoke:
        args.trials = 2
    out = results_file(args.out or args.resume, "chaos", args.smoke)
    out.parent.mkdir(parents=True, exist_ok=True)
    trials, resumed = [], []
    argv_now = sys.argv if argv is None else ["bench/chaos/__main__.py", *argv]
    if args.resume:
        old = json.loads(Path(args.resume).read_text())
        args.seed = old["args"]["seed"]           # the same trials: their draws come from it
        args.force = args.force or old["args"].get("force")
        trials = old["trials"]
        resumed = old.get("resumed", []) + [{"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                             "argv": argv_now, "commit": git("rev-parse", "HEAD"),
                                             "trials_before": len(trials), "previous_commit": old["commit"]}]
        started = old["started"]
        argv_now = old["argv"]
    else:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    mode = "smoke" if args.smoke else "only" if args.only else "full" if args.trials >= 200 else "short"
    data = provenance(args, argv_now, mode)
    data.update(agent_args="the lab's defaults", started=started, finished=None, resumed=resumed, sizes=SIZES,
                trials=trials, summary=summarize(trials))
    interrupted = False
    try:
        done = {t["trial"] for t in trials}
        for index in (args.only or range(args.trials)):
            if index in done:
                continue
            rec = run_trial(index, args, Path(args.evidence))
            trials.append(rec)
            clients = ", ".join(f"{c['host']} {c['mode']} {c['outcome']}" for c in rec.get("clients", []))
            print(f"trial {index:3d} {rec['outcome']:<17} {rec['failure']:<6} {rec['fault']:<17} {rec['moment']:<20} "
                  f"{'+'.join(rec['mix']):<15} off {rec['fault_offset_s'] or 0:+.3f}  [{clients}]  "
                  f"record {(rec.get('record') or {}).get('status')}/{(rec.get('record') or {}).get('step')}  "
                  f"{rec['trial_s']:.1f} s (lock wait {rec['lock_wait_s']:.1f} s)", flush=True)
            data["summary"] = summarize(trials)
            write(out, data)
    except KeyboardInterrupt:
        interrupted = True
        print("chaos: interrupted; the trials done so far are in", out, file=sys.stderr)
    data["finished"] = None if interrupted else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data["interrupted"] = interrupted
    data["summary"] = summarize(trials)
    write(out, data)
    print()
    print(markdown(trials))
    print(f"\nresults: {out}")
    bad = data["summary"]["bad_trials"]
    return 130 if interrupted else (1 if bad else 0)


if __name__ == "__main__":
    raise SystemExit(main())

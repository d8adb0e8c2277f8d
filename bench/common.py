"""What every benchmark shares: its command line's common options, the machine's lab lock,
and how results are named and written."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from topology.lock import lab_lock  # noqa: F401 (the benchmarks take it from here)
from topology.processes import ROOT

RESULTS = ROOT / "bench" / "results"


def bench_parser(name: str, doc: str, *, smoke: str, out: str = "file", run_dir: str = None,
                 plot: str = None) -> argparse.ArgumentParser:
    """The command line every benchmark starts from, for it to add its own options to.

    ``--smoke`` (``smoke`` says what the smoke run is); ``--out``: the results file
    (default: ``results_file``) or, with ``out="dir"``, the directory its results go to
    (default bench/results); where the benchmark has them, ``--run-dir`` (its labs' run
    directory, default ``run_dir``) and ``--plot`` (``plot``: what it draws)."""
    ap = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help=smoke)
    if out == "dir":
        ap.add_argument("--out", default=str(RESULTS), help="directory of the results (default bench/results)")
    else:
        ap.add_argument("--out", help=f"results file (default bench/results/{name}.json, {name}-smoke.json "
                                      "with --smoke)")
    if run_dir is not None:
        ap.add_argument("--run-dir", default=run_dir, help=f"the labs' run directory (default {run_dir})")
    if plot is not None:
        ap.add_argument("--plot", action="store_true", help=plot)
    return ap


def results_file(out, name: str, smoke: bool) -> Path:
    """``--out``, or bench/results/<name>.json (<name>-smoke.json for a smoke run)."""
    return Path(out) if out else RESULTS / f"{name}{'-smoke' if smoke else ''}.json"


def not_root(name: str) -> bool:
    """The lab needs root: say so (True) when this is not it."""
    if os.geteuid() == 0:
        return False
    print(f"{name}: the lab needs root", file=sys.stderr)
    return True


def git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def provenance(args, argv, mode: str) -> dict:
    """The fields every results JSON starts with."""
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain")), "args": vars(args),
            "argv": argv, "mode": mode, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def percentile(values, q: float):
    """The q-th percentile by rank (the value below which q % of the sorted values lie)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def tail(values, unit: str) -> dict:
    """The high end of a sample: ``{"p99_<unit>": ...}`` over 100 values or more; below
    that a 99th percentile is only the maximum under another name, so ``{"max_<unit>": ...}``."""
    if not values:
        return {}
    if len(values) < 100:
        return {f"max_{unit}": max(values)}
    return {f"p99_{unit}": percentile(values, 99)}


def write(path: Path, data: dict):
    """Write a results file whole (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)



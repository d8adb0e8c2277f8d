"""What every lab benchmark shares: the machine's lab lock and how results are written."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
from pathlib import Path

from topology.processes import ROOT

RESULTS = ROOT / "bench" / "results"
# Only one lab runs on a machine at a time (one OVS, one set of host names): each
# trial holds this exclusive flock for its lab's whole life.
LOCK_PATH = "/run/ftcp-lab.lock"


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


@contextlib.contextmanager
def lab_lock():
    """Hold the machine's lab lock; yields the seconds spent waiting for it."""
    began = time.monotonic()
    with open(LOCK_PATH, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield round(time.monotonic() - began, 3)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

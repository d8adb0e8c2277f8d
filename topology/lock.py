"""Only one lab runs on a machine at a time (one Open vSwitch, one bridge s1, one set of
host names and run directories): whoever starts labs holds this exclusive flock while
they run -- a benchmark for each trial, the integration tests for their whole session
(tests/integration/conftest.py), an engineer's shell with ``flock /run/ftcp-lab.lock``.
A process started under the lock (a benchmark run by a smoke test) finds
``FTCP_LAB_LOCK_HELD`` in its environment and does not wait for its own parent."""
from __future__ import annotations

import contextlib
import fcntl
import os
import time

LOCK_PATH = "/run/ftcp-lab.lock"
HELD = "FTCP_LAB_LOCK_HELD"


@contextlib.contextmanager
def lab_lock():
    """Hold the machine's lab lock (unless a parent holds it); yields the seconds spent
    waiting for it."""
    if os.environ.get(HELD) == "1":
        yield 0.0
        return
    began = time.monotonic()
    with open(LOCK_PATH, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.environ[HELD] = "1"     # for the processes started under it
        try:
            yield round(time.monotonic() - began, 3)
        finally:
            del os.environ[HELD]
            fcntl.flock(lock, fcntl.LOCK_UN)

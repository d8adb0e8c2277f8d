"""Pid files that know their process, and the one reaper that reads them.

A lab, or a test's server, killed hard leaves its processes behind; the next run finds
them through the pid files in its run directory. By then a pid may have been given to
another process, so a pid file holds more than the pid: the process's start time (field
22 of /proc/<pid>/stat, in clock ticks since boot) and the boot it belongs to. ``reap``
kills the process group only if /proc/<pid> is still that process; otherwise it only
removes the file, and logs what the pid is now.

The start time, not the command line, is what is compared: a pid is not given to
another process within the same clock tick, and the start time stays the same across
exec, while the command line does not (the lab's processes exec after they are
recorded: ``bash -c '... && exec ...'``, and Mininet's ``mnexec ... bash``). The command
line is recorded to say what was killed, or what was not.
"""
from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

LOG = logging.getLogger("ftcp.lab")
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def identity(pid: int) -> dict | None:
    """What tells this process from any other that will ever have its pid: its start
    time and the boot; plus its process group and command line. None if there is no
    such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
    fields = stat[stat.rindex(")") + 2:].split()
    return {"pid": pid, "start": int(fields[19]), "boot": _BOOT_ID.read_text().strip(), "pgrp": int(fields[2]),
            "cmdline": cmdline.replace(b"\0", b" ").decode(errors="replace").strip()}


def record(pidfile: Path, pid: int) -> None:
    """Write ``pidfile`` for a running process (started by us, not yet waited for)."""
    ident = identity(pid)
    if ident is None:   # it has exited already: nothing will be left to reap
        return
    pidfile.write_text(json.dumps(ident) + "\n")


def _same(recorded: dict, now: dict | None) -> bool:
    return now is not None and (now["start"], now["boot"]) == (recorded["start"], recorded["boot"])


def reap(pidfile: Path) -> bool:
    """SIGKILL the process ``pidfile`` names (its process group if it leads one) if it
    is still the process that was recorded; remove the file either way. True if it
    killed something."""
    try:
        recorded = json.loads(pidfile.read_text())
        pid, _, _ = int(recorded["pid"]), recorded["start"], recorded["boot"]   # without them: unchecked
    except FileNotFoundError:
        return False
    except (ValueError, KeyError, TypeError):
        LOG.warning("reaper: %s is not a pid file this lab wrote; removed, nothing killed", pidfile)
        pidfile.unlink(missing_ok=True)
        return False
    now = identity(pid)
    killed = False
    if now is None:
        LOG.debug("reaper: %s: pid %d has exited", pidfile.name, pid)
    elif not _same(recorded, now):
        LOG.warning("reaper: %s: pid %d now belongs to another process (%s), not %r: not killed",
                    pidfile.name, pid, now["cmdline"][:200], recorded.get("cmdline", "")[:200])
    else:
        try:
            if now["pgrp"] == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            killed = True
            LOG.info("reaper: killed pid %d left by an earlier run (%s)", pid, now["cmdline"][:200])
        except ProcessLookupError:
            pass
    pidfile.unlink(missing_ok=True)
    return killed


def reap_all(run_dir: Path) -> int:
    """``reap`` every pid file in ``run_dir``; how many processes it killed."""
    return sum(reap(pidfile) for pidfile in sorted(run_dir.glob("*.pid")))


def kill_group(popen, timeout: float = 10.0) -> None:
    """SIGKILL a child we started in its own process group (a ``subprocess.Popen``),
    and wait for it: a crash. No pid file needed: until it is waited for, a child's pid
    (and so its group's id) is not given to another process; once it has been, it is
    not signalled."""
    if popen.poll() is None:
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    popen.wait(timeout)

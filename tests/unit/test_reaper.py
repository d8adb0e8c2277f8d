"""The reaper kills what a pid file names only while the pid is still that process,
on real processes (sleep, in their own process groups)."""
import json
import logging
import subprocess

import pytest

from topology.processes import wait_for
from topology.reaper import identity, kill_group, reap, reap_all, record


@pytest.fixture
def spawn():
    """Start commands in their own sessions; whatever is still running at the end is killed."""
    procs = []

    def start(*argv, **kwargs):
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        procs.append(proc)
        return proc
    yield start
    for proc in procs:
        kill_group(proc)


def test_a_recorded_process_is_killed_with_its_group(spawn, tmp_path):
    leader = spawn("bash", "-c", "sleep 60 & echo $!; wait", stdout=subprocess.PIPE)
    child = int(leader.stdout.readline())
    pidfile = tmp_path / "leader.pid"
    record(pidfile, leader.pid)
    assert identity(child)["pgrp"] == leader.pid

    assert reap(pidfile) is True

    assert leader.wait(5) == -9
    assert not pidfile.exists()
    wait_for(lambda: _state(child) in (None, "Z"), 5, "the leader's child to die with its group")


def _state(pid):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def test_a_pid_given_to_another_process_is_not_killed(spawn, tmp_path, caplog):
    """The pid file names a live pid, but another start time: an earlier process had
    this pid. That process is not ours, so it lives; the file goes."""
    stranger = spawn("sleep", "60")
    pidfile = tmp_path / "old.pid"
    record(pidfile, stranger.pid)
    recorded = json.loads(pidfile.read_text())
    pidfile.write_text(json.dumps(dict(recorded, start=recorded["start"] - 1)))

    with caplog.at_level(logging.WARNING, logger="ftcp.lab"):
        assert reap(pidfile) is False

    assert stranger.poll() is None
    assert not pidfile.exists()
    assert f"pid {stranger.pid} now belongs to another process (sleep 60)" in caplog.text


def test_a_pid_file_of_another_boot_is_not_acted_on(spawn, tmp_path):
    stranger = spawn("sleep", "60")
    pidfile = tmp_path / "old.pid"
    record(pidfile, stranger.pid)
    pidfile.write_text(json.dumps(dict(json.loads(pidfile.read_text()), boot="another-boot")))
    assert reap(pidfile) is False
    assert stranger.poll() is None


def test_a_bare_pid_file_is_removed_and_nothing_is_killed(spawn, tmp_path):
    """Only a pid, as older labs wrote: nothing to check it against."""
    stranger = spawn("sleep", "60")
    pidfile = tmp_path / "old.pid"
    pidfile.write_text(str(stranger.pid))
    assert reap(pidfile) is False
    assert stranger.poll() is None
    assert not pidfile.exists()


def test_an_exited_process_leaves_only_its_file_to_remove(spawn, tmp_path):
    gone = spawn("true")
    pidfile = tmp_path / "gone.pid"
    record(pidfile, gone.pid)
    gone.wait(5)
    assert reap(pidfile) is False
    assert not pidfile.exists()


def test_reap_all_kills_the_recorded_and_spares_the_stranger(spawn, tmp_path):
    ours, stranger = spawn("sleep", "60"), spawn("sleep", "61")
    record(tmp_path / "ours.pid", ours.pid)
    record(tmp_path / "stranger.pid", stranger.pid)
    stale = json.loads((tmp_path / "stranger.pid").read_text())
    (tmp_path / "stranger.pid").write_text(json.dumps(dict(stale, start=stale["start"] + 7)))

    assert reap_all(tmp_path) == 1

    assert ours.wait(5) == -9
    assert stranger.poll() is None
    assert list(tmp_path.glob("*.pid")) == []

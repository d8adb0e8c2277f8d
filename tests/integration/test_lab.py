"""The lab runner tears everything down on exit, on error and on Ctrl-C, and the
topology works from the plain ``mn --custom`` command line."""
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.lab_leftovers import leftovers
from topology.lab import cleanup_stale, lab_config
from topology.processes import ROOT, RedisServer, RyuManager, free_tcp_port, wait_for


def lab_cli(run_dir, *args):
    return subprocess.Popen([sys.executable, "-m", "topology", "--run-dir", run_dir, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_client_command_runs_and_lab_is_torn_down(run_dir):
    proc = lab_cli(run_dir, "run", "--service", "echo", "--port", "7000",
                   "--client", "python3 services/client.py echo 10.0.0.10 7000 --bytes 100000")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert '"ok": true' in out
    assert leftovers(run_dir) == []


def test_repeated_failures_each_hit_the_host_serving_then(run_dir):
    """``--backups 2 --fail crash --fail crash``: p1 fails, b1 serves (b2 protects), then
    b1 fails and b2 serves; the client's requests all check out."""
    proc = lab_cli(run_dir, "run", "--service", "demo", "--port", "7000", "--backups", "2",
                   "--fail", "crash", "--after", "2", "--fail", "crash", "--after", "5",
                   "--client", "python3 services/client.py reqresp 10.0.0.10 7000 --count 2000 --interval 0.004")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, (out[-2000:], err[-2000:])
    assert "== 2 s: p1, serving the service, fails (crash)" in out, out
    assert "== 5 s: b1, serving the service, fails (crash)" in out, out
    assert "service demo is protected (epoch 1, served by b1" in out, out
    assert "service demo is failed-over (epoch 2, served by b2" in out, out
    assert '"ok": true' in out and '"requests": 2000' in out
    assert leftovers(run_dir) == []


def test_ctrl_c_tears_down(run_dir):
    proc = lab_cli(run_dir, "run", "--service", "demo", "--client", "sleep 300")
    for line in proc.stdout:  # the lab says when it is up; interrupt it then
        if line.startswith("lab up:"):
            break
    else:
        raise AssertionError(f"lab never came up: {proc.stderr.read()}")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert leftovers(run_dir) == []


def test_clean_removes_what_a_lab_killed_hard_left(run_dir):
    """SIGKILL the lab runner itself: nothing is torn down; ``clean`` then removes its
    processes, host shells, bridge and links (those its run directory recorded)."""
    proc = lab_cli(run_dir, "run", "--service", "echo", "--client", "sleep 347")
    try:
        for line in proc.stdout:
            if line.startswith("== c1: sleep 347"):
                break
        else:
            raise AssertionError(f"lab never came up: {proc.stderr.read()}")
        client = wait_for(lambda: _pids("^sleep 347$"), 10, "the client to start")
        proc.kill()
        proc.communicate(timeout=10)
        left = leftovers(run_dir)
        # (Mininet's host shells hang up with the runner's end of their ptys; what runs
        # in the hosts does not)
        for what in ("bridge s1", "ryu_apps/ftcp_app.py", "services/echo_server.py", "-m ftcp.agent"):
            assert any(what in item for item in left), f"{what} not left: {left}"

        clean = subprocess.run([sys.executable, "-m", "topology", "--run-dir", run_dir, "clean"], cwd=ROOT,
                               capture_output=True, text=True, timeout=60)

        assert clean.returncode == 0, clean.stderr
        assert leftovers(run_dir) == []
        assert _pids("^sleep 347$") == [], f"the client {client} was left running"
    finally:
        proc.kill()
        proc.communicate()
        cleanup_stale(Path(run_dir))


def _pids(pattern):
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()


def test_failing_service_is_reported_and_torn_down(run_dir):
    proc = lab_cli(run_dir, "run", "--service", "sh -c 'echo cannot bind >&2; exit 3'", "--client", "true")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "the service to listen on p1:7000" in err and "exited with status 3" in err and "cannot bind" in err
    assert leftovers(run_dir) == []


def test_mn_custom_command_line(run_dir):
    """`mn --custom topology/ftcp_topo.py --topo ftcp ...` with the app: all hosts reach each other."""
    path = Path(run_dir)
    cleanup_stale(path)
    path.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(path)
    ryu = None
    try:
        redis.wait_ready()
        conf = path / "services.yaml"
        conf.write_text(yaml.safe_dump(lab_config(7000, redis.url)))
        port = free_tcp_port()
        ryu = RyuManager(path, conf, redis.url, port, free_tcp_port())
        ryu.wait_ready()
        mn = subprocess.run(
            ["mn", "--custom", "topology/ftcp_topo.py", "--topo", "ftcp",
             "--controller", f"remote,ip=127.0.0.1,port={port}",
             "--switch", "ovs,datapath=user,protocols=OpenFlow13", "--test", "pingall"],
            cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert "Results: 0% dropped" in mn.stdout + mn.stderr, mn.stdout + mn.stderr
    finally:
        if ryu:
            ryu.stop()
        redis.stop()
        cleanup_stale(path)
    assert leftovers(run_dir) == []

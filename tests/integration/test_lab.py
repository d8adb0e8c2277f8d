"""The lab runner tears everything down on exit, on error and on Ctrl-C, and the
topology works from the plain ``mn --custom`` command line."""
import re
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from topology.lab import cleanup_stale, lab_config
from topology.processes import ROOT, RedisServer, RyuManager, free_tcp_port


def leftovers(run_dir):
    """Everything a lab could leave behind, as a list of descriptions."""
    found = []
    if "s1" in subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout.split():
        found.append("bridge s1")
    links = re.findall(r"\b((?:c\d+|p1|b1|s1)-eth\d+)\b",
                       subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout)
    found += [f"link {name}" for name in links]
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    for line in ps.splitlines():
        if re.search(r"mininet:(c\d+|p1|b1)$|ryu_apps/ftcp_app.py|" + re.escape(run_dir) + r"/redis.sock"
                     r"|services/(echo|demo)_server.py", line):
            found.append(f"process {line.strip()}")
    return found


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

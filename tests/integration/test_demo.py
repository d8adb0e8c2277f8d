"""The README's first command, ``./run.sh demo``, as CI can run it: run.sh's demo line
after setup (setup has run already: CI is ``./run.sh test``), then ``lab clean``.
Neither takes the machine's lab lock (only bench/ does), so this runs under pytest."""
import re
import subprocess
import sys

from tests.support.lab_leftovers import leftovers
from topology.processes import ROOT

DEMO_TIMEOUT = 300   # the demo takes about a minute on the lab machine


def test_run_sh_demo_runs_python_m_topology_demo():
    """What test_demo_masks_the_crash_then_clean_leaves_nothing runs is what run.sh runs."""
    demo = re.search(r"^\s*demo\)(.*)$", (ROOT / "run.sh").read_text(), re.M).group(1)
    assert demo.strip() == 'scripts/setup.sh; exec .venv/bin/python -m topology demo "$@" ;;'


def test_demo_masks_the_crash_then_clean_leaves_nothing(run_dir):
    demo = subprocess.run([sys.executable, "-m", "topology", "--run-dir", run_dir, "demo"], cwd=ROOT,
                          capture_output=True, text=True, timeout=DEMO_TIMEOUT)
    out = demo.stdout
    assert demo.returncode == 0, f"{out[-3000:]}\n{demo.stderr[-3000:]}"
    assert re.search(r"^== the controller: service demo is failed-over \(epoch \d+, served by b1, [1-9]\d* connection",
                     out, re.M), out
    for client in ("stream", "reqresp"):
        assert re.search(rf"^== {client}: ok=True error=None ", out, re.M), out
    assert "== demo PASSED: both clients kept their connections through the crash" in out, out
    assert leftovers(run_dir) == []

    clean = subprocess.run([sys.executable, "-m", "topology", "--run-dir", run_dir, "clean"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)

    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.strip().endswith("lab: cleaned")
    assert leftovers(run_dir) == []

"""The lab benchmarks run (chaos: two trials; web_failover: one; flood: tiny floods): a broken script
shows here, not on the day of a full run. Each one's own verdict is its exit status
(a corrupted, hung or failed trial is 1)."""
import json
import subprocess
import sys

from topology.processes import ROOT


def test_chaos_smoke(tmp_path, run_dir):
    out = tmp_path / "chaos-smoke.json"
    proc = subprocess.run([sys.executable, "-m", "bench.chaos", "--smoke", "--out", str(out), "--run-dir", run_dir,
                           "--evidence", str(tmp_path / "evidence")], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert len(result["trials"]) == 2 and result["commit"]
    assert all(t["outcome"] in ("masked", "reset") for t in result["trials"]), result["trials"]


def test_web_failover_smoke(tmp_path, run_dir):
    out = tmp_path / "web-smoke.json"
    proc = subprocess.run([sys.executable, "-m", "bench.web_failover", "--smoke", "--plot", "--out", str(out),
                           "--run-dir", run_dir], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["commit"] and result["mode"] == "smoke" and "dirty" in result
    trial, = result["trials"]
    assert trial["outcome"] == "masked" and trial["stall_ms"] is not None, trial
    assert out.with_suffix(".png").stat().st_size > 0


def test_flood_smoke(tmp_path, run_dir):
    out = tmp_path / "flood-smoke.json"
    proc = subprocess.run([sys.executable, "-m", "bench.flood", "--smoke", "--out", str(out), "--run-dir", run_dir],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["commit"] and result["mode"] == "smoke" and result["ok"], result.get("client")
    assert result["counters"]["kernel_drops_during_run"] == 0

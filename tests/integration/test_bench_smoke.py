"""Every benchmark once in its --smoke mode (one trial, tiny sizes), results to a tmp path:
a broken script shows here, not on the day of a full run. Each one's own verdict is its
exit status (a failed, hung or corrupted trial is 1); the results JSON must say which
code made it (commit, dirty flag, arguments, mode "smoke") and hold the trial(s).

The lab benchmarks take the machine's lab lock themselves: run this file without flock.
The timeouts allow for waiting for that lock while another lab runs."""
import json
import shutil
import subprocess
import sys

from topology.processes import ROOT

LAB_TIMEOUT = 1800   # seconds: the smoke itself takes well under a minute or two; the rest is the lock


def run_smoke(module: str, *args, timeout: float = LAB_TIMEOUT) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, "--smoke", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def results(path) -> dict:
    """The results file, checked for what every benchmark's results start with."""
    data = json.loads(path.read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert data["commit"] == head, (data["commit"], head)
    assert isinstance(data["dirty"], bool)
    assert data["mode"] == "smoke"
    assert data["args"]["smoke"] is True and "--smoke" in data["argv"]
    return data


def test_chaos_smoke(tmp_path, run_dir):
    out = tmp_path / "chaos-smoke.json"
    run_smoke("bench.chaos", "--out", out, "--run-dir", run_dir, "--evidence", tmp_path / "evidence")
    result = results(out)
    assert len(result["trials"]) == 2
    assert all(t["outcome"] in ("masked", "reset") for t in result["trials"]), result["trials"]


def test_web_failover_smoke(tmp_path, run_dir):
    out = tmp_path / "web-smoke.json"
    run_smoke("bench.web_failover", "--plot", "--out", out, "--run-dir", run_dir)
    result = results(out)
    trial, = result["trials"]
    assert trial["outcome"] == "masked" and trial["stall_ms"] is not None, trial
    assert out.with_suffix(".png").stat().st_size > 0


def test_flood_smoke(tmp_path, run_dir):
    out = tmp_path / "flood-smoke.json"
    run_smoke("bench.flood", "--out", out, "--run-dir", run_dir)
    result = results(out)
    assert result["ok"], result.get("client")
    assert [f["name"] for f in result["floods"]] == ["syn", "ack", "ooo"]
    assert result["counters"]["kernel_drops_during_run"] == 0


def test_agent_bench_smoke(tmp_path, run_dir):
    run_smoke("bench.agent_bench", "--out", tmp_path, "--run-dir", run_dir)
    result = results(tmp_path / "agent_bench-smoke.json")
    assert result["ok"] and result["problems"] == []
    assert result["agent_args"][:4] == ["--log-cap", "16G", "--grace", "1"]
    # 1 trial x 2 directions x (unprotected, protected) with the agent, then the same without it
    assert len(result["trials"]) == 8 and all(t["outcome"] == "ok" for t in result["trials"]), result["trials"]
    assert result["summary"]["failed_trials"] == 0
    assert [r["outcome"] for r in result["latency_runs"]] == ["ok", "ok"]
    for mode in ("protected", "unprotected"):
        stats = result["summary"]["latency"][mode]
        assert stats["samples"] == 200 and "p99_us" in stats   # 200 samples: a 99th percentile
    assert result["idle"]["protected"] == result["idle"]["connections"] == 20
    assert (tmp_path / "agent_bench-smoke.png").stat().st_size > 0


def test_failover_bench_smoke(tmp_path, run_dir):
    try:
        run_smoke("bench.failover_bench", "--out", tmp_path, "--run-dir", run_dir)
    finally:
        shutil.rmtree(run_dir + "-pcap", ignore_errors=True)
    result = results(tmp_path / "failover_bench-smoke.json")
    assert result["ok"] and result["problems"] == []
    trial, = result["trials"]
    assert trial["failure"] == "link" and trial["outcome"] == "masked" and trial["stall_ms"] is not None, trial
    link = result["summary"]["link"]
    # one trial: its stall is the maximum, and no 99th percentile is claimed
    assert link["trials"] == link["masked"] == 1 and link["max_ms"] == trial["stall_ms"] and "p99_ms" not in link
    assert result["timeseq_trial"]["outcome"] == "masked"
    many = result["summary"]["many"]
    assert many["outcome"] == "ok" and many["resumed"] == many["connections"] == 20, many
    for png in ("failover_stall-smoke.png", "failover_timeseq-smoke.png"):
        assert (tmp_path / png).stat().st_size > 0


def test_confirm_cost_smoke(tmp_path, run_dir):
    out = tmp_path / "confirm-smoke.json"
    try:
        run_smoke("bench.confirm_cost", "--out", out, "--run-dir", run_dir)
    finally:
        shutil.rmtree(run_dir + "-logs", ignore_errors=True)
    result = results(out)
    assert [t["setting"] for t in result["trials"]] == ["crash refusals=1", "crash refusals=2",
                                                        "link link_confirm=0", "link link_confirm=0.05"]
    assert all(t["passed"] for t in result["trials"]), [t["problems"] for t in result["trials"]]
    assert all(result["summary"][t["setting"]]["n"] == 1 for t in result["trials"])


def test_mirror_cost_smoke(tmp_path):
    run_smoke("bench.mirror_cost", "--out", tmp_path)
    result = results(tmp_path / "mirror_cost-smoke.json")
    assert result["ok"] and result["runs"] == 4 and result["failed"] == 0
    for direction in ("upload", "download"):
        assert 0 < result["summary"]["afpacket"][direction]["ratio"], result["summary"]


def test_tracker_microbench_smoke(tmp_path):
    out = tmp_path / "tracker-smoke.json"
    run_smoke("bench.tracker_microbench", "--out", out, timeout=120)
    result = results(out)
    assert result["ok"] and result["streams_match_sha256"] and result["frames"] >= 5000
    assert result["packets_per_s"] > 0

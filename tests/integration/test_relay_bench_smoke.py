"""bench/relay_bench.py once in its --smoke mode (1 trial per path, 5 MB each way, 200
round trips; two labs), results to a tmp directory, as tests/integration/test_bench_smoke.py
runs the other benchmarks: its exit status is its verdict, and the JSON must say which
code made it and hold plausible numbers for every path.

The benchmark takes the machine's lab lock itself (FTCP_LAB_LOCK_HELD under the
integration session's hold): run this file without flock."""
import json
import subprocess
import sys

from topology.processes import ROOT

LAB_TIMEOUT = 1800   # seconds: the smoke itself takes well under a minute; the rest is the lock


def test_relay_bench_smoke(tmp_path, run_dir):
    proc = subprocess.run([sys.executable, "-m", "bench.relay_bench", "--smoke", "--out", str(tmp_path),
                           "--run-dir", run_dir], cwd=ROOT, capture_output=True, text=True, timeout=LAB_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "relay_bench-smoke.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert data["commit"] == head and isinstance(data["dirty"], bool)
    assert data["mode"] == "smoke" and data["args"]["smoke"] is True and "--smoke" in data["argv"]
    assert data["ok"] and data["problems"] == []
    asked, rtts = data["args"]["bytes"], data["args"]["rtt_count"]
    assert (asked, rtts) == (5_000_000, 200)

    assert [lab["lab"] for lab in data["labs"]] == ["agent", "relay"]
    for lab in data["labs"]:
        kind = lab["lab"]
        assert "error" not in lab, lab["error"]
        assert lab["failover"]["status"] == "failed-over" and lab["failover"]["taken"] == 1
        relayer = lab["pids"]["relayer"]
        assert ("ftcp.agent.relay" in relayer["cmdline"]) == (kind == "relay")
        assert all(owners == [relayer["pid"]] for owners in lab["owners"].values()), lab["owners"]
        trials = lab["trials"]
        assert sorted(t["path"] for t in trials) == sorted(["direct", kind])
        for t in trials:
            assert t["outcome"] == "ok" and t["close"] == "eof", t
            for phase in ("download", "upload"):
                p = t["phases"][phase]
                assert p["bytes"] == asked, (kind, t["path"], phase, p["bytes"])
                assert p["seconds"] > 0 and p["gbps"] > 0
                assert abs(p["gbps"] - asked * 8 / p["seconds"] / 1e9) < 1e-6 * p["gbps"]
                assert p["wall_s"] >= p["seconds"] * 0.99     # the meter spanned the transfer
                assert all(v >= 0 for v in p["cpu_s"].values())
                assert ("relayer" in p["cpu_s"]) == (t["path"] != "direct")
            r = t["phases"]["rtt"]
            assert r["count"] == len(r["rtt_us"]) == rtts and r["busy_cores"] >= 0
            assert 0 < r["median_us"] <= r["max_us"] < 1e6
        summary = data["summary"][kind]
        for path in ("direct", kind):
            assert summary[path]["ok"] == summary[path]["trials"] == 1 and summary[path]["failed"] == 0
            assert summary[path]["rtt"]["samples"] == rtts and "p99_us" in summary[path]["rtt"]
        assert summary["ratio_taken_over_direct"]["upload_gbps"] > 0
    assert data["summary"]["relay_over_agent"]["download_gbps"] > 0

    # the relay's system calls, counted on one connection (strace -c)
    calls = data["summary"]["relay_syscalls"]
    assert calls["rtt"]["per"] == "round trip" and calls["rtt"]["total"] >= 4   # a recv and a send each way
    assert calls["upload"]["per"] == "MB" and calls["upload"]["total"] > 0
    # the copy cost without a lab: every way of relaying moved every byte
    copy = data["copy_cost"]
    assert sorted(t["how"] for t in copy["trials"]) == ["recv_send", "splice", "splicer"]
    for t in copy["trials"]:
        assert t["outcome"] == "ok" and t["bytes"] == data["args"]["copy_bytes"] and t["cpu_s"] >= 0, t
        assert abs(t["gbps"] - t["bytes"] * 8 / t["seconds"] / 1e9) < 1e-6 * t["gbps"]

    png = tmp_path / "relay_bench-smoke.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    height, width = matplotlib.image.imread(png).shape[:2]
    assert width > 500 and height > 300

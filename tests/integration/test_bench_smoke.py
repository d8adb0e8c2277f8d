"""Every benchmark once in its --smoke mode (one trial, tiny sizes), results to a tmp path:
a broken script shows here, not on the day of a full run. Each one's own verdict is its
exit status (a failed, hung or corrupted trial is 1); on top of it each test checks what
its benchmark must have produced:

* provenance: the commit is HEAD, the dirty flag is the tree's, argv is the command that
  ran, the mode is "smoke", started (and finished) fall within the test;
* the trials the smoke runs, each one passed;
* values in the range the smoke's own work implies (the bytes a client asked for, a
  protected/unprotected ratio of two sides that were both measured, a setting that
  shows in what the lab ran), so that a number that is not one fails;
* every plot a real PNG: its signature and header, decoding to a drawn image.

The lab benchmarks take the machine's lab lock themselves: run this file without flock.
The timeouts allow for waiting for that lock while another lab runs."""
import json
import math
import shutil
import statistics
import struct
import subprocess
import sys
import time

from topology.processes import ROOT

LAB_TIMEOUT = 1800   # seconds: the smoke itself takes well under a minute or two; the rest is the lock
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


class Smoke:
    """One benchmark's smoke run: the command, and the tree and clock it ran against."""

    def __init__(self, module: str, *args, timeout: float = LAB_TIMEOUT):
        self.args = ["--smoke", *map(str, args)]
        self.dirty = bool(git("status", "--porcelain"))
        self.began = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        proc = subprocess.run([sys.executable, "-m", module, *self.args], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
        self.ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def results(self, path) -> dict:
        """The results file, checked for the provenance every benchmark's results start with."""
        data = json.loads(path.read_text())
        head = git("rev-parse", "HEAD")
        assert data["commit"] == head, (data["commit"], head)
        assert data["dirty"] is self.dirty, (data["dirty"], git("status", "--porcelain"))
        assert data["mode"] == "smoke"
        assert data["args"]["smoke"] is True
        assert data["argv"][1:] == self.args, data["argv"]   # argv[0]: the script
        assert self.began <= data["started"] <= self.ended, (self.began, data["started"], self.ended)
        if data.get("finished") is not None:
            assert data["started"] <= data["finished"] <= self.ended, (data["finished"], self.ended)
        return data


def assert_png(path, min_side: int = 300):
    """A real plot: a PNG by its signature and header that decodes, at its header's size,
    to an image with more than a few colours (something was drawn)."""
    import matplotlib.image
    import numpy
    raw = path.read_bytes()
    assert raw[:8] == PNG_SIGNATURE and raw[12:16] == b"IHDR", raw[:16]
    width, height = struct.unpack(">II", raw[16:24])
    assert width >= min_side and height >= min_side, (width, height)
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width), pixels.shape
    colours = len(numpy.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))
    assert colours > 16, f"{path.name}: {colours} colours: a blank canvas"


def test_chaos_smoke(tmp_path, run_dir):
    from bench.chaos.draw import draw
    out, evidence = tmp_path / "chaos-smoke.json", tmp_path / "evidence"
    smoke = Smoke("bench.chaos", "--out", out, "--run-dir", run_dir, "--evidence", evidence)
    result = smoke.results(out)
    trials, deadline = result["trials"], result["args"]["deadline"]
    assert [t["trial"] for t in trials] == [0, 1] and result["finished"] and result["interrupted"] is False
    for t in trials:
        # the trial's faults are the seeded draws, so it can be run again alone
        drawn = draw(result["args"]["seed"], t["trial"])
        assert {k: t[k] for k in drawn} == drawn, t
        assert t["outcome"] in ("masked", "reset") and not t.get("error") and not t.get("fault_error"), t
        assert [(c["host"], c["mode"]) for c in t["clients"]] == list(zip(("c1", "c2"), t["mix"])), t["clients"]
        for c in t["clients"]:
            assert c["outcome"] in ("masked", "reset"), c
            assert 0 < c["seconds"] < deadline, c
            if c["outcome"] == "reset":
                assert c["reason"], c          # explained by the controller's record
        # the primary did fail, and the service failed over (or says why it could not)
        assert "failure" in t["marks"] and t["failure_wall"], t["marks"]
        if t["outcome"] == "masked":
            assert t["record"]["status"] == "failed-over", t["record"]
        if t["fault"] != "none":
            got, want = t["fault_minus_failure_s"], t["fault_offset_s"]
            assert got is not None, t
            if t["fault_side"] == "after":   # fired after the failure by the drawn offset
                assert want - 0.01 <= got <= want + 1.0, (got, want)
    summary = result["summary"]
    assert summary["trials"] == 2 and summary["bad_trials"] == []
    assert summary["outcomes"]["masked"] + summary["outcomes"]["reset"] == 2, summary["outcomes"]
    assert not evidence.exists() or not any(evidence.iterdir())   # evidence is kept only of a bad trial


def test_web_failover_smoke(tmp_path, run_dir):
    from bench.web_failover import REQUESTS
    out = tmp_path / "web-smoke.json"
    smoke = Smoke("bench.web_failover", "--plot", "--out", out, "--run-dir", run_dir)
    result = smoke.results(out)
    trial, = result["trials"]
    assert (trial["failure"], trial["divergence"]) == ("crash", "aligned"), trial
    assert trial["outcome"] == "masked" and trial["ok"] and not trial["client_error"], trial
    assert trial["requests"] == REQUESTS == result["requests_per_client"], trial
    assert trial["status"] == "failed-over" and int(trial["taken"]) >= 1, trial
    # the client lists silences over 10 ms; a crash is seen in well under a second
    assert 10 < trial["stall_ms"] < 2000 and 0 < trial["baseline_ms"] < 2000, trial
    assert 0 <= trial["differed_after_s"] <= 10, trial
    cell = result["summary"]["crash aligned"]
    assert (cell["trials"], cell["masked"], cell["reset"], cell["failed"]) == (1, 1, 0, 0), cell
    assert cell["stall_ms_median"] == round(trial["stall_ms"], 1), cell
    assert_png(out.with_suffix(".png"))


def test_flood_smoke(tmp_path, run_dir):
    out = tmp_path / "flood-smoke.json"
    smoke = Smoke("bench.flood", "--plot", "--out", out, "--run-dir", run_dir)
    result = smoke.results(out)
    assert result["ok"], result.get("client")
    # the smoke's floods: 2,000 SYNs, 2,000 ACKs, 5,000 out-of-order segments
    assert [(f["name"], f["sent"]) for f in result["floods"]] == [("syn", 2000), ("ack", 2000), ("ooo", 5000)]
    for f in result["floods"]:
        assert f["c2_port_rx"] >= f["sent"] and 0 < f["forwarded"] <= f["c2_port_rx"], f   # they reached the switch
        assert f["end"] > f["start"] and f["rate_per_s"] > 0, f
    client = result["client"]
    assert client["ok"] and client["error"] is None and client["requests"] == result["args"]["requests"] == 4000
    takeover = result["takeover"]
    assert takeover["status"] == "failed-over" and takeover["c1_taken"] and int(takeover["taken"]) >= 1, takeover
    assert result["counters"]["kernel_drops_during_run"] == 0
    # a Python process with its records: tens of MiB, not kilobytes, not gigabytes
    assert 10_000 < result["maxima"]["agent_rss_kb"] < 2_000_000, result["maxima"]
    assert len(result["samples"]) >= 2 * (result["args"]["baseline"] + result["args"]["settle"]), len(result["samples"])
    assert_png(out.with_suffix(".png"))


def test_agent_bench_smoke(tmp_path, run_dir):
    smoke = Smoke("bench.agent_bench", "--out", tmp_path, "--run-dir", run_dir)
    result = smoke.results(tmp_path / "agent_bench-smoke.json")
    assert result["ok"] and result["problems"] == []
    assert result["agent_args"][:4] == ["--log-cap", "16G", "--grace", "1"]
    # 1 trial x 2 directions x (unprotected, protected) with the agent, then the same without it
    assert len(result["trials"]) == 8 and all(t["outcome"] == "ok" for t in result["trials"]), result["trials"]
    for t in result["trials"]:
        # iperf3 for 1 s: its bytes and its rate agree, and the rate is the lab's (Gbit/s, not bit/s)
        assert 0.01 < t["gbps"] < 100 and 0.5 < t["bytes"] * 8 / 1e9 / t["gbps"] < 2, t
    assert result["summary"]["failed_trials"] == 0
    for direction in ("upload", "download"):
        bulk = result["summary"]["bulk"][direction]
        on, off = bulk["protected_gbps_median"], bulk["unprotected_gbps_median"]
        measured = {(t["protected"], t["agent"]): t["gbps"] for t in result["trials"] if t["direction"] == direction}
        # both sides ran: protected with the agent; unprotected with the agent running and stopped
        assert on == measured[True, True] and bulk["mirror_only_gbps_median"] == measured[True, False], (bulk, measured)
        assert off == statistics.median([measured[False, True], measured[False, False]]), (bulk, measured)
        assert math.isclose(bulk["ratio_protected_over_unprotected"], on / off) and 0.05 < on / off < 2, bulk
        assert bulk["connections_checked"] >= 1 and bulk["unprotected_connections"] == 0, bulk
    assert [r["outcome"] for r in result["latency_runs"]] == ["ok", "ok"]
    for mode in ("protected", "unprotected"):
        stats = result["summary"]["latency"][mode]
        assert stats["samples"] == 200 and "p99_us" in stats   # 200 samples: a 99th percentile
        assert 10 < stats["p50_us"] <= stats["p90_us"] <= stats["p99_us"] < 100_000, stats   # µs, in the lab
    assert 0.05 < result["summary"]["latency"]["ratio_p50_protected_over_unprotected"] < 20
    idle = result["idle"]
    assert idle["protected"] == idle["connections"] == 20 and idle["echo_ok"]
    assert idle["c2s_stored_total"] == sum(len(f"hello {n}\n") for n in range(20)), idle
    assert 0 < idle["redis_bytes_per_conn"] < 1_000_000, idle
    assert_png(tmp_path / "agent_bench-smoke.png")


def test_failover_bench_smoke(tmp_path, run_dir):
    try:
        smoke = Smoke("bench.failover_bench", "--out", tmp_path, "--run-dir", run_dir)
    finally:
        shutil.rmtree(run_dir + "-pcap", ignore_errors=True)
    result = smoke.results(tmp_path / "failover_bench-smoke.json")
    assert result["ok"] and result["problems"] == []
    trial, = result["trials"]
    assert trial["failure"] == "link" and trial["outcome"] == "masked" and trial["stall_ms"] is not None, trial
    # the whole 15 MB stream, byte-exact; a link failure stalls it tens of ms, not seconds
    assert trial["ok"] and trial["received"] == 15_000_000 and trial["error"] is None, trial
    assert 10 < trial["stall_ms"] < 2000 and 0 < trial["takeover_s"] < 2, trial
    link = result["summary"]["link"]
    # one trial: its stall is the maximum, and no 99th percentile is claimed
    assert link["trials"] == link["masked"] == 1 and link["max_ms"] == trial["stall_ms"] and "p99_ms" not in link
    assert result["summary"]["crash"] is None and result["summary"]["silent"] is None   # the smoke runs link only
    seq = result["timeseq_trial"]
    assert seq["outcome"] == "masked" and seq["received"] == 15_000_000, seq
    many = result["summary"]["many"]
    assert many["outcome"] == "ok" and many["resumed"] == many["connections"] == many["opened"] == 20, many
    assert many["ok"] and many["errors"] == [], many
    # every connection resumed after the failure, within the 6 s the clients ran
    assert 0 < many["first_resume_s"] <= many["last_resume_s"] < result["args"]["many_seconds"], many
    for png in ("failover_stall-smoke.png", "failover_timeseq-smoke.png"):
        assert_png(tmp_path / png)


def test_confirm_cost_smoke(tmp_path, run_dir):
    out = tmp_path / "confirm-smoke.json"
    try:
        smoke = Smoke("bench.confirm_cost", "--out", out, "--run-dir", run_dir)
    finally:
        shutil.rmtree(run_dir + "-logs", ignore_errors=True)
    result = smoke.results(out)
    assert [t["setting"] for t in result["trials"]] == ["crash refusals=1", "crash refusals=2",
                                                        "link link_confirm=0", "link link_confirm=0.05"]
    assert all(t["passed"] for t in result["trials"]), [t["problems"] for t in result["trials"]]
    assert all(result["summary"][t["setting"]]["n"] == 1 for t in result["trials"])
    for t in result["trials"]:
        # the lab ran with the setting under test
        assert {k: t["probe_effective"].get(k) for k in t["probe"]} == t["probe"], (t["probe"], t["probe_effective"])
        assert t["received"] == 15_000_000 and 10 < t["stall_ms"] < 2000, t
        assert 0 <= t["failing_over_recorded_after_failure_ms"] < 2000, t
    confirmed = result["trials"][3]
    # with link_confirm 0.05 the verdict waits until the link stayed down 50 ms
    assert confirmed["failing_over_recorded_after_failure_ms"] >= 50, confirmed
    for pair, ratio in result["summary"]["ratios_median_stall_B_over_A"].items():
        assert ratio is not None and 0.1 < ratio < 10, (pair, ratio)   # both settings of the pair measured


def test_mirror_cost_smoke(tmp_path):
    smoke = Smoke("bench.mirror_cost", "--out", tmp_path)
    result = smoke.results(tmp_path / "mirror_cost-smoke.json")
    assert result["ok"] and result["runs"] == 4 and result["failed"] == 0 and not result.get("errors")
    rows = {(r["direction"], r["mirror"]): r["gbps"] for r in result["rows"]}
    assert sorted(rows) == [("download", False), ("download", True), ("upload", False), ("upload", True)]
    for direction in ("upload", "download"):
        cell = result["summary"]["afpacket"][direction]
        plain, mirrored = rows[direction, False], rows[direction, True]   # both sides measured
        assert 0.01 < plain < 100 and 0.01 < mirrored < 100, rows
        assert (cell["plain_gbps"], cell["mirrored_gbps"]) == (round(plain, 3), round(mirrored, 3)), cell
        assert math.isclose(cell["ratio"], mirrored / plain, abs_tol=0.002) and 0.05 < cell["ratio"] < 2, cell
    assert_png(tmp_path / "mirror_cost-smoke.png")


def test_tracker_microbench_smoke(tmp_path):
    out = tmp_path / "tracker-smoke.json"
    smoke = Smoke("bench.tracker_microbench", "--out", out, timeout=120)
    result = smoke.results(out)
    assert result["ok"] and result["streams_match_sha256"] and result["all_protected"]
    assert result["args"]["frames"] == 5000 and 5000 <= result["frames"] < 5100   # the smoke's size
    assert result["connections"] == result["args"]["conns"]
    # the rate is frames over the time it took, in a plausible range for Python
    assert math.isclose(result["packets_per_s"], result["frames"] / result["seconds"], rel_tol=0.01), result
    assert 1_000 < result["packets_per_s"] < 10_000_000, result
    assert math.isclose(result["us_per_packet"] * result["packets_per_s"], 1e6, rel_tol=0.01), result
    assert 0 < result["parse_only_us_per_packet"] < result["us_per_packet"], result
    # about two data frames in three carry 1448 bytes (the rest are the server's ACKs and the handshakes)
    full = result["frames"] * 1448 / 1e6
    assert full / 2 < result["payload_MB"] < full, result

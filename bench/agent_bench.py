"""Benchmark of protection (mirror + backup agent) in the real lab, off vs on, one run.

    .venv/bin/python -m bench.agent_bench [--trials 5] [--seconds 3] [--idle 1000]
    .venv/bin/python -m bench.agent_bench --smoke --out DIR   # one 1 s trial of each, tiny sizes (CI)

Writes bench/results/agent_bench.json and bench/results/agent_bench.png (--out, --name;
agent_bench-smoke.* with --smoke), starting with the commit, dirty flag, arguments, mode
and the agent's options (--log-cap, --grace, --standby):
  * bulk TCP (iperf3) upload and download: unprotected port vs protected port, trials
    interleaved; then the same with the agent stopped (the mirror's own cost);
    per trial: throughput, agent / redis / ovs-vswitchd CPU, kernel capture drops;
    after every protected trial: every connection recorded and still protected;
  * 1-byte request/response round-trip latency, unprotected vs protected;
  * N mostly idle protected connections: Redis memory and agent memory per connection.

Each lab lives under the machine's lab lock. A trial that fails (iperf3, the latency
client) is kept with its error and counted, never dropped. Exit status 0 only if every
trial ran, every connection of the protected trials was recorded and stayed protected,
and no service failed over under the load.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench.common import bench_parser, lab_lock, not_root, percentile, provenance, tail, write
from ftcp.common.store import Store
from topology.lab import PRIMARY_IP, ROOT, Lab, LabError, wait_for

PROTECTED, UNPROTECTED = 7000, 7001


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def ovs_pid() -> int:
    return int(Path("/var/run/openvswitch/ovs-vswitchd.pid").read_text())


class Meter:
    """CPU used by named processes between start() and stop(), in cores."""

    def __init__(self, pids: dict):
        self.pids = {k: v for k, v in pids.items() if v}

    def start(self):
        self.t0 = time.monotonic()
        self.c0 = {k: cpu_seconds(p) for k, p in self.pids.items()}

    def stop(self) -> dict:
        dt = time.monotonic() - self.t0
        return {k: round((cpu_seconds(p) - self.c0[k]) / dt, 3) for k, p in self.pids.items()}


def iperf(lab, port: int, seconds: float, reverse: bool) -> dict:
    rc, out, err = lab.run("c1", f"iperf3 -c {PRIMARY_IP} -p {port} -t {seconds} -J {'-R' if reverse else ''}",
                           timeout=seconds + 60)
    data = json.loads(out)
    if rc != 0 or "error" in data:
        raise LabError(f"iperf3 failed: {data.get('error', err)}")
    end = data["end"]
    return {"gbps": end["sum_received"]["bits_per_second"] / 1e9, "bytes": end["sum_received"]["bytes"]}


def check_and_clear_conns(store: Store) -> dict:
    """Every connection the agent saw in the trial is recorded, closed and protected;
    then forget them so Redis memory does not grow trial after trial."""
    def settled():
        ids = store.service_conns("demo", "b1")
        states = {i: store.conn("b1", i) for i in ids}
        return states if states and all(s and s["state"] == "closed" for s in states.values()) else None
    states = wait_for(settled, 30, "the agent to record the trial's connections", interval=0.1)
    unprotected = {i: s["reason"] for i, s in states.items() if s["status"] != "protected"}
    logged = sum(int(s["c2s_logged"]) for s in states.values())
    for cid in states:
        store.delete_conn("b1", cid, "demo")
    return {"conns": len(states), "unprotected": unprotected, "c2s_logged": logged}


def bulk(lab, store, trials: int, seconds: float, with_agent: bool) -> list:
    meter = Meter({"agent": lab.agent.pid if with_agent else None, "redis": lab.redis.pid, "ovs": ovs_pid()})
    rows = []
    for trial in range(trials):
        for reverse in (False, True):
            # Alternate which mode goes first so drift (thermal, page cache) is shared.
            order = (UNPROTECTED, PROTECTED) if trial % 2 == 0 else (PROTECTED, UNPROTECTED)
            for port in order:
                row = {"trial": trial, "direction": "download" if reverse else "upload",
                       "protected": port == PROTECTED, "agent": with_agent}
                try:
                    meter.start()
                    row.update(iperf(lab, port, seconds, reverse), cpu=meter.stop())
                    if port == PROTECTED and with_agent:
                        row.update(check_and_clear_conns(store))
                    row["outcome"] = "ok"
                except (LabError, ValueError, KeyError) as e:
                    row.update(outcome="failed", error=repr(e))
                    for cid in store.service_conns("demo", "b1"):   # the next trial's check starts afresh
                        store.delete_conn("b1", cid, "demo")
                rows.append(row)
                result = row
                print(json.dumps(result), flush=True)
    return rows


def latency(lab, rounds: int, count: int) -> tuple:
    """The round-trip samples per mode, and a record of every run of the client."""
    samples, runs = {"unprotected": [], "protected": []}, []
    for r in range(rounds):
        order = (("unprotected", UNPROTECTED), ("protected", PROTECTED))
        for name, port in (order if r % 2 == 0 else order[::-1]):
            run = {"round": r, "mode": name}
            try:
                rc, out, err = lab.run("c1", f"python3 {ROOT}/bench/latency_client.py {PRIMARY_IP} {port} {count}")
                if rc != 0:
                    raise LabError(f"latency client exited {rc}: {err[-500:]}")
                rtt = json.loads(out)["rtt_us"]
                samples[name] += rtt
                run.update(outcome="ok", samples=len(rtt))
            except (LabError, ValueError, KeyError) as e:
                run.update(outcome="failed", error=repr(e))
            runs.append(run)
    return samples, runs


def idle(lab, store: Store, count: int) -> dict:
    mem0, rss0 = store.memory_used(), rss_bytes(lab.agent.pid)
    proc = lab.host("c1").popen(["python3", str(ROOT / "bench/idle_client.py"), PRIMARY_IP, str(PROTECTED),
                                 str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        opened = json.loads(proc.stdout.readline())
        ids = [f"10.0.0.1:{p}-{PRIMARY_IP}:{PROTECTED}" for p in opened["ports"]]

        def all_recorded():
            if not set(ids) <= store.service_conns("demo", "b1"):
                return None
            states = [store.conn("b1", i) for i in ids]
            # Connection n sent "hello n\n": the agent has it all once the lengths match.
            return states if all(int(s["c2s_stored"]) == len(f"hello {n}\n") for n, s in enumerate(states)) \
                else None
        states = wait_for(all_recorded, 60, f"{count} idle connections in Redis", interval=0.2)
        mem1, rss1 = store.memory_used(), rss_bytes(lab.agent.pid)
        protected = sum(1 for s in states if s["status"] == "protected")
        logged = sum(int(s["c2s_stored"]) for s in states)
    finally:
        proc.stdin.write("close\n")
        proc.stdin.flush()
        proc.wait(30)
    return {"connections": count, "echo_ok": opened["ok"], "protected": protected, "c2s_stored_total": logged,
            "redis_bytes_per_conn": (mem1 - mem0) / count, "agent_rss_bytes_per_conn": (rss1 - rss0) / count}


def summarize(all_rows, lat, idle_result, heartbeat) -> dict:
    """Medians over the trials that ran; the failed ones are counted (``failed_trials``)."""
    out = {"bulk": {}, "latency": {}, "idle": idle_result, "agent_heartbeat": heartbeat,
           "trials": len(all_rows), "failed_trials": sum(r["outcome"] != "ok" for r in all_rows)}
    rows = [r for r in all_rows if r["outcome"] == "ok"]
    for direction in ("upload", "download"):
        def gbps(protected, agent):
            return [r["gbps"] for r in rows if r["direction"] == direction and r["protected"] == protected
                    and (r["agent"] == agent or not protected)]
        off, on, mirror_only = gbps(False, True), gbps(True, True), gbps(True, False)
        on_rows = [r for r in rows if r["direction"] == direction and r["protected"] and r["agent"]]
        if not off or not on:
            out["bulk"][direction] = None
            continue
        agent_cores = statistics.median(r["cpu"]["agent"] for r in on_rows)
        out["bulk"][direction] = {
            "unprotected_gbps_median": statistics.median(off),
            "protected_gbps_median": statistics.median(on),
            "mirror_only_gbps_median": statistics.median(mirror_only) if mirror_only else None,
            "ratio_protected_over_unprotected": statistics.median(on) / statistics.median(off),
            "ratio_mirror_only_over_unprotected": (statistics.median(mirror_only) / statistics.median(off))
            if mirror_only else None,
            "agent_cpu_cores_median": agent_cores,
            "agent_cpu_cores_per_gbps": agent_cores / statistics.median(on),
            "redis_cpu_cores_median": statistics.median(r["cpu"]["redis"] for r in on_rows),
            "unprotected_connections": sum(len(r["unprotected"]) for r in on_rows),
            "connections_checked": sum(r["conns"] for r in on_rows),
        }
    for name, values in lat.items():
        out["latency"][name] = {"samples": len(values), "p50_us": percentile(values, 50),
                                "p90_us": percentile(values, 90), **tail(values, "us")} if values else None
    if out["latency"]["protected"] and out["latency"]["unprotected"]:
        out["latency"]["ratio_p50_protected_over_unprotected"] = \
            out["latency"]["protected"]["p50_us"] / out["latency"]["unprotected"]["p50_us"]
    return out


def plot(summary, rows, lat, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels, modes = ["upload", "download"], [("unprotected", False, True), ("mirror only", True, False),
                                             ("protected", True, True)]
    width = 0.27
    for i, (name, protected, agent) in enumerate(modes):
        vals = [[r["gbps"] for r in rows if r["outcome"] == "ok" and r["direction"] == d and r["protected"] == protected
                 and (r["agent"] == agent or not protected)] for d in labels]
        meds = [statistics.median(v) if v else 0 for v in vals]
        xs = [j + (i - 1) * width for j in range(len(labels))]
        ax1.bar(xs, meds, width, label=name)
        for x, v in zip(xs, vals):
            ax1.scatter([x] * len(v), v, color="black", s=8, zorder=3)
    ax1.set_xticks(range(len(labels)), labels)
    ax1.set_ylabel("Gbit/s (median, dots = trials)")
    ax1.set_title("Bulk TCP through the lab (iperf3)")
    ax1.legend()
    for name, values in lat.items():
        ordered = sorted(values)
        ax2.plot(ordered, [k / len(ordered) for k in range(len(ordered))], label=name)
    ax2.set_xscale("log")
    ax2.set_xlabel("round-trip time, µs (1-byte request/response)")
    ax2.set_ylabel("CDF")
    ratio = summary["latency"].get("ratio_p50_protected_over_unprotected")
    ax2.set_title(f"p50 ratio protected/unprotected = {ratio:.3f}" if ratio else "1-byte round trips")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run(args, data: dict, agent_args: tuple):
    """The two labs, one after the other, each under the lab lock; fills ``data``."""
    iperf_cmd = "iperf3 -s -p {port}"
    rows = data["trials"]
    with lab_lock() as waited:
        data["lock_wait_s"].append(waited)
        with Lab(service_cmd=iperf_cmd, service_port=PROTECTED, run_dir=args.run_dir,
                 extra_primary_cmds=((iperf_cmd, UNPROTECTED),), agent_args=agent_args) as lab:
            store = Store(lab.redis.url)
            rows += bulk(lab, store, args.trials, args.seconds, with_agent=True)
            data["heartbeat"] = store.agent("b1")
            data["agent_exit_status"] = lab.stop_agent()
            rows += bulk(lab, store, args.mirror_trials, args.seconds, with_agent=False)
            # The controller probed the primary all along while iperf3 saturated the switch:
            # a false "silent" verdict would have failed it over.
            data["service_status_after_bulk"] = {name: (store.service_state(name) or {}).get("status")
                                                 for name in store.service_names()}
    echo = "python3 {root}/services/echo_server.py --port {port}"
    with lab_lock() as waited:
        data["lock_wait_s"].append(waited)
        with Lab(service_cmd=echo, service_port=PROTECTED, run_dir=args.run_dir,
                 extra_primary_cmds=((echo, UNPROTECTED),), agent_args=agent_args) as lab:
            store = Store(lab.redis.url)
            data["latency_us"], data["latency_runs"] = latency(lab, args.latency_rounds, args.latency_count)
            data["idle"] = idle(lab, store, args.idle)


def verdict(data: dict) -> list:
    """What went wrong, if anything: the run passes when this is empty."""
    problems = []
    if data.get("error"):
        problems.append("harness error")
    failed = [r for r in data["trials"] + data.get("latency_runs", []) if r["outcome"] != "ok"]
    if failed:
        problems.append(f"{len(failed)} failed trial(s)")
    unprotected = sum(len(r.get("unprotected", {})) for r in data["trials"])
    if unprotected:
        problems.append(f"{unprotected} connection(s) of the protected trials unprotected")
    if data.get("agent_exit_status") not in (None, 0):
        problems.append(f"the agent exited with status {data['agent_exit_status']} when stopped")
    services = data.get("service_status_after_bulk")
    if services is not None and set(services.values()) != {"protected"}:
        problems.append(f"a service failed over under load: {services}")
    idle_result = data.get("idle")
    if idle_result and (idle_result["protected"] != idle_result["connections"] or not idle_result["echo_ok"]):
        problems.append(f"idle connections: {idle_result['protected']} of {idle_result['connections']} protected, "
                        f"echo ok {idle_result['echo_ok']}")
    return problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = bench_parser("agent_bench", __doc__, out="dir", run_dir="/run/ftcp-bench",
                      smoke="one 1 s trial per mode and direction, 1 x 200 round trips, 20 idle connections (for CI)")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--latency-rounds", type=int, default=3)
    ap.add_argument("--latency-count", type=int, default=3000)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--standby", choices=["cold", "hot"], default="cold",
                    help="cold (default): the cost of logging alone; hot adds the replica per connection "
                         "and the divergence check (iperf3 is not deterministic: its connections diverge)")
    ap.add_argument("--name", help="file name of the results (default agent_bench, agent_bench-smoke with --smoke)")
    args = ap.parse_args(argv)
    if not_root("agent_bench"):
        return 2
    if args.smoke:
        args.trials, args.seconds, args.latency_rounds, args.latency_count, args.idle = 1, 1.0, 1, 200, 20
    args.mirror_trials = 1 if args.smoke else max(2, args.trials // 2)   # with the agent stopped
    args.name = args.name or ("agent_bench-smoke" if args.smoke else "agent_bench")
    out = Path(args.out)
    agent_args = ("--log-cap", "16G", "--grace", "1", "--standby", args.standby)
    data = provenance(args, ["bench/agent_bench.py", *argv], "smoke" if args.smoke else "full")
    data.update(agent_args=list(agent_args), lock_wait_s=[], trials=[])
    try:
        run(args, data, agent_args)
    except (LabError, OSError, ValueError, KeyError):
        data["error"] = traceback.format_exc(limit=-8)
        print(data["error"], file=sys.stderr)
    lat = data.get("latency_us") or {"unprotected": [], "protected": []}
    data["summary"] = summarize(data["trials"], lat, data.get("idle"), data.get("heartbeat"))
    data["problems"] = verdict(data)
    data["ok"] = not data["problems"]
    data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data["latency_us"] = data.pop("latency_us", lat)   # the long part last
    write(out / f"{args.name}.json", data)
    if data["trials"] and lat["protected"] and lat["unprotected"]:
        plot(data["summary"], data["trials"], lat, out / f"{args.name}.png")
    print(json.dumps({k: data[k] for k in ("summary", "problems", "ok")}, indent=1))
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

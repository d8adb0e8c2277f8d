"""Benchmark of the taken-over path against a direct connection, in the same lab, one run.

    .venv/bin/python -m bench.relay_bench [--trials 10] [--bytes 200000000] [--rtt-count 2000]
    .venv/bin/python -m bench.relay_bench --smoke --out DIR    # 1 trial per path, tiny sizes (CI)

Three paths from c1 to the demo server (services/demo_server.py) on b1:
  * direct: to b1's own address, 10.0.0.20, with nothing of ftcp in the way but the
    switch. On port 7001, a second instance of the same server on b1: after the failover
    the switch rewrites every segment b1 sends from port 7000 to the service's address
    (the redirect's server->client flow matches the backup's address and the service
    port, not the connection), so b1's own 10.0.0.20:7000 no longer answers clients
    (checked in every lab: ``own_port_after_failover``);
  * agent: to the service (10.0.0.10:7000), taken over by b1 and relayed by the agent
    itself (a lab ``Lab(relay=False)``);
  * relay: the same, relayed by the relay process (``Lab(relay=True)``, the default).
Two labs, one after the other: each opens, before its failover, one connection per
trial to the service and one per trial to the direct port (bench/relay_client.py, which
waits for its commands on stdin); fails the primary over (``--failure``: link down, or a
REST migration) and waits until the agent acknowledged go; checks that every taken-over
client socket on b1 belongs to the process that should relay it (ss); then measures on
those same connections, trial by trial, direct and taken over alternating which goes
first: a bulk download (GET) and upload (PUT) of ``--bytes`` each, and ``--rtt-count``
PING/PONG round trips; around each, the CPU time (utime+stime) of the relaying process,
the agent, the relay, both servers, ovs-vswitchd and the client, and the cores the whole
machine kept busy (/proc/stat). After the relay lab's trials, the relay's system calls
per round trip and per MB (strace -c, on one connection; ``--no-syscalls`` skips it). At
the end each connection is closed (the client's FIN) and must end with the server's FIN.
Last, without a lab, what relaying costs by itself (``copy_cost``): 1 GB over loopback
through ftcp's Splicer, a plain recv/send loop and splice(2), interleaved.

Writes bench/results/relay_bench.json and relay_bench.png (relay_bench-smoke.* with
--smoke; ``--out`` a directory or a .json path), starting with the commit, dirty flag,
arguments and mode. Medians over trials; ratios taken-over / direct within each lab;
per path the RTT median and maximum over all its round trips. The whole run holds the
machine's lab lock once. A trial that fails (a wrong byte, an error, a hang, a RST at
close, a lab or a failover that did not happen) is kept with its error and counted.
Exit status 0 only if every trial passed.

This module is long because one run is two labs measured the same way, and each
measure (the clients, the CPU meters, the syscall count, the summary and the plot)
sits next to the others; the lab-free copy cost is bench/copy_cost.py.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import select
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench.agent_bench import cpu_seconds, ovs_pid
from bench.copy_cost import copy_costs, stats
from bench.common import lab_lock, not_root, provenance, results_file, tail, write
from ftcp.common.store import Store
from topology.lab import BACKUP_IP, PRIMARY_IP, ROOT, SERVICES, Lab, LabError, failover_settled, wait_for

NAME = "relay_bench"
PORT, DIRECT_PORT = 7000, 7001
CLIENT_IP = "10.0.0.1"        # c1
LABS = (("agent", False), ("relay", True))   # the lab's taken-over path, and Lab(relay=...)
SEED = "relaybench"


def expected_stream(n: int, seed: str) -> tuple:
    """SHA-256 of the demo server's GET n seed, and how fast this machine makes that
    stream on one core (Gbit/s, generation alone): what bounds a download from it."""
    sys.path.insert(0, str(ROOT / "services"))
    from demo_server import stream_bytes
    digest, made = hashlib.sha256(), 0.0
    for offset in range(0, n, 65536):
        t0 = time.perf_counter()
        chunk = stream_bytes(min(65536, n - offset), seed, offset)
        made += time.perf_counter() - t0
        digest.update(chunk)
    return digest.hexdigest(), n * 8 / made / 1e9


class Client:
    """bench/relay_client.py on c1: one connection, opened now, measured on command."""

    def __init__(self, lab, ip: str, port: int):
        self.proc = lab.host("c1").popen(["python3", str(ROOT / "bench/relay_client.py"), ip, str(port)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)
        lab.record("c1", "relayclient", self.proc)
        opened = self._line(30)
        if not opened.get("opened"):
            raise LabError(f"the client could not connect to {ip}:{port}: {opened.get('error')}")
        self.port = opened["local_port"]
        self.pid = self.proc.pid if "relay_client.py" in _cmdline(self.proc.pid) else None

    def _line(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise LabError(f"the client said nothing in {timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(5)
            raise LabError(f"the client exited ({self.proc.returncode}): {self.proc.stderr.read()[-800:]}")
        return json.loads(line)

    def ask(self, command: str, timeout: float) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._line(timeout)

    def end(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def listener_pid(lab, port: int) -> int:
    """The pid of the process listening on ``port`` on b1."""
    out = lab.host("b1").cmd(f"ss -Hltnp 'sport = :{port}'")
    pids = set(re.findall(r"pid=(\d+)", out))
    if len(pids) != 1:
        raise LabError(f"no single listener on b1:{port}: {out!r}")
    return int(pids.pop())


def socket_owners(lab, client_port: int) -> list:
    """The pids holding b1's end of c1's connection from ``client_port``."""
    out = lab.host("b1").cmd(f"ss -Htnp state established 'dst {CLIENT_IP} and dport = :{client_port}'")
    return sorted({int(p) for p in re.findall(r"pid=(\d+)", out)})


def failover(lab, store, how: str, expect: int) -> dict:
    """Fail the primary over; the service's record once the agent acknowledged go."""
    t0 = time.time()
    if how == "link":
        lab.fail_primary("link")
    else:
        status, body = lab.rest("POST", "/ftcp/services/demo/migrate")
        if status not in (200, 202):
            raise LabError(f"migrate answered {status}: {body}")
    svc = wait_for(lambda: failover_settled(store), 30, "the failover")
    rec = {"how": how, "settled_s": time.time() - t0, "status": svc.get("status"), "step": svc.get("step"),
           "taken": int(svc.get("taken") or 0), "failed": svc.get("failed"), "epoch": svc.get("epoch"),
           "timeline_ms": json.loads(svc.get("timeline_ms") or "{}")}
    if rec["status"] != "failed-over" or rec["step"] != "done" or rec["taken"] != expect:
        raise LabError(f"the failover did not take the {expect} connection(s): {rec}")
    return rec


def own_port_after_failover(lab) -> str:
    """Does b1's own address still answer a new connection on the service port?"""
    rc, out, err = lab.run("c1", f"python3 -c \"import socket; socket.create_connection(('{BACKUP_IP}', {PORT}), "
                                 f"timeout=2); print('connected')\"", timeout=20)
    return "connected" if rc == 0 and "connected" in out else f"no connection: {err.strip().splitlines()[-1:]}"


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (every core; /proc/stat less idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class Meter:
    """CPU seconds of named processes over one phase, and how many cores the whole
    machine kept busy meanwhile (``busy_cores``, out of os.cpu_count())."""

    def __init__(self, pids: dict):
        self.pids = {k: v for k, v in pids.items() if v}

    def __enter__(self):
        self.c0 = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self.b0 = machine_busy()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.seconds = time.monotonic() - self.t0
        self.cpu = {k: round(cpu_seconds(p) - self.c0[k], 4) for k, p in self.pids.items()}
        self.busy_cores = round((machine_busy() - self.b0) / self.seconds, 3)
        return False


def idle_cores(pids: dict, seconds: float) -> dict:
    """Each process's CPU with no traffic, in cores (a baseline for the phases' CPU)."""
    with Meter(pids) as m:
        time.sleep(seconds)
    return {k: round(v / m.seconds, 4) for k, v in m.cpu.items()}


def measure(client: Client, args, pids: dict, want_sha: str) -> dict:
    """The three phases on one connection; raises LabError on a wrong answer or a hang."""
    phases = {}
    budget = 60 + args.bytes / 10e6    # at least 10 MB/s, or the trial failed
    for phase, command in (("download", f"download {args.bytes} {SEED}"), ("upload", f"upload {args.bytes} {SEED}"),
                           ("rtt", f"rtt {args.rtt_count}")):
        with Meter(pids) as m:
            res = client.ask(command, budget)
        if not res.get("ok"):
            raise LabError(f"{phase}: {res.get('error')}")
        rec = {"cpu_s": m.cpu, "wall_s": round(m.seconds, 4), "busy_cores": m.busy_cores}
        if phase == "rtt":
            samples = res["rtt_us"]
            rec.update(count=len(samples), median_us=statistics.median(samples), max_us=max(samples),
                       cpu_us_per_exchange={k: round(v * 1e6 / len(samples), 2) for k, v in m.cpu.items()},
                       rtt_us=samples)
        else:
            if phase == "download" and res["sha256"] != want_sha:
                raise LabError(f"download: the bytes differ from the stream's (SHA-256 {res['sha256']})")
            gb = res["bytes"] / 1e9
            rec.update(bytes=res["bytes"], seconds=res["seconds"], gbps=res["gbps"],
                       cpu_s_per_gb={k: round(v / gb, 3) for k, v in m.cpu.items()})
        phases[phase] = rec
    return phases


def syscalls(lab, client: Client, pid: int, command: str, timeout: float) -> dict:
    """The system calls of process ``pid`` (every thread) while ``client`` runs one
    command (strace -c -f): how many of each, and the command's own result."""
    out = Path(lab.run_dir) / f"strace-{pid}.txt"
    tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", str(out)],
                              stderr=subprocess.PIPE, text=True)
    try:
        line = tracer.stderr.readline()     # "strace: Process N attached"
        if "attached" not in line:
            raise LabError(f"strace did not attach to {pid}: {line}")
        time.sleep(0.2)                     # its other threads
        res = client.ask(command, timeout)
    finally:
        tracer.send_signal(2)
        tracer.wait(30)
    counts = {}
    for row in out.read_text().splitlines():
        words = row.split()
        if len(words) >= 5 and words[0][0].isdigit() and words[-1] != "total":
            counts[words[-1]] = int(words[3])
    out.unlink(missing_ok=True)
    if not res.get("ok"):
        raise LabError(f"{command} under strace: {res.get('error')}")
    return {"command": command, "calls": counts, "total": sum(counts.values())}


def run_lab(kind: str, relay: bool, args, want_sha: str) -> dict:
    """One lab (under the caller's lab lock): both paths' trials. Never raises: a failure is in the record, and every
    trial it did not run is a failed trial."""
    rec = {"lab": kind, "relay_process": relay, "trials": []}
    done = set()
    try:
        # how fast this machine makes the demo server's stream on one core (no lab yet)
        rec["stream_generation_gbps"] = round(expected_stream(min(args.bytes, 20_000_000), SEED)[1], 3)
        _run_lab(rec, kind, relay, args, want_sha, done)
    except (LabError, OSError, ValueError, KeyError):
        rec["error"] = traceback.format_exc(limit=-8)
        print(rec["error"], file=sys.stderr)
    for i in range(args.trials):   # what never ran (or ran only in part) is a failed trial
        for path in ("direct", kind):
            if (path, i) not in done:
                rec["trials"].append({"lab": kind, "path": path, "trial": i, "outcome": "failed",
                                      "error": "not run: " + (rec.get("error") or "?").strip().splitlines()[-1]})
    return rec


def _run_lab(rec: dict, kind: str, relay: bool, args, want_sha: str, done: set):
    clients = []
    with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=args.run_dir, relay=relay) as lab:
        try:
            lab.start_service("b1", SERVICES["demo"], DIRECT_PORT)
            store = Store(lab.redis.url)
            taken = [Client(lab, PRIMARY_IP, PORT) for _ in range(args.trials)]
            direct = [Client(lab, BACKUP_IP, DIRECT_PORT) for _ in range(args.trials)]
            clients = taken + direct
            ids = [f"{CLIENT_IP}:{c.port}-{PRIMARY_IP}:{PORT}" for c in taken]

            def protected():
                states = [store.conn("b1", i) or {} for i in ids]
                return all(s.get("status") == "protected" for s in states) or None
            wait_for(protected, 30, f"{len(ids)} connection(s) recorded and protected", interval=0.1)
            rec["failover"] = failover(lab, store, args.failure, len(ids))
            relayer = lab.relays["b1"].pid if relay else lab.agent.pid
            pids = {"relayer": relayer, "agent": lab.agent.pid, "relay": lab.relays["b1"].pid if relay else None,
                    "server": listener_pid(lab, PORT), "direct_server": listener_pid(lab, DIRECT_PORT),
                    "ovs": ovs_pid()}
            rec["pids"] = {k: {"pid": v, "cmdline": _cmdline(v)[:160]} for k, v in pids.items() if v}
            rec["owners"] = {c.port: socket_owners(lab, c.port) for c in taken}
            wrong = {port: o for port, o in rec["owners"].items() if o != [relayer]}
            if wrong:
                raise LabError(f"taken-over sockets not held by the {kind} (pid {relayer}) alone: {wrong}")
            rec["own_port_after_failover"] = own_port_after_failover(lab)
            rec["idle_cores"] = idle_cores(pids, 1.0 if args.smoke else 2.0)
            for i in range(args.trials):
                order = [("direct", direct[i]), (kind, taken[i])]
                for position, (path, client) in enumerate(order if i % 2 == 0 else order[::-1]):
                    trial = {"lab": kind, "path": path, "trial": i, "first": position == 0,
                             "local_port": client.port}
                    meter_pids = dict(pids, client=client.pid)
                    if path == "direct":
                        meter_pids.pop("relayer")
                    try:
                        trial["phases"] = measure(client, args, meter_pids, want_sha)
                        trial["outcome"] = "ok"
                    except (LabError, OSError, ValueError, KeyError) as e:
                        trial.update(outcome="failed", error=repr(e))
                    rec["trials"].append(trial)
                    done.add((path, i))
                    print(json.dumps({k: v for k, v in trial.items() if k != "phases"}
                                     | _brief(trial.get("phases"))), flush=True)
            if relay and args.syscalls and rec["trials"] and rec["trials"][-1]["outcome"] == "ok":
                # the relay alone (its splicer and an idle unix-socket server): its system
                # calls per round trip and per MB, on the first taken-over connection
                n, size = args.rtt_count // 4, min(args.bytes, 20_000_000)
                try:
                    rec["relay_syscalls"] = {
                        "rtt": dict(syscalls(lab, taken[0], relayer, f"rtt {n}", 120), per=n, unit="round trip"),
                        "upload": dict(syscalls(lab, taken[0], relayer, f"upload {size} {SEED}", 300),
                                       per=size / 1e6, unit="MB"),
                        "download": dict(syscalls(lab, taken[0], relayer, f"download {size} {SEED}", 300),
                                         per=size / 1e6, unit="MB")}
                except (LabError, OSError, ValueError) as e:
                    rec["relay_syscalls"] = {"error": repr(e)}
            # the end: the client's FIN, and the server's FIN back (a RST is a failure)
            for trial in rec["trials"]:
                client = (direct if trial["path"] == "direct" else taken)[trial["trial"]]
                try:
                    end = client.ask("close", 30)
                    trial["close"] = end.get("end") or end.get("error")
                except (LabError, OSError, ValueError) as e:
                    trial["close"] = repr(e)
                if trial["outcome"] == "ok" and trial["close"] != "eof":
                    trial.update(outcome="failed", error=f"the connection ended with {trial['close']}, not a FIN")
        finally:
            for client in clients:
                client.end()


def _brief(phases) -> dict:
    if not phases:
        return {}
    return {"down_gbps": round(phases["download"]["gbps"], 3), "up_gbps": round(phases["upload"]["gbps"], 3),
            "rtt_median_us": phases["rtt"]["median_us"]}


def path_summary(trials: list) -> dict:
    ok = [t for t in trials if t["outcome"] == "ok"]
    out = {"trials": len(trials), "ok": len(ok), "failed": len(trials) - len(ok)}
    if not ok:
        return out
    samples = [s for t in ok for s in t["phases"]["rtt"]["rtt_us"]]
    for phase in ("download", "upload"):
        rows = [t["phases"][phase] for t in ok]
        out[phase] = {"gbps": stats([r["gbps"] for r in rows]), "bytes": rows[0]["bytes"],
                      "busy_cores_median": statistics.median(r["busy_cores"] for r in rows),
                      "cpu_s_per_gb_median": {k: statistics.median(r["cpu_s_per_gb"][k] for r in rows)
                                              for k in rows[0]["cpu_s_per_gb"]}}
    rows = [t["phases"]["rtt"] for t in ok]
    out["rtt"] = {"samples": len(samples), "median_us": statistics.median(samples), "max_us": max(samples),
                  "busy_cores_median": statistics.median(r["busy_cores"] for r in rows),
                  **tail(samples, "us"), "trial_median_us": stats([r["median_us"] for r in rows]),
                  "cpu_us_per_exchange_median": {k: statistics.median(r["cpu_us_per_exchange"][k] for r in rows)
                                                 for k in rows[0]["cpu_us_per_exchange"]}}
    return out


def summarize(labs: list) -> dict:
    """Per lab: each path, and taken-over / direct ratios of the medians; then the two
    taken-over paths against each other (different labs of the same run)."""
    out = {}
    for lab in labs:
        kind = lab["lab"]
        direct = path_summary([t for t in lab["trials"] if t["path"] == "direct"])
        taken = path_summary([t for t in lab["trials"] if t["path"] == kind])
        entry = {"direct": direct, kind: taken}
        if direct.get("download") and taken.get("download"):
            ratio = {}
            for phase in ("download", "upload"):
                ratio[f"{phase}_gbps"] = taken[phase]["gbps"]["median"] / direct[phase]["gbps"]["median"]
                ratio[f"{phase}_server_cpu_per_gb"] = _ratio(taken[phase]["cpu_s_per_gb_median"]["server"],
                                                             direct[phase]["cpu_s_per_gb_median"]["direct_server"])
                ratio[f"{phase}_ovs_cpu_per_gb"] = _ratio(taken[phase]["cpu_s_per_gb_median"]["ovs"],
                                                          direct[phase]["cpu_s_per_gb_median"]["ovs"])
            ratio["rtt_median"] = taken["rtt"]["median_us"] / direct["rtt"]["median_us"]
            ratio["rtt_max"] = taken["rtt"]["max_us"] / direct["rtt"]["max_us"]
            entry["ratio_taken_over_direct"] = ratio
        out[kind] = entry
    if all(out.get(k, {}).get(k, {}).get("download") for k in ("agent", "relay")):
        a, r = out["agent"]["agent"], out["relay"]["relay"]
        out["relay_over_agent"] = {f"{p}_gbps": r[p]["gbps"]["median"] / a[p]["gbps"]["median"]
                                   for p in ("download", "upload")}
        out["relay_over_agent"]["rtt_median"] = r["rtt"]["median_us"] / a["rtt"]["median_us"]
    return out


def _ratio(a, b):
    return a / b if b else None


def plot(labs: list, path: Path):
    """Top: throughput each way and the round trip per path; bottom: where the CPU went,
    per GB each way and per round trip (the server, the relaying process, ovs-vswitchd)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    columns = [(lab["lab"], p) for lab in labs for p in ("direct", lab["lab"])]
    names = [f"direct\n({lab} lab)" if p == "direct" else f"taken over,\nby the {p}" for lab, p in columns]
    colors = ["tab:gray" if p == "direct" else ("tab:blue" if p == "agent" else "tab:orange") for _, p in columns]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    xs = list(range(len(columns)))
    size = f"{labs[0]['bytes'] / 1e6:.0f} MB" if labs and labs[0].get("bytes") else ""

    def trials_of(lab, p):
        return [t for one in labs if one["lab"] == lab for t in one["trials"] if t["path"] == p
                and t["outcome"] == "ok"]
    for ax, phase in zip(axes[0][:2], ("download", "upload")):
        for x, (lab, p), color in zip(xs, columns, colors):
            vals = [t["phases"][phase]["gbps"] for t in trials_of(lab, p)]
            ax.bar(x, statistics.median(vals) if vals else 0, color=color)
            ax.scatter([x] * len(vals), vals, color="black", s=8, zorder=3)
        ax.set_ylabel("Gbit/s (bar: median, dots: trials)")
        ax.set_title(f"bulk {phase}, {size} per trial")
    ax = axes[0][2]
    for x, (lab, p), color in zip(xs, columns, colors):
        samples = [s for t in trials_of(lab, p) for s in t["phases"]["rtt"]["rtt_us"]]
        if samples:
            ax.bar(x, statistics.median(samples), color=color)
            ax.scatter([x], [max(samples)], marker="v", color="black", zorder=3)
    ax.set_yscale("log")
    ax.set_ylabel("µs (bar: median, triangle: maximum)")
    ax.set_title("PING/PONG round trip")
    parts = (("server", "tab:green"), ("relayer", None), ("ovs", "tab:purple"))
    for ax, phase, key, unit in ((axes[1][0], "download", "cpu_s_per_gb", "CPU s per GB"),
                                 (axes[1][1], "upload", "cpu_s_per_gb", "CPU s per GB"),
                                 (axes[1][2], "rtt", "cpu_us_per_exchange", "CPU µs per round trip")):
        for x, (lab, p), color in zip(xs, columns, colors):
            rows = [t["phases"][phase][key] for t in trials_of(lab, p)]
            bottom = 0.0
            for part, part_color in parts:
                name = "direct_server" if part == "server" and p == "direct" else part
                if not rows or name not in rows[0]:
                    continue
                value = statistics.median(r[name] for r in rows)
                label = {"server": "demo server", "relayer": "relaying process (agent / relay)",
                         "ovs": "ovs-vswitchd"}[part] if x == 1 else None
                ax.bar(x, value, bottom=bottom, color=part_color or color, label=label)
                bottom += value
        ax.set_ylabel(f"{unit} (medians, stacked)")
        ax.set_title(f"CPU: {phase}")
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes.flat:
        ax.set_xticks(xs, names, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(labs: list) -> list:
    problems = []
    for lab in labs:
        if lab.get("error"):
            problems.append(f"{lab['lab']} lab: {lab['error'].strip().splitlines()[-1]}")
        problems += [f"{lab['lab']} lab, {t['path']} trial {t['trial']}: {t.get('error')}"
                     for t in lab["trials"] if t["outcome"] != "ok"]
    return problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10, help="connections measured per path (and lab)")
    ap.add_argument("--bytes", type=int, default=200_000_000, help="size of each bulk download and upload")
    ap.add_argument("--rtt-count", type=int, default=2000, help="PING/PONG round trips per trial")
    ap.add_argument("--failure", choices=("link", "migrate"), default="link",
                    help="how the primary fails over: its link goes down, or a REST migration")
    ap.add_argument("--labs", nargs="+", choices=[k for k, _ in LABS], default=[k for k, _ in LABS],
                    help="which taken-over paths (one lab each)")
    ap.add_argument("--copy-bytes", type=int, default=1_000_000_000,
                    help="bytes per trial of the copy-cost part (no lab: Splicer vs recv/send vs splice(2))")
    ap.add_argument("--copy-trials", type=int, default=3)
    ap.add_argument("--no-syscalls", dest="syscalls", action="store_false",
                    help="skip counting the relay's system calls (strace -c) after the relay lab's trials")
    ap.add_argument("--run-dir", default="/run/ftcp-bench")
    ap.add_argument("--out", help="a directory, or the results' .json path (default bench/results/relay_bench.json)")
    ap.add_argument("--smoke", action="store_true", help="1 trial per path, 5 MB each way, 200 round trips (for CI)")
    args = ap.parse_args(argv)
    if not_root(NAME):
        return 2
    if args.smoke:
        args.trials, args.bytes, args.rtt_count, args.copy_bytes, args.copy_trials = 1, 5_000_000, 200, 50_000_000, 1
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix != ".json":
        out = out / f"{NAME}{'-smoke' if args.smoke else ''}.json"
    path = results_file(out, NAME, args.smoke)
    data = provenance(args, ["bench/relay_bench.py", *argv], "smoke" if args.smoke else "full")
    data["agent_args"] = "the lab's defaults"
    want_sha = expected_stream(args.bytes, SEED)[0]
    labs = []
    # One hold of the machine's lab lock for the whole run: no other lab between the two
    # labs, or during the copy-cost part.
    with lab_lock() as waited:
        data["lock_wait_s"] = waited
        for kind, relay in LABS:
            if kind in args.labs:
                labs.append(run_lab(kind, relay, args, want_sha))
        data["copy_cost"] = copy_costs(args)
    for lab in labs:
        lab["bytes"] = args.bytes
    data["summary"] = summarize(labs)
    data["summary"]["copy_cost"] = data["copy_cost"]["summary"]
    rs = next((lab.get("relay_syscalls") for lab in labs if lab.get("relay_syscalls")), None)
    if rs and "error" not in rs:
        data["summary"]["relay_syscalls"] = {
            phase: {"per": v["unit"], **{k: round(c / v["per"], 2) for k, c in v["calls"].items()},
                    "total": round(v["total"] / v["per"], 2)} for phase, v in rs.items()}
    data["problems"] = verdict(labs) + [f"copy cost, {t['how']} trial {t['trial']}: {t['error']}"
                                        for t in data["copy_cost"]["trials"] if t["outcome"] != "ok"]
    if isinstance(rs, dict) and "error" in rs:
        data["problems"].append(f"the relay's system calls: {rs['error']}")
    data["ok"] = not data["problems"]
    data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data["labs"] = labs
    write(path, data)
    if any(t["outcome"] == "ok" for lab in labs for t in lab["trials"]):
        plot(labs, path.with_suffix(".png"))
    print(json.dumps({k: data[k] for k in ("summary", "problems", "ok")}, indent=1))
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

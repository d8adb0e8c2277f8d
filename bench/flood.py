"""The backup agent's memory under a client-side flood, while a real connection stays protected.

    sudo .venv/bin/python -m bench.flood [--plot] [--smoke]

One lab (demo service, agent with its default limits); c1 runs reqresp against the primary
(a request every 5 ms) all through. c2, the attacker, sends through its own switch port:
``--syns`` SYNs and ``--acks`` ACK-only segments (random seq/ack) from spoofed 10.1.X.Y and
10.2.X.Y (tests/support/forge.py), then ``--ooo`` one-byte segments on a real connection it
opened, segment i at c2s_next + 2 + i (a hole never filled; forge cannot step the sequence,
so ``ooo-send`` here sends them with forge's segment builder, at ``--ooo-rate``). After each
flood it waits for the agent to have read what the switch mirrored and counts what reached
c2's switch port, what ovs-vswitchd's socket there dropped (buffer full), the rest
(``forwarded``), what was mirrored and what the agent read (heartbeat: up to 1 s of c1's
traffic off). Every 0.5 s: agent RSS and CPU, Redis used_memory and records, heartbeat
counters. ``--settle`` s later (past the 10 s embryonic timeout) the primary's link goes down;
it passes only if c1 got every answer right and its connection was taken over.
Results: bench/results/flood.json (flood-smoke.json with --smoke), with --plot flood.png.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import redis

from bench.common import bench_parser, lab_lock, not_root, provenance, results_file, write
from ftcp.agent.admission import Limits
from ftcp.common.keys import svc_conns_key
from ftcp.common.store import Store
from topology.lab import PRIMARY_IP, ROOT, SERVICES, Lab, LabError, failover_settled, wait_for

PORT, SVC, PRIMARY_MAC, INTERVAL = 7000, f"{PRIMARY_IP}:7000", "00:00:00:00:00:10", 0.005
# Source ports per forge run (one spoofed address each). ovs-vswitchd's socket on c2's port
# holds ~270 frames: unpaced, the lab's switch dropped half of a flood sent 10,000 a run and
# ~30% at 1,000 (an unpaced --ooo, where the primary also answers each segment, ~45%).
CHUNK = 1000
ON_C2 = f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m "
BEAT = ("conns", "refused", "evicted", "ooo_total", "out_of_window", "bad_checksum", "kernel_drops", "packets")
# c2's own connection to the service: one PING answered, then it waits (never sends again)
HOLD = ("import socket; s = socket.create_connection(('10.0.0.10', 7000)); s.sendall(b'PING hold\\n'); "
        "print(s.recv(100), s.getsockname(), flush=True); s.recv(1)")


def ooo_send(iface, src, dst, seq, ack, count, rate) -> int:
    """On c2: ``count`` one-byte PA segments src->dst at seq, seq+1, ..., ``rate`` a second
    in bursts of 50 (0: as fast as it can); prints how many."""
    from tests.support.forge import address, segment
    (s, sport), (d, dport) = address(src), address(dst)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    own = bytes.fromhex(Path(f"/sys/class/net/{iface}/address").read_text().strip().replace(":", ""))
    eth = bytes.fromhex(PRIMARY_MAC.replace(":", "")) + own + b"\x08\x00"
    began, rate = time.monotonic(), float(rate)
    for i in range(int(count)):
        if rate and i % 50 == 0 and (ahead := began + i / rate - time.monotonic()) > 0:
            time.sleep(ahead)
        sock.send(eth + segment(s, d, sport, dport, int(seq) + i, int(ack), 0x18, b"x"))
    print(count)
    return 0


def on_c2(lab, module: str, *args) -> int:
    rc, out, err = lab.run("c2", ON_C2 + module + " " + " ".join(shlex.quote(str(a)) for a in args), timeout=900)
    if rc:
        raise LabError(f"{module} on c2 failed ({rc}): {err[-500:]}")
    return int(out.strip())


def switch_counts() -> dict:
    """Frames into the switch from c1, c2 and p1 (the kernel's count on its ports), those
    ovs-vswitchd's socket on c2's port dropped (buffer full), those out of the mirror port."""
    text = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-ports", "s1"], capture_output=True, text=True).stdout
    pattern = r"port\s+(\d+): rx pkts=(\S+), bytes=\S+, drop=(\S+),.*?\n\s+tx pkts=(\S+), bytes=\S+, drop=(\S+),"
    p = {int(m[0]): [int(v) if v.isdigit() else 0 for v in m[1:]] for m in re.findall(pattern, text)}
    sockets = subprocess.run(["ss", "-0", "-a", "-m", "-p"], capture_output=True, text=True).stdout
    drops = re.search(r"\*:s1-eth2 .*?ovs-vswitchd.*?skmem:\(.*?,d(\d+)\)", sockets)
    return {"c1_port_rx": p[1][0], "c2_port_rx": p[2][0], "c2_socket_drops": int(drops[1]) if drops else 0,
            "p1_port_rx": p[3][0], "mirror_port_tx": p[5][2], "mirror_port_tx_drops": p[5][3]}


def sample(lab, pid: int, client, t0: float, samples: list, stop: threading.Event):
    """Every 0.5 s: agent RSS and CPU, Redis memory and records, the heartbeat, c1's progress."""
    r, store = redis.Redis.from_url(lab.redis.url), Store(lab.redis.url)   # the URL has the password
    hz, last = os.sysconf("SC_CLK_TCK"), None
    while not stop.wait(0.5):
        now, status = time.time(), Path(f"/proc/{pid}/status").read_text()
        ticks = sum(map(int, Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
        beat, mem = store.agent_state("b1") or {}, r.info("memory")
        samples.append({"t": round(now - t0, 2), "agent_rss_kb": int(re.search(r"VmRSS:\s+(\d+)", status)[1]),
                        "agent_cpu": round((ticks - last[1]) / hz / (now - last[0]), 2) if last else None,
                        "redis_used": int(mem["used_memory"]), "redis_peak": int(mem["used_memory_peak"]),
                        "redis_records": r.scard(svc_conns_key("demo", "b1")), "redis_keys": r.dbsize(),
                        "c1_received": client.received, **{k: beat.get(k) for k in BEAT}})
        last = (now, ticks)


def gap_max(result: dict, lo: float, hi: float):
    """c1's longest silence between reads that began in the whole seconds [lo, hi) (wall time)."""
    ms = [v for k, v in (result.get("max_gap_ms_by_second") or {}).items() if int(lo) <= int(k) < hi]
    return max(ms) if ms else None


def find_conn(store, client_ip: str):
    fields = ("client_ip", "client_port", "status", "reason", "c2s_next", "s2c_next", "c2s_logged", "s_win_scaled")
    rows = store.conn_fields("b1", store.service_conns("demo", "b1"), fields)
    return next((dict(r, id=cid) for cid, r in rows.items()
                 if r.get("client_ip") == client_ip), None)


def experiment(args, data: dict, lab) -> None:
    store = Store(lab.redis.url)
    pid = int(store.agent("b1")["pid"])   # the agent's own os.getpid(): the python, not a shell
    data["agent_process"] = {"heartbeat_pid": pid, "lab_pid": lab.agent.pid,
                             "cmdline": Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()}
    client = lab.start_client("c1", "reqresp", PRIMARY_IP, PORT, "--count", args.requests, "--interval", INTERVAL,
                              "--progress", 0.02)
    box = {}   # a thread reads c1's progress all along (a full stderr pipe would stall it), then its result
    drain = threading.Thread(target=lambda: box.update(result=client.result(timeout=args.requests * 0.02 + 300)),
                             daemon=True)
    drain.start()
    wait_for(lambda: client.received > 0, 15, "c1's first answers")
    t0, stop, samples = time.time(), threading.Event(), data["samples"]
    sampler = threading.Thread(target=sample, args=(lab, pid, client, t0, samples, stop), daemon=True)
    sampler.start()
    time.sleep(args.baseline)   # the quiet start of the time series

    def counts():
        beat = store.agent_state("b1")
        return dict(switch_counts(), agent_kernel_received=beat["kernel_received"], agent_packets=beat["packets"],
                    heartbeat=beat["heartbeat"])

    def flood(name, runs):
        before, began = counts(), time.time()
        sent = sum(run() for run in runs)
        end, mirrored = time.time(), switch_counts()["mirror_port_tx"]
        # then wait for a heartbeat that shows the agent read what the switch mirrored
        lag = before["mirror_port_tx"] - before["agent_kernel_received"]
        now = wait_for(lambda: (c := counts())["heartbeat"] > end + 1 and c["agent_kernel_received"] + lag >= mirrored
                       and c, 60, f"the agent to read the {name} flood", interval=0.25)
        d = {k: v - before[k] for k, v in now.items() if k != "heartbeat"}
        data["floods"].append({"name": name, "sent": sent, "start": round(began - t0, 2), "end": round(end - t0, 2),
                               "rate_per_s": round(sent / (end - began)), **d,
                               "forwarded": d["c2_port_rx"] - d["c2_socket_drops"]})   # to the primary and mirror
        print(f"{name}: {sent} sent in {end - began:.1f} s, {d['c2_port_rx'] - d['c2_socket_drops']} forwarded",
              flush=True)

    def forge(i, total, net, *more):   # run i: CHUNK source ports from one spoofed address
        n, src = min(CHUNK, total - i * CHUNK), f"{net}.{i // 250}.{i % 250 + 1}:0"
        return lambda: on_c2(lab, "tests.support.forge", "--iface", "c2-eth0", "--dst-mac", PRIMARY_MAC, "--src", src,
                             "--dst", SVC, "--sports", f"20000-{20000 + n - 1}", "--seed", i, *more)
    for name, total, net, flags in (("syn", args.syns, "10.1", ("S", "--random-seq")),
                                    ("ack", args.acks, "10.2", ("A", "--random-seq", "--random-ack"))):
        flood(name, [forge(i, total, net, "--flags", *flags) for i in range(-(-total // CHUNK))])
    lab.popen("c2", f"exec python3 -c {shlex.quote(HOLD)}", "hold")
    hold = data["c2_conn"] = wait_for(lambda: (c := find_conn(store, "10.0.0.2")) and c.get("c2s_logged") == 10 and c,
                                      15, "c2's connection in Redis")
    flood("ooo", [lambda: on_c2(lab, "bench.flood", "ooo-send", "c2-eth0", f"10.0.0.2:{hold['client_port']}", SVC,
                                hold["c2s_next"] + 2, hold["s2c_next"], args.ooo, args.ooo_rate)])
    time.sleep(args.settle)   # past the embryonic records' timeout, seen in the time series
    c1 = find_conn(store, "10.0.0.1")
    data["before_failure"] = {"service": store.service("demo")["status"], "c1_conn": c1,
                              "c2_conn": find_conn(store, "10.0.0.2"), "c1_running": client.proc.poll() is None}
    failed_at = time.time()
    data["failed_at"] = round(failed_at - t0, 2)
    lab.fail_primary("link")
    svc = wait_for(lambda: failover_settled(store), 30, "the failover")
    failed = json.loads(svc.get("failed") or "{}")
    data["takeover"] = {"status": svc.get("status"), "step": svc.get("step"), "taken": svc.get("taken"),
                        "timeline_ms": json.loads(svc.get("timeline_ms") or "{}"), "failed_count": len(failed),
                        "failed_by_reason": dict(collections.Counter(failed.values())),
                        "failed_first": dict(list(failed.items())[:5]),
                        "c1_taken": bool(c1) and c1["id"] not in failed and svc.get("status") == "failed-over"
                        and int(svc.get("taken") or 0) > 0}
    drain.join(args.requests * 0.02 + 310)
    stop.set()
    sampler.join()
    data["agent_vmhwm_kb"] = int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1])
    data["final_heartbeat"] = beat = store.agent_state("b1")
    res = box.get("result") or {"ok": False, "error": "harness: no result from c1's client"}
    data["client"] = {k: res.get(k) for k in ("ok", "error", "requests", "received", "sent", "stall_ms", "max_gap_ms")}
    first, last = data["floods"][0]["start"] + t0, data["floods"][-1]["end"] + t0 + 1
    data["client"]["max_gap_ms_by_phase"] = {
        "baseline": gap_max(res, t0, first), "floods": gap_max(res, first, last),
        "settle": gap_max(res, last, int(failed_at)), "failover": gap_max(res, failed_at, failed_at + 3)}
    data["maxima"] = {k: max((x[k] for x in samples if x.get(k) is not None), default=None) for k in
                      ("agent_rss_kb", "redis_used", "redis_peak", "redis_records", "redis_keys", "conns",
                       "ooo_total", "agent_cpu")}
    data["counters"] = {k: beat.get(k) for k in BEAT}
    data["counters"]["kernel_drops_during_run"] = beat["kernel_drops"] - (samples[0]["kernel_drops"] or 0)


def plot(data: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    s, t = data["samples"], [x["t"] for x in data["samples"]]
    fig, (top, low) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    top.plot(t, [x["agent_rss_kb"] / 1024 for x in s], label="agent RSS")
    top.plot(t, [x["redis_used"] / 2 ** 20 for x in s], label="Redis used_memory")
    top.set_ylabel("MiB")
    for key, label in (("conns", "agent records (conns)"), ("redis_records", "records in Redis"),
                       ("evicted", "evicted (total)"), ("out_of_window", "out_of_window (total)"),
                       ("ooo_total", "out-of-order bytes held")):
        low.plot(t, [x[key] or 0 for x in s], label=label)
    low.set_yscale("symlog")
    low.set_xlabel("seconds")
    for ax in (top, low):
        for f, color in zip(data["floods"], ("tab:orange", "tab:purple", "tab:green")):
            ax.axvspan(f["start"], f["end"], color=color, alpha=0.2, label=f"{f['name']}: {f['sent']:,} sent, "
                       f"{f['forwarded']:,} past the switch" if ax is top else None)
        ax.axvline(data["failed_at"], color="red", ls="--", label="primary link down" if ax is top else None)
        ax.legend(fontsize=7, loc="center right")
    fig.suptitle(f"backup agent under a client-side flood (commit {data['commit'][:8]}"
                 f"{', dirty' if data['dirty'] else ''}): c1 ok={data['client']['ok']}, taken over="
                 f"{data['takeover']['c1_taken']}, kernel drops={data['counters']['kernel_drops_during_run']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ooo-send"]:
        return ooo_send(*argv[1:])
    ap = bench_parser("flood", __doc__, smoke="tiny floods (for CI)", run_dir="/run/ftcp-flood",
                      plot="also draw the .png next to the JSON")
    ap.add_argument("--syns", type=int, default=100_000)
    ap.add_argument("--acks", type=int, default=100_000)
    ap.add_argument("--ooo", type=int, default=1_000_000)
    ap.add_argument("--ooo-rate", type=float, default=10_000, help="segments a second (0: unpaced)")
    ap.add_argument("--requests", type=int, default=35_000, help="c1's requests, one per 5 ms: outlasting the floods")
    ap.add_argument("--baseline", type=float, default=3.0)
    ap.add_argument("--settle", type=float, default=12.0, help="seconds from the last flood to the failure")
    args = ap.parse_args(argv)
    if not_root("flood"):
        return 2
    if args.smoke:
        args.syns, args.acks, args.ooo, args.requests, args.baseline, args.settle = 2000, 2000, 5000, 4000, 1, 2
    out = results_file(args.out, "flood", args.smoke)
    data = provenance(args, ["bench/flood.py", *argv], "smoke" if args.smoke else "full")
    data.update(limits=dataclasses.asdict(Limits()), agent_args="defaults", floods=[], samples=[])
    try:
        with lab_lock() as waited:
            data["lock_wait_s"] = waited
            with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=args.run_dir) as lab:
                experiment(args, data, lab)
        data["ok"] = bool(data["client"]["ok"] and data["takeover"]["c1_taken"])
    except (LabError, OSError, ValueError, KeyError):
        data.update(ok=False, error=traceback.format_exc(limit=-8))
        print(data["error"], file=sys.stderr)
    data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data["samples"] = data.pop("samples")   # the long part last
    write(out, data)
    if args.plot and "client" in data:
        plot(data, out.with_suffix(".png"))
    keys = ("floods", "maxima", "counters", "client", "takeover", "ok", "error")
    print(json.dumps({k: data.get(k) for k in keys}, indent=1))
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

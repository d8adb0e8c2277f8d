"""The lab's command line: ``python -m topology demo | run | clean`` (./run.sh demo, ./run.sh lab ...)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ftcp.common.config import DIVERGENCE_MODES
from topology.processes import ROOT
from topology.reaper import kill_group

from topology.lab import (BACKUP_IP, BACKUPS, DIVERGENCE, PRIMARY_IP, SERVICES, Lab, LabError, cleanup_stale,
                          failover_settled, wait_for)

# the client `lab run` starts when none is given, for the shipped services that have one
DEFAULT_CLIENTS = {
    "web": "python3 {root}/services/client.py http {address} {port} --count 3000 --interval 0.003",
}


def _service_cmd(value: str) -> str:
    return SERVICES.get(value, value)


def settled(store, epoch: int):
    """The service's record once the failover of ``epoch`` is over: failed, failed over
    (go acknowledged), or protected again by the next backup; else None."""
    svc = store.service("demo") or {}
    if int(svc.get("epoch") or 0) < epoch:
        return None
    again = svc.get("status") == "protected" and svc.get("step") == "reprotected"
    return svc if again or failover_settled(store) else None


def serving_host(store) -> str:
    """The lab host serving the service now (p1 for the primary)."""
    serving = (store.service("demo") or {}).get("serving") or "primary"
    return "p1" if serving == "primary" else serving


def print_timeline(store, since: float, epoch: int = 1) -> dict:
    """The failover's events, in seconds from ``since``; returns the service's record
    once the failover of ``epoch`` settled."""
    svc = wait_for(lambda: settled(store, epoch), 15, "the failover")
    print(f"== the controller: service demo is {svc['status']} (epoch {svc['epoch']}, served by "
          f"{svc.get('serving') if svc.get('status') == 'protected' else svc.get('backup')}, "
          f"{svc.get('taken')} connection(s) taken over, {svc.get('takeover_seconds')} s from fence to ready)")
    for event_id, record in store.events():
        if float(record["time"]) < since:
            continue
        if record["kind"].startswith("service_") or record["kind"] == "conn_unprotected":
            fields = {k: v for k, v in record.items() if k not in ("kind", "time")}
            print(f"   {float(record['time']) - since:+8.3f} s  {record['kind']:<22} {json.dumps(fields)}")
    return svc


def demo(args) -> int:
    """The lab demo: clients stream and exchange requests with the primary; the
    primary crashes mid-stream (link down, server killed); the clients carry on,
    served by the backup, and every byte checks out."""
    from ftcp.common.store import Store
    with Lab(service_cmd=SERVICES["demo"], service_port=args.port, run_dir=args.run_dir) as lab:
        store = Store(lab.redis.url)
        print(f"\n== lab up: clients c1 10.0.0.1 and c2 10.0.0.2, primary p1 {PRIMARY_IP}, backup b1 "
              f"{BACKUP_IP} (mirror iface b1-eth1), service on port {args.port}; logs in {lab.run_dir}")
        print("== c1 streams 40 MB from the primary; c2 runs 3000 requests, one every millisecond")
        stream = lab.start_client("c1", "stream", PRIMARY_IP, args.port, "--bytes", 40_000_000, "--progress", 0.02)
        reqs = lab.start_client("c2", "reqresp", PRIMARY_IP, args.port, "--count", 3000, "--interval", 0.001,
                                "--progress", 0.02)
        stream.wait_progress(received=10_000_000)
        print(f"== c1 has {stream.received} bytes: the primary crashes now (link down, server killed)")
        crashed = time.time()
        lab.crash_primary()
        svc = print_timeline(store, crashed)
        results = {"stream": stream.result(), "reqresp": reqs.result()}
        for name, res in results.items():
            print(f"== {name}: ok={res['ok']} error={res.get('error')} sent={res['sent']} received={res['received']} "
                  f"sha256(received)={res['received_sha256'][:16]}... longest stall {res['stall_ms']:.0f} ms")
        ok = all(r["ok"] for r in results.values()) and svc["status"] == "failed-over"
        print("\n== demo", "PASSED: both clients kept their connections through the crash" if ok else "FAILED",
              f"(logs in {lab.run_dir})")
        return 0 if ok else 1


def run(args) -> int:
    """Your service on the primary and the backup; with --client, your client on a
    client host, and with --fail, a failure of the primary --after seconds into it."""
    from ftcp.common.store import Store
    divergence = args.divergence or DIVERGENCE.get(args.service)
    client = args.client or DEFAULT_CLIENTS.get(args.service)
    if args.fail and not client:
        raise LabError("--fail needs a client to watch: give --client")
    with Lab(service_cmd=_service_cmd(args.service), service_port=args.port, run_dir=args.run_dir,
             clients=args.clients, divergence=divergence, backups=args.backups) as lab:
        print(f"lab up: service {args.service!r} on p1 {PRIMARY_IP}:{args.port} and "
              f"{', '.join(b + ' ' + BACKUPS[b]['address'] for b in lab.backups)}:{args.port} "
              f"(divergence: {divergence or 'strict'}); ryu-manager REST on 127.0.0.1:{lab.wsapi_port}; "
              f"logs in {lab.run_dir}")
        if not client:
            from mininet.cli import CLI
            CLI(lab.net)
            return 0
        client = client.format(root=ROOT, address=PRIMARY_IP, port=args.port)
        print(f"== {args.client_host}: {client}")
        proc = lab.record(args.client_host, "client", lab.host(args.client_host).popen(
            ["bash", "-c", client], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        try:
            store, began = Store(lab.redis.url), time.time()
            fails, afters = args.fail or [], list(args.after or [3.0])
            while len(afters) < len(fails):
                afters.append(afters[-1] + afters[0])
            for epoch, (how, after) in enumerate(zip(fails, afters), start=1):
                try:
                    out, err = proc.communicate(timeout=max(0.0, began + after - time.time()))
                    raise LabError(f"the client ended (status {proc.returncode}) before the failure at "
                                   f"{after} s: {(out + err)[-500:]}")
                except subprocess.TimeoutExpired:
                    pass
                host = serving_host(store)
                print(f"== {after:g} s: {host}, serving the service, fails ({how})")
                failed = time.time()
                lab.fail_host(host, how)
                print_timeline(store, failed, epoch)
            out, err = proc.communicate(timeout=args.timeout)
        finally:
            kill_group(proc)
        sys.stdout.write(out)
        sys.stderr.write(err[-2000:])
        print(f"== the client exited with status {proc.returncode}")
        return proc.returncode


def clean(args) -> int:
    cleanup_stale(Path(args.run_dir))
    shutil.rmtree(args.run_dir, ignore_errors=True)
    print("lab: cleaned")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m topology", description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default=os.environ.get("FTCP_RUN_DIR", "/run/ftcp"))
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("demo", help="the lab demo (the README's first command)")
    p.add_argument("--port", type=int, default=7000)
    p = sub.add_parser("run", help="start the lab with your service; run a client command or open the Mininet CLI")
    p.add_argument("--service", default="echo",
                   help="'echo', 'demo', 'web' (nginx, with a keep-alive client) or a command line; "
                        "{port} is replaced by --port, {run} by the run directory")
    p.add_argument("--port", type=int, default=7000)
    p.add_argument("--divergence", choices=DIVERGENCE_MODES,
                   help="how far the backup's replica may differ (default: strict; aligned for 'web')")
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--backups", type=int, choices=(1, 2), default=1,
                   help="backup hosts: b1, and with 2 also b2 (each with its agent and relay; both protect)")
    p.add_argument("--client", help="command to run on --client-host, e.g. 'curl http://10.0.0.10:7000/' "
                                    "({address} and {port} are the service's)")
    p.add_argument("--client-host", default="c1")
    p.add_argument("--fail", choices=("link", "crash", "silent"), action="append",
                   help="fail the host serving the service while the client runs, and print the failover's "
                        "timeline; repeat it (with --backups 2) to fail whichever host serves next")
    p.add_argument("--after", type=float, action="append",
                   help="seconds into the client run to each --fail (default 3; a --fail without one "
                        "comes as long after the last as the first came)")
    p.add_argument("--timeout", type=float, default=600)
    sub.add_parser("clean", help="remove what a killed lab left behind")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if os.geteuid() != 0:
        print("the lab needs root (network namespaces, Open vSwitch)", file=sys.stderr)
        return 2
    try:
        return {"demo": demo, "run": run, "clean": clean}[args.cmd](args)
    except LabError as e:
        print(f"lab: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lab: interrupted, torn down", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

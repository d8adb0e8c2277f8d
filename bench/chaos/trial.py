"""Running one chaos trial: a fresh lab under the lab lock, the clients, the primary's
failure and the fault at the drawn moment, then every client's and the controller's
verdict, with the evidence of any trial that was not masked or cleanly reset."""
from __future__ import annotations

import json
import shutil
import signal
import time
import traceback
from pathlib import Path

from bench.chaos import PORT
from bench.chaos.clients import FINE_PROGRESS, FLOWING, PROGRESS, Client
from bench.chaos.draw import SIZES, draw
from bench.chaos.faults import Fault
from bench.chaos.oracle import Expected, classify, outcome_of
from bench.common import lab_lock
from ftcp.common.errors import StoreError
from ftcp.common.store import Store
from topology.lab import ROOT, SERVICES, Lab


class Trial:
    """One trial in its lab: ``run`` starts the clients, fails the primary and fires the
    fault at the drawn moment, then fills ``rec`` with the verdicts."""

    def __init__(self, lab: Lab, d: dict, args, rec: dict):
        self.lab, self.d, self.args, self.rec = lab, d, args, rec
        self.store = Store(lab.redis.url)   # the same unix socket across a Redis restart
        self.t0 = time.monotonic()
        self.clients = []
        self.fault = Fault(lab, d["fault"], d["fault_params"]) if d["fault"] != "none" else None
        self.failed_at = self.failed_wall = None
        self.marks = {}

    def mark(self, name: str):
        self.marks[name] = round(time.monotonic() - self.t0, 4)

    def service(self) -> dict:
        try:
            return self.store.service("demo") or {}
        except StoreError:
            return {}

    def start_clients(self):
        """c1 (and c2) start; except at the handshake moment, this returns once every
        client's bytes flow (a first progress line that moved bytes), so that both of a
        pair are mid-transfer when the trigger fires. A stream client computes the
        SHA-256 of the whole stream before it reads a byte (services/client.py, ~2 s
        here): with a pair, the stream starts first and the other client once it flows."""
        fine = self.d["moment"] in ("handshake", "during_close")
        settle = self.d["moment"] != "handshake"
        specs = list(zip(("c1", "c2"), self.d["mix"]))
        order = sorted(specs, key=lambda s: s[1] != "stream") if settle else specs
        started = {}
        for host, mode in order:
            progress = FINE_PROGRESS[mode] if fine else PROGRESS
            client = started[host] = Client(self.lab, host, mode, SIZES[mode], self.d["client_seed"], progress,
                                            self.args.client_timeout)
            if settle:
                least = FLOWING[mode]
                flowing = (lambda c: c.sent >= least) if mode == "upload" else (lambda c: c.received >= least)
                if not client.wait_until(flowing, time.monotonic() + 30):
                    self.rec.setdefault("notes", []).append(f"{host} {mode}: no bytes moved in 30 s")
                self.mark(f"{host}_flowing")
        self.clients = [started[host] for host, _ in specs]
        self.mark("clients_started")

    def fail(self):
        self.failed_at = time.monotonic()
        self.failed_wall = self.rec["failure_wall"] = time.time()
        self.rec["at_failure"] = [{"host": c.host, "received": c.received, "sent": c.sent,
                                   "progress_lines": len(c.lines), "ended": c.ended is not None}
                                  for c in self.clients]
        self.mark("failure")
        self.lab.fail_primary(self.d["failure"])
        self.mark("failure_done")

    def fault_now(self, delay: float = 0.0):
        if self.fault is not None:
            self.fault.start(delay)

    def trigger_client(self) -> Client:
        moment, mix = self.d["moment"], self.d["mix"]
        if moment == "mid_upload":
            return self.clients[mix.index("upload")]
        if moment == "mid_download":
            return self.clients[mix.index("stream")]
        return self.clients[0]

    def wait(self, client: Client, predicate, what: str):
        if not client.wait_until(predicate, time.monotonic() + self.args.deadline):
            self.rec.setdefault("notes", []).append(f"trigger {what} not reached (client ended or deadline): "
                                                    f"received {client.received} sent {client.sent}")

    def run(self):
        d, offset = self.d, self.d["fault_offset_s"] or 0.0
        moment = d["moment"]
        if moment == "handshake":
            delay = d["handshake_delay_s"]
            fault_at = delay + offset           # relative to the clients' start
            if self.fault is not None and fault_at < 0:
                self.fault_now()
                time.sleep(-fault_at)
                self.start_clients()
                time.sleep(delay)
                self.fail()
            else:
                self.start_clients()
                if self.fault is not None and offset < 0:
                    time.sleep(fault_at)
                    self.fault_now()
                    time.sleep(-offset)
                else:
                    time.sleep(delay)
                self.fail()
                if offset >= 0:
                    self.fault_now(offset)
        elif moment == "during_close":
            self.start_clients()
            c = self.clients[0]
            lead = d["close_lead"]

            def done(c):
                if c.mode == "upload":
                    return c.received > 0          # its answer is arriving: then it shuts down
                return c.received >= c.expected.received_len - lead

            def remaining(c):
                """Seconds until done(c), projected from its rate so far."""
                if c.mode == "upload":
                    return (c.expected.sent_len - c.sent) / (c.rate("sent") or 1e-9)
                return (c.expected.received_len - lead - c.received) / (c.rate("received") or 1e-9)
            if self.fault is not None and offset < 0:
                # fire the fault when c1's projected end is |offset| away (or at once)
                self.wait(c, lambda c: done(c) or remaining(c) <= -offset, "projected end")
                self.fault_now()
                self.mark("fault_fired")
            self.wait(c, done, "c1's last bytes")
            time.sleep(d["close_jitter_s"])
            self.fail()
            if self.fault is not None and offset >= 0:
                self.fault_now(offset)
        else:   # mid_upload, mid_download, right_after_failover: a fraction of the trigger client's bytes
            self.start_clients()
            c = self.trigger_client()
            if c.mode == "upload":
                target = int(d["trigger_fraction"] * c.expected.sent_len)
                self.wait(c, lambda c: c.sent >= target, f"{target} bytes sent")
            else:
                target = int(d["trigger_fraction"] * c.expected.received_len)
                self.wait(c, lambda c: c.received >= target, f"{target} bytes received")
            self.mark("trigger")
            if moment == "right_after_failover":
                self.fail()
                svc = self.wait_status(("failed-over", "failover-failed"), 20)
                self.mark("failed_over_seen")
                if svc.get("status") != "failed-over":
                    self.rec.setdefault("notes", []).append(f"no failed-over record before the fault: {svc}")
                self.fault_now(offset)
            elif self.fault is not None and offset < 0:
                self.fault_now()
                time.sleep(-offset)
                self.fail()
            else:
                self.fail()
                self.fault_now(offset)
        # the clients' verdicts
        fins = [c.finish(c.started + self.args.deadline) for c in self.clients]
        self.mark("clients_done")
        if self.fault is not None:
            self.fault.join(60)
            self.rec["fault_began_s"] = round(self.fault.began - self.t0, 4) if self.fault.began else None
            self.rec["fault_ended_s"] = round(self.fault.ended - self.t0, 4) if self.fault.ended else None
            self.rec["fault_minus_failure_s"] = (round(self.fault.began - self.failed_at, 4)
                                                 if self.fault.began and self.failed_at else None)
            self.rec["fault_error"] = self.fault.error
        # the controller's verdict, once it has settled
        svc = self.wait_settled(self.args.settle)
        self.mark("settled")
        record = {k: svc.get(k) for k in ("status", "step", "reason", "failed", "taken", "epoch", "backup",
                                          "takeover_seconds", "problem", "released", "acknowledged", "reset")}
        try:
            record["failed_map"] = json.loads(svc.get("failed") or "{}")
        except ValueError:
            record["failed_map"] = {"?": svc.get("failed")}
        record.pop("failed")
        try:
            record["timeline_ms"] = json.loads(svc.get("timeline_ms") or "null")
        except ValueError:
            record["timeline_ms"] = svc.get("timeline_ms")
        self.rec["record"] = record
        self.rec["clients"] = [classify(c, fin, record, self.failed_wall) for c, fin in zip(self.clients, fins)]
        self.rec["events"] = self.events()
        self.rec["marks"] = self.marks
        self.rec["flows"] = self.lab.flows() if self.lab.net is not None else ""

    def wait_status(self, wanted, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            svc = self.service()
            if svc.get("status") in wanted or time.monotonic() > deadline:
                return svc
            time.sleep(0.003)

    def wait_settled(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            svc = self.service()
            status, step = svc.get("status"), svc.get("step")
            if (status, step) in (("failed-over", "done"), ("failover-failed", "aborted")) or \
                    (step or "").endswith("-unacknowledged") or time.monotonic() > deadline:
                return svc
            time.sleep(0.05)

    def events(self) -> list:
        keep = ("service_", "failover_refused", "controller_started", "flows_installed", "conn_unprotected",
                "link_flap", "switch_error")
        try:
            records = self.store.events()
        except StoreError as e:
            return [{"error": str(e)}]
        out = []
        for _, r in records:
            if r.get("kind", "").startswith(keep):
                ev = {"t": round(float(r.get("time", 0)) - (self.failed_wall or 0), 4), "kind": r["kind"]}
                ev.update({k: v for k, v in r.items() if k in ("reason", "epoch", "step", "taken", "failed")})
                out.append(ev)
        return out


def keep_evidence(rec: dict, run_dir: Path, clients, evidence_root: Path):
    where = evidence_root / f"{rec['trial']:04d}"
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    for path in [*run_dir.glob("*.log"), *run_dir.glob("*.out"), run_dir / "services.yaml"]:
        if path.exists():
            shutil.copy(path, where / path.name)
    for c in clients:
        (where / f"client-{c.host}-{c.mode}.txt").write_text(c.output())
    (where / "flows.txt").write_text(rec.get("flows", ""))
    (where / "trial.json").write_text(json.dumps(rec, indent=1))
    rec["evidence"] = str(where.relative_to(ROOT)) if where.is_relative_to(ROOT) else str(where)


def run_trial(index: int, args, evidence_root: Path) -> dict:
    d = draw(args.seed, index, args.force)
    rec = {"trial": index, **d}
    for mode in d["mix"]:   # the expected bytes, computed before the lab exists
        Expected.of(mode, SIZES[mode], d["client_seed"])
    trial = None
    with lab_lock() as waited:
        rec["lock_wait_s"] = waited
        locked = time.monotonic()
        rec["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            with Lab(service_cmd=SERVICES["demo"], service_port=PORT, run_dir=args.run_dir) as lab:
                rec["lab_start_s"] = round(time.monotonic() - locked, 3)
                trial = Trial(lab, d, args, rec)
                try:
                    trial.run()
                finally:
                    if trial is not None and trial.fault is not None:
                        trial.fault.join(30)
                    for c in (trial.clients if trial is not None else ()):
                        if c.proc.poll() is None:
                            c.proc.kill()
                    if d["failure"] == "silent":
                        lab._primary_services(signal.SIGCONT)   # a stopped server takes 5 s to stop
        except KeyboardInterrupt:
            raise
        except Exception:
            rec["error"] = traceback.format_exc(limit=8)
        rec["outcome"] = outcome_of(rec)
        if rec["outcome"] not in ("masked", "reset") or args.keep_all:
            keep_evidence(rec, Path(args.run_dir), trial.clients if trial else [], evidence_root)
    rec["trial_s"] = round(time.monotonic() - locked, 3)
    rec.pop("flows", None)
    return rec


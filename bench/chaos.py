"""Chaos trials in the lab: primary failure x control-plane fault x moment x traffic mix.

Each trial runs in a fresh lab; every client connection must end masked or reset
cleanly, never corrupted, never hung.

    .venv/bin/python -m bench.chaos [--trials 200] [--seed 1] [--out bench/results/chaos.json]
    .venv/bin/python -m bench.chaos --smoke          # 2 trials, for CI (bench/results/chaos-smoke.json)
    .venv/bin/python -m bench.chaos --resume bench/results/chaos.json   # carry on an interrupted run

Per trial (each draw uniform, from a random.Random seeded with "<seed>:<trial>", so a
trial is reproducible on its own and --resume continues the same sequence):

* ``failure``  link | crash | silent                        (Lab.fail_primary)
* ``fault``    none | controller_kill | redis_restart | agent_pause | switch_disconnect,
  ``fault_offset_s`` relative to the failure: before it by 0-1 s (negative) or after it
  by 0-0.3 s; for the moment ``right_after_failover`` 0-0.3 s after the service was
  recorded failed-over instead. redis_restart: Redis down 0-1 s; agent_pause: SIGSTOP
  0.2-1.5 s; switch_disconnect: the switch loses its OpenFlow connection for 0.2-1 s
  (``Lab.cut_controller``: pointed at a port nobody listens on; it keeps its flows).
* ``moment``   handshake        the clients start and the primary fails 0-150 ms later
                                (before or around their SYN);
               mid_upload       the upload client has sent 10-35 % of its bytes;
               mid_download     the stream client has received 10-35 % of its bytes
                                (with a pair: once both are under way, at once if
                                the trigger client is past that by then);
               during_close     c1's last bytes are arriving (the last 0-512 KB of a
                                stream, the last 0-16 KB of the request loop's answers,
                                the upload's answer line): it shuts down and reads EOF;
               right_after_failover  as mid_*, on c1, and the fault comes right after
                                the failover is recorded.
  A "before" fault of mid_* moves the failure after the trigger by the offset (the
  fault fires at the trigger); of handshake it fires before the clients start; of
  during_close when c1's end, projected from its rate, is that far away (for an upload
  the projection is its last send, and its answer comes later by what the socket
  buffers hold: the gap is then larger). Each trial records the gap it got
  (``fault_minus_failure_s``) next to the one drawn.
* ``mix``      stream | upload | reqresp on c1, or two of them (c1 and c2) at once.
  mid_upload draws among the mixes with an upload, mid_download among those with a
  stream (the trigger watches that client); the others among all six.

Outcome of each client connection (services/client.py, every byte checked by its
SHA-256s; the harness also recomputes the expected bytes and checks the SHA-256s of
what was sent and received, and of the prefix a reset client got):

* masked     ok, all bytes, both SHA-256s equal the expected ones;
* not_connected  connect() itself failed (a new connection while the primary was gone
             and no failover had happened yet, e.g. the controller was down): there
             never was a byte to protect;
* reset      the client saw a reset/EOF (its bytes so far a correct prefix) AND the
             controller's record says why: status failover-failed with a reason, or the
             connection id (or "*") in the record's ``failed`` map;
* reset_unexplained  a reset/EOF the record does not explain (kept as evidence);
* corrupted  any byte wrong: a SHA-256 or prefix mismatch, a wrong answer, bytes after
             the end;
* hung       the client did not finish within --deadline (60 s) of its start, or its
             socket timed out (--client-timeout) or the kernel gave up (ETIMEDOUT).
A trial's outcome is its worst client's (corrupted > hung > reset_unexplained > reset >
not_connected > masked); ``error`` when the harness itself failed (lab did not start, a fault could not
be injected). Every trial but a masked or cleanly reset one keeps its evidence in
bench/results/chaos-evidence/<trial>/ (ryu.log, agent.log, the clients' output, flows).

Only one lab runs on this machine at a time: each trial holds an exclusive flock on
/run/ftcp-lab.lock for the whole life of its Lab (run dir /run/ftcp-chaos). Results are
rewritten after every trial (bench/results/chaos.json: commit, dirty, args, argv, mode
= full (>= 200 trials) | short | smoke | only, started/finished, trials, summary); a Markdown
table of outcomes by fault x moment, the reset reasons and the masked connections'
stalls (the longest silence spanning the failure, as bench/failover_bench.py measures
it) is printed at the end. Exit status 1 if any trial was corrupted, hung, reset
unexplained or an error. A trial takes ~10 s here (lab start 3 s, clients 3-7 s,
teardown 1 s; without waiting for the lock): 200 trials ~35 min.

To look at one trial again: ``--seed S --only I`` reruns trial I with the same draws
(``--keep-all`` keeps its logs even if it passes); ``--force moment=handshake
--force fault=controller_kill`` replaces draws in every trial (recorded as ``forced``).

"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

from bench.common import git, lab_lock, not_root, provenance, write
from ftcp.common.store import Store, StoreError
from topology.lab import PRIMARY_IP, ROOT, SERVICES, Lab

sys.path.insert(0, str(ROOT / "services"))
from demo_server import stream_bytes  # noqa: E402

PORT = 7000
CLIENT = str(ROOT / "services/client.py")
RESULTS = ROOT / "bench/results"
RUN_DIR = "/run/ftcp-chaos"
CLIENT_IPS = {"c1": "10.0.0.1", "c2": "10.0.0.2"}

FAILURES = ("link", "crash", "silent")
FAULTS = ("none", "controller_kill", "redis_restart", "agent_pause", "switch_disconnect")
MOMENTS = ("handshake", "mid_upload", "mid_download", "during_close", "right_after_failover")
MIXES = (("stream",), ("upload",), ("reqresp",), ("stream", "upload"), ("stream", "reqresp"),
         ("upload", "reqresp"))
OUTCOMES = ("masked", "not_connected", "reset", "reset_unexplained", "corrupted", "hung", "error")
WORST = {name: rank for rank, name in enumerate(("masked", "not_connected", "reset", "reset_unexplained", "hung",
                                                  "corrupted"))}

# Sizes: each client transfers for ~2-3 s alone in this lab (stream ~20 MB/s once it
# reads, after ~1.4 s computing the SHA-256 it expects; upload ~25 MB/s; ~1,600
# requests/s), long enough that a failure moved 1 s after a trigger at 35 % still falls
# mid-transfer.
SIZES = {"stream": 40_000_000, "upload": 64_000_000, "reqresp": 4000}
PROGRESS = 0.02            # progress lines, mid-transfer moments
FINE_PROGRESS = {"stream": 0.0001, "upload": 0.0001, "reqresp": 0.0005}   # handshake, during_close
HANDSHAKE_MAX_DELAY = 0.15
FLOWING = {"stream": 1_000_000, "upload": 2_000_000, "reqresp": 20_000}   # bytes: a client is under way


# --- expected bytes ---------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Expected:
    """What a client of each mode must send and receive: lengths and SHA-256s, and the
    SHA-256 of any prefix (for a client that was reset). Cached per (mode, size, seed):
    the trials share a few seeds. Big byte strings are made again when a prefix is
    needed (rare) rather than kept."""

    _cache = {}

    @classmethod
    def of(cls, mode: str, size: int, seed: str) -> "Expected":
        key = (mode, size, seed if mode != "reqresp" else "")
        if key not in cls._cache:
            cls._cache[key] = cls(mode, size, seed)
        return cls._cache[key]

    def __init__(self, mode: str, size: int, seed: str):
        self.mode, self.size, self.seed = mode, size, seed
        sent, received = self._bytes()
        self.sent_len, self.received_len = len(sent), len(received)
        self.sent_sha, self.received_sha = _sha(sent), _sha(received)

    def _bytes(self):
        """(all the bytes the client sends, all it receives)."""
        size, seed = self.size, self.seed
        if self.mode == "stream":
            return f"GET {size} {seed}\n".encode(), stream_bytes(size, seed)
        if self.mode == "upload":
            body = random.Random(seed).randbytes(size)
            return f"PUT {size}\n".encode() + body, f"OK {_sha(body)}\n".encode()
        # reqresp: client.py's requests and the demo server's answers, in order
        sent, received = bytearray(), bytearray()
        for i in range(size):
            kind = i % 3
            if kind == 0:
                sent += f"PING {i}\n".encode()
                received += f"PONG {i}\n".encode()
            elif kind == 1:
                sent += f"GET 1000 s{i}\n".encode()
                received += stream_bytes(1000, f"s{i}")
            else:
                body = random.Random(i).randbytes(1000)
                sent += f"PUT {len(body)}\n".encode() + body
                received += f"OK {_sha(body)}\n".encode()
        return bytes(sent), bytes(received)

    def prefix_shas(self, sent: int, received: int):
        """SHA-256 of the first ``sent`` bytes sent and ``received`` bytes received."""
        if self.mode == "stream":
            return _sha(f"GET {self.size} {self.seed}\n".encode()[:sent]), _sha(stream_bytes(received, self.seed))
        all_sent, all_received = self._bytes()
        return _sha(all_sent[:sent]), _sha(all_received[:received])


# --- a client in the lab ----------------------------------------------------------------------


class Client:
    """services/client.py on a client host, read by two threads: its progress lines
    (stderr) keep ``received``/``sent`` current, so waiting never blocks past a deadline."""

    def __init__(self, lab: Lab, host: str, mode: str, size: int, seed: str, progress: float, timeout: float):
        self.host, self.mode, self.size, self.seed = host, mode, size, seed
        size_arg = ["--count", size] if mode == "reqresp" else ["--bytes", size, "--seed", seed]
        self.argv = ["python3", CLIENT, mode, PRIMARY_IP, PORT, *size_arg, "--progress", progress,
                     "--timeout", timeout]
        self.received = self.sent = 0
        self.lines = []            # (monotonic, received, sent): every progress line
        self.other_err = []        # stderr that is not a progress line (tracebacks)
        self.out = []
        self.cond = threading.Condition()
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.proc = lab.host(host).popen([str(a) for a in self.argv], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
        self.ended = None
        self._threads = [threading.Thread(target=self._read_err, daemon=True),
                         threading.Thread(target=self._read_out, daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def expected(self) -> Expected:
        return Expected.of(self.mode, self.size, self.seed)

    def _read_err(self):
        for line in self.proc.stderr:
            now = time.monotonic()
            if line.startswith("client: "):
                try:
                    got, put = map(int, line.split()[1:3])
                except ValueError:
                    continue
                with self.cond:
                    self.received, self.sent = got, put
                    self.lines.append((now, got, put))
                    self.cond.notify_all()
            elif len(self.other_err) < 200:
                self.other_err.append(line.rstrip("\n"))

    def _read_out(self):
        for line in self.proc.stdout:
            self.out.append(line)
        self.proc.wait()
        with self.cond:
            self.ended = time.monotonic()
            self.cond.notify_all()

    def wait_until(self, predicate, deadline: float) -> bool:
        """Until predicate(self) holds (True), the client ends or the deadline (False)."""
        with self.cond:
            while not predicate(self):
                if self.ended is not None:
                    return predicate(self)
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.05))
            return True

    def rate(self, which: str, window: float = 0.5) -> float:
        """Bytes per second of ``received`` or ``sent`` over the last ``window`` seconds
        of progress lines (the first burst into the socket buffers is not the rate)."""
        index = 1 if which == "received" else 2
        with self.cond:
            since = self.lines[-1][0] - window if self.lines else 0
            moving = [line for line in self.lines if line[index] > 0 and line[0] >= since]
            if len(moving) < 2 or moving[-1][0] <= moving[0][0]:
                return 0.0
            return (moving[-1][index] - moving[0][index]) / (moving[-1][0] - moving[0][0])

    def finish(self, deadline: float) -> dict:
        """Its JSON result, or {"hung": True} once the deadline passed (then killed)."""
        with self.cond:
            while self.ended is None and time.monotonic() < deadline:
                self.cond.wait(min(max(deadline - time.monotonic(), 0), 0.2))
        hung = self.ended is None
        if hung:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for t in self._threads:
            t.join(5)
        res = None
        for line in reversed(self.out):
            try:
                res = json.loads(line)
                break
            except ValueError:
                continue
        return {"hung": hung, "result": res, "returncode": self.proc.returncode,
                "seconds": round((self.ended or time.monotonic()) - self.started, 3)}

    def output(self) -> str:
        progress = "".join(f"client: {r} {s}  (+{t - self.started:.3f} s)\n" for t, r, s in self.lines[-50:])
        return (f"$ {' '.join(map(str, self.argv))}  (on {self.host})\n--- stdout ---\n{''.join(self.out)}"
                f"--- stderr (not progress) ---\n" + "\n".join(self.other_err) +
                f"\n--- last progress lines ({len(self.lines)} in all) ---\n{progress}")


# --- classification ---------------------------------------------------------------------------

RESET_ERRORS = ("ConnectionResetError", "unexpected EOF", "BrokenPipeError", "ConnectionRefusedError",
                "ConnectionAbortedError", "ECONNRESET", "EPIPE")
HUNG_ERRORS = ("timed out", "TimeoutError", "ETIMEDOUT", "Errno 110")
CORRUPT_ERRORS = ("wrong answer", "bytes after")


def conn_id(host: str, local_port) -> str:
    return f"{CLIENT_IPS[host]}:{local_port}-{PRIMARY_IP}:{PORT}"


def classify(client: Client, fin: dict, record: dict, failed_wall: float = None) -> dict:
    """One client's outcome and why (see the module docstring)."""
    res, exp = fin["result"], client.expected
    out = {"host": client.host, "mode": client.mode, "size": client.size, "seconds": fin["seconds"],
           "returncode": fin["returncode"]}
    if res is not None:
        out.update({k: res.get(k) for k in ("ok", "error", "sent", "received", "local_port", "max_gap_ms",
                                            "max_gap_at", "requests", "answer")})
        out["gaps_over_100ms"] = [g for g in res.get("gaps", []) if g[1] > 100][:10]
        if failed_wall:
            # the silence that spans the failure (bench/failover_bench.py's stall): the
            # longest gap that ends after the failure and begins within a second of it
            around = [g for g in res.get("gaps", []) if g[0] + g[1] / 1000 >= failed_wall
                      and g[0] <= failed_wall + 1.0]
            out["stall_ms"] = max(g[1] for g in around) if around else None
    if fin["hung"]:
        return dict(out, outcome="hung", why=f"no result within the deadline ({fin['seconds']} s)")
    if res is None:
        return dict(out, outcome="hung" if fin["returncode"] is None else "corrupted",
                    why=f"no JSON result (exit status {fin['returncode']})")
    sent, received = res.get("sent") or 0, res.get("received") or 0
    error = str(res.get("error") or "")
    if res.get("ok"):
        if (received == exp.received_len and sent == exp.sent_len and res.get("received_sha256") == exp.received_sha
                and res.get("sent_sha256") == exp.sent_sha):
            return dict(out, outcome="masked", why="")
        return dict(out, outcome="corrupted", why=f"ok but sent {sent}/{exp.sent_len} received "
                                                  f"{received}/{exp.received_len} or a SHA-256 differs")
    if "local_port" not in res:
        # connect() itself failed: a new connection while the service was unreachable
        # (the primary gone and no failover yet); there never was a byte to protect
        return dict(out, outcome="not_connected", why=f"the connection was never established: {error}")
    # not ok: what it got so far must be a correct prefix, whatever the error
    if sent > exp.sent_len or received > exp.received_len:
        return dict(out, outcome="corrupted", why=f"more bytes than expected: sent {sent}, received {received}")
    sent_sha, received_sha = exp.prefix_shas(sent, received)
    if res.get("sent_sha256") != sent_sha:
        return dict(out, outcome="corrupted", why=f"its first {sent} sent bytes are not the expected ones: {error}")
    if res.get("received_sha256") != received_sha:
        return dict(out, outcome="corrupted",
                    why=f"its first {received} received bytes are not the expected ones: {error or 'SHA-256 differs'}")
    if not error or any(word in error for word in CORRUPT_ERRORS):
        return dict(out, outcome="corrupted", why=error or "not ok without an error (a SHA-256 or answer differs)")
    if any(word in error for word in HUNG_ERRORS):
        return dict(out, outcome="hung", why=f"the client gave up: {error}")
    if not any(word in error for word in RESET_ERRORS):
        return dict(out, outcome="reset_unexplained", why=f"unknown client error: {error}")
    cid = conn_id(client.host, res.get("local_port")) if res.get("local_port") else None
    out["conn_id"] = cid
    failed = record.get("failed_map") or {}
    if record.get("status") == "failover-failed" and record.get("reason"):
        return dict(out, outcome="reset", why=error, reason=f"failover-failed: {record['reason']}")
    if cid and cid in failed:
        return dict(out, outcome="reset", why=error, reason=f"failed: {failed[cid]}")
    if "*" in failed:
        return dict(out, outcome="reset", why=error, reason=f"failed: * {failed['*']}")
    return dict(out, outcome="reset_unexplained",
                why=f"{error}; record status {record.get('status')}, {cid} not in failed {sorted(failed)}")


def reason_group(reason: str) -> str:
    """A reset's reason with the numbers and connection ids taken out, to group them."""
    reason = re.sub(r"\d+\.\d+\.\d+\.\d+:\d+-\d+\.\d+\.\d+\.\d+:\d+", "<conn>", reason)
    reason = re.sub(r"\b[0-9a-f]{16}\b", "<dpid>", reason)
    return re.sub(r"\d+", "N", reason)


# --- control-plane faults ---------------------------------------------------------------------


class Fault:
    """One control-plane fault, run on its own thread (they block: a restart waits for
    the process to listen again). ``times`` keeps when it began and ended (monotonic)."""

    def __init__(self, lab: Lab, kind: str, params: dict):
        self.lab, self.kind, self.params = lab, kind, params
        self.began = self.ended = None
        self.error = None
        self.thread = None
        self._paused = False

    def start(self, delay: float = 0.0):
        self.thread = threading.Thread(target=self._run, args=(delay,), daemon=True)
        self.thread.start()

    def _run(self, delay: float):
        if delay > 0:
            time.sleep(delay)
        self.began = time.monotonic()
        try:
            if self.kind == "controller_kill":
                self.lab.restart_controller(kill=True)
            elif self.kind == "redis_restart":
                self.lab.restart_redis(down=self.params["down_s"])
            elif self.kind == "agent_pause":
                self.lab.agent.proc.send_signal(signal.SIGSTOP)
                self._paused = True
                try:
                    time.sleep(self.params["pause_s"])
                finally:
                    self.resume()
            elif self.kind == "switch_disconnect":
                targets = self.lab.cut_controller()
                try:
                    time.sleep(self.params["disconnected_s"])   # the fault's duration is the draw
                finally:
                    self.lab.reconnect_controller(targets)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.ended = time.monotonic()

    def resume(self):
        if self._paused:
            try:
                self.lab.agent.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            self._paused = False

    def join(self, timeout: float):
        if self.thread is not None:
            self.thread.join(timeout)
        self.resume()   # never leave the agent stopped


# --- one trial --------------------------------------------------------------------------------


def draw(seed, index: int, force=()) -> dict:
    """Trial ``index``'s draws (all of them drawn, always in the same order), then
    --force's replacements, then what follows from them (the fault's side and params)."""
    rng = random.Random(f"{seed}:{index}")
    d = {"failure": rng.choice(FAILURES), "fault": rng.choice(FAULTS), "moment": rng.choice(MOMENTS)}
    mix_draw = rng.random()
    before, offset_draw = rng.random() < 0.5, rng.random()
    params = {"redis_restart": {"down_s": round(rng.uniform(0.0, 1.0), 4)},
              "agent_pause": {"pause_s": round(rng.uniform(0.2, 1.5), 4)},
              "switch_disconnect": {"disconnected_s": round(rng.uniform(0.2, 1.0), 4)}}
    d["trigger_fraction"] = round(rng.uniform(0.10, 0.35), 4)        # mid_* and right_after_failover
    d["handshake_delay_s"] = round(rng.uniform(0.0, HANDSHAKE_MAX_DELAY), 4)
    lead = {"stream": rng.randrange(0, 512 * 1024), "reqresp": rng.randrange(0, 16 * 1024), "upload": 0}
    d["close_jitter_s"] = round(rng.uniform(0.0, 0.005), 4)
    d["client_seed"] = str(rng.randrange(8))   # a few seeds: the expected bytes are cached
    for item in force or ():
        key, _, value = item.partition("=")
        if key == "mix":
            d["mix"] = value.split("+")
        elif key == "fault_offset_s":
            d[key] = float(value)
        elif key in d:
            d[key] = type(d[key])(value)
        else:
            raise SystemExit(f"chaos: --force {item}: no such draw")
        choices = {"failure": FAILURES, "fault": FAULTS, "moment": MOMENTS}.get(key)
        if choices and value not in choices or key == "mix" and not set(d["mix"]) <= set(SIZES):
            raise SystemExit(f"chaos: --force {item}: not one of {choices or sorted(SIZES)}")
        d.setdefault("forced", []).append(item)
    if "mix" not in d:
        mixes = [m for m in MIXES if d["moment"] != "mid_upload" or "upload" in m]
        mixes = [m for m in mixes if d["moment"] != "mid_download" or "stream" in m]
        d["mix"] = list(mixes[int(mix_draw * len(mixes))])
    d["close_lead"] = lead[d["mix"][0]]                        # bytes before c1's end (during_close)
    if "fault_offset_s" in d:
        d["fault_side"] = "before" if d["fault_offset_s"] < 0 else "after"
    elif d["moment"] == "right_after_failover":
        d["fault_side"], d["fault_offset_s"] = "after_failed_over", round(0.3 * offset_draw, 4)
    elif before:
        d["fault_side"], d["fault_offset_s"] = "before", round(-1.0 * offset_draw, 4)
    else:
        d["fault_side"], d["fault_offset_s"] = "after", round(0.3 * offset_draw, 4)
    if d["moment"] == "right_after_failover":
        d["fault_side"] = "after_failed_over"
    if d["fault"] == "none":
        d["fault_side"], d["fault_offset_s"] = "none", None
    d["fault_params"] = params.get(d["fault"], {})
    return d


class Trial:
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


def outcome_of(rec: dict) -> str:
    """The worst client's outcome; a harness error (the lab, a fault that could not be
    injected) only when no client was corrupted."""
    clients = rec.get("clients") or []
    worst = max((c["outcome"] for c in clients), key=WORST.__getitem__) if clients else None
    if worst != "corrupted" and (rec.get("error") or rec.get("fault_error") or not clients):
        return "error"
    return worst


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


# --- results ----------------------------------------------------------------------------------


def summarize(trials: list) -> dict:
    out = {"trials": len(trials), "outcomes": dict(Counter(t["outcome"] for t in trials)),
           "client_outcomes": dict(Counter(c["outcome"] for t in trials for c in t.get("clients", [])))}
    for o in OUTCOMES:
        out["outcomes"].setdefault(o, 0)
    cells = defaultdict(Counter)
    for t in trials:
        cells[f"{t['fault']} x {t['moment']}"][t["outcome"]] += 1
    out["by_fault_moment"] = {k: dict(v) for k, v in sorted(cells.items())}
    for dim in ("failure", "fault", "moment"):
        table = defaultdict(Counter)
        for t in trials:
            table[t[dim]][t["outcome"]] += 1
        out[f"by_{dim}"] = {k: dict(v) for k, v in sorted(table.items())}
    mixes = defaultdict(Counter)
    for t in trials:
        mixes["+".join(t["mix"])][t["outcome"]] += 1
    out["by_mix"] = {k: dict(v) for k, v in sorted(mixes.items())}
    reasons = Counter(reason_group(c.get("reason", "")) for t in trials for c in t.get("clients", [])
                      if c["outcome"] == "reset")
    out["reset_reasons"] = dict(reasons.most_common())
    times = sorted(t["trial_s"] for t in trials if "trial_s" in t)
    if times:
        out["trial_seconds"] = {"mean": round(sum(times) / len(times), 2), "max": times[-1],
                                "p50": times[len(times) // 2]}
    stalls = defaultdict(list)
    for t in trials:
        for c in t.get("clients", []):
            if c["outcome"] == "masked" and c.get("stall_ms") is not None:
                stalls[t["fault"]].append(c["stall_ms"])
    out["masked_stall_ms_by_fault"] = {f: stall_stats(v) for f, v in sorted(stalls.items())}
    out["bad_trials"] = [t["trial"] for t in trials if t["outcome"] in ("corrupted", "hung", "reset_unexplained",
                                                                          "error")]
    return out


def stall_stats(values: list) -> dict:
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]   # noqa: E731
    return {"n": len(values), "p50": pick(0.5), "p90": pick(0.9), "max": values[-1]}


def markdown(trials: list) -> str:
    abbrev = {"masked": "M", "reset": "R", "reset_unexplained": "U", "corrupted": "C", "hung": "H", "error": "E"}
    cells = defaultdict(Counter)
    for t in trials:
        cells[(t["fault"], t["moment"])][t["outcome"]] += 1
    lines = ["Outcomes per trial by control-plane fault x moment, as M/R/C/H = masked / reset cleanly / "
             "corrupted / hung (+U reset unexplained, +E harness error when any):", "",
             "| fault \\ moment | " + " | ".join(MOMENTS) + " | all |",
             "|---|" + "---|" * (len(MOMENTS) + 1)]

    def cell(counter):
        if not counter:
            return "-"
        text = "/".join(str(counter.get(o, 0)) for o in ("masked", "reset", "corrupted", "hung"))
        extra = "".join(f" +{counter[o]}{abbrev[o]}" for o in ("reset_unexplained", "error") if counter.get(o))
        return text + extra
    for fault in FAULTS:
        row = [cell(cells.get((fault, m), Counter())) for m in MOMENTS]
        total = sum((cells.get((fault, m), Counter()) for m in MOMENTS), Counter())
        lines.append(f"| {fault} | " + " | ".join(row) + f" | {cell(total)} |")
    col = [sum((cells.get((f, m), Counter()) for f in FAULTS), Counter()) for m in MOMENTS]
    lines.append("| **all** | " + " | ".join(cell(c) for c in col) + f" | {cell(sum(col, Counter()))} |")
    totals = Counter(t["outcome"] for t in trials)
    clients = Counter(c["outcome"] for t in trials for c in t.get("clients", []))
    lines += ["", "| outcome | trials | client connections |", "|---|---|---|"]
    for o in OUTCOMES:
        lines.append(f"| {o.replace('_', ' ')} | {totals.get(o, 0)} | {clients.get(o, 0)} |")
    reasons = Counter(reason_group(c.get("reason", "")) for t in trials for c in t.get("clients", [])
                      if c["outcome"] == "reset")
    if reasons:
        lines += ["", "| reset cleanly: the record's reason | connections |", "|---|---|"]
        lines += [f"| {r} | {n} |" for r, n in reasons.most_common()]
    stalls = summarize(trials)["masked_stall_ms_by_fault"]
    if stalls:
        lines += ["", "| fault | masked connections | stall p50 ms | p90 ms | max ms |", "|---|---|---|---|---|"]
        lines += [f"| {f} | {v['n']} | {v['p50']:.0f} | {v['p90']:.0f} | {v['max']:.0f} |" for f, v in stalls.items()]
        lines += ["", "(stall: the client's longest silence that spans the failure, as in failover_bench)"]
    bad = [t for t in trials if t["outcome"] in ("corrupted", "hung", "reset_unexplained", "error")]
    if bad:
        lines += ["", "Trials to look at (evidence kept):"]
        for t in bad:
            why = "; ".join(f"{c['host']} {c['mode']}: {c['outcome']} ({c.get('why')})" for c in t.get("clients", [])
                            if c["outcome"] not in ("masked", "reset"))
            err = (t.get("error") or t.get("fault_error") or "").strip().splitlines()[-1:] or [""]
            lines.append(f"* trial {t['trial']}: {t['outcome']} — {t['failure']}, {t['fault']}, {t['moment']}, "
                         f"{'+'.join(t['mix'])}: {why or err[0]} ({t.get('evidence')})")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", default="1", help="trial i draws from random.Random('<seed>:<i>')")
    ap.add_argument("--smoke", action="store_true", help="2 trials (for CI), results in chaos-smoke.json")
    ap.add_argument("--out", help="results file (default bench/results/chaos.json, chaos-smoke.json with --smoke)")
    ap.add_argument("--resume", metavar="FILE", help="carry on the run recorded in FILE (its seed, into it)")
    ap.add_argument("--evidence", default=str(RESULTS / "chaos-evidence"))
    ap.add_argument("--run-dir", default=RUN_DIR)
    ap.add_argument("--deadline", type=float, default=60.0, help="a client not done this long after its start hung")
    ap.add_argument("--client-timeout", type=float, default=45.0, help="client.py --timeout (socket silence)")
    ap.add_argument("--settle", type=float, default=15.0,
                    help="seconds to wait, after the clients, for the record to be final")
    ap.add_argument("--keep-all", action="store_true", help="keep evidence of every trial")
    ap.add_argument("--only", type=int, nargs="+", metavar="I", help="run only these trial numbers (to rerun one)")
    ap.add_argument("--force", action="append", metavar="KEY=VALUE",
                    help="replace a draw in every trial, e.g. moment=handshake, fault=controller_kill, "
                         "mix=stream+upload, fault_offset_s=-0.5 (recorded in the trial)")
    args = ap.parse_args(argv)
    if not_root("chaos"):
        return 2
    if args.smoke:
        args.trials = 2
    out = Path(args.out or args.resume or RESULTS / ("chaos-smoke.json" if args.smoke else "chaos.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    trials, resumed = [], []
    argv_now = sys.argv if argv is None else ["bench/chaos.py", *argv]
    if args.resume:
        old = json.loads(Path(args.resume).read_text())
        args.seed = old["args"]["seed"]           # the same trials: their draws come from it
        args.force = args.force or old["args"].get("force")
        trials = old["trials"]
        resumed = old.get("resumed", []) + [{"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                             "argv": argv_now, "commit": git("rev-parse", "HEAD"),
                                             "trials_before": len(trials), "previous_commit": old["commit"]}]
        started = old["started"]
        argv_now = old["argv"]
    else:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    mode = "smoke" if args.smoke else "only" if args.only else "full" if args.trials >= 200 else "short"
    data = provenance(args, argv_now, mode)
    data.update(agent_args="the lab's defaults", started=started, finished=None, resumed=resumed, sizes=SIZES,
                trials=trials, summary=summarize(trials))
    interrupted = False
    try:
        done = {t["trial"] for t in trials}
        for index in (args.only or range(args.trials)):
            if index in done:
                continue
            rec = run_trial(index, args, Path(args.evidence))
            trials.append(rec)
            clients = ", ".join(f"{c['host']} {c['mode']} {c['outcome']}" for c in rec.get("clients", []))
            print(f"trial {index:3d} {rec['outcome']:<17} {rec['failure']:<6} {rec['fault']:<17} {rec['moment']:<20} "
                  f"{'+'.join(rec['mix']):<15} off {rec['fault_offset_s'] or 0:+.3f}  [{clients}]  "
                  f"record {(rec.get('record') or {}).get('status')}/{(rec.get('record') or {}).get('step')}  "
                  f"{rec['trial_s']:.1f} s (lock wait {rec['lock_wait_s']:.1f} s)", flush=True)
            data["summary"] = summarize(trials)
            write(out, data)
    except KeyboardInterrupt:
        interrupted = True
        print("chaos: interrupted; the trials done so far are in", out, file=sys.stderr)
    data["finished"] = None if interrupted else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data["interrupted"] = interrupted
    data["summary"] = summarize(trials)
    write(out, data)
    print()
    print(markdown(trials))
    print(f"\nresults: {out}")
    bad = data["summary"]["bad_trials"]
    return 130 if interrupted else (1 if bad else 0)


if __name__ == "__main__":
    raise SystemExit(main())

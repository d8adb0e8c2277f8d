"""A chaos client in the lab: services/client.py on a client host, followed while it runs,
so a trial can fire its failure at a moment of the transfer and never waits past a deadline."""
from __future__ import annotations

import json
import subprocess
import threading
import time

from bench.chaos import PORT
from bench.chaos.oracle import Expected
from topology.lab import PRIMARY_IP, ROOT, Lab

CLIENT = str(ROOT / "services/client.py")
PROGRESS = 0.02            # progress lines, mid-transfer moments
FINE_PROGRESS = {"stream": 0.0001, "upload": 0.0001, "reqresp": 0.0005}   # handshake, during_close
FLOWING = {"stream": 1_000_000, "upload": 2_000_000, "reqresp": 20_000}   # bytes: a client is under way


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


"""A client program running in a lab host in the background, and its stall meter."""
from __future__ import annotations

import json
import subprocess
import time

from topology.processes import ROOT, LabError


class RunningClient:
    """services/client.py running in the background with --progress: ``wait_progress``
    returns once it has received/sent at least that much; ``result`` is its JSON plus
    ``stall_ms``, the longest gap between two progress lines that moved bytes."""

    def __init__(self, node, *args):
        argv = ["python3", str(ROOT / "services/client.py"), *map(str, args)]
        self.proc = node.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.received = self.sent = 0
        self._last_move = None
        self.stall = 0.0

    def _read_progress(self) -> bool:
        line = self.proc.stderr.readline()
        if not line:
            return False
        if line.startswith("client: "):
            got, put = map(int, line.split()[1:3])
            now = time.monotonic()
            if (got, put) != (self.received, self.sent):
                if self._last_move is not None:
                    self.stall = max(self.stall, now - self._last_move)
                self._last_move = now
            self.received, self.sent = got, put
        return True

    def wait_progress(self, received: int = 0, sent: int = 0):
        while self.received < received or self.sent < sent:
            if not self._read_progress():
                raise LabError(f"client ended before {received}/{sent} bytes: {self.proc.stdout.read()}")

    def result(self, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while self._read_progress():
            if time.monotonic() > deadline:
                self.proc.kill()
                raise LabError("client did not finish")
        out = self.proc.stdout.read()
        self.proc.wait(timeout=10)
        try:
            result = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise LabError(f"client printed no result: {out[-500:]}") from None
        result["stall_ms"] = self.stall * 1000
        return result

"""A client program running in a lab host in the background, and its stall meter."""
from __future__ import annotations

import json
import subprocess
import threading

from topology.processes import ROOT, LabError


class RunningClient:
    """services/client.py running in the background with --progress: ``wait_progress``
    returns once it has received/sent at least that much; ``result`` is its JSON plus
    ``stall_ms``, the longest silence the client measured on its own clock (its
    ``max_gap_ms``: between two reads that brought data, or for an upload between two
    acknowledgements its kernel got; services/client.py).

    The harness's timing has no part in it, and threads read the client's output as it
    comes, so a test that blocks on something else meanwhile neither counts as the
    client's stall nor fills the pipes and stalls the client for real."""

    def __init__(self, node, *args):
        argv = ["python3", str(ROOT / "services/client.py"), *map(str, args)]
        self.proc = node.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.received = self.sent = 0
        self._moved = threading.Condition()
        self._ended = False           # its stderr is closed: no more progress
        self._errors = []             # stderr that is not a progress line (a traceback)
        self._out = []
        self._readers = [threading.Thread(target=self._read_progress, daemon=True),
                         threading.Thread(target=lambda: self._out.extend(self.proc.stdout), daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_progress(self) -> None:
        for line in self.proc.stderr:
            if line.startswith("client: "):
                got, put = map(int, line.split()[1:3])
                with self._moved:
                    self.received, self.sent = got, put
                    self._moved.notify_all()
            elif len(self._errors) < 200:
                self._errors.append(line)
        with self._moved:
            self._ended = True
            self._moved.notify_all()

    def _output(self) -> str:
        for reader in self._readers:
            reader.join(10)
        return "".join(self._out) + "".join(self._errors)

    def wait_progress(self, received: int = 0, sent: int = 0, timeout: float = 120.0) -> None:
        def there():
            return self.received >= received and self.sent >= sent
        with self._moved:
            if not self._moved.wait_for(lambda: there() or self._ended, timeout):
                raise LabError(f"the client did not get to {received}/{sent} bytes in {timeout:.0f} s "
                               f"(it is at {self.received}/{self.sent})")
            if there():
                return
        raise LabError(f"client ended before {received}/{sent} bytes: {self._output()}")

    def result(self, timeout: float = 120.0) -> dict:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise LabError(f"client did not finish in {timeout:.0f} s") from None
        out = self._output()
        try:
            result = json.loads("".join(self._out).strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise LabError(f"client printed no result: {out[-500:]}") from None
        result["stall_ms"] = result.get("max_gap_ms")
        return result

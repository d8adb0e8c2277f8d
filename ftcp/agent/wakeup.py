"""A pipe that wakes a thread blocked in select/poll: another thread calls ``wake``,
the sleeper has ``fileno`` among what it waits on and calls ``drain`` when it fires.
Both ends are non-blocking: a full pipe means the sleeper is awake anyway, and the
thread that wakes it (capture, say) must never stall on it."""
from __future__ import annotations

import os


class Wakeup:
    def __init__(self):
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def fileno(self) -> int:
        return self._r

    def wake(self) -> None:
        try:
            os.write(self._w, b"x")
        except BlockingIOError:
            pass

    def drain(self) -> None:
        try:
            os.read(self._r, 65536)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)

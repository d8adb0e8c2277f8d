"""Injecting a control-plane fault into the running lab: the controller killed, Redis
restarted, the agent paused, or the switch cut off from its controller, on its own
thread so the trial goes on while it lasts."""
from __future__ import annotations

import signal
import threading
import time

from topology.lab import Lab


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


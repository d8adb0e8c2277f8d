"""The REST API live for tests: a redis-server and the stock ryu-manager running the
real controller (ryu_apps/ftcp_app.py), each RestServer in its own directory under
/run/ftcp-rest-test. No switch connects, no Mininet: these tests leave Open vSwitch
alone, and the controller core answers as it does before its switch connects."""
import contextlib
import http.client
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import yaml

from tests.support.fake_agent import SERVICE
from topology.processes import ROOT, VENV_BIN, Process, RedisServer, free_tcp_port, wait_for
from topology.reaper import reap_all, record

RUN_ROOT = Path("/run/ftcp-rest-test")
APP = ROOT / "ryu_apps" / "ftcp_app.py"
TOKEN = "rest-test-token-7f3a9c"


class RestServer:
    def __init__(self, name: str, token: str = None):
        self.run_dir = RUN_ROOT / name
        self.token = token
        self.redis = self.ryu = None
        self.port = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.run_dir / "ryu-manager.log"

    def start(self) -> "RestServer":
        reap_all(self.run_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir.mkdir(parents=True)
        try:
            self.redis = self._track(RedisServer(self.run_dir))
            self.redis.wait_ready()
            services = self.run_dir / "services.yaml"
            services.write_text(yaml.safe_dump({"services": [SERVICE], "redis": {"url": self.redis.url}}))
            conf = self.run_dir / "ryu.conf"
            conf.write_text("[ftcp]\n" + (f"api_token = {self.token}\n" if self.token else ""))
            self.port = free_tcp_port()
            argv = [str(VENV_BIN / "ryu-manager"), "--config-file", str(conf), "--wsapi-host", "127.0.0.1",
                    "--wsapi-port", str(self.port), "--ofp-tcp-listen-port", str(free_tcp_port()), str(APP)]
            env = dict(os.environ, FTCP_CONFIG=str(services), PYTHONUNBUFFERED="1")
            for name in ("FTCP_API_TOKEN", "FTCP_REDIS_URL"):   # the test decides, not the caller's shell
                env.pop(name, None)
            self.ryu = self._track(Process("ryu-manager", argv, self.log, env=env))
            wait_for(self._answers, 60, "ryu-manager to answer GET /ftcp/health", failed=self.ryu.died)
        except BaseException:
            self.stop()
            raise
        return self

    def _track(self, proc: Process) -> Process:
        # A pid file per process, so that a run killed hard is cleaned up by the next.
        record(self.run_dir / f"{proc.name}.pid", proc.pid)
        return proc

    def _answers(self) -> bool:
        try:
            return self.request("GET", "/ftcp/health", timeout=1)[0] == 200
        except OSError:
            return False

    def alive(self) -> bool:
        return self.ryu is not None and self.ryu.died() is None and self._answers()

    def stop(self) -> None:
        for proc in (self.ryu, self.redis):
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)   # a stopped process would sit out SIGTERM
                proc.stop()
                (self.run_dir / f"{proc.name}.pid").unlink(missing_ok=True)

    @contextlib.contextmanager
    def redis_frozen(self):
        """Redis that accepts connections but never answers (SIGSTOP), like a hung server."""
        os.kill(self.redis.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.redis.pid, signal.SIGCONT)

    def request(self, method: str, path: str, body=None, token=None, headers=None, timeout: float = 30):
        """(status, headers, body): JSON bodies decoded, others as text."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read().decode()
            kind = resp.getheader("Content-Type") or ""
            return resp.status, resp, json.loads(data) if data and kind.startswith("application/json") else data
        finally:
            conn.close()


@pytest.fixture(scope="session", name="ovs")
def no_ovs():
    """Replaces the integration suite's autouse Open vSwitch fixture in the REST test
    modules (import it there): they need no switch, and must not start or stop an OVS
    that someone else's lab is using."""
    if os.geteuid() != 0:
        pytest.fail("the REST integration tests need root (their run directory is under /run)")
    yield None


@pytest.fixture(scope="module")
def rest(request):
    """The live API with a token, one per test module."""
    server = RestServer(request.module.__name__.rsplit(".", 1)[-1], token=TOKEN).start()
    yield server
    server.stop()

"""Adapters for the lab's external processes: Open vSwitch, redis-server, ryu-manager,
any command (in a Mininet host or not), and the helpers they share.

Each child runs in its own process group with its own log file; ``stop`` signals the
group (SIGTERM, then SIGKILL) and reaps it.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
CONTROL_KEY = "control-key"   # in the run directory: signs the controller's and the agent's messages


class LabError(RuntimeError):
    """A lab component failed to start; the message says which and why."""


def wait_for(condition, timeout: float, what: str, interval: float = 0.05, failed=None):
    """Poll ``condition`` until true; raise LabError naming ``what`` on timeout.

    ``failed`` (optional) returns a reason string when waiting is pointless (the
    process died), so errors surface at once instead of after the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        reason = failed() if failed else None
        if reason:
            raise LabError(f"{what}: {reason}")
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_tcp_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout


# --- adapters for each external process ----------------------------------------------


class Ovs:
    """ovsdb-server + ovs-vswitchd from Debian's openvswitch-switch."""

    def __init__(self):
        self.started_here = False

    @staticmethod
    def running() -> bool:
        return subprocess.run(["ovs-vsctl", "--timeout=2", "show"], capture_output=True).returncode == 0

    def start(self):
        if self.running():
            return
        # ovs-ctl tolerates the missing openvswitch kernel module; the lab only
        # uses the userspace (netdev) datapath.
        out = subprocess.run([OVS_CTL, "start", "--system-id=random"], capture_output=True, text=True)
        if not self.running():
            raise LabError(f"Open vSwitch did not start: {out.stdout[-500:]}{out.stderr[-500:]}")
        self.started_here = True

    def stop(self):
        if self.started_here:
            subprocess.run([OVS_CTL, "stop"], capture_output=True)
            self.started_here = False


class Process:
    """A child process with its own process group and a log file."""

    def __init__(self, name: str, argv: list, log: Path, env=None, host=None):
        self.name, self.log = name, log
        self._logf = open(log, "ab")
        if host is None:
            self.proc = subprocess.Popen(argv, stdout=self._logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        else:
            # Mininet runs it through ``mnexec -da``, which calls setsid() itself. Do not
            # also ask Popen for a new session: mnexec would then fork, its parent
            # would exit 0 at once, and we would lose the real process.
            self.proc = host.popen(argv, stdout=self._logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   **({"env": env} if env is not None else {}))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def died(self):
        rc = self.proc.poll()
        return None if rc is None else f"{self.name} exited with status {rc}; log {self.log}:\n{tail(self.log)}"

    def stop(self, timeout: float = 5.0):
        if self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._logf.close()


LAB_COMPONENTS = ("controller", "agent:b1")   # who talks to the lab's Redis (with one backup)


class RedisServer(Process):
    """The lab's Redis: a unix socket, and an append-only file fsynced at every write
    (the run directory is a tmpfs), so a restart loses nothing the controller or the
    agent were told was written. ``fresh`` (the default) starts from nothing: an
    earlier lab's file would bring its services' state back; a restart is not fresh."""

    def __init__(self, run_dir: Path, fresh: bool = True, password: str = None, users: dict = None,
                 components: tuple = LAB_COMPONENTS):
        from ftcp.common.store import acl_rules, acl_user
        if fresh:
            shutil.rmtree(run_dir / "appendonlydir", ignore_errors=True)
        self.socket_path = run_dir / "redis.sock"
        # Passwords, as a production Redis has them: in a root-only file (a command
        # line is anyone's to read in ps), and in the URL each component gets through
        # its environment. The controller and the agent each have a user of their own
        # with only the rights it needs (ftcp/common/store.py acl_rules); the default user
        # (``url``) is the lab's own, for its tools and the tests.
        self.password = password or secrets.token_hex(16)
        self.users = users or {component: secrets.token_hex(16) for component in components}
        conf = run_dir / "redis.conf"
        conf.unlink(missing_ok=True)
        conf.touch(mode=0o600)
        lines = [f"requirepass {self.password}",
                 # a memory bound that refuses writes rather than evict what was logged
                 "maxmemory 1gb", "maxmemory-policy noeviction"]
        lines += [f"user {acl_user(component)} on >{password} {acl_rules(component)}"
                  for component, password in self.users.items()]
        conf.write_text("".join(line + "\n" for line in lines))
        argv = ["redis-server", str(conf), "--port", "0", "--unixsocket", str(self.socket_path),
                "--unixsocketperm", "700", "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--dir", str(run_dir), "--daemonize", "no"]
        super().__init__("redis-server", argv, run_dir / "redis.log")

    @property
    def url(self) -> str:
        return f"unix://:{self.password}@{self.socket_path}"

    def url_for(self, component: str) -> str:
        """The URL of ``controller``'s or ``agent:<backup>``'s own Redis user."""
        from ftcp.common.store import acl_user
        return f"unix://{acl_user(component)}:{self.users[component]}@{self.socket_path}"

    def wait_ready(self):
        import redis
        client = redis.Redis(unix_socket_path=str(self.socket_path), password=self.password, socket_timeout=1)

        def ready():
            try:
                return client.ping()
            except (redis.RedisError, OSError):
                return False
        wait_for(ready, 10, "redis-server to answer PING", failed=self.died)


class RyuManager(Process):
    """ryu-manager with the ftcp app. ``ha``: one of several controllers of the same
    switch (the lease in Redis decides which one acts); ``log`` names its log file."""

    def __init__(self, run_dir: Path, config_path: Path, redis_url: str, ofp_port: int, wsapi_port: int,
                 api_token: str = "", ha: bool = False, log: str = "ryu"):
        self.ofp_port, self.wsapi_port, self.ha, self.log_name = ofp_port, wsapi_port, ha, log
        argv = [str(VENV_BIN / "ryu-manager"), "--config-file", str(ROOT / "switch_config/ryu.conf"),
                "--ofp-tcp-listen-port", str(ofp_port), "--wsapi-port", str(wsapi_port),
                "--log-file", str(run_dir / f"{log}.log"), "ryu_apps/ftcp_app.py"]
        env = dict(os.environ, FTCP_CONFIG=str(config_path), FTCP_REDIS_URL=redis_url, PYTHONUNBUFFERED="1")
        if api_token:
            env["FTCP_API_TOKEN"] = api_token
        if (run_dir / CONTROL_KEY).exists():
            env["FTCP_CONTROL_KEY_FILE"] = str(run_dir / CONTROL_KEY)
        if ha:
            env["FTCP_HA"] = "1"
        self._cwd = os.getcwd()
        os.chdir(ROOT)  # ryu-manager resolves the app path and relative config paths from here
        try:
            super().__init__("ryu-manager", argv, run_dir / f"{log}-manager.out", env=env)
        finally:
            os.chdir(self._cwd)

    def wait_ready(self):
        def listening():
            try:
                with socket.create_connection(("127.0.0.1", self.ofp_port), timeout=0.2):
                    return True
            except OSError:
                return False
        wait_for(listening, 30, f"ryu-manager to listen on OpenFlow port {self.ofp_port}", failed=self.died)

"""The ftcp lab runner: OVS, Redis, ryu-manager, the Mininet topology, the services.

Starts, in order: Open vSwitch (userspace datapath), a project-owned redis-server
on a unix socket under the run directory, ``ryu-manager`` with the ftcp app, the
topology of topology/ftcp_topo.py, and the service command of your choice on the
primary (p1) and the backup (b1). Tears everything down on exit, on error and on
Ctrl-C/SIGTERM. Usable from Python (``with Lab(...) as lab``) and from the shell:

    .venv/bin/python -m topology run --service 'python3 services/echo_server.py --port {port}'
    .venv/bin/python -m topology demo
    .venv/bin/python -m topology clean      (the command line: topology/__main__.py)

This module is long because the lab's lifecycle and its fault injection (primary,
controller, Redis, agent, switch connection) act on the same processes and hosts;
the process adapters, the reaper and the cleanup of what a lab left, the clients and
the command line are apart.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import yaml

from ftcp.common import control
from topology.processes import (CONTROL_KEY, ROOT, LabError, Ovs, Process, RedisServer, RyuManager, free_tcp_port,
                                sh, tail, wait_for)
from topology.clients import RunningClient
from topology.cleanup import cleanup_stale, recording_mininet
from topology.reaper import kill_group
from topology.reaper import record as record_pid
from topology.redis_ha import RedisNode, SentinelNode, SentinelSet

LAST = (RedisServer, RyuManager, RedisNode, SentinelNode)   # stopped after the hosts and the agent

LOG = logging.getLogger("ftcp.lab")
SERVICES = {
    "echo": "python3 {root}/services/echo_server.py --port {port}",
    "demo": "python3 {root}/services/demo_server.py --port {port}",
    # Debian's nginx with static files (services/web_server.py): deterministic but for Date
    "web": "python3 {root}/services/web_server.py --port {port} --run-dir {run}",
    # answers carry the time at full precision: their length follows the clock
    "clock": "python3 {root}/services/clock_server.py --port {port}",
}
# How far the backup's replica may differ (ftcp/agent/divergence.py), for the shipped
# services that need more than strict.
DIVERGENCE = {"web": "aligned"}
PRIMARY_IP, BACKUP_IP = "10.0.0.10", "10.0.0.20"
MIRROR_IFACE = "s1-eth5"   # the switch's end of b1's mirror iface
BACKUPS = {   # the lab's backup hosts: address, MAC, switch ports (topology/ftcp_topo.py)
    "b1": {"address": "10.0.0.20", "mac": "00:00:00:00:00:20", "data_port": "s1-eth4", "mirror_port": "s1-eth5"},
    "b2": {"address": "10.0.0.30", "mac": "00:00:00:00:00:30", "data_port": "s1-eth30", "mirror_port": "s1-eth31"},
}


def lab_config(service_port: int, redis_url: str, more_ports: tuple = (), probe: dict = None,
               divergence: str = None, backups: int = 1) -> dict:
    """The lab's services file: switch_config/services-lab.yaml with the chosen port
    (and ``divergence`` when given); each of ``more_ports`` adds a service like it on
    that port, named demo-<port>; ``probe`` overrides settings of its probe section;
    with ``backups`` 2, b2 backs every service up too, after b1."""
    data = yaml.safe_load((ROOT / "switch_config/services-lab.yaml").read_text())
    data["probe"].update(probe or {})
    first = data["services"][0]
    first["port"] = service_port
    first["backups"] += [dict(BACKUPS[name], name=name) for name in list(BACKUPS)[1:backups]]
    if divergence is not None:
        first["divergence"] = divergence
    data["services"] += [dict(first, name=f"{first['name']}-{port}", port=port) for port in more_ports]
    data["redis"] = {"url": redis_url}
    return data


def failover_settled(store, name: str = "demo"):
    """The service's record once its failover is over: failed (the reason says why),
    or failed over with the agent's gone acknowledged (its timeline_ms is in); else None."""
    svc = store.service(name) or {}
    settled = svc.get("status") == "failover-failed" or (
        svc.get("status") == "failed-over" and svc.get("step") in ("done", "go-unacknowledged"))
    return svc if settled else None


class Lab:
    """The whole lab as a context manager. See the module docstring."""

    def __init__(self, service_cmd: str = SERVICES["echo"], service_port: int = 7000,
                 run_dir: str = "/run/ftcp", clients: int = 2, backup_service: bool = True,
                 extra_primary_cmds: tuple = (), agent: bool = True, agent_args: tuple = (), controllers: int = 1,
                 more_ports: tuple = (), sentinel: bool = False, probe: dict = None, divergence: str = None,
                 relay: bool = True, backups: int = 1):
        self.service_cmd = service_cmd
        self.service_port = service_port
        self.run_dir = Path(run_dir)
        self.clients = clients
        self.backup_service = backup_service
        self.extra_primary_cmds = extra_primary_cmds
        self.with_agent = agent
        self.agent_args = agent_args
        if not 1 <= backups <= len(BACKUPS) or (sentinel and backups > 1):
            raise ValueError(f"the lab has 1 to {len(BACKUPS)} backups (1 with Sentinel), not {backups}")
        self.backups = list(BACKUPS)[:backups]   # their hosts, in the services file's order
        self.agents = {}                      # backup -> its agent's Process
        self.with_relay = relay               # taken-over connections held by a relay of their own on each backup
        self.relays = {}                      # backup -> its relay's Process
        self.controllers = controllers
        self.more_ports = tuple(more_ports)   # more protected services, same command on these ports
        self.sentinel = sentinel              # Redis as a master, a replica and three sentinels
        self.probe = probe                    # overrides of the services file's probe settings
        self.divergence = divergence          # the service's divergence rule (default: the file's, strict)
        self.ryus = []
        self.ovs = Ovs()
        self.redis = self.ryu = self.net = None
        self.procs = []
        self.config_path = self.run_dir / "services.yaml"

    # --- lifecycle -----------------------------------------------------------------

    def __enter__(self):
        self._old_sigterm = signal.getsignal(signal.SIGTERM)
        if self._old_sigterm in (signal.SIG_DFL, None):
            # SIGTERM should tear the lab down like Ctrl-C does.
            signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            if self._old_sigterm in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return False

    def start(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cleanup_stale(self.run_dir)
        for old_log in [*self.run_dir.glob("*.log"), *self.run_dir.glob("*.out")]:
            old_log.unlink()  # each run's logs start empty, so they tell about this run only
        # and the Sentinel set's Redis starts empty (RedisServer sees to its own)
        for old in [*self.run_dir.glob("redis-*"), *self.run_dir.glob("nginx-*")]:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        LOG.info("lab: starting Open vSwitch")
        self.ovs.start()
        if self.sentinel:
            LOG.info("lab: starting Redis with Sentinel (master, replica, three sentinels) on 127.0.0.1")
            self.redis = SentinelSet(self.run_dir, self._track)
        else:
            LOG.info("lab: starting redis-server on %s", self.run_dir / "redis.sock")
            self.redis = self._track(RedisServer(self.run_dir,
                                                 components=("controller", *(f"agent:{b}" for b in self.backups))))
            self.redis.wait_ready()
        self.config_path.unlink(missing_ok=True)
        self.config_path.touch(mode=0o600)   # it holds the Redis URL, password included
        self.config_path.write_text(yaml.safe_dump(lab_config(self.service_port, self.redis.url_for("controller"),
                                                              self.more_ports,
                                                                    self.probe, self.divergence, len(self.backups)),
                                                         sort_keys=False))
        ofp_port = free_tcp_port()
        self.wsapi_port = free_tcp_port()
        LOG.info("lab: starting ryu-manager (OpenFlow port %d, REST port %d)%s", ofp_port, self.wsapi_port,
                 f" and {self.controllers - 1} more" if self.controllers > 1 else "")
        # A fresh REST token per lab, handed to ryu-manager in its environment and
        # kept in a root-only file for the user (never on a command line or in a log).
        self.api_token = secrets.token_urlsafe(24)
        token_file = self.run_dir / "api-token"
        token_file.touch(mode=0o600)
        token_file.write_text(self.api_token)
        # and the control keys: the controller's master key, and b1's own derived from it
        master = secrets.token_hex(32).encode()
        keys = [(CONTROL_KEY, master)] + [(f"{CONTROL_KEY}-{b}", control.agent_key(master, b)) for b in self.backups]
        for name, key in keys:
            key_file = self.run_dir / name
            key_file.unlink(missing_ok=True)
            key_file.touch(mode=0o600)
            key_file.write_bytes(key)
        ha = self.controllers > 1
        for i in range(self.controllers):
            ports = (ofp_port, self.wsapi_port) if i == 0 else (free_tcp_port(), free_tcp_port())
            self.ryus.append(self._track(RyuManager(self.run_dir, self.config_path, self.redis.url_for("controller"),
                                                    *ports,
                                                    api_token=self.api_token, ha=ha,
                                                    log="ryu" if i == 0 else f"ryu-{i + 1}")))
        self.ryu = self.ryus[0]
        for ryu in self.ryus:
            ryu.wait_ready()
        LOG.info("lab: starting the Mininet topology")
        self._start_net(ofp_port)
        if self.sentinel:
            self.redis.bridge(self.host("b1"), self._track)
        self._wait_protected()
        if self.with_agent:
            for backup in self.backups:
                if self.with_relay:
                    self.start_relay(backup)
                self.start_agent(backup)
        LOG.info("lab: starting the service on the primary and the backup: %s", self.service_cmd)
        for port in (self.service_port, *self.more_ports):
            self.start_service("p1", self.service_cmd, port)
            if self.backup_service:
                for backup in self.backups:
                    self.start_service(backup, self.service_cmd, port)
        for cmd, port in self.extra_primary_cmds:
            self.start_service("p1", cmd, port)

    def _start_net(self, ofp_port: int):
        from mininet.node import OVSSwitch, RemoteController

        from topology.ftcp_topo import FtcpTopo
        self.net = recording_mininet(self.run_dir)(
            topo=FtcpTopo(clients=self.clients, backups=len(self.backups)),
            switch=partial(OVSSwitch, datapath="user", protocols="OpenFlow13", failMode="secure"),
            controller=partial(_lenient(RemoteController), ip="127.0.0.1", port=ofp_port),
            autoSetMacs=False, autoStaticArp=False, waitConnected=False,
        )
        self.net.start()
        # the mirror port gets the mirror flows' copies only, not NORMAL's flooding
        # (OpenFlow 1.3 has no no-flood flag; switch_config/setup_bridge.sh --mirror)
        for backup in self.backups:
            subprocess.run(["ovs-vsctl", "--timeout=5", "set", "port", BACKUPS[backup]["mirror_port"], "tag=4094"],
                           check=True)
        if len(self.ryus) > 1:
            subprocess.run(["ovs-vsctl", "--timeout=5", "set-controller", "s1",
                            *(f"tcp:127.0.0.1:{ryu.ofp_port}" for ryu in self.ryus)], check=True)
        self._fast_reconnect()

    @staticmethod
    def _fast_reconnect():
        """Reconnect to a restarted controller within a second (OVS backs off to 8 s)."""
        for uuid in sh("ovs-vsctl --timeout=5 --columns=_uuid --bare list controller").split():
            subprocess.run(["ovs-vsctl", "--timeout=5", "set", "controller", uuid, "max_backoff=1000"],
                           capture_output=True)

    def cut_controller(self) -> list:
        """The switch loses its OpenFlow connection(s): it is pointed at a port nobody
        listens on, and keeps its flows (Open vSwitch flushes them when a bridge is left
        with no controller at all, so del-controller would be another fault). Returns
        the targets that ``reconnect_controller`` gives back."""
        targets = sh("ovs-vsctl --timeout=5 get-controller s1").split()
        subprocess.run(["ovs-vsctl", "--timeout=5", "set-controller", "s1", f"tcp:127.0.0.1:{free_tcp_port()}"],
                       check=True)
        return targets

    def reconnect_controller(self, targets: list) -> None:
        subprocess.run(["ovs-vsctl", "--timeout=5", "set-controller", "s1", *targets], check=True)
        self._fast_reconnect()

    def _wait_protected(self):
        """Wait for the controller's 'flows_installed' event for every service."""
        from ftcp.common.store import Store
        store = Store(self.redis.url)
        names = {s["name"] for s in yaml.safe_load(self.config_path.read_text())["services"]}
        seen, after = set(), "0"

        def check():
            nonlocal after
            for event_id, record in store.events(after=after, block_ms=200):
                after = event_id
                if record.get("kind") == "flows_installed":
                    seen.add(record.get("service"))
                if record.get("kind") == "service_unprotected":
                    raise LabError(f"service {record.get('service')} not protected: {record.get('reason')}")
            return names <= seen
        wait_for(check, 30, "the controller to install the service flows", interval=0,
                 failed=self.ryu.died)

    @property
    def agent(self):
        """b1's agent (the first backup's)."""
        return self.agents.get(self.backups[0])

    def relay_socket(self, backup: str = "b1") -> Path:
        return self.run_dir / f"relay-{backup}.sock"

    def agent_log(self, backup: str = "b1") -> Path:
        return self.run_dir / ("agent.log" if backup == self.backups[0] else f"agent-{backup}.log")

    def start_relay(self, backup: str = "b1"):
        """The relay in a backup's namespace (python -m ftcp.agent.relay), a process of
        its own that holds the connections its agent takes over; waits for its socket."""
        path = self.relay_socket(backup)
        LOG.info("lab: starting the relay on %s (%s)", backup, path)
        path.unlink(missing_ok=True)
        log = "relay.log" if backup == self.backups[0] else f"relay-{backup}.log"
        argv = [sys.executable, "-m", "ftcp.agent.relay", "--socket", str(path), "--log-file", str(self.run_dir / log)]
        relay = self.relays[backup] = self.popen(backup, f"cd {shlex.quote(str(ROOT))} && exec {shlex.join(argv)}",
                                                 "relay")
        wait_for(path.exists, 10, f"{backup}'s relay socket", failed=relay.died)
        return relay

    def start_agent(self, backup: str = "b1"):
        """A backup's agent in its namespace, capturing its mirror iface; waits for its
        first heartbeat in Redis (written once the capture ring is open)."""
        from ftcp.common.store import Store
        LOG.info("lab: starting the backup agent on %s (mirror iface %s-eth1)", backup, backup)
        log = self.agent_log(backup)
        argv = [sys.executable, "-m", "ftcp.agent", "--iface", f"{backup}-eth1", "--config", str(self.config_path),
                "--backup", backup, "--log-file", str(log),
                "--control-key-file", str(self.run_dir / f"{CONTROL_KEY}-{backup}"),
                *(["--relay", str(self.relay_socket(backup))] if backup in self.relays else []),
                *map(str, self.agent_args)]
        # the Redis URL (with its password) through the environment, not the command line
        agent = self.agents[backup] = self.popen(
            backup, f"cd {shlex.quote(str(ROOT))} && exec {shlex.join(argv)}", "agent",
            env=dict(os.environ, FTCP_REDIS_URL=self.redis.url_for(f"agent:{backup}")))
        store = Store(self.redis.url)
        started = time.time()

        def beating():
            # this run's heartbeat, not the last one of an agent stopped a moment ago
            beat = store.agent(backup)
            return beat and float(beat.get("started") or 0) >= started and beat.get("control") == "1"
        wait_for(beating, 20, f"{backup}'s agent's first heartbeat",
                 failed=lambda: agent.died() and f"{agent.died()}\n{tail(log)}")
        return agent

    def _replace(self, old: Process, new: Process) -> Process:
        self.procs[self.procs.index(old)] = new
        (self.run_dir / f"{old.name}-{old.pid}.pid").unlink(missing_ok=True)
        record_pid(self.run_dir / f"{new.name}-{new.pid}.pid", new.pid)
        return new

    def kill(self, proc: Process) -> None:
        """SIGKILL a lab process (its whole process group) and reap it: a crash."""
        kill_group(proc.proc)

    def restart_controller(self, kill: bool = True, which: RyuManager = None) -> RyuManager:
        """A ryu-manager (the first one by default) dies (SIGKILL, or SIGTERM) and is
        started again with the same arguments; returns once it listens (the switch
        reconnects on its own)."""
        old = which or self.ryu
        self.kill(old) if kill else old.stop()
        old.stop()
        new = self._replace(old, RyuManager(self.run_dir, self.config_path, self.redis.url_for("controller"),
                                            old.ofp_port,
                                            old.wsapi_port, api_token=self.api_token, ha=old.ha, log=old.log_name))
        self.ryus[self.ryus.index(old)] = new
        if self.ryu is old:
            self.ryu = new
        new.wait_ready()
        return new

    def master(self) -> RyuManager:
        """With several controllers: the one that holds the lease now."""
        from ftcp.common.store import Store
        holder = wait_for(lambda: Store(self.redis.url).leader(), 10, "a controller to hold the lease")
        pid = int(holder.rsplit(":", 1)[1])
        return next(ryu for ryu in self.ryus if ryu.pid == pid)

    def restart_redis(self, down: float = 0.0) -> None:
        """redis-server is killed (SIGKILL) and, ``down`` seconds later, started again
        on the same socket and append-only file."""
        old = self.redis
        self.kill(old)
        old.stop()
        if down:
            time.sleep(down)   # the outage itself: how long Redis stays away is the test's subject
        self.redis = self._replace(old, RedisServer(self.run_dir, fresh=False, password=old.password, users=old.users))
        self.redis.wait_ready()

    def stop_agent(self, timeout: float = 10.0, backup: str = "b1") -> int:
        """SIGTERM a backup's agent (it drains and flushes) and return its exit status."""
        agent = self.agents[backup]
        agent.proc.send_signal(signal.SIGTERM)
        return agent.proc.wait(timeout)

    def stop(self):
        for proc in reversed(self.procs):
            if not isinstance(proc, LAST):
                proc.stop()
        if self.net is not None:
            controllers = list(self.net.controllers)
            try:
                self.net.stop()
            finally:
                self.net = None
                for controller in controllers:
                    controller.terminate()   # Mininet's RemoteController.stop leaves its node's shell
        for proc in reversed(self.procs):
            if isinstance(proc, LAST):
                proc.stop()
        self.ryus = []
        for pidfile in self.run_dir.glob("*.pid"):
            pidfile.unlink(missing_ok=True)
        self.procs = []
        self.ovs.stop()
        cleanup_stale(self.run_dir)

    def _track(self, proc: Process) -> Process:
        self.procs.append(proc)
        record_pid(self.run_dir / f"{proc.name}-{proc.pid}.pid", proc.pid)
        return proc

    # --- hosts -----------------------------------------------------------------------

    def host(self, name: str):
        return self.net.get(name)

    def popen(self, host: str, cmd: str, log_name: str, env: dict = None) -> Process:
        """Start ``cmd`` (a shell command line) inside a host's namespace."""
        node = self.host(host)
        return self._track(Process(f"{host}-{log_name}", ["bash", "-c", cmd],
                                   self.run_dir / f"{host}-{log_name}.log", host=node, env=env))

    def start_service(self, host: str, cmd: str, port: int) -> Process:
        cmd = cmd.format(port=port, root=ROOT, run=self.run_dir)
        proc = self.popen(host, cmd, f"service-{port}")
        node = self.host(host)
        wait_for(lambda: node.cmd(f"ss -Hltn 'sport = :{port}'").strip(), 15,
                 f"the service to listen on {host}:{port} ({cmd})", failed=proc.died)
        return proc

    def run(self, host: str, cmd: str, timeout: float = 120.0):
        """Run a command to completion on a host: (returncode, stdout, stderr)."""
        node = self.host(host)
        proc = self.record(host, "run", node.popen(["bash", "-c", cmd], stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE))
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            out, err = proc.communicate()
            raise LabError(f"{cmd!r} on {host} did not finish in {timeout:.0f}s; stderr: {err.decode()[-500:]}")
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def client(self, host: str, *args, timeout: float = 120.0) -> dict:
        """Run services/client.py on a client host; its JSON result."""
        cmd = " ".join(["python3", shlex.quote(str(ROOT / "services/client.py"))] + [shlex.quote(str(a)) for a in args])
        rc, out, err = self.run(host, cmd, timeout=timeout)
        lines = out.strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            raise LabError(f"client on {host} printed no result (status {rc}): {err[-1000:]}") from None

    def start_client(self, host: str, *args) -> "RunningClient":
        """services/client.py on a host, in the background (see RunningClient)."""
        client = RunningClient(self.host(host), *args)
        self.record(host, "client", client.proc)
        return client

    def record(self, host: str, what: str, popen):
        """A pid file for a process started in a host outside ``popen`` (a client), so
        that ``cleanup_stale`` ends it if this lab is killed hard."""
        record_pid(self.run_dir / f"{host}-{what}-{popen.pid}.pid", popen.pid)
        return popen

    def kill_services(self, host: str, sig=signal.SIGKILL):
        """Signal every service process running on a host (SIGKILL: a crash)."""
        for proc in self.procs:
            if proc.name.startswith(f"{host}-service-") and proc.proc.poll() is None:
                os.killpg(proc.pid, sig)

    def _primary_services(self, sig):
        self.kill_services("p1", sig)

    def crash_primary(self):
        """The primary host dies: its link goes down and its server processes are
        killed (SIGKILL, so its kernel would answer with RSTs if it could)."""
        self.net.configLinkStatus("p1", "s1", "down")
        self._primary_services(signal.SIGKILL)

    def fail_primary(self, how: str):
        """One of the failures ftcp masks, of the primary (``fail_host``)."""
        self.fail_host("p1", how)

    def fail_host(self, host: str, how: str):
        """A host fails:
        link    its link(s) go down (the switch sees its port(s) go down);
        crash   its server processes are killed (its kernel closes every connection);
        silent  it stops answering: every frame it sends is dropped (tc blackhole) and
                its servers are stopped, but its links stay up."""
        if how == "link":
            self.net.configLinkStatus(host, "s1", "down")
        elif how == "crash":
            self.kill_services(host, signal.SIGKILL)
        elif how == "silent":
            self.host(host).cmd(f"tc qdisc add dev {host}-eth0 root blackhole")
            self.kill_services(host, signal.SIGSTOP)
        else:
            raise ValueError(f"unknown failure {how!r}")

    def flows(self) -> str:
        return sh("ovs-ofctl -O OpenFlow13 dump-flows s1")

    def logs(self, lines: int = 30) -> str:
        """The last lines of the controller's and the agent's logs, for a failure message."""
        return "\n".join(f"--- {name} ---\n{tail(self.run_dir / name, lines)}" for name in ("ryu.log", "agent.log"))

    def rest(self, method: str, path: str, body=None, token: bool = True):
        """Call the controller's REST API: (status, decoded JSON or text)."""
        import urllib.error
        import urllib.request
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.wsapi_port}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {self.api_token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _lenient(controller_class):
    """Mininet's controller node checks that the controller listens by telnet to its
    OpenFlow port, and reads what comes back as UTF-8: Ryu's HELLO, whose transaction id
    is random, is not always valid UTF-8, and the strict decoder then fails the lab's
    start. This node reads its shell's output with undecodable bytes replaced."""
    import codecs

    class LenientController(controller_class):
        def startShell(self, *args, **kwargs):
            self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            return super().startShell(*args, **kwargs)
    return LenientController

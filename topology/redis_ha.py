"""Redis with Sentinel for the lab: a master, a replica and three sentinels, all on
127.0.0.1 of the machine (ports chosen free), each also on a unix socket under the
run directory.

The backup agent runs in b1's network namespace, where 127.0.0.1 is another loopback:
``bridge(host)`` starts, inside that host, one socat per port that forwards
127.0.0.1:<port> to the unix socket of the same server. Addresses the sentinels hand
out (127.0.0.1:<port>) then mean the same server in both namespaces, and no lab
traffic leaves the machine's loopbacks.
"""
from __future__ import annotations

import socket
from pathlib import Path

from topology.processes import LabError, Process, free_tcp_port, wait_for
from topology.reaper import kill_group

MASTER_NAME = "ftcp"
DOWN_AFTER_MS = 500     # a master silent this long is down, for a sentinel
FAILOVER_TIMEOUT_MS = 3000


class RedisNode(Process):
    """One redis-server on 127.0.0.1:<port> and <run_dir>/redis-<port>.sock, with an
    append-only file fsynced at every write; ``replica_of``: a port to replicate."""

    def __init__(self, run_dir: Path, port: int, replica_of: int = None):
        self.port, self.socket_path = port, run_dir / f"redis-{port}.sock"
        data = run_dir / f"redis-{port}"
        data.mkdir(exist_ok=True)
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--unixsocket", str(self.socket_path),
                "--unixsocketperm", "700", "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--dir", str(data), "--daemonize", "no", "--repl-diskless-sync-delay", "0"]
        if replica_of:
            argv += ["--replicaof", "127.0.0.1", str(replica_of)]
        super().__init__(f"redis-{port}", argv, run_dir / f"redis-{port}.log")

    def wait_ready(self):
        wait_for(lambda: _ping(self.socket_path), 10, f"redis-server on port {self.port}", failed=self.died)


class SentinelNode(Process):
    def __init__(self, run_dir: Path, port: int, master_port: int):
        self.port, self.socket_path = port, run_dir / f"sentinel-{port}.sock"
        conf = run_dir / f"sentinel-{port}.conf"   # a sentinel rewrites its own file
        conf.write_text(f"port {port}\nbind 127.0.0.1\nunixsocket {self.socket_path}\nunixsocketperm 700\n"
                        f"dir {run_dir}\n"
                        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
                        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                        f"sentinel parallel-syncs {MASTER_NAME} 1\n")
        super().__init__(f"sentinel-{port}", ["redis-server", str(conf), "--sentinel"],
                         run_dir / f"sentinel-{port}.log")

    def wait_ready(self):
        wait_for(lambda: _ping(self.socket_path), 10, f"sentinel on port {self.port}", failed=self.died)


class SentinelSet:
    """Master, replica, three sentinels; ``url`` is what the controller and agents use."""

    def __init__(self, run_dir: Path, track):
        self.run_dir = run_dir
        ports = [free_tcp_port() for _ in range(5)]
        self.nodes = [track(RedisNode(run_dir, ports[0]))]
        self.nodes[0].wait_ready()
        self.nodes.append(track(RedisNode(run_dir, ports[1], replica_of=ports[0])))
        self.nodes[1].wait_ready()
        wait_for(lambda: _info(self.nodes[1].socket_path).get("master_link_status") == "up", 15,
                 "the replica to sync with the master")
        self.sentinels = [track(SentinelNode(run_dir, port, ports[0])) for port in ports[2:]]
        for sentinel in self.sentinels:
            sentinel.wait_ready()
        wait_for(lambda: all(self._known(s) for s in self.sentinels), 15, "the sentinels to see the replica")
        self.url = "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{MASTER_NAME}"

    def url_for(self, component: str) -> str:
        """Every component uses the same URL: the Sentinel set has no users of its own."""
        return self.url

    @staticmethod
    def _known(sentinel) -> bool:
        import redis
        try:
            info = redis.Redis(unix_socket_path=str(sentinel.socket_path), socket_timeout=1).sentinel_master(
                MASTER_NAME)
            return info.get("num-slaves", 0) >= 1 and info.get("num-other-sentinels", 0) >= 2
        except (redis.RedisError, OSError):
            return False

    def master_port(self) -> int:
        import redis
        for sentinel in self.sentinels:
            try:
                client = redis.Redis(unix_socket_path=str(sentinel.socket_path), socket_timeout=1)
                return int(client.sentinel_get_master_addr_by_name(MASTER_NAME)[1])
            except (redis.RedisError, OSError, TypeError):
                continue
        raise LabError("no sentinel answers")

    def master(self) -> RedisNode:
        port = self.master_port()
        return next(node for node in self.nodes if node.port == port)

    def fail_master(self) -> int:
        """SIGKILL the master; returns once the sentinels promoted the replica (its port)."""
        old = self.master()
        kill_group(old.proc)
        return wait_for(lambda: (lambda p: p if p != old.port else None)(self.master_port()), 15,
                        "the sentinels to promote the replica")

    def bridge(self, host, track) -> list:
        """Inside a Mininet host: 127.0.0.1:<port> of every server and sentinel forwarded
        to its unix socket (see the module docstring)."""
        procs = []
        for node in [*self.nodes, *self.sentinels]:
            argv = ["socat", f"TCP-LISTEN:{node.port},bind=127.0.0.1,reuseaddr,fork",
                    f"UNIX-CONNECT:{node.socket_path}"]
            procs.append(track(Process(f"{host.name}-bridge-{node.port}", argv,
                                       self.run_dir / f"{host.name}-bridge-{node.port}.log", host=host)))
        for node in [*self.nodes, *self.sentinels]:
            wait_for(lambda: host.cmd(f"ss -Hltn 'sport = :{node.port}'").strip(), 10,
                     f"the bridge to port {node.port} on {host.name}")
        return procs


def _info(path: Path) -> dict:
    import redis
    try:
        return redis.Redis(unix_socket_path=str(path), socket_timeout=1, decode_responses=True).info("replication")
    except (redis.RedisError, OSError):
        return {}


def _ping(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(str(path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


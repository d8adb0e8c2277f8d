"""The backup agent's command line: its options (with their defaults and why), the
process's limits and logging, and the Agent (ftcp/agent/main.py) run until a signal.

    python -m ftcp.agent --iface b1-eth1 --config services.yaml --backup b1 \\
        [--redis-url URL] [--log-file F] [--log-cap 64M]

Runs in the backup host's network namespace. SIGTERM/SIGINT: stop capturing, drain
the ring, flush to Redis (retrying for --shutdown-timeout seconds), exit.
"""
from __future__ import annotations

import argparse
import logging
import re
import signal
import sys

from ftcp.common import config as ftcp_config
from ftcp.common import control
from ftcp.agent.capture import CaptureError
from ftcp.agent.main import Agent
from ftcp.agent.admission import Limits
from ftcp.agent.relay import raise_fd_limit   # the relay raises its own the same way

LOG = logging.getLogger(__name__)
SIZE_RE = re.compile(r"^(\d+)([KMG]?)(i?B)?$", re.I)


def parse_size(text: str) -> int:
    match = SIZE_RE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 65536, 64M, 1G)")
    return int(match.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[match.group(2).upper()]


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m ftcp.agent",
                                 description="The backup agent: capture the mirror, track connections, log to Redis.")
    ap.add_argument("--iface", required=True, help="the mirror iface (no IP address)")
    ap.add_argument("--config", default="switch_config/services.yaml", help="the services file")
    ap.add_argument("--backup", help="this backup's name in the services file (default: every service)")
    ap.add_argument("--redis-url", help="default: FTCP_REDIS_URL, then redis.url of the services file")
    ap.add_argument("--log-file", help="default: stderr")
    ap.add_argument("--log-cap", type=parse_size, default=parse_size("64M"),
                    help="client->server bytes logged per connection before it is unprotected (default 64M)")
    ap.add_argument("--buffer", type=parse_size, default=parse_size("256M"),
                    help="bytes held while Redis is unreachable (default 256M)")
    ap.add_argument("--grace", type=float, default=30.0, help="seconds a closed connection stays listed")
    ap.add_argument("--half-closed-timeout", type=float, default=120.0,
                    help="seconds of silence after which a connection that is closing (or never finished "
                         "its handshake) is taken as closed; established ones never time out")
    ap.add_argument("--flush-ms", type=int, default=10, help="Redis write interval (ms)")
    ap.add_argument("--state-ms", type=int, default=250,
                    help="a busy connection's state hash is refreshed at most this often (ms); "
                         "its log, and changes of state or status, are written at every flush")
    ap.add_argument("--ring-mb", type=int, default=64, help="capture ring size in MiB")
    ap.add_argument("--retire-ms", type=int, default=1,
                    help="capture ring block timeout (ms): the latency of a quiet stream's capture")
    ap.add_argument("--shutdown-timeout", type=float, default=5.0)
    ap.add_argument("--prepare-timeout", type=float, default=3.0,
                    help="seconds a takeover waits for the replicas to reach the primary's output "
                         "(keep it below the controller's takeover_timeout)")
    ap.add_argument("--relay", metavar="PATH",
                    help="the unix socket of the relay (python -m ftcp.agent.relay) that holds taken-over "
                         "connections, so they outlive this agent; without one the agent relays them itself "
                         "and they end (with a RST) when it stops")
    ap.add_argument("--max-hot", type=int, default=256,
                    help="connections kept in hot standby at most; the others are replayed cold (default 256)")
    defaults = Limits()
    ap.add_argument("--max-conns", type=int, default=defaults.conns,
                    help=f"connection records at most; past it no new one is made (default {defaults.conns})")
    ap.add_argument("--max-conns-per-service", type=int, default=defaults.conns_per_service,
                    help="records of one service past their handshake at most; past it a new connection is "
                         f"unprotected (default {defaults.conns_per_service})")
    ap.add_argument("--max-conns-per-client", type=int, default=defaults.conns_per_client,
                    help="... of one service from one client address; past it a new connection from there is "
                         f"unprotected (default {defaults.conns_per_client})")
    ap.add_argument("--max-embryonic", type=int, default=defaults.embryonic,
                    help="records with no handshake seen (anyone can make them) at most; past it the oldest "
                         f"is dropped (default {defaults.embryonic})")
    ap.add_argument("--embryonic-timeout", type=float, default=defaults.embryonic_timeout,
                    help=f"seconds such a record lives without traffic (default {defaults.embryonic_timeout:g})")
    ap.add_argument("--max-ooo", type=parse_size, default=defaults.ooo_bytes,
                    help="out-of-order client bytes held per connection before it is unprotected (default 4M)")
    ap.add_argument("--max-ooo-segments", type=int, default=defaults.ooo_segments,
                    help=f"... and segments (default {defaults.ooo_segments})")
    ap.add_argument("--max-ooo-total", type=parse_size, default=defaults.ooo_total,
                    help="... and bytes over every connection (default 64M)")
    ap.add_argument("--control-key-file", default=control.key_from_env(),
                    help="file with the key that signs control messages, the controller's [ftcp] "
                         "control_key_file (default: FTCP_CONTROL_KEY_FILE)")
    ap.add_argument("--standby", choices=["hot", "cold"], default="hot",
                    help="hot: keep a replica connection in step per connection (default); "
                         "cold: replay the log from Redis at takeover")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    raise_fd_limit()
    # Four threads share the GIL. A thread that waits for another (a takeover waiting
    # for the replica pool, capture waking from poll) gets it back only after the
    # running one's switch interval: 5 ms by default, measured as 6 ms of a 25 ms
    # takeover. 0.5 ms costs a little CPU and keeps those handoffs short.
    sys.setswitchinterval(0.0005)
    handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        agent = Agent(args)
    except (ftcp_config.ConfigError, control.ControlError) as e:
        LOG.error("invalid configuration: %s", e)
        print(f"ftcp agent: invalid configuration: {e}", file=sys.stderr)
        return 2
    except CaptureError as e:
        LOG.error("%s", e)
        print(f"ftcp agent: {e}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())

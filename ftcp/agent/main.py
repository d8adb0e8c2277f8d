"""The backup agent process: capture the mirror, track connections, log to Redis.

    python -m ftcp.agent --iface b1-eth1 --config services.yaml --backup b1 \\
        [--redis-url URL] [--log-file F] [--log-cap 64M]

Runs in the backup host's network namespace. SIGTERM/SIGINT: stop capturing, drain
the ring, flush to Redis (retrying for --shutdown-timeout seconds), exit.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import time

from ftcp import config as ftcp_config
from ftcp.agent.capture import CaptureError, RingCapture
from ftcp.agent.packet import ip_int
from ftcp.agent.tracker import Tracker
from ftcp.agent.writer import LogWriter, WriterThread
from ftcp.store import Store

LOG = logging.getLogger("ftcp.agent")
SIZE_RE = re.compile(r"^(\d+)([KMG]?)(i?B)?$", re.I)


def parse_size(text: str) -> int:
    match = SIZE_RE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 65536, 64M, 1G)")
    return int(match.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[match.group(2).upper()]


def tracked_services(conf, backup: str | None) -> dict:
    """(server ip int, port) -> service name, for the services this backup protects."""
    chosen = {}
    for svc in conf.services:
        if backup is None or any(b.name == backup for b in svc.backups):
            chosen[(ip_int(svc.address), svc.port)] = svc.name
    return chosen


class Agent:
    def __init__(self, args, clock=time.time):
        self.args = args
        self.clock = clock
        conf = ftcp_config.load(args.config)
        self.services = tracked_services(conf, args.backup)
        if not self.services:
            raise ftcp_config.ConfigError("services", f"no service lists backup {args.backup!r}")
        self.name = args.backup or "agent"
        url = args.redis_url or os.environ.get("FTCP_REDIS_URL") or conf.redis_url
        self.store = Store(url)
        self.tracker = Tracker(self.services, log_cap=args.log_cap, grace=args.grace)
        self.writer = LogWriter(self.store, self.tracker, max_buffer=args.buffer, agent_name=self.name)
        self.writer_thread = WriterThread(self.writer, args.flush_ms / 1000.0)
        self.capture = RingCapture(args.iface, block_size=1 << 20, block_count=max(8, args.ring_mb),
                                   retire_ms=args.flush_ms)
        self.started = clock()
        self.stopping = False
        self._drops_reported = 0
        LOG.info("agent %s capturing on %s for %s; redis %s; log cap %d bytes", self.name, args.iface,
                 ", ".join(sorted(self.services.values())), ftcp_config.redact_url(url), args.log_cap)

    def heartbeat(self, now: float) -> dict:
        self.capture.stats()
        if self.capture.dropped > self._drops_reported:
            LOG.error("the kernel dropped %d mirrored packets (ring full); affected connections "
                      "will be marked unprotected when the gap shows", self.capture.dropped - self._drops_reported)
            self._drops_reported = self.capture.dropped
        t = self.tracker
        # The writer adds its own counters (bytes_logged, redis_errors, ...) when it writes.
        return {"pid": os.getpid(), "iface": self.args.iface, "started": f"{self.started:.6f}",
                "heartbeat": f"{now:.6f}", "packets": t.packets, "ignored": t.ignored, "malformed": t.malformed,
                "kernel_received": self.capture.received, "kernel_drops": self.capture.dropped,
                "conns": len(t.conns), "services": ",".join(sorted(self.services.values()))}

    def run(self) -> int:
        collect_every = self.args.flush_ms / 1000.0
        next_collect = next_beat = 0.0
        feed = self.tracker.feed_frame
        self.writer_thread.start()
        while not self.stopping:
            frames = self.capture.batch(self.args.flush_ms)
            now = self.clock()
            for frame in frames:
                feed(frame, now)
            if now >= next_collect:
                beat = None
                if now >= next_beat:
                    beat, next_beat = self.heartbeat(now), now + 1.0
                self.writer.collect(now, beat)
                self.writer_thread.wake()
                next_collect = now + collect_every
        return self.shutdown()

    def shutdown(self) -> int:
        LOG.info("agent %s stopping: draining the capture ring", self.name)
        while True:
            frames = self.capture.batch(0)
            if not frames:
                break
            now = self.clock()
            for frame in frames:
                self.tracker.feed_frame(frame, now)
        self.writer_thread.stop()
        now = self.clock()
        beat = self.heartbeat(now)
        beat["stopped"] = f"{now:.6f}"
        self.writer.collect(now, beat)
        self.capture.close()
        deadline = now + self.args.shutdown_timeout
        while not self.writer.flush():
            if self.clock() > deadline:
                LOG.error("agent %s: Redis unreachable at shutdown; %d bytes of client logs not stored",
                          self.name, self.writer.buffered)
                return 1
            time.sleep(self.writer.retry_interval)
        LOG.info("agent %s stopped: %d packets, %d bytes logged", self.name, self.tracker.packets,
                 self.writer.bytes_logged)
        return 0

    def stop(self, *_):
        self.stopping = True


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m ftcp.agent", description=__doc__.splitlines()[0])
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
    ap.add_argument("--flush-ms", type=int, default=10, help="Redis write interval (ms)")
    ap.add_argument("--ring-mb", type=int, default=64, help="capture ring size in MiB")
    ap.add_argument("--shutdown-timeout", type=float, default=5.0)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        agent = Agent(args)
    except ftcp_config.ConfigError as e:
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

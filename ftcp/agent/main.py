"""The backup agent: its threads wired together (capture and tracking on this one, the
Redis writer, the control listener, the hot replicas, the splicer), the capture loop,
the controller's messages dispatched to the coordinator (ftcp/agent/coordinator.py),
services redefined over REST, the drain and the shutdown. Its command line is
ftcp/agent/cli.py (``python -m ftcp.agent``).
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time

from ftcp.common import config as ftcp_config
from ftcp.common import control
from ftcp.agent.acks import AckSender
from ftcp.agent.capture import RingCapture
from ftcp.agent.coordinator import Coordinator
from ftcp.agent.handoff import RelayClient
from ftcp.agent.replica import HotStandby, ReplicaPool
from ftcp.agent.takeover import Splicer
from ftcp.agent.services import divergence, primary_macs, replicas, tracked_services
from ftcp.agent.admission import Limits
from ftcp.agent.conn import CLOSED, ESTABLISHED, PROTECTED, Conn
from ftcp.agent.tracker import Tracker
from ftcp.common.statuses import Reason
from ftcp.agent.wakeup import Wakeup
from ftcp.agent.writer import LogWriter, WriterThread
from ftcp.common.errors import StoreError
from ftcp.common.keys import agent_channel
from ftcp.common.store import Store

LOG = logging.getLogger(__name__)


class ControlListener(threading.Thread):
    """Receives the controller's messages (takeover, go) into a queue; resubscribes
    after a Redis error so a Redis restart does not deafen the agent."""

    def __init__(self, store: Store, channel: str):
        super().__init__(name="ftcp-control", daemon=True)
        self.store, self.channel = store, channel
        self.commands = queue.Queue()
        # Written once per command: the capture loop polls it with the ring.
        self.wakeup = Wakeup()
        self.subscribed = threading.Event()
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                pubsub = self.store.subscribe(self.channel)
                self.subscribed.set()
                while not self._halt.is_set():
                    msg = self.store.next_message(pubsub, timeout=0.5)
                    if msg is not None:
                        self.commands.put(msg)
                        self.wakeup.wake()
            except StoreError as e:
                self.subscribed.clear()
                LOG.error("control channel: %s; resubscribing", e)
                self._halt.wait(0.5)
            except Exception:
                # whatever it was, the agent must keep hearing the controller
                self.subscribed.clear()
                LOG.exception("control channel failed; resubscribing")
                self._halt.wait(0.5)

    def stop(self):
        self._halt.set()


class Agent:
    def __init__(self, args, clock=time.time):
        self.args = args
        self.clock = clock
        conf = ftcp_config.load(args.config)
        self.name = args.backup or "agent"
        url = args.redis_url or os.environ.get("FTCP_REDIS_URL") or conf.redis_url
        key = control.load_key(args.control_key_file)
        if key is None:
            LOG.warning("control messages are not authenticated: give --control-key-file (this agent's key: "
                        "python -m ftcp.common.control agent-key --backup %s) so only the controller can order a "
                        "takeover", self.name)
        self.store = Store(url, control_key=control.Keyring(key, agent=self.name) if key else None)
        # The services file, updated by what the controller recorded (services created
        # or replaced over REST), then kept current by its "service"/"forget" messages.
        self.defined = {svc.name: svc for svc in conf.services}
        self.defined.update(self._recorded_services())
        self.services = tracked_services(self.defined.values(), args.backup)
        if not self.services:
            raise ftcp_config.ConfigError("services", f"no service lists backup {args.backup!r}")
        self.tracker = Tracker(self.services, log_cap=args.log_cap, grace=args.grace,
                               half_closed_timeout=args.half_closed_timeout,
                               limits=Limits(conns=args.max_conns, conns_per_service=args.max_conns_per_service,
                                             conns_per_client=args.max_conns_per_client,
                                             embryonic=args.max_embryonic,
                                             embryonic_timeout=args.embryonic_timeout, ooo_bytes=args.max_ooo,
                                             ooo_segments=args.max_ooo_segments, ooo_total=args.max_ooo_total))
        self.tracker.set_services(self.services, primary_macs(self.defined.values(), args.backup))
        self.replicas = replicas(self.defined.values(), args.backup)
        self.divergence = divergence(self.defined.values())
        self.pool = ReplicaPool(self.replicas) if args.standby == "hot" else None
        self.hot = (HotStandby(self.pool, self.tracker, max_hot=args.max_hot, divergence=self.divergence)
                    if self.pool else None)
        self.writer = LogWriter(self.store, self.tracker, max_buffer=args.buffer, agent_name=self.name,
                                tap=self.hot, state_interval=args.state_ms / 1000.0)
        self.writer_thread = WriterThread(self.writer, args.flush_ms / 1000.0)
        self._rebuild()
        # A block is handed over when full or after retire_ms: small, so a takeover's
        # drain (which must wait for the partly filled block, up to two timer periods)
        # costs only ~2 ms. Under light traffic every block is retired nearly empty, so
        # the ring then holds block_count x retire_ms of packets: many small blocks
        # (128 KiB, 8 per MiB) let capture survive a stall of the agent of half a
        # second, not 64 ms.
        self.capture = RingCapture(args.iface, block_size=1 << 17, block_count=max(64, args.ring_mb * 8),
                                   retire_ms=args.retire_ms)
        self.control = ControlListener(self.store, agent_channel(self.name))
        self.capture.wake_on(self.control.wakeup.fileno())
        self.coordinator = Coordinator(self)
        self.splicer = Splicer()
        self.relay = RelayClient(args.relay) if args.relay else None
        self.acks = AckSender()
        self.started = clock()
        self.boot = f"{self.started:.6f}"   # this run, as its heartbeat's "started" says
        self.stopping = False
        self._drops_reported = 0
        self._other_host_reported = 0
        LOG.info("agent %s capturing on %s for %s; redis %s; log cap %d bytes", self.name, args.iface,
                 ", ".join(sorted(self.services.values())), ftcp_config.redact_url(url), args.log_cap)

    def _rebuild(self) -> None:
        """The connections a previous run of this agent logged, from Redis: each stays
        protected if its next segment shows it did not move meanwhile (Tracker.adopt);
        until then a takeover resets it rather than replay a stale log."""
        try:
            states = self.store.live_conns(set(self.services.values()), self.name)
        except StoreError as e:
            LOG.warning("connections of an earlier run not read from Redis (%s): they will be unprotected", e)
            return
        now, adopted = self.clock(), 0
        for state in states:
            if state.get("state") != ESTABLISHED or state.get("status") != PROTECTED:
                continue
            try:
                conn = Conn.from_state(state, now)
            except (KeyError, TypeError, ValueError) as e:
                LOG.warning("stored connection %s not usable: %s", state.get("id"), e)
                continue
            if self.tracker.adopt(conn):
                self.writer.adopt(conn, now)
                adopted += 1
        if adopted:
            LOG.info("rebuilt %d connection(s) from Redis; each is protected again once it is seen to continue "
                     "where it was stored", adopted)

    def check_drops(self) -> None:
        """Packets the kernel dropped (ring full) may belong to any open connection, and
        a lost server segment with the client's ACK of it leaves no trace to find later
        (the primary may be dead by then): every connection open now is unprotected."""
        self.capture.stats()
        lost = self.capture.dropped - self._drops_reported
        if lost <= 0:
            return
        self._drops_reported = self.capture.dropped
        reason = Reason.CAPTURE_GAP.because(f"the kernel dropped {lost} mirrored packets (ring full)")
        hit = [c for c in self.tracker.conns.values() if c.state != CLOSED and c.status == PROTECTED]
        for conn in hit:
            self.tracker.mark_unprotected(conn, reason)
        LOG.error("the kernel dropped %d mirrored packets (ring full): %d open connection(s) unprotected", lost,
                  len(hit))

    def heartbeat(self, now: float) -> dict:
        self.check_drops()
        if self.tracker.other_host > self._other_host_reported:
            mac = self.tracker.other_host_mac
            LOG.warning("%d client segment(s) addressed to %s, not to the primary's MAC, were not taken (the "
                        "primary never sees them); if clients really reach the primary at that MAC, "
                        "primary.mac in the services file is wrong",
                        self.tracker.other_host - self._other_host_reported, mac.hex(":") if mac else "?")
            self._other_host_reported = self.tracker.other_host
        t = self.tracker
        # The writer adds its own counters (bytes_logged, redis_errors, ...) when it writes.
        return {"pid": os.getpid(), "iface": self.args.iface, "started": self.boot,
                "heartbeat": f"{now:.6f}", "packets": t.packets, "ignored": t.ignored, "malformed": t.malformed,
                "bad_checksum": t.bad_checksum, "out_of_window": t.out_of_window, "other_host": t.other_host,
                "other_frames": t.other + self.capture.other_vlan, "refused": t.refused, "evicted": t.evicted,
                "ooo_total": t.ooo_total,
                "replica_failures": self.pool.failures if self.pool else 0,
                "unverified": self.pool.unverified if self.pool else 0,
                "divergent_bytes": self.pool.differed_total if self.pool else 0,
                "kernel_received": self.capture.received, "kernel_drops": self.capture.dropped,
                "conns": len(t.conns), "services": ",".join(sorted(self.services.values())),
                "control": int(self.control.subscribed.is_set()),
                # overwrites the mark a previous run of this agent left at its clean stop
                "stopped": ""}

    def run(self) -> int:
        collect_every = self.args.flush_ms / 1000.0
        next_collect = next_beat = 0.0
        feed = self.tracker.feed_frame
        self.writer_thread.start()
        self.control.start()
        self.splicer.start()
        if self.pool:
            self.pool.start()
        if self.relay is not None:
            held = self.relay.held()
            if held is not None:
                LOG.info("the relay at %s holds %d taken-over connection(s)", self.relay.path, len(held))
        while not self.stopping:
            while not self.control.commands.empty():
                self.control.wakeup.drain()
                self.handle(self.control.commands.get())
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

    # --- control messages -------------------------------------------------------------

    def handle(self, msg: dict) -> None:
        cmd = msg.get("cmd")
        try:
            if cmd in ("takeover", "go", "abort") and msg.get("boot", self.boot) != self.boot:
                LOG.warning("control: %s(%s) for %s was for another run of this agent (started %s): ignored",
                            cmd, msg.get("epoch"), msg.get("service"), msg.get("boot"))
            elif cmd in ("takeover", "go", "abort"):
                getattr(self.coordinator, cmd)(str(msg["service"]), int(msg["epoch"]), str(msg.get("id", "")))
            elif cmd == "service":
                service = ftcp_config.parse_service(msg["service"])
                self.defined[service.name] = service
                self._services_changed(f"service {service.name} defined")
            elif cmd == "forget":
                if self.defined.pop(str(msg["service"]), None) is not None:
                    self._services_changed(f"service {msg['service']} deleted")
            elif cmd == "invalid":
                LOG.warning("control: message refused (%s): %.200s", msg.get("why"), msg.get("raw"))
            else:
                LOG.error("control: unknown message %r", msg)
        except (KeyError, ValueError, TypeError, ftcp_config.ConfigError) as e:
            LOG.error("control: malformed message %r: %s", msg, e, exc_info=True)
        except Exception:   # a bug in a takeover must not stop capture for everyone else
            LOG.exception("control: %s failed", cmd)

    def _recorded_services(self) -> dict:
        """Services the controller recorded in Redis (those created over REST too)."""
        try:
            raw = self.store.service_configs()
        except StoreError as e:
            LOG.warning("services recorded in Redis not read (%s): using the services file only", e)
            return {}
        out = {}
        for data in raw:
            try:
                service = ftcp_config.parse_service(data)
            except ftcp_config.ConfigError as e:
                LOG.error("a service recorded in Redis is not valid, ignored: %s", e)
                continue
            out[service.name] = service
        return out

    def _services_changed(self, why: str) -> None:
        """Track and replicate what ``defined`` now says this backup protects."""
        services = tracked_services(self.defined.values(), self.args.backup)
        # in place: the replica pool reads the same mapping
        new_replicas = replicas(self.defined.values(), self.args.backup)
        self.replicas.clear()
        self.replicas.update(new_replicas)
        self.divergence.clear()
        self.divergence.update(divergence(self.defined.values()))
        self.services = services
        self.tracker.set_services(services, primary_macs(self.defined.values(), self.args.backup))
        LOG.info("%s: now logging %s", why, ", ".join(sorted(services.values())) or "no service")

    def drain(self) -> None:
        """Everything mirrored before now into the tracker. The ring is in capture order
        and the kernel stamps each frame with the wall clock: once a frame stamped after
        the start is fed, every earlier one is. Waiting for a quiet ring instead never
        ends while clients keep retransmitting to a dead primary (a thousand of them
        fill every block). With no traffic, a partly filled block is handed over within
        retire_ms, so two quiet periods mean nothing is left."""
        start = self.clock()
        until = start + 2 * self.args.retire_ms / 1000.0
        while True:
            frames = self.capture.batch(self.args.retire_ms)
            now = self.clock()
            for frame in frames:
                self.tracker.feed_frame(frame, now)
            if frames and self.capture.last_stamp >= start:
                return
            if not frames and now >= until:
                return

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
        self.control.stop()
        if self.pool:
            self.pool.stop()
        self.splicer.stop()
        if self.relay is not None:
            self.relay.close()
        self.acks.close()
        now = self.clock()
        beat = self.heartbeat(now)
        beat["stopped"] = f"{now:.6f}"
        self.writer.collect(now, beat)
        self.writer.snapshot_all(now)
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

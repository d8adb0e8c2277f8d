"""Ryu shim for ftcp: OpenFlow events in, core decisions out, send_msg.

Launch:  ryu-manager --config-file switch_config/ryu.conf ryu_apps/ftcp_app.py
The service file comes from ``[ftcp] config`` in ryu.conf, or FTCP_CONFIG.
"""
import dataclasses
import json
import logging
import os
import sys
import time

from ryu import cfg
from ryu.app.wsgi import WSGIApplication
from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from ryu.lib import hub
from ryu.lib.packet import arp, ipv4, packet, tcp
from ryu.ofproto import ofproto_v1_3

from ftcp import config as ftcp_config
from ftcp import failover, flows
from ftcp.api import Api, ApiError, Controller
from ftcp.plan import plan_switch, switch_applies
from ftcp.probe import Prober, ReadPort, Release, SendProbe, Verdict
from ftcp.recorder import Recorder
from ftcp.store import CONTROLLER_CHANNEL, Store, StoreError, agent_channel
from ryu_apps import ftcp_rest

LOG = logging.getLogger("ftcp.app")

cfg.CONF.register_opts([
    cfg.StrOpt("config", default="switch_config/services.yaml",
               help="ftcp services file (YAML); FTCP_CONFIG overrides it"),
    cfg.StrOpt("redis_url", default="",
               help="Redis URL; overrides redis.url of the services file (FTCP_REDIS_URL overrides both)"),
    cfg.FloatOpt("takeover_timeout", default=5.0,
                 help="seconds to wait for the backup's ready before declaring the failover failed"),
], group="ftcp")


def _load_config():
    path = os.environ.get("FTCP_CONFIG") or cfg.CONF.ftcp.config
    try:
        conf = ftcp_config.load(path)
    except ftcp_config.ConfigError as e:
        # One clear line, then refuse to run: a half-configured failover
        # controller is worse than none.
        LOG.error("ftcp: invalid configuration: %s", e)
        print(f"ftcp: invalid configuration: {e}", file=sys.stderr)
        raise SystemExit(2)
    url = os.environ.get("FTCP_REDIS_URL") or cfg.CONF.ftcp.redis_url
    if url:
        conf = dataclasses.replace(conf, redis_url=url)
    return conf


def _port_down(msg) -> bool:
    ofp = msg.datapath.ofproto
    desc = msg.desc
    return (msg.reason == ofp.OFPPR_DELETE or bool(desc.state & ofp.OFPPS_LINK_DOWN)
            or bool(desc.config & ofp.OFPPC_PORT_DOWN))


class _RestAdapter(Controller):
    """What the REST API may ask of the running controller (ftcp.api.Controller)."""

    def __init__(self, app):
        self.app = app

    def config(self):
        return self.app.conf

    def apply_service(self, service):
        self.app.apply_service(service)

    def remove_service(self, name):
        self.app.remove_service(name)

    def switches(self):
        return [{"dpid": f"{dpid:016x}", "address": "%s:%s" % tuple(dp.address[:2]),
                 "connected_since": self.app.connected_since.get(dpid)}
                for dpid, dp in self.app.datapaths.items()]

    def failover(self, name, backup):
        return self._start(name, "failover requested over REST", backup)

    def migrate(self, name):
        return self._start(name, "planned migration requested over REST", None)

    def _start(self, name, reason, backup):
        state = self.app.failovers[name]
        if state.status != failover.PROTECTED:
            raise ApiError(409, f"service {name} is {state.status}, not protected: nothing to move", "name")
        self.app.fail(name, reason, backup=backup)
        return {"service": name, "status": state.status, "epoch": state.epoch, "backup": state.backup,
                "reason": reason}

    def redis_errors(self):
        return self.app.recorder.redis_errors

    def counters(self):
        return self.app.counters()


class FtcpApp(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    _CONTEXTS = {"wsgi": WSGIApplication}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conf = _load_config()
        self.store = Store(self.conf.redis_url)
        self.recorder = Recorder(self.store)
        self._wake = hub.Event()
        self._after_barrier = {}  # (dpid, xid) -> callable run on the barrier reply
        self.timelines = {}       # service -> [(step, time)] of the failover under way
        self._port_reads = {}     # (dpid, xid) -> (service, token) of a prober's ReadPort
        self.failover_counts = {}  # final status -> count
        self.last_takeover_seconds = 0.0
        self.datapaths = {}       # dpid -> datapath
        self.connected_since = {}  # dpid -> time
        self.plans = {}           # dpid -> {service name: ServicePlan}
        self.failovers, self.probers = {}, {}
        self._index_services()
        probe = self.conf.probe
        LOG.info("ftcp: %d service(s) from %s, redis %s", len(self.conf.services), self.conf.source,
                 ftcp_config.redact_url(self.conf.redis_url))
        if probe:
            LOG.info("ftcp: probing from %s every %.0f ms, failover after %d misses; FIN/RST from primaries held",
                     probe.address, probe.interval * 1000, probe.misses)
        else:
            LOG.warning("ftcp: no probe section in %s: only link-down is detected (no process crash, "
                        "no silent host)", self.conf.source)
        for svc in self.conf.services:
            LOG.info("ftcp: service %s %s primary port %s backups %s", svc.name, svc.key, svc.primary.port,
                     ", ".join(f"{b.name}({b.address}, mirror port {b.mirror_port})" for b in svc.backups))
            self.recorder.service(svc, "configured")
        self.recorder.event("controller_started", services=[s.name for s in self.conf.services])
        self.threads += [hub.spawn(self._recorder_loop), hub.spawn(self._control_loop),
                         hub.spawn(self._tick_loop)]
        ftcp_rest.register(kwargs["wsgi"], Api(self.store, _RestAdapter(self), ftcp_rest.api_token()))

    def _index_services(self):
        """Per-service state for every configured service (kept for existing ones)."""
        probe = self.conf.probe
        for s in self.conf.services:
            if s.name not in self.failovers:
                self.failovers[s.name] = failover.ServiceFailover(
                    s.name, tuple(b.name for b in s.backups), epoch=self._stored_epoch(s.name))
            else:
                self.failovers[s.name].backups = tuple(b.name for b in s.backups)
            if probe and s.name not in self.probers:
                self.probers[s.name] = Prober(s.name, probe.interval, probe.misses)
        names = {s.name for s in self.conf.services}
        for table in (self.failovers, self.probers):
            for name in set(table) - names:
                del table[name]
        self._by_cookie = {s.cookie_id: s.name for s in self.conf.services}
        self._by_address = {(s.address, s.port): s.name for s in self.conf.services}

    # --- services changed over REST ---------------------------------------------------

    def apply_service(self, service):
        """Create or replace a service: validated as a whole first (ConfigError = nothing
        changed), then flows re-planned on every switch."""
        old = self.conf.service(service.name)
        conf = ftcp_config.with_service(self.conf, service)
        if old is not None:
            for dp in self.datapaths.values():
                dp.send_msg(flows.delete_service(dp, old.cookie_id))
        self.conf = conf
        self._index_services()
        self.recorder.service(service, "configured")
        self.recorder.event("service_configured", service=service.name)
        self._record()
        for dp in self.datapaths.values():
            dp.send_msg(flows.port_desc_request(dp))
        # The backups' agents log the new service from now on (a backup the new
        # definition no longer lists stops: the same message tells it).
        for name in {b.name for b in service.backups} | {b.name for b in (old.backups if old else ())}:
            self._publish(agent_channel(name), {"cmd": "service", "service": service.to_dict()})

    def remove_service(self, name):
        svc = self.conf.service(name)
        for dpid, dp in self.datapaths.items():
            dp.send_msg(flows.delete_service(dp, svc.cookie_id))
            self.plans.get(dpid, {}).pop(name, None)
        self.conf = ftcp_config.without_service(self.conf, name)
        self._index_services()
        self.recorder.forget_service(name)
        self.recorder.event("service_deleted", service=name)
        self._record()
        for backup in svc.backups:
            self._publish(agent_channel(backup.name), {"cmd": "forget", "service": name})

    def counters(self) -> dict:
        """Numbers for /metrics: probes, held FIN/RST, failovers and their duration."""
        probes = {"alive": 0, "rst": 0, "timeout": 0, "held": 0, "released": 0}
        for prober in self.probers.values():
            probes["alive"] += prober.stats["alive"]
            probes["rst"] += prober.stats["dead"]
            probes["timeout"] += prober.stats["missed"]
            probes["held"] += prober.stats["held"]
            probes["released"] += prober.stats["released"]
        return {"probes": probes, "failovers": dict(self.failover_counts),
                "last_takeover_seconds": self.last_takeover_seconds}
    def _stored_epoch(self, name: str) -> int:
        try:
            return int((self.store.service(name) or {}).get("epoch", 0))
        except (StoreError, ValueError) as e:
            LOG.warning("ftcp: cannot read the epoch of %s from Redis (%s); starting at 0", name, e)
            return 0

    # --- green threads -----------------------------------------------------------------

    def _record(self):
        self._wake.set()

    def _recorder_loop(self):
        while True:
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self.recorder.flush()
            except Exception:  # never let the writer thread die silently
                LOG.exception("ftcp: recorder failed")

    def _control_loop(self):
        """Messages from agents (ready) and operators (failover) on Redis pub/sub."""
        while True:
            try:
                sub = self.store.subscribe(CONTROLLER_CHANNEL)
                while True:
                    msg = self.store.next_message(sub, timeout=1.0)
                    if msg is not None:
                        self._on_control(msg)
            except StoreError as e:
                LOG.error("ftcp: control channel: %s; resubscribing", e)
                hub.sleep(0.5)
            except Exception:
                LOG.exception("ftcp: control loop failed; resubscribing")
                hub.sleep(0.5)

    def _tick_loop(self):
        while True:
            hub.sleep(0.01)
            now = time.time()
            try:
                for f in self.failovers.values():
                    self._run(f.tick(now))
                for name, prober in self.probers.items():
                    # Probe only what is protected on a connected switch.
                    if self.failovers[name].status == failover.PROTECTED and any(self._service_plans(name)):
                        self._probe_actions(prober.tick(now))
            except Exception:
                LOG.exception("ftcp: tick failed")

    def _probe_actions(self, actions):
        for action in actions:
            if isinstance(action, SendProbe):
                for dp, plan in self._service_plans(action.service):
                    dp.send_msg(flows.probe_syn(dp, plan, self.conf.probe, action.sport, action.seq))
            elif isinstance(action, ReadPort):
                for dp, plan in self._service_plans(action.service):
                    if plan.primary_port is not None:
                        msg = flows.port_stats_request(dp, plan.primary_port)
                        dp.set_xid(msg)
                        dp.send_msg(msg)
                        self._port_reads[(dp.id, msg.xid)] = (action.service, action.token)
            elif isinstance(action, Release):
                LOG.info("ftcp: %s: a probe sent after the hold was answered: releasing %d held FIN/RST",
                         action.service, len(action.held))
                for dpid, data in action.held:
                    plan = self.plans.get(dpid, {}).get(action.service)
                    dp = self.datapaths.get(dpid)
                    if plan is not None and dp is not None:
                        dp.send_msg(flows.release(dp, plan, data))
            elif isinstance(action, Verdict):
                self.fail(action.service, action.reason)

    def _service_plans(self, name):
        for dpid, plans in self.plans.items():
            plan = plans.get(name)
            dp = self.datapaths.get(dpid)
            if plan is not None and dp is not None:
                yield dp, plan

    def _on_control(self, msg: dict):
        cmd, name = msg.get("cmd"), msg.get("service")
        if name not in self.failovers:
            LOG.error("ftcp: control message for unknown service: %r", msg)
            return
        if cmd == "ready":
            LOG.info("ftcp: backup %s ready for %s (epoch %s): %d taken, %d not (%s s)", msg.get("backup"),
                     name, msg.get("epoch"), len(msg.get("taken", [])), len(msg.get("failed", {})),
                     msg.get("seconds"))
            self._step(name, "ready")
            self._run(self.failovers[name].ready(int(msg.get("epoch", -1)), msg.get("backup"),
                                                 list(msg.get("taken", [])), dict(msg.get("failed", {})),
                                                 time.time()))
        elif cmd == "failover":
            self.fail(name, str(msg.get("reason") or "requested"), backup=msg.get("backup"))
        else:
            LOG.error("ftcp: unknown control message: %r", msg)

    # --- failover ------------------------------------------------------------------------

    def fail(self, name: str, reason: str, backup=None):
        actions = self.failovers[name].fail(reason, time.time(), timeout=cfg.CONF.ftcp.takeover_timeout,
                                            backup=backup)
        if actions:
            self.timelines[name] = [("detected", self.failovers[name].started)]
            LOG.warning("ftcp: service %s: %s: failing over", name, reason)
            if name in self.probers:
                self.probers[name].stop()  # held FIN/RST are dropped: the client must not see them
        self._run(actions)

    def _run(self, actions):
        """Carry out failover actions in order. Flow changes are confirmed by a
        barrier before the next action: the takeover only starts once the primary is
        fenced, and the agent is only told to go once the redirect is in place."""
        actions = list(actions)
        while actions:
            action = actions.pop(0)
            if isinstance(action, (failover.Fence, failover.Redirect)):
                step = "fenced" if isinstance(action, failover.Fence) else "redirected"

                def confirmed(rest=actions, name=action.service, step=step):
                    self._step(name, step)
                    self._run(rest)
                self._flows_then(action, confirmed)
                return
            if isinstance(action, failover.RequestTakeover):
                self._publish(agent_channel(action.backup),
                              {"cmd": "takeover", "service": action.service, "epoch": action.epoch})
            elif isinstance(action, failover.Go):
                self._publish(agent_channel(action.backup),
                              {"cmd": "go", "service": action.service, "epoch": action.epoch})
                self._step(action.service, "go")
            elif isinstance(action, failover.Record):
                self._record_failover(action)

    def _flows_then(self, action, then):
        svc = self.conf.service(action.service)
        pending = []
        for dp, plan in self._service_plans(action.service):
            for mod in self._failover_flows(dp, plan, action, svc):
                dp.send_msg(mod)
                LOG.info("ftcp: %s on %016x: %s", action.service, dp.id, flows.describe(mod))
            barrier = flows.barrier(dp)
            dp.send_msg(barrier)
            pending.append((dp.id, barrier.xid))
        if not pending:
            LOG.error("ftcp: %s: no switch carries the service; nothing to %s", action.service,
                      type(action).__name__.lower())
            then()
            return
        remaining = set(pending)

        def one_done(key):
            remaining.discard(key)
            if not remaining:
                then()
        for key in pending:
            self._after_barrier[key] = lambda key=key: one_done(key)

    @staticmethod
    def _failover_flows(dp, plan, action, svc):
        if isinstance(action, failover.Fence):
            return [flows.fence_flow(dp, plan)]
        return flows.redirect_flows(dp, plan, action.backup, svc.primary.mac)

    def _step(self, name: str, step: str):
        if name in self.timelines:
            self.timelines[name].append((step, time.time()))

    def _record_failover(self, action: failover.Record):
        svc = self.conf.service(action.service)
        if action.status in (failover.FAILED_OVER, failover.FAILED) and action.service in self.timelines:
            # Where the time went, in ms after the failure was seen: for operators and
            # for the benchmark's breakdown of the stall.
            steps = self.timelines.pop(action.service)
            t0 = steps[0][1]
            timeline = {step: round((t - t0) * 1000, 1) for step, t in steps}
            LOG.warning("ftcp: failover of %s, ms after the failure was seen: %s", action.service, timeline)
            action = failover.Record(action.service, action.status, action.epoch,
                                     dict(action.detail, timeline_ms=timeline))
        detail = {k: v if isinstance(v, str) else json.dumps(v) for k, v in action.detail.items()}
        LOG.warning("ftcp: service %s is %s (epoch %d): %s", action.service, action.status, action.epoch,
                    action.detail)
        if action.status in (failover.FAILED_OVER, failover.FAILED):
            self.failover_counts[action.status] = self.failover_counts.get(action.status, 0) + 1
            self.last_takeover_seconds = float(action.detail.get("takeover_seconds", 0.0))
        self.recorder.service(svc, action.status, epoch=action.epoch, **detail)
        self.recorder.event(f"service_{action.status}", service=action.service, epoch=action.epoch,
                            **action.detail)
        self._record()

    def _publish(self, channel: str, message: dict):
        def send():
            try:
                if not self.store.publish(channel, message):
                    LOG.error("ftcp: nobody listens on %s: %s is lost (is the agent running?)", channel, message)
            except StoreError as e:
                LOG.error("ftcp: cannot send %s on %s: %s", message, channel, e)
        hub.spawn(send)

    # --- OpenFlow ------------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev):
        dp = ev.msg.datapath
        LOG.info("ftcp: switch %016x connected", dp.id)
        self.datapaths[dp.id] = dp
        self.connected_since[dp.id] = time.time()
        # Start from nothing we own: a reconnecting switch keeps flows of an older
        # config (fail_mode=secure). Messages are processed in order, so the gap
        # between delete and re-add is only a few microseconds of OVS work.
        dp.send_msg(flows.delete_all_ftcp(dp))
        dp.send_msg(flows.default_flow(dp))
        if self.conf.probe:
            for mod in flows.probe_flows(dp, self.conf.probe.address):
                dp.send_msg(mod)
        dp.send_msg(flows.port_desc_request(dp))

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def port_desc(self, ev):
        dp = ev.msg.datapath
        ports = {p.name.decode(errors="replace") if isinstance(p.name, bytes) else p.name: p.port_no
                 for p in ev.msg.body}
        self._install(dp, ports)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def port_status(self, ev):
        msg = ev.msg
        dp = msg.datapath
        if _port_down(msg):
            for name, plan in self.plans.get(dp.id, {}).items():
                if plan.primary_port == msg.desc.port_no:
                    self.fail(name, f"link down on port {msg.desc.port_no} of switch {dp.id:016x}")
        if msg.reason in (dp.ofproto.OFPPR_ADD, dp.ofproto.OFPPR_DELETE):
            # A port came or went: names may now resolve differently. Re-plan.
            dp.send_msg(flows.port_desc_request(dp))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        """Only three kinds come here: ARP for the probe address, answers to probes,
        and FIN/RST segments held from a primary. Anything else is ignored."""
        msg = ev.msg
        dp = msg.datapath
        try:
            self._packet_in(dp, msg)
        except Exception:  # a malformed packet must never kill the handler
            LOG.exception("ftcp: packet-in from %016x not understood", dp.id)

    def _packet_in(self, dp, msg):
        parts = flows.cookie_parts(msg.cookie)
        if parts and parts[1] in (flows.HOLD_FIN, flows.HOLD_RST):
            self._held(dp, msg, *parts)
            return
        probe = self.conf.probe
        pkt = packet.Packet(msg.data)
        req = pkt.get_protocol(arp.arp)
        if req is not None:
            if req.opcode == arp.ARP_REQUEST:
                mac = self._arp_answer(req.dst_ip)
                if mac:
                    dp.send_msg(flows.arp_reply(dp, msg.match["in_port"], req, mac))
            return
        if probe is None:
            return
        ip, seg = pkt.get_protocol(ipv4.ipv4), pkt.get_protocol(tcp.tcp)
        if ip is None or seg is None:
            return
        if ip.dst == probe.address:
            name = self._by_address.get((ip.src, seg.src_port))
            if name not in self.probers:
                return
            syn_ack = seg.has_flags(tcp.TCP_SYN, tcp.TCP_ACK)
            rst = seg.has_flags(tcp.TCP_RST)
            self._probe_actions(self.probers[name].answer(seg.dst_port, seg.ack, syn_ack, rst, time.time()))
            if syn_ack:
                for dp2, plan in self._service_plans(name):
                    dp2.send_msg(flows.probe_rst(dp2, plan, probe, seg.dst_port, seg.ack))

    def _held(self, dp, msg, service_id: int, purpose: int):
        """A FIN/RST from a primary, held by the switch. Only the first of a hold is
        parsed and logged (it probes); the rest just join it: a crashed server's kernel
        answers every client segment with a RST, and handling each in full delayed the
        verdict and the fence by ~20 ms during an upload."""
        name = self._by_cookie.get(service_id)
        if name not in self.probers:
            return
        actions = self.probers[name].hold((dp.id, bytes(msg.data)), time.time())
        if actions:
            pkt = packet.Packet(msg.data)
            ip, seg = pkt.get_protocol(ipv4.ipv4), pkt.get_protocol(tcp.tcp)
            LOG.info("ftcp: %s: held a %s from the primary to %s:%s; probing (later ones join it)", name,
                     "FIN" if purpose == flows.HOLD_FIN else "RST", ip.dst if ip else "?",
                     seg.dst_port if seg else "?")
        self._probe_actions(actions)

    def _arp_answer(self, ip: str):
        """The MAC the controller answers ARP with: the probe address, and the address
        of a service whose primary is gone (the backup answers with the service's MAC)."""
        if self.conf.probe and ip == self.conf.probe.address:
            return self.conf.probe.mac
        for svc in self.conf.services:
            if svc.address == ip and self.failovers[svc.name].status == failover.FAILED_OVER:
                return svc.primary.mac
        return None

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def error_msg(self, ev):
        msg = ev.msg
        LOG.error("ftcp: switch %016x rejected a message: type=%d code=%d", msg.datapath.id, msg.type, msg.code)
        self.recorder.event("switch_error", dpid=f"{msg.datapath.id:016x}", type=msg.type, code=msg.code)
        self._record()

    def _install(self, dp, ports):
        dpid = f"{dp.id:016x}"
        if not switch_applies(self.conf, dp.id):
            LOG.info("ftcp: switch %s is not switch.dpid %016x: NORMAL forwarding only", dpid, self.conf.dpid)
            return
        installed = []
        plans = self.plans.setdefault(dp.id, {})
        for plan in plan_switch(self.conf, ports):
            svc = plan.service
            state = self.failovers[svc.name]
            dp.send_msg(flows.delete_service(dp, svc.cookie_id))
            if not plan.ok:
                plans.pop(svc.name, None)
                LOG.error("ftcp: service %s NOT protected on switch %s: %s", svc.name, dpid, plan.problem)
                self.recorder.service(svc, "unprotected", reason=plan.problem, dpid=dpid)
                self.recorder.event("service_unprotected", service=svc.name, dpid=dpid, reason=plan.problem)
                continue
            plans[svc.name] = plan
            if state.status == failover.PROTECTED:
                mods = flows.service_flows(dp, plan, hold=bool(self.probers))
            else:
                # A switch that reconnects after a failover gets the failed-over state
                # back, never the mirrors to a primary that is gone.
                mods = [flows.fence_flow(dp, plan)]
                if state.status == failover.FAILED_OVER:
                    mods += flows.redirect_flows(dp, plan, state.backup, svc.primary.mac)
            for mod in mods:
                dp.send_msg(mod)
                LOG.info("ftcp: %s on %s: %s", svc.name, dpid, flows.describe(mod))
            if state.status == failover.PROTECTED:
                installed.append((plan, len(mods)))
        barrier = flows.barrier(dp)
        dp.send_msg(barrier)
        # Report "protected" only once the switch has processed the FlowMods: a
        # rejected one comes back as an error before the barrier reply.
        self._after_barrier[(dp.id, barrier.xid)] = lambda: self._protected(dp, installed)
        self._record()

    def _protected(self, dp, installed):
        dpid = f"{dp.id:016x}"
        for plan, count in installed:
            svc = plan.service
            LOG.info("ftcp: service %s protected on switch %s: %d flows, primary port %d, mirror port(s) %s",
                     svc.name, dpid, count, plan.primary_port, ",".join(map(str, plan.mirror_ports)))
            self.recorder.service(svc, "protected", dpid=dpid, flows=count, reason="")
            self.recorder.event("flows_installed", service=svc.name, dpid=dpid, flows=count)
        self._record()

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def barrier_reply(self, ev):
        callback = self._after_barrier.pop((ev.msg.datapath.id, ev.msg.xid), None)
        if callback is not None:
            try:
                callback()
            except Exception:
                LOG.exception("ftcp: barrier follow-up failed")

    @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
    def port_stats_reply(self, ev):
        read = self._port_reads.pop((ev.msg.datapath.id, ev.msg.xid), None)
        if read is None:
            return
        name, token = read
        prober = self.probers.get(name)
        if prober is not None and ev.msg.body:
            self._probe_actions(prober.port_counter(ev.msg.body[0].rx_packets, token, time.time()))

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def state_change(self, ev):
        if ev.state == DEAD_DISPATCHER and ev.datapath.id is not None:
            self.datapaths.pop(ev.datapath.id, None)
            self.connected_since.pop(ev.datapath.id, None)
            # its replies will never come
            self._port_reads = {key: read for key, read in self._port_reads.items() if key[0] != ev.datapath.id}

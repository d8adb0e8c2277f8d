"""Ryu shim for ftcp: OpenFlow events in, core decisions out, send_msg.

Launch:  ryu-manager --config-file switch_config/ryu.conf ryu_apps/ftcp_app.py
The service file comes from ``[ftcp] config`` in ryu.conf, or FTCP_CONFIG.

Every decision is ftcp/controller/core.py's: each handler decodes its event, calls the
core with the time, and dispatches the effects it returns. The green threads here
only move data between the core and Redis (records, control messages, heartbeats)
so that no OpenFlow handler waits on Redis.
"""
import dataclasses
import logging
import os
import socket
import sys
import time

from ryu import cfg
from ryu.app.wsgi import WSGIApplication
from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from ryu.lib import hub
from ryu.ofproto import ofproto_v1_3

from ftcp.common import config as ftcp_config
from ftcp.common import control
from ftcp.api.routes import Api, AppAdapter
from ftcp.api.validation import ApiError
from ftcp.controller.core import Controller, Refusal
from ftcp.controller.lease import DEMOTE, PROMOTE, UNKNOWN, Lease
from ftcp.controller.effects import Event, ForgetService, Publish, RecordService, Send
from ftcp.controller.recorder import Recorder
from ftcp.common.errors import StoreError
from ftcp.common.store import Store
from ryu_apps import ftcp_rest

LOG = logging.getLogger(__name__)
HEARTBEAT_POLL = 0.5   # seconds between reads of the agents' heartbeats

cfg.CONF.register_opts([
    cfg.StrOpt("config", default="switch_config/services.yaml",
               help="ftcp services file (YAML); FTCP_CONFIG overrides it"),
    cfg.StrOpt("redis_url", default="",
               help="Redis URL; overrides redis.url of the services file (FTCP_REDIS_URL overrides both)"),
    cfg.FloatOpt("takeover_timeout", default=5.0,
                 help="seconds to wait for the backup's ready before declaring the failover failed"),
    cfg.BoolOpt("ha", default=False,
                help="run as one of two (or more) controllers of the same switches: the one holding the "
                     "lease in Redis is the OpenFlow master, the others stand by (FTCP_HA=1 overrides)"),
    cfg.FloatOpt("lease", default=1.5,
                 help="with ha: seconds a master's lease lasts unless renewed (renewed every lease/5)"),
    cfg.StrOpt("control_key_file", default="",
               help="file with the master key of the control messages (each agent gets its own, derived: "
                    "python -m ftcp.common.control agent-key --backup NAME); "
                    "FTCP_CONTROL_KEY_FILE overrides it. Without one, anyone who can publish on Redis can "
                    "order a takeover"),
], group="ftcp")


def _refuse_to_run(problem) -> None:
    """One clear line, then refuse to run: a half-configured failover controller is
    worse than none."""
    LOG.error("ftcp: invalid configuration: %s", problem)
    print(f"ftcp: invalid configuration: {problem}", file=sys.stderr)
    raise SystemExit(2)


def _load_control_key():
    path = control.key_from_env() or cfg.CONF.ftcp.control_key_file
    try:
        key = control.load_key(path)
    except control.ControlError as e:
        _refuse_to_run(e)
    if key is None:
        LOG.warning("ftcp: control messages are not authenticated: set [ftcp] control_key_file "
                    "(and each agent's --control-key-file: python -m ftcp.common.control agent-key --backup NAME) "
                    "so only the controller and the agents can order a takeover")
        return None
    return control.Keyring(key)


def _load_config():
    path = os.environ.get("FTCP_CONFIG") or cfg.CONF.ftcp.common.config
    try:
        conf = ftcp_config.load(path)
    except ftcp_config.ConfigError as e:
        _refuse_to_run(e)
    url = os.environ.get("FTCP_REDIS_URL") or cfg.CONF.ftcp.redis_url
    if url:
        conf = dataclasses.replace(conf, redis_url=url)
    return conf


class _RestAdapter(AppAdapter):
    """What the REST API may ask of the running controller (ftcp.api.routes.AppAdapter)."""

    def __init__(self, app):
        self.app = app

    def config(self):
        return self.app.core.conf

    def _do(self, method, *args):
        """Run a core request and dispatch its effects; the core's refusal becomes the API's."""
        try:
            effects = method(*args, time.time())
        except Refusal as refusal:
            self.app.dispatch(refusal.effects)
            raise ApiError(refusal.status, refusal.reason, refusal.field) from None
        self.app.dispatch(effects)
        return effects

    def apply_service(self, service):
        self._do(self.app.core.apply_service, service)

    def remove_service(self, name):
        self._do(self.app.core.remove_service, name)

    def switches(self):
        return [{"dpid": f"{dpid:016x}", "address": "%s:%s" % tuple(dp.address[:2]),
                 "connected_since": self.app.core.switch_since(dpid)}
                for dpid, dp in self.app.datapaths.items()]

    def failover(self, name, backup):
        return self._start(name, "failover requested over REST", backup)

    def migrate(self, name):
        return self._start(name, "planned migration requested over REST", None)

    def _start(self, name, reason, backup):
        if self.app.core.active:        # a standby is refused by the core at once, with no Redis read
            self.app.refresh_heartbeats()   # as of now, not of the last poll
        state = {}

        def start(now):
            effects, after = self.app.core.start_failover(name, reason, backup, now)
            state.update(after)
            return effects
        self._do(start)
        return state

    def redis_errors(self):
        return self.app.recorder.redis_errors

    def counters(self):
        return self.app.core.counters()


class FtcpApp(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    _CONTEXTS = {"wsgi": WSGIApplication}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        conf = _load_config()
        self.ha = cfg.CONF.ftcp.ha or os.environ.get("FTCP_HA") == "1"
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.lease = Lease(cfg.CONF.ftcp.lease, ha=self.ha)
        self.core = Controller(conf, takeover_timeout=cfg.CONF.ftcp.takeover_timeout, active=not self.ha)
        self.control_key = _load_control_key()
        # bulk reads (listings, metrics) yield the hub between chunks
        self.store = Store(conf.redis_url, control_key=self.control_key, pause=lambda: hub.sleep(0))
        self.recorder = Recorder(self.store)
        self._wake = hub.Event()
        self.datapaths = {}       # dpid -> datapath
        probe = conf.probe
        LOG.info("ftcp: %d service(s) from %s, redis %s", len(conf.services), conf.source,
                 ftcp_config.redact_url(conf.redis_url))
        if probe:
            LOG.info("ftcp: probing from %s every %.0f ms, failover after %d misses; FIN/RST from primaries held",
                     probe.address, probe.interval * 1000, probe.misses)
        else:
            LOG.warning("ftcp: no probe section in %s: only link-down is detected (no process crash, "
                        "no silent host)", conf.source)
        for svc in conf.services:
            LOG.info("ftcp: service %s %s primary port %s backups %s", svc.name, svc.key, svc.primary.port,
                     ", ".join(f"{b.name}({b.address}, mirror port {b.mirror_port})" for b in svc.backups))
        self.threads += [hub.spawn(self._lease_loop if self.ha else self._restore), hub.spawn(self._recorder_loop),
                         hub.spawn(self._control_loop), hub.spawn(self._tick_loop), hub.spawn(self._heartbeat_loop)]
        ftcp_rest.register(kwargs["wsgi"], Api(self.store, _RestAdapter(self), ftcp_rest.api_token()))

    # --- effects ---------------------------------------------------------------------------

    def dispatch(self, effects):
        """Carry out what the core decided, in its order. A controller whose lease may
        be gone sends nothing (``Lease.may_act``): another one may be the master by now."""
        wake = False
        if not self.lease.may_act(time.time()):
            effects = [e for e in effects if isinstance(e, Event)]
        for effect in effects:
            if isinstance(effect, Send):
                dp = self.datapaths.get(effect.dpid)
                if dp is not None:
                    effect.msg.datapath = dp
                    dp.send_msg(effect.msg)
            elif isinstance(effect, Publish):
                hub.spawn(self._publish, effect.channel, effect.message)
            elif isinstance(effect, RecordService):
                self.recorder.service(effect.service, effect.status, **effect.fields)
                wake = True
            elif isinstance(effect, ForgetService):
                self.recorder.forget_service(effect.name)
                wake = True
            elif isinstance(effect, Event):
                self.recorder.event(effect.kind, **effect.fields)
                wake = True
        if wake:
            self._wake.set()

    def _call(self, method, *args, **kwargs):
        """Run a core method with the time and dispatch its effects; a bug is logged,
        never allowed to kill the green thread or the handler."""
        try:
            self.dispatch(method(*args, time.time(), **kwargs))
        except Exception:
            LOG.exception("ftcp: %s failed", method.__name__)

    def _publish(self, channel: str, message: dict):
        try:
            if not self.store.publish(channel, message):
                LOG.warning("ftcp: nobody listens on %s for %s (it is resent until acknowledged)",
                            channel, message.get("cmd"))
        except StoreError as e:
            LOG.error("ftcp: cannot send %s on %s: %s", message.get("cmd"), channel, e)

    # --- green threads ---------------------------------------------------------------------

    def _records(self) -> tuple:
        """Every service's record in Redis and every service's last epoch, retried until
        Redis answers (meanwhile the switches keep their flows: nothing is reconciled
        before)."""
        while True:
            try:
                return ({svc.name: self.store.service(svc.name) for svc in self.core.conf.services},
                        self.store.epochs())
            except StoreError as e:
                LOG.error("ftcp: cannot read the services' state from Redis (%s); switches are left as they "
                          "are until it answers", e)
                hub.sleep(1.0)

    def _restore(self):
        records, epochs = self._records()
        self._call(self.core.restore, records, epochs=epochs)

    def _lease_loop(self):
        """With two controllers: hold the lease in Redis to act, stand by without it
        (when to act is ftcp/controller/lease.py's to say)."""
        lease = self.lease
        store = Store(self.core.conf.redis_url, timeout=lease.timeout, control_key=self.control_key)
        LOG.info("ftcp: one of several controllers (%s): standing by until this one holds the lease", self.holder)
        while True:
            asked = time.time()
            try:
                held = store.lead(self.holder, lease.length)
            except StoreError as e:
                held = UNKNOWN
                LOG.error("ftcp: cannot renew the controllers' lease: %s", e)
            decision = lease.answered(asked, held, self.core.active, time.time())
            if decision == PROMOTE:
                records, epochs = self._records()
                if lease.may_act(time.time()):   # else the lease is asked again first
                    self.recorder.event("controller_master", holder=self.holder, generation=lease.generation)
                    self._call(self.core.promote, records, lease.generation, epochs=epochs)
            elif decision == DEMOTE:
                self.recorder.drop_services()   # a newer master's records must not be overwritten
                self._call(self.core.demote)
            hub.sleep(lease.interval)

    def _recorder_loop(self):
        while True:
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self.recorder.flush()
            except Exception:  # never let the writer thread die silently
                LOG.exception("ftcp: recorder failed")

    def _control_loop(self):
        """The agents' answers (ready, gone, aborted), read from each backup's stream
        from what comes after this controller started reading it (the core resends
        what it has not heard answered)."""
        after = {}
        while True:
            try:
                backups = {b.name for s in self.core.conf.services for b in s.backups}
                for name in set(after) - backups:
                    del after[name]
                new = sorted(backups - set(after))
                if new:
                    after.update(self.store.answers_from(new))
                if not after:
                    hub.sleep(0.5)
                    continue
                for _backup, msg in self.store.read_answers(after, block_ms=500):
                    self._call(self.core.control, msg)
            except StoreError as e:
                LOG.error("ftcp: the agents' answers: %s; reading again", e)
                hub.sleep(0.5)
            except Exception:
                LOG.exception("ftcp: control loop failed; reading again")
                hub.sleep(0.5)

    def _tick_loop(self):
        while True:
            hub.sleep(0.01)
            self._call(self.core.tick)

    def refresh_heartbeats(self):
        """The backups' heartbeats from Redis into the core (its "is the agent alive"
        before a fence). Redis away: the old ones age out, no failover to an unknown agent."""
        for name in sorted({b.name for s in self.core.conf.services for b in s.backups}):
            try:
                beat = self.store.agent(name)
            except StoreError:
                return
            self.core.agent_heartbeat(name, beat, time.time())

    def _heartbeat_loop(self):
        while True:
            self.refresh_heartbeats()
            hub.sleep(HEARTBEAT_POLL)

    # --- OpenFlow ---------------------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev):
        dp = ev.msg.datapath
        self.datapaths[dp.id] = dp
        self._call(self.core.switch_connected, dp.id)

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def state_change(self, ev):
        dp = ev.datapath
        if ev.state == DEAD_DISPATCHER and dp.id is not None and self.datapaths.get(dp.id) is dp:
            del self.datapaths[dp.id]
            self._call(self.core.switch_gone, dp.id)

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def port_desc(self, ev):
        ofp = ev.msg.datapath.ofproto
        ports = {_name(p): (p.port_no, not (p.state & ofp.OFPPS_LINK_DOWN or p.config & ofp.OFPPC_PORT_DOWN))
                 for p in ev.msg.body}
        self._call(self.core.port_desc, ev.msg.datapath.id, ports)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def flow_stats(self, ev):
        msg = ev.msg
        more = bool(msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE)
        self._call(self.core.flow_stats, msg.datapath.id, msg.xid, msg.body, more)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def port_status(self, ev):
        msg = ev.msg
        ofp = msg.datapath.ofproto
        desc = msg.desc
        up = not (msg.reason == ofp.OFPPR_DELETE or desc.state & ofp.OFPPS_LINK_DOWN
                  or desc.config & ofp.OFPPC_PORT_DOWN)
        change = {ofp.OFPPR_ADD: "add", ofp.OFPPR_DELETE: "delete"}.get(msg.reason, "modify")
        self._call(self.core.port_status, msg.datapath.id, desc.port_no, _name(desc), up, change)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        self._call(self.core.packet_in, msg.datapath.id, msg.match.get("in_port"), msg.cookie, bytes(msg.data))

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def barrier_reply(self, ev):
        self._call(self.core.barrier_reply, ev.msg.datapath.id, ev.msg.xid)

    @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
    def port_stats_reply(self, ev):
        if ev.msg.body:
            self._call(self.core.port_stats, ev.msg.datapath.id, ev.msg.xid, ev.msg.body[0].rx_packets)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def error_msg(self, ev):
        self._call(self.core.error, ev.msg.datapath.id, ev.msg.type, ev.msg.code)


def _name(port) -> str:
    return port.name.decode(errors="replace") if isinstance(port.name, bytes) else port.name

"""Ryu shim for ftcp: OpenFlow events in, core decisions out, send_msg.

Launch:  ryu-manager --config-file switch_config/ryu.conf ryu_apps/ftcp_app.py
The service file comes from ``[ftcp] config`` in ryu.conf, or FTCP_CONFIG.
"""
import logging
import os
import sys

from ryu import cfg
from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from ryu.lib import hub
from ryu.ofproto import ofproto_v1_3

from ftcp import config as ftcp_config
from ftcp import flows
from ftcp.plan import plan_switch, switch_applies
from ftcp.recorder import Recorder
from ftcp.store import Store

LOG = logging.getLogger("ftcp.app")

cfg.CONF.register_opts([
    cfg.StrOpt("config", default="switch_config/services.yaml",
               help="ftcp services file (YAML); FTCP_CONFIG overrides it"),
    cfg.StrOpt("redis_url", default="",
               help="Redis URL; overrides redis.url of the services file (FTCP_REDIS_URL overrides both)"),
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
        conf = ftcp_config.Config(services=conf.services, dpid=conf.dpid, redis_url=url, source=conf.source)
    return conf


class FtcpApp(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conf = _load_config()
        self.recorder = Recorder(Store(self.conf.redis_url))
        self._wake = hub.Event()
        self._awaiting_barrier = {}  # (dpid, xid) -> [(ServicePlan, flow count)]
        LOG.info("ftcp: %d service(s) from %s, redis %s", len(self.conf.services), self.conf.source,
                 ftcp_config.redact_url(self.conf.redis_url))
        for svc in self.conf.services:
            LOG.info("ftcp: service %s %s primary port %s backups %s", svc.name, svc.key, svc.primary.port,
                     ", ".join(f"{b.name}({b.address}, mirror port {b.mirror_port})" for b in svc.backups))
            self.recorder.service(svc, "configured")
        self.recorder.event("controller_started", services=[s.name for s in self.conf.services])
        self.threads.append(hub.spawn(self._recorder_loop))

    # --- Redis writer green thread ------------------------------------------------

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

    # --- OpenFlow ------------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev):
        dp = ev.msg.datapath
        LOG.info("ftcp: switch %016x connected", dp.id)
        # Start from nothing we own: a reconnecting switch keeps flows of an older
        # config (fail_mode=secure). Messages are processed in order, so the gap
        # between delete and re-add is only a few microseconds of OVS work.
        dp.send_msg(flows.delete_all_ftcp(dp))
        dp.send_msg(flows.default_flow(dp))
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
        ofp = msg.datapath.ofproto
        if msg.reason in (ofp.OFPPR_ADD, ofp.OFPPR_DELETE):
            # A port came or went: names may now resolve differently. Re-plan.
            msg.datapath.send_msg(flows.port_desc_request(msg.datapath))

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
        for plan in plan_switch(self.conf, ports):
            svc = plan.service
            dp.send_msg(flows.delete_service(dp, svc.cookie_id))
            if not plan.ok:
                LOG.error("ftcp: service %s NOT protected on switch %s: %s", svc.name, dpid, plan.problem)
                self.recorder.service(svc, "unprotected", reason=plan.problem, dpid=dpid)
                self.recorder.event("service_unprotected", service=svc.name, dpid=dpid, reason=plan.problem)
                continue
            mods = flows.service_flows(dp, plan)
            for mod in mods:
                dp.send_msg(mod)
                LOG.info("ftcp: %s on %s: %s", svc.name, dpid, flows.describe(mod))
            installed.append((plan, len(mods)))
        barrier = flows.barrier(dp)
        dp.send_msg(barrier)
        # Report "protected" only once the switch has processed the FlowMods: a
        # rejected one comes back as an error before the barrier reply.
        self._awaiting_barrier[(dp.id, barrier.xid)] = installed
        self._record()

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def barrier_reply(self, ev):
        dp = ev.msg.datapath
        dpid = f"{dp.id:016x}"
        for plan, count in self._awaiting_barrier.pop((dp.id, ev.msg.xid), []):
            svc = plan.service
            LOG.info("ftcp: service %s protected on switch %s: %d flows, primary port %d, mirror port(s) %s",
                     svc.name, dpid, count, plan.primary_port, ",".join(map(str, plan.mirror_ports)))
            self.recorder.service(svc, "protected", dpid=dpid, flows=count, reason="")
            self.recorder.event("flows_installed", service=svc.name, dpid=dpid, flows=count)
        self._record()

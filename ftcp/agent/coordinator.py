"""The backup agent's side of a failover: one epoch-tagged takeover per service,
acknowledged and idempotent (docs/failover.md).

    takeover(N)  the capture thread drains the mirror and decides, per connection,
                 hot session, cold replay or reset (``plan_takeover``, pure); a worker
                 thread fetches cold logs, prepares every session and answers ready(N).
                 Capture goes on for every other service meanwhile, and two services'
                 takeovers run side by side.
    go(N)        the switch now sends the clients here: kick, splice, reset the
                 connections that could not be taken; answer gone(N)
    abort(N)     the controller gave up: drop what was prepared, reset every client
                 of the service (their segments reach this kernel now); answer aborted(N)

The controller resends each message until it hears the answer, so a message for an
epoch already answered is answered again the same way; a takeover for a newer epoch
drops an older one that never went; anything for an older epoch is dropped with a log
line. Rebuilt sockets stay silent until go, and anything they do send before it leaves
with the service's address: the controller installs the backup->client rewrite with
the fence.

This module is long because the three orders and the takeover's worker share one
takeover's state and its lock; what each connection gets is the pure plan_takeover.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Optional

from ftcp.agent import repair
from ftcp.agent.acks import AckNumbers, ack_segment
from ftcp.agent.takeover import Session, prepare as prepare_sessions
from ftcp.agent.conn import CLOSED, CLOSING, ESTABLISHED, PROTECTED
from ftcp.agent.seqspace import MASK
from ftcp.common.errors import StoreError
from ftcp.common.statuses import Reason

LOG = logging.getLogger(__name__)


@dataclass
class Takeover:
    service: str
    epoch: int
    state: str = "preparing"          # preparing, ready, gone, aborted
    sessions: list = field(default_factory=list)
    resets: list = field(default_factory=list)    # RepairParams of connections to reset at go
    failed: dict = field(default_factory=dict)    # conn id -> why it is not taken
    answer: Optional[dict] = None     # the last answer sent, sent again on a repeat
    abort_asked: bool = False
    fid: str = ""                     # the controller's failover id


@dataclass(frozen=True)
class ColdJob:
    """A connection to replay from its log in Redis (no hot replica fed from byte 0)."""
    conn_id: str
    state: dict
    logged: int
    sent: int
    fin: bool = False     # half-closed by the client


def half_closed(conn) -> bool:
    """The client sent its FIN after every byte the log has, the server not yet: the
    connection is taken over like an established one whose client is done sending."""
    return (conn.state == CLOSING and conn.fin_c and not conn.fin_s and not conn.rst
            and conn.c2s_next == (conn.fin_c_seq + 1) & MASK)


def cannot_take(conn) -> Optional[str]:
    if conn.status != PROTECTED:
        return f"unprotected: {conn.reason}"
    if conn.state != ESTABLISHED and not half_closed(conn):
        return f"state {conn.state}"
    if conn.restored:
        return "not seen since the agent restarted: its stored state may be stale"
    return None


def plan_takeover(conns, detached: dict, replica_ip: str):
    """Decide, per connection, how it is taken (pure): ([Session] of hot replicas,
    [ColdJob], {conn id: why not}, {conn id: state to reset} for those still open)."""
    hot, cold, failed, resets = [], [], {}, {}

    def refuse(conn, reason):
        failed[conn.id] = reason
        if conn.state != CLOSED:
            resets[conn.id] = conn.to_state()
    for conn in conns:
        reason = cannot_take(conn)
        d = detached.get(conn.id)
        if reason is not None:
            refuse(conn, reason)
        elif d is not None and d.diverged:
            d.sock.close()
            refuse(conn, d.diverged)   # never replay into a fresh replica: it would diverge the same way
        elif d is not None and d.fed + len(d.unsent) == conn.c2s_logged:
            state, fin = conn.to_state(), half_closed(conn)
            params = repair.repair_params(state, replica_ip, logged=conn.c2s_logged, fin=fin)
            hot.append(Session(conn.id, params, int(state["s2c_acked"]), d.sock, unsent=d.unsent,
                               tail_start=d.tail_start, tail=d.tail, checks=d.checks, sent=conn.s2c_sent,
                               client_done=fin))
        else:
            if d is not None:
                LOG.warning("%s: hot replica was fed %d bytes of %d; replaying the log instead",
                            conn.id, d.fed + len(d.unsent), conn.c2s_logged)
                d.sock.close()
            cold.append(ColdJob(conn.id, conn.to_state(), conn.c2s_logged, conn.s2c_sent, half_closed(conn)))
    return hot, cold, failed, resets


def log_short(job: ColdJob, log: bytes) -> Optional[str]:
    """Why a cold replay cannot be made from ``log`` (None: it can): Redis must hold
    every byte the tracker logged up to the drain (more is fine: capture went on)."""
    if len(log) < job.logged:
        return f"takeover failed: the log in Redis has {len(log)} bytes, the tracker {job.logged}"
    return None


class Coordinator:
    """Takeovers of this backup's services. ``takeover``, ``go`` and ``abort`` are
    called on the capture thread; the slow part of a takeover runs on its own thread.
    A takeover is named by its epoch and its id (the controller's failover id): a
    repeat of both is answered again, anything else for the service supersedes it."""

    def __init__(self, agent):
        self.agent = agent
        self.takeovers = {}      # service -> Takeover (the latest epoch)
        self._lock = threading.Lock()

    def _answer(self, t: Takeover, cmd: str, **fields) -> None:
        t.answer = {"cmd": cmd, "service": t.service, "epoch": t.epoch, "id": t.fid, "backup": self.agent.name,
                    **fields}
        self._publish(t.answer)

    def _publish(self, message: dict) -> None:
        try:
            self.agent.store.answer(self.agent.name, message)
        except StoreError as e:
            LOG.error("cannot answer %s(%s) for %s: %s (the controller asks again)", message["cmd"],
                      message["epoch"], message["service"], e)

    def _current(self, service: str, epoch: int, fid: str, cmd: str) -> Optional[Takeover]:
        t = self.takeovers.get(service)
        if t is None or (epoch, fid) != (t.epoch, t.fid):
            LOG.warning("%s(%d, %s) for %s dropped: %s", cmd, epoch, fid or "-", service,
                        f"the takeover here is epoch {t.epoch} ({t.fid or '-'})" if t else "no takeover of it here")
            return None
        return t

    # --- takeover ----------------------------------------------------------------------------

    def takeover(self, service: str, epoch: int, fid: str = "") -> None:
        agent = self.agent
        if service not in agent.replicas:
            LOG.error("takeover of %s: not a service of this backup", service)
            return
        replica = agent.replicas[service]
        with self._lock:
            t = self.takeovers.get(service)
            if t is not None and epoch < t.epoch:
                LOG.warning("takeover(%d) of %s dropped: epoch %d is newer", epoch, service, t.epoch)
                return
            if t is not None and (epoch, fid) == (t.epoch, t.fid):
                if t.answer is not None:
                    self._publish(t.answer)    # the controller did not hear it: same answer
                return
            if t is not None and t.state == "ready":
                LOG.warning("takeover of %s epoch %d (%s) supersedes epoch %d (%s), which never went",
                            service, epoch, fid or "-", t.epoch, t.fid or "-")
                _silence(t.sessions)
                t.sessions = []
            t = self.takeovers[service] = Takeover(service, epoch, fid=fid)
        started = agent.clock()
        LOG.info("takeover of %s (epoch %d): draining the capture", service, epoch)
        agent.drain()
        agent.check_drops()   # a connection that lost packets is not taken
        drained = agent.clock()
        # Hands the last client bytes to the hot replicas; Redis is written by the
        # writer thread as usual and only read here for a cold replay.
        agent.writer.collect(agent.clock())
        agent.writer.snapshot_all(agent.clock())
        # Records with no handshake seen are not connections anyone can show exist
        # (a SYN flood leaves thousands): neither taken, nor reset, nor reported.
        conns = [c for c in agent.tracker.conns.values() if c.service == service and not agent.tracker.embryonic(c)]
        usable = [c for c in conns if cannot_take(c) is None]
        detached = agent.hot.detach_all(usable) if agent.hot else {}
        for conn in usable:
            d = detached.get(conn.id)
            if d is not None and d.diverged:
                agent.tracker.mark_unprotected(conn, d.diverged)
        hot, cold, failed, resets = plan_takeover(conns, detached, replica[0])
        states = {conn.id: conn.to_state() for conn in usable}
        planned = agent.clock()
        threading.Thread(target=self._prepare, name=f"ftcp-takeover-{service}", daemon=True,
                         args=(t, replica, hot, cold, failed, resets, states, (started, drained, planned))).start()

    def _prepare(self, t: Takeover, replica, sessions, cold, failed, resets, states, times) -> None:
        """The worker: cold logs, replicas caught up, sockets rebuilt; then ready.
        Whatever happens, it answers (a bug answers "nothing taken": the controller
        then redirects, and the clients are reset rather than left waiting)."""
        agent = self.agent
        ready, made = [], agent.clock()
        try:
            sessions = sessions + self._cold_sessions(replica, cold, failed, resets)
            made = agent.clock()
            prepare_sessions(sessions, timeout=agent.args.prepare_timeout)
            for s in sessions:
                if s.error is not None:
                    failed[s.conn_id] = f"takeover failed: {s.error}"
                    resets[s.conn_id] = states[s.conn_id]
            ready = [s for s in sessions if s.error is None]
        except Exception as e:
            LOG.exception("takeover of %s (epoch %d) failed", t.service, t.epoch)
            _drop(sessions)
            ready = []
            failed["*"] = f"takeover failed: {e}"
        reset_params = [p for p in (repair.reset_params(state, replica[0]) for state in resets.values())
                        if p is not None]
        for conn_id, reason in failed.items():
            LOG.warning("takeover of %s: cannot take %s: %s", t.service, conn_id, reason)
        started, drained, planned = times
        elapsed = agent.clock() - started
        LOG.info("takeover of %s (epoch %d): %d connection(s) ready (%d hot), %d not, in %.1f ms "
                 "(drain %.1f, plan %.1f, sessions %.1f, replicas and sockets %.1f)",
                 t.service, t.epoch, len(ready), sum(s.mode == "hot" for s in ready), len(failed), elapsed * 1000,
                 (drained - started) * 1000, (planned - drained) * 1000, (made - planned) * 1000,
                 (started + elapsed - made) * 1000)
        differed = sum(s.differed for s in ready)
        if differed:
            LOG.info("takeover of %s: %d byte(s) of the primary's last output were produced differently by the "
                     "replica and tolerated (divergence: aligned); the clients get the primary's", t.service, differed)
        with self._lock:
            if t.abort_asked:
                t.sessions = ready
                self._abort(t, reset_params)
                return
            if self.takeovers.get(t.service) is not t:
                _silence(ready)     # superseded: the newer takeover rebuilds these connections
                return
            t.sessions, t.resets, t.failed, t.state = ready, reset_params, failed, "ready"
            self._answer(t, "ready", taken=[s.conn_id for s in ready], failed=failed, seconds=round(elapsed, 6))

    def _cold_sessions(self, replica, jobs, failed: dict, resets: dict) -> list:
        if not jobs:
            return []
        agent = self.agent
        try:
            if not agent.writer.flush():
                raise StoreError("Redis unreachable: the client logs are not all stored")
            logs = agent.store.conn_logs(agent.name, [job.conn_id for job in jobs])
        except StoreError as e:
            for job in jobs:
                failed[job.conn_id], resets[job.conn_id] = f"takeover failed: {e}", job.state
            return []
        sessions = []
        for job in jobs:
            # Capture goes on during the takeover: the log may have grown past the
            # offset frozen at the drain; the client resends what follows (nobody
            # acknowledged it to it).
            log = logs[job.conn_id][:job.logged]
            short = log_short(job, log)
            if short is not None:
                failed[job.conn_id], resets[job.conn_id] = short, job.state
                continue
            params = repair.repair_params(job.state, replica[0], logged=job.logged, fin=job.fin)
            try:
                sessions.append(Session.cold(job.conn_id, params, int(job.state["s2c_acked"]), replica, log,
                                             sent=job.sent, client_done=job.fin))
            except OSError as e:
                failed[job.conn_id], resets[job.conn_id] = f"takeover failed: {e}", job.state
        return sessions

    # --- go and abort ------------------------------------------------------------------------

    def go(self, service: str, epoch: int, fid: str = "") -> None:
        with self._lock:
            t = self._current(service, epoch, fid, "go")
            if t is None:
                return
            if t.state != "ready":
                if t.state == "gone" and t.answer is not None and t.answer["cmd"] == "gone":
                    self._publish(t.answer)
                elif t.state == "gone":
                    LOG.info("go(%d) for %s again: its sessions are being handed over, gone follows", epoch, service)
                else:
                    LOG.warning("go(%d) for %s while the takeover is %s: ignored", epoch, service, t.state)
                return
            sessions, resets = t.sessions, t.resets
            t.state, t.sessions, t.resets = "gone", [], []
        agent = self.agent
        acked = sum(session.kick(agent.acks) for session in sessions)
        # Taken over from now on whatever the hand-over does (one the relay refuses is
        # reset: no more protected than the others), so said before it.
        self._unprotect(service, {s.conn_id for s in sessions}, t.failed)
        # Connections we could not take: a RST now (the switch delivers it from the
        # service's address), so their clients fail fast instead of hanging.
        _reset_all(resets, agent.acks)
        if agent.relay is None or not sessions:
            agent.splicer.add(sessions)
            self._gone(t, sessions, acked, len(resets))
            return
        # The relay holds them from now on, so they outlive this agent. Handing them over
        # takes as long as the relay takes to read them (some 10,000 a second), so it
        # runs off the capture thread; gone is answered once it is done.
        threading.Thread(target=self._hand_over, args=(t, sessions, acked, len(resets)),
                         name=f"ftcp-handover-{service}", daemon=True).start()

    def _hand_over(self, t: Takeover, sessions: list, acked: int, reset: int) -> None:
        agent = self.agent
        try:
            kept = agent.relay.hand_over(sessions)
        except Exception:   # a bug: what the relay was not given (still open here) is relayed here
            LOG.exception("handing %s's sessions to the relay failed", t.service)
            kept = [s for s in sessions if s.client is not None and s.client.fileno() >= 0]
        agent.splicer.add(kept)      # what the relay could not be given is relayed here
        self._gone(t, sessions, acked, reset)

    def _gone(self, t: Takeover, sessions: list, acked: int, reset: int) -> None:
        LOG.info("go for %s (epoch %d): %d connection(s) released (%d acknowledged to their clients), %d reset",
                 t.service, t.epoch, len(sessions), acked, reset)
        with self._lock:
            self._answer(t, "gone", released=len(sessions), acknowledged=acked, reset=reset)

    def _unprotect(self, service: str, taken: set, failed: dict) -> None:
        """Nothing mirrors a service's connections to this host once it serves them: the
        ones it took are unprotected from now on (said in their records, so REST and
        /metrics never call them protected), the ones it could not take say why."""
        tracker = self.agent.tracker
        for conn in list(tracker.conns.values()):
            if conn.service != service:
                continue
            if conn.id in taken:
                tracker.mark_unprotected(conn, Reason.TAKEN_OVER.because(
                    f"{self.agent.name} serves it now and no host protects it"))
            elif conn.id in failed:
                tracker.mark_unprotected(conn, failed[conn.id])

    def abort(self, service: str, epoch: int, fid: str = "") -> None:
        with self._lock:
            t = self.takeovers.get(service)
            if t is None or epoch > t.epoch or (epoch == t.epoch and fid != t.fid and t.state != "gone"):
                # a takeover this agent never got: reset the clients it knows of the
                # service (the controller redirected them here, where no socket waits)
                if t is not None and t.state == "ready":
                    _silence(t.sessions)
                t = self.takeovers[service] = Takeover(service, epoch, fid=fid)
                resets = [p for p in (repair.reset_params(c.to_state(), self.agent.replicas.get(service, ("",))[0])
                                      for c in self.agent.tracker.conns.values()
                                      if c.service == service and c.state != CLOSED) if p is not None]
                self._abort(t, resets)
                return
            if self._current(service, epoch, fid, "abort") is None:
                return
            if t.state == "preparing":
                t.abort_asked = True      # the worker resets and answers when it is done
                return
            if t.state in ("aborted", "gone"):
                if t.state == "gone":
                    LOG.warning("abort(%d) for %s after go: the connections live on here", epoch, service)
                self._publish(t.answer)
                return
            self._abort(t, t.resets)

    def _abort(self, t: Takeover, resets) -> None:
        """Reset every client of the takeover (called with the lock held)."""
        count = len(t.sessions) + len(resets)
        _drop(t.sessions)
        _reset_all(resets, self.agent.acks)
        LOG.warning("abort of %s (epoch %d): %d client(s) reset", t.service, t.epoch, count)
        t.state, t.sessions, t.resets = "aborted", [], []
        self._answer(t, "aborted", reset=count)


def _drop(sessions) -> None:
    """Sessions that will never go: their clients get a RST (a plain close would send
    an in-sequence FIN, a clean EOF in the middle of their stream)."""
    _end(sessions, repair.reset, "reset")


def _silence(sessions) -> None:
    """Sessions a newer takeover replaces: their sockets go without a word (closed in
    repair mode), so the client's connection is left for the new ones."""
    _end(sessions, repair.silent_close, "close silently")


def _end(sessions, close_client, what: str) -> None:
    for s in sessions:
        if s.client is not None:
            try:
                close_client(s.client)
            except OSError as e:
                LOG.warning("could not %s %s: %s", what, s.conn_id, e)
            s.client = None
        s.close()


def _reset_all(params_list, acks=None) -> None:
    """A RST for each connection, from its recorded numbers. The record may be behind
    the client (segments the mirror missed): such a RST falls below the client's window
    and is dropped. So a pure ACK follows it: the client answers a segment it finds old
    with an ACK of its own, which the redirect brings to this host's kernel; with no
    socket for it, the kernel answers with a RST at exactly the client's next sequence
    number, and the client fails fast instead of waiting for data forever."""
    for params in params_list:
        try:
            repair.reset(repair.repaired_socket(params))
            if acks is not None:
                nudge = AckNumbers(params.snd_nxt, params.rcv_nxt, 0, params.tsval, params.ts_recent)
                acks.send(ack_segment(params.local, params.remote, nudge, params.timestamps), params.remote[0])
        except OSError as e:
            LOG.warning("could not reset %s:%s: %s", *params.remote, e)

"""The relay: a small process of its own that holds the connections the agent took over
and relays between each repaired client socket and its replica connection, so an agent
restart, upgrade or crash cuts none of them.

    python -m ftcp.agent.relay --socket /run/ftcp/relay-b1.sock [--log-file F]

Run it on the backup host (its network namespace in the lab), as the agent's user,
before the agent, which is given ``--relay PATH``. At ``go`` the agent hands each
session over on the unix socket: one line of JSON (the session's id, how many bytes are
still to pass each way, which ends of stream were seen, the replica's server address)
with the client and replica sockets as SCM_RIGHTS on its first byte, then those bytes
(``bytes`` of them: to the client, then to the replica); the relay answers ``adopted``.
A restarted agent asks ``list`` for what the relay holds; while an agent is connected
the relay tells it each session that ended (``ended``, with its error if it was reset).

Relaying is ftcp/agent/takeover.py's ``Splicer``, with its rules for how a session
ends: a FIN to the client only when its server program closed its side, a RST for
everything else -- the relay dying included (the client sockets keep SO_LINGER 0).
Only a peer with the relay's own uid may connect (SO_PEERCRED). The protocol both
sides speak is ftcp/agent/handoff_protocol.py's.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from typing import Optional

from ftcp.agent.handoff_protocol import Reader, adopted_session, close_all, fds_refused
from ftcp.agent.takeover import Session, Splicer
from ftcp.agent.wakeup import Wakeup

LOG = logging.getLogger(__name__)
MAX_ENDED = 10000        # ended sessions remembered for an agent that is not connected
ACCEPT_PAUSE = 0.5       # seconds between tries when accept fails (at the descriptor limit)
MAX_QUEUED = 1 << 24     # bytes of answers an agent may leave unread before it is dropped
FEED_LIMIT = 1 << 16     # ended sessions are queued for the agent while less than this waits


def raise_fd_limit(want: int = 1 << 20) -> int:
    """The agent's and the relay's descriptors grow with the connections (the agent: a
    hot replica and a rebuilt socket each; the relay: a client and a replica socket per
    session held): the usual soft limit of 1024 would cap either near 500. Raises the
    soft limit to the hard one, or to ``want`` if allowed; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(hard, want), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            return limit
        except (ValueError, OSError):
            continue
    return soft


class AgentConn:
    """One agent's connection: what it sent (Reader) and what waits to be sent to it.
    Its socket is non-blocking: an agent that does not read never holds the relay up."""

    def __init__(self, sock: socket.socket, pid: int):
        self.sock, self.pid, self.reader = sock, pid, Reader(sock)
        self.out = collections.deque()   # [line, the (id, error) it tells of or None]
        self.head = 0                    # bytes of out[0] already sent
        self.queued = 0                  # bytes in out not sent yet
        self.events = selectors.EVENT_READ

    def fileno(self) -> int:
        return self.sock.fileno()


class Relay:
    """The unix-socket server in front of a Splicer that holds every adopted session.
    One thread (serve_forever) does every read and write of the agents' connections;
    the splicer's thread only records a session that ended and wakes it."""

    def __init__(self, path: str, splicer: Optional[Splicer] = None):
        self.path = path
        self.splicer = splicer or Splicer(on_end=self._ended, stopping="relay stopping")
        self.sessions = {}        # id -> Session, while it lives
        self.ended = collections.deque(maxlen=MAX_ENDED)   # (id, error) not yet told to an agent
        self._agent = None        # the AgentConn told of ended sessions (the last one to connect)
        self._conns = {}          # socket -> AgentConn
        self._lock = threading.Lock()    # sessions and ended: the splicer's thread changes them too
        if os.path.exists(path):
            os.unlink(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)     # the socket file is the owner's alone
        try:
            self.listener.bind(path)
        finally:
            os.umask(old)
        self.listener.listen(16)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.listener, selectors.EVENT_READ, None)
        self._wakeup = Wakeup()
        self._sel.register(self._wakeup, selectors.EVENT_READ, "wake")
        self._halt = False
        self._accept_paused = 0.0   # when to accept again, after accept failed

    def _ended(self, s: Session) -> None:
        """Called by the splicer's thread when a session ends: never sends anything."""
        with self._lock:
            if self.sessions.get(s.conn_id) is s:
                del self.sessions[s.conn_id]
            self.ended.append((s.conn_id, s.error))
        self._wakeup.wake()

    def serve_forever(self) -> None:
        self.splicer.start()
        while not self._halt:
            if self._accept_paused and time.monotonic() >= self._accept_paused:
                self._accept_paused = 0.0
                self._sel.register(self.listener, selectors.EVENT_READ, None)
            for key, mask in self._sel.select(timeout=1.0):
                try:
                    self._event(key, mask)
                except Exception:     # a bug: it costs that connection, never the relay
                    LOG.exception("relay: serving %r failed", key.data)
                    if isinstance(key.data, AgentConn):
                        self._drop(key.data)
            self._feed()
        for conn in list(self._conns.values()):
            self._drop(conn)
        self.splicer.stop()
        self._sel.close()
        self._wakeup.close()

    def _event(self, key, mask: int) -> None:
        if key.data is None:
            self._accept()
        elif key.data == "wake":
            self._wakeup.drain()
        elif key.data.sock in self._conns:
            conn = key.data
            if mask & selectors.EVENT_WRITE:
                self._flush(conn)
            if mask & selectors.EVENT_READ and conn.sock in self._conns:
                self._serve(conn)

    def _serve(self, conn: AgentConn) -> None:
        """What one agent connection sent. Whatever goes wrong with it (a message that is
        not one, a bug) drops that connection alone, closing the descriptors it brought
        that no session took: the relay and what it holds go on."""
        messages = []
        try:
            try:
                messages = conn.reader.read()
            except (BlockingIOError, InterruptedError):
                return
            if messages is None:
                self._drop(conn)
                return
            while messages and conn.sock in self._conns:
                incoming = messages.pop(0)
                message, fds = incoming.message, incoming.fds
                refused = fds_refused(message, fds, incoming.lost)
                if refused is not None:
                    close_all(fds)
                    LOG.error("relay: %s refused: %s", message.get("cmd"), refused)
                    self._queue(conn, {"cmd": "error", "id": message.get("id"), "error": refused})
                    continue
                self._handle(conn, message, fds, incoming.body)
        except Exception as e:
            if isinstance(e, (OSError, ValueError)):
                LOG.warning("relay: agent connection dropped: %s", e)
            else:
                LOG.exception("relay: agent connection dropped")
            self._drop(conn)
        finally:
            for incoming in messages or ():     # those of a dropped connection
                close_all(incoming.fds)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as e:
            # EMFILE/ENFILE above all: the connection waits in the backlog; try again in
            # a while rather than spin on a listener that stays readable
            LOG.error("relay: cannot accept an agent connection (%s): trying again in %.1f s", e, ACCEPT_PAUSE)
            self._sel.unregister(self.listener)
            self._accept_paused = time.monotonic() + ACCEPT_PAUSE
            return
        try:
            pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                struct.calcsize("3i")))
        except OSError as e:
            LOG.error("relay: connection refused: its peer is not known (%s)", e)
            sock.close()
            return
        if uid != os.getuid():
            LOG.error("relay: connection from uid %d (pid %d) refused: only uid %d may hand sessions over",
                      uid, pid, os.getuid())
            sock.close()
            return
        LOG.info("relay: agent connected (pid %d)", pid)
        sock.setblocking(False)
        conn = self._conns[sock] = AgentConn(sock, pid)
        self._sel.register(conn, conn.events, conn)
        self._agent = conn

    def _queue(self, conn: AgentConn, message: dict, item=None) -> None:
        """Send ``message`` to ``conn`` as soon as it reads. An agent that lets more than
        MAX_QUEUED bytes of answers pile up is dropped: it does not read."""
        if conn.sock not in self._conns:
            if item is not None:
                with self._lock:
                    self.ended.appendleft(item)
            return
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        conn.out.append((line, item))
        conn.queued += len(line)
        if conn.queued > MAX_QUEUED:
            LOG.error("relay: the agent (pid %d) does not read its answers (%d bytes wait): dropped", conn.pid,
                      conn.queued)
            self._drop(conn)
            return
        self._flush(conn)

    def _flush(self, conn: AgentConn) -> None:
        try:
            while conn.out:
                line = conn.out[0][0]
                conn.head += conn.sock.send(memoryview(line)[conn.head:])
                if conn.head < len(line):
                    break
                conn.out.popleft()
                conn.queued -= len(line)
                conn.head = 0
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            LOG.warning("relay: agent connection dropped: %s", e)
            self._drop(conn)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        if events != conn.events:
            conn.events = events
            self._sel.modify(conn, events, conn)

    def _feed(self) -> None:
        """Tell the agent the sessions that ended, as fast as it reads: they wait in
        ``ended`` (bounded) rather than in its queue."""
        conn = self._agent
        while conn is not None and conn.sock in self._conns and conn.queued < FEED_LIMIT:
            with self._lock:
                if not self.ended:
                    return
                item = self.ended.popleft()
            self._queue(conn, {"cmd": "ended", "id": item[0], "error": item[1]}, item)

    def _drop(self, conn: AgentConn) -> None:
        """Close an agent connection; the ended sessions it was not sent whole are kept
        for the next agent (those it was sent are not told again)."""
        if self._conns.pop(conn.sock, None) is None:
            return
        self._sel.unregister(conn)
        if self._agent is conn:
            self._agent = None
        untold = [item for _line, item in conn.out if item is not None]
        if untold:
            with self._lock:
                self.ended.extendleft(reversed(untold))
        conn.out.clear()
        conn.reader.close_fds()      # descriptors whose message never came whole
        conn.sock.close()

    def _handle(self, conn: AgentConn, message: dict, fds: list, body: Optional[bytearray] = None) -> None:
        cmd = message.get("cmd")
        if cmd != "adopt":
            close_all(fds)     # nothing else takes descriptors
        try:
            if cmd == "adopt":
                conn_id = message.get("id")
                with self._lock:
                    held = isinstance(conn_id, str) and conn_id in self.sessions
                if held:
                    # never two relays of one id: the first one's end would forget the
                    # second (and two relays of one connection would interleave its bytes)
                    close_all(fds)
                    raise ValueError(f"{conn_id!r} is held already: this one is refused")
                s = adopted_session(message, fds, body)
                with self._lock:
                    self.sessions[s.conn_id] = s
                self.splicer.add([s])
                self._queue(conn, {"cmd": "adopted", "id": s.conn_id})
            elif cmd == "list":
                with self._lock:
                    live = sorted(self.sessions)
                self._queue(conn, {"cmd": "sessions", "ids": live})
            else:
                self._queue(conn, {"cmd": "error", "error": f"unknown command {cmd!r}"})
        except (ValueError, KeyError, TypeError) as e:
            LOG.error("relay: %s refused: %s", cmd, e)
            self._queue(conn, {"cmd": "error", "id": message.get("id"), "error": str(e)})

    def stop(self, *_) -> None:
        self._halt = True
        self._wakeup.wake()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ftcp.agent.relay",
                                 description="Hold the connections the agent took over, across agent restarts.")
    ap.add_argument("--socket", required=True, help="the unix socket the agent hands sessions over on")
    ap.add_argument("--log-file", help="default: stderr")
    args = ap.parse_args(argv)
    handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    limit = raise_fd_limit()
    relay = Relay(args.socket)
    signal.signal(signal.SIGTERM, relay.stop)
    signal.signal(signal.SIGINT, relay.stop)
    LOG.info("relay listening on %s (up to %d descriptors: %d sessions or so)", args.socket, limit,
             max(0, limit - 32) // 2)
    relay.serve_forever()
    LOG.info("relay stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

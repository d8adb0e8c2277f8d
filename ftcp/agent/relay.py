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
Only a peer with the relay's own uid may connect (SO_PEERCRED).
"""
from __future__ import annotations

import argparse
import array
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
from typing import NamedTuple, Optional

from ftcp.agent.takeover import Session, Splicer
from ftcp.agent.wakeup import Wakeup

LOG = logging.getLogger(__name__)
MAX_HEADER = 1 << 24     # a line at most (the longest: a "sessions" answer listing every id held)
SMALL = 1 << 16          # a session's line and pending bytes up to this go in one send
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


def send_message(sock: socket.socket, message: dict, fds=(), deadline: Optional[float] = None) -> None:
    """One JSON line, with ``fds`` riding alone on its first byte (SCM_RIGHTS). With a
    ``deadline`` (time.monotonic()) on a blocking socket, raises TimeoutError once it
    is past, the line perhaps sent in part."""
    send_bytes(sock, json.dumps(message, separators=(",", ":")).encode() + b"\n", fds, deadline)


def send_bytes(sock: socket.socket, data, fds=(), deadline: Optional[float] = None) -> None:
    view = memoryview(data)
    if fds:
        _send_timeout(sock, deadline)
        sock.sendmsg([view[:1]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        view = view[1:]
    while view:
        _send_timeout(sock, deadline)
        try:
            view = view[sock.send(view):]
        except BlockingIOError:   # SO_SNDTIMEO went by with nothing sent
            if deadline is None:
                raise


def _send_timeout(sock: socket.socket, deadline: Optional[float]) -> None:
    """The next send blocks until ``deadline`` at most (SO_SNDTIMEO)."""
    if deadline is None:
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the peer read too little in time")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                    struct.pack("@ll", int(left), max(1, int((left - int(left)) * 1e6))))


class Incoming(NamedTuple):
    message: dict
    fds: list          # the descriptors that rode on the message's first byte
    lost: bool         # descriptors that rode on it were lost (MSG_CTRUNC)
    body: Optional[bytearray] = None   # the raw bytes that came after its line ("bytes": N)


class Reader:
    """Reads messages and the descriptors that came with them from a stream socket.

    A message is a JSON line, followed by ``bytes`` raw bytes if it says so (an adopt's
    pending bytes: no cap but the sender's, read as they come).

    Descriptors belong to the line whose first byte carried them: the sender sends that
    byte alone with them (send_message), and the kernel ends a read with the message
    that carried descriptors, so they came on the last byte of the read that returned
    them. Descriptors that came on any other byte are closed (stray), and a line gets
    none that rode on another: they are never paired with a line by arrival order."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, bytearray()
        self.start = 0      # stream offset of buf[0]
        self.fds = {}       # stream offset of the byte that carried them -> [fd]
        self.lost = set()   # stream offsets of bytes whose descriptors were lost
        self.stray = 0      # descriptors closed for riding on no line's first byte
        self.partial = None   # the message whose body is coming
        self.need = 0         # ... bytes of it still to come

    def read(self) -> Optional[list]:
        """Every complete message now readable, as Incoming; None at EOF. Raises
        ValueError for what is not a message (the connection is of no use then), after
        closing every descriptor of the messages read with it."""
        size = 1 << 16 if self.partial is None else max(1 << 16, min(self.need, 1 << 20))
        data, ancillary, flags, _addr = self.sock.recvmsg(size, socket.CMSG_SPACE(2 * struct.calcsize("i")))
        got = []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
                got += fds
        if not data:
            _close_all(got)
            return None
        at = self.start + len(self.buf) + len(data) - 1     # the byte that carried them
        if got:
            self.fds.setdefault(at, []).extend(got)
        if flags & socket.MSG_CTRUNC:
            # more descriptors than a message carries, or none could be installed (the
            # descriptor limit): the message they rode on is refused
            LOG.error("relay: descriptors lost on the way in (MSG_CTRUNC: at the descriptor limit?)")
            self.lost.add(at)
        self.buf += data
        out, pos = [], 0
        try:
            while True:
                if self.partial is not None:
                    take = min(self.need, len(self.buf) - pos)
                    self.partial.body.extend(memoryview(self.buf)[pos:pos + take])
                    pos += take
                    self.need -= take
                    self._close_stray(self.start + pos)    # a body's bytes carry none
                    if self.need:
                        break
                    out.append(self.partial)
                    self.partial = None
                nl = self.buf.find(b"\n", pos)
                if nl < 0:
                    break
                line_at = self.start + pos
                line = bytes(self.buf[pos:nl])
                pos = nl + 1
                incoming = Incoming(None, self.fds.pop(line_at, []), line_at in self.lost)
                self.lost.discard(line_at)
                out.append(incoming)
                self._close_stray(self.start + pos)
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError(f"not a message: {line[:80]!r}")
                body = message.get("bytes", 0)
                if type(body) is not int or body < 0:
                    raise ValueError(f"a message of {body!r} bytes")
                out[-1] = incoming = incoming._replace(message=message, body=bytearray())
                if body:
                    self.partial, self.need = out.pop(), body
        except ValueError:
            for incoming in out:
                _close_all(incoming.fds)
            raise
        finally:
            del self.buf[:pos]
            self.start += pos
        if len(self.buf) > MAX_HEADER:
            raise ValueError("a message longer than the relay takes")
        return out

    def _close_stray(self, before: int) -> None:
        for offset in [offset for offset in self.fds if offset < before]:
            fds = self.fds.pop(offset)
            self.stray += len(fds)
            LOG.error("relay: %d descriptor(s) that came on no message's first byte closed", len(fds))
            _close_all(fds)
        self.lost = {offset for offset in self.lost if offset >= before}

    def close_fds(self) -> None:
        """Close the descriptors that came with no message (yet), or with one whose body
        did not come whole."""
        if self.partial is not None:
            _close_all(self.partial.fds)
            self.partial = None
        while self.fds:
            _close_all(self.fds.popitem()[1])


def _close_all(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def session_message(s: Session) -> dict:
    """What the relay must know of a prepared, kicked session besides its two sockets:
    the bytes still to pass each way follow the line (to_client, then to_replica)."""
    return {"cmd": "adopt", "id": s.conn_id, "fds": 2,
            "to_client": len(s.to_client), "to_replica": len(s.to_replica),
            "bytes": len(s.to_client) + len(s.to_replica),
            "client_eof": s.client_eof, "replica_eof": s.replica_eof,
            "client_shut": s.client_shut, "replica_shut": s.replica_shut,
            "replica_addr": list(s.replica_addr) if s.replica_addr else None}


def send_session(sock: socket.socket, s: Session, deadline: Optional[float] = None) -> None:
    """Hand ``s`` over on ``sock``: its adopt line, its two sockets, its pending bytes."""
    line = json.dumps(session_message(s), separators=(",", ":")).encode() + b"\n"
    fds = (s.client.fileno(), s.replica.fileno())
    if len(s.to_client) + len(s.to_replica) <= SMALL:
        send_bytes(sock, line + s.to_client + s.to_replica, fds, deadline)
        return
    send_bytes(sock, line, fds, deadline)
    send_bytes(sock, s.to_client, deadline=deadline)
    send_bytes(sock, s.to_replica, deadline=deadline)


def _address(value) -> Optional[tuple]:
    """A message's [address, port] (None: not given, and the splicer asks the socket)."""
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool)):
        raise ValueError(f"replica_addr {value!r} is not [address, port]")
    return value[0], value[1]


def _length(message: dict, key: str) -> int:
    value = message.get(key, 0)
    if type(value) is not int or value < 0:
        # a string here is an older agent's base64: refused rather than misread
        raise ValueError(f"{key} is not a byte count: {str(value)[:40]!r}")
    return value


def adopted_session(message: dict, fds: list, body: Optional[bytearray] = None) -> Session:
    """The session a handed-over message, its two descriptors and the bytes after its
    line describe. Raises ValueError for a message it cannot be, after closing every
    descriptor."""
    socks, body = [], bytearray() if body is None else body
    try:
        if len(fds) != 2:
            raise ValueError(f"adopt of {message.get('id')!r} came with {len(fds)} descriptors, not 2")
        conn_id = message.get("id")
        if not isinstance(conn_id, str) or not conn_id:
            raise ValueError(f"adopt with no id (id={conn_id!r})")
        replica_addr = _address(message.get("replica_addr"))
        to_client = _length(message, "to_client")
        if to_client + _length(message, "to_replica") != len(body):
            raise ValueError(f"to_client + to_replica is not the {len(body)} bytes that came")
        for fd in fds:
            try:
                sock = socket.socket(fileno=fd)
            except OSError as e:
                raise ValueError(f"descriptor {len(socks) + 1} of {conn_id!r} is not a socket ({e.strerror or e})")
            socks.append(sock)
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"descriptor {len(socks)} of {conn_id!r} is not a stream socket")
    except Exception:
        for sock in socks:
            sock.close()
        _close_all(fds[len(socks):])
        raise
    client, replica = socks
    s = Session(conn_id, None, 0, replica, replica_addr=replica_addr)
    s.client = client
    s.to_client = body[:to_client]
    del body[:to_client]
    s.to_replica = body      # no copy of what may be most of a log
    s.client_eof, s.replica_eof = bool(message.get("client_eof")), bool(message.get("replica_eof"))
    s.client_shut, s.replica_shut = bool(message.get("client_shut")), bool(message.get("replica_shut"))
    for sock in (client, replica):
        sock.setblocking(False)
    return s


def _fds_refused(message: dict, fds: list, lost: bool) -> Optional[str]:
    """Why a message's descriptors do not match what it says it carries (None: they do)."""
    want = message.get("fds", 0)
    if lost:
        return f"the descriptors of {message.get('id')!r} were lost on the way in (the relay's descriptor limit?)"
    if type(want) is not int or want != len(fds):
        return f"{message.get('cmd')!r} of {message.get('id')!r} came with {len(fds)} descriptor(s), " \
               f"and says fds={want!r}"
    return None


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
                refused = _fds_refused(message, fds, incoming.lost)
                if refused is not None:
                    _close_all(fds)
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
                _close_all(incoming.fds)

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
            _close_all(fds)     # nothing else takes descriptors
        try:
            if cmd == "adopt":
                conn_id = message.get("id")
                with self._lock:
                    held = isinstance(conn_id, str) and conn_id in self.sessions
                if held:
                    # never two relays of one id: the first one's end would forget the
                    # second (and two relays of one connection would interleave its bytes)
                    _close_all(fds)
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

"""The hand-over protocol the agent (ftcp/agent/handoff.py) and the relay
(ftcp/agent/relay.py) speak on the relay's unix socket, both sides of it: JSON lines,
a line's descriptors (SCM_RIGHTS) on its first byte and bound to it alone, a session's
pending bytes right after its line (``bytes`` of them), and what makes a session of an
adopt line again on the relay's side.
"""
from __future__ import annotations

import array
import json
import logging
import os
import socket
import struct
import time
from typing import NamedTuple, Optional

from ftcp.agent.takeover import Session

LOG = logging.getLogger(__name__)
MAX_HEADER = 1 << 24     # a line at most (the longest: a "sessions" answer listing every id held)
SMALL = 1 << 16          # a session's line and pending bytes up to this go in one send


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
            close_all(got)
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
                close_all(incoming.fds)
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
            close_all(fds)
        self.lost = {offset for offset in self.lost if offset >= before}

    def close_fds(self) -> None:
        """Close the descriptors that came with no message (yet), or with one whose body
        did not come whole."""
        if self.partial is not None:
            close_all(self.partial.fds)
            self.partial = None
        while self.fds:
            close_all(self.fds.popitem()[1])


def close_all(fds) -> None:
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
        close_all(fds[len(socks):])
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


def fds_refused(message: dict, fds: list, lost: bool) -> Optional[str]:
    """Why a message's descriptors do not match what it says it carries (None: they do)."""
    want = message.get("fds", 0)
    if lost:
        return f"the descriptors of {message.get('id')!r} were lost on the way in (the relay's descriptor limit?)"
    if type(want) is not int or want != len(fds):
        return f"{message.get('cmd')!r} of {message.get('id')!r} came with {len(fds)} descriptor(s), " \
               f"and says fds={want!r}"
    return None

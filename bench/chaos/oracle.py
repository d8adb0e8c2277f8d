"""Judging what the clients saw: each client connection's outcome, and so the trial's.

Outcome of each client connection (services/client.py, every byte checked by its
SHA-256s; the harness also recomputes the expected bytes and checks the SHA-256s of
what was sent and received, and of the prefix a reset client got):

* masked     ok, all bytes, both SHA-256s equal the expected ones;
* not_connected  connect() itself failed (a new connection while the primary was gone
             and no failover had happened yet, e.g. the controller was down): there
             never was a byte to protect;
* reset      the client saw a reset/EOF (its bytes so far a correct prefix) AND the
             controller's record says why: status failover-failed with a reason, or the
             connection id (or "*") in the record's ``failed`` map;
* reset_unexplained  a reset/EOF the record does not explain (kept as evidence);
* corrupted  any byte wrong: a SHA-256 or prefix mismatch, a wrong answer, bytes after
             the end;
* hung       the client did not finish within --deadline (60 s) of its start, or its
             socket timed out (--client-timeout) or the kernel gave up (ETIMEDOUT).
A trial's outcome is its worst client's (corrupted > hung > reset_unexplained > reset >
not_connected > masked); ``error`` when the harness itself failed (lab did not start, a fault could not
be injected). Every trial but a masked or cleanly reset one keeps its evidence in
bench/results/chaos-evidence/<trial>/ (ryu.log, agent.log, the clients' output, flows).
"""
from __future__ import annotations

import hashlib
import random
import re
import sys
from typing import TYPE_CHECKING

from bench.chaos import CLIENT_IPS, PORT
from topology.lab import PRIMARY_IP, ROOT

sys.path.insert(0, str(ROOT / "services"))
from demo_server import stream_bytes  # noqa: E402

if TYPE_CHECKING:
    from bench.chaos.clients import Client

OUTCOMES = ("masked", "not_connected", "reset", "reset_unexplained", "corrupted", "hung", "error")
WORST = {name: rank for rank, name in enumerate(("masked", "not_connected", "reset", "reset_unexplained", "hung",
                                                  "corrupted"))}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Expected:
    """What a client of each mode must send and receive: lengths and SHA-256s, and the
    SHA-256 of any prefix (for a client that was reset). Cached per (mode, size, seed):
    the trials share a few seeds. Big byte strings are made again when a prefix is
    needed (rare) rather than kept."""

    _cache = {}

    @classmethod
    def of(cls, mode: str, size: int, seed: str) -> "Expected":
        key = (mode, size, seed if mode != "reqresp" else "")
        if key not in cls._cache:
            cls._cache[key] = cls(mode, size, seed)
        return cls._cache[key]

    def __init__(self, mode: str, size: int, seed: str):
        self.mode, self.size, self.seed = mode, size, seed
        sent, received = self._bytes()
        self.sent_len, self.received_len = len(sent), len(received)
        self.sent_sha, self.received_sha = _sha(sent), _sha(received)

    def _bytes(self):
        """(all the bytes the client sends, all it receives)."""
        size, seed = self.size, self.seed
        if self.mode == "stream":
            return f"GET {size} {seed}\n".encode(), stream_bytes(size, seed)
        if self.mode == "upload":
            body = random.Random(seed).randbytes(size)
            return f"PUT {size}\n".encode() + body, f"OK {_sha(body)}\n".encode()
        # reqresp: client.py's requests and the demo server's answers, in order
        sent, received = bytearray(), bytearray()
        for i in range(size):
            kind = i % 3
            if kind == 0:
                sent += f"PING {i}\n".encode()
                received += f"PONG {i}\n".encode()
            elif kind == 1:
                sent += f"GET 1000 s{i}\n".encode()
                received += stream_bytes(1000, f"s{i}")
            else:
                body = random.Random(i).randbytes(1000)
                sent += f"PUT {len(body)}\n".encode() + body
                received += f"OK {_sha(body)}\n".encode()
        return bytes(sent), bytes(received)

    def prefix_shas(self, sent: int, received: int):
        """SHA-256 of the first ``sent`` bytes sent and ``received`` bytes received."""
        if self.mode == "stream":
            return _sha(f"GET {self.size} {self.seed}\n".encode()[:sent]), _sha(stream_bytes(received, self.seed))
        all_sent, all_received = self._bytes()
        return _sha(all_sent[:sent]), _sha(all_received[:received])



RESET_ERRORS = ("ConnectionResetError", "unexpected EOF", "BrokenPipeError", "ConnectionRefusedError",
                "ConnectionAbortedError", "ECONNRESET", "EPIPE")
HUNG_ERRORS = ("timed out", "TimeoutError", "ETIMEDOUT", "Errno 110")
CORRUPT_ERRORS = ("wrong answer", "bytes after")


def conn_id(host: str, local_port) -> str:
    return f"{CLIENT_IPS[host]}:{local_port}-{PRIMARY_IP}:{PORT}"


def classify(client: Client, fin: dict, record: dict, failed_wall: float = None) -> dict:
    """One client's outcome and why (see the module docstring)."""
    res, exp = fin["result"], client.expected
    out = {"host": client.host, "mode": client.mode, "size": client.size, "seconds": fin["seconds"],
           "returncode": fin["returncode"]}
    if res is not None:
        out.update({k: res.get(k) for k in ("ok", "error", "sent", "received", "local_port", "max_gap_ms",
                                            "max_gap_at", "requests", "answer")})
        out["gaps_over_100ms"] = [g for g in res.get("gaps", []) if g[1] > 100][:10]
        if failed_wall:
            # the silence that spans the failure (bench/failover_bench.py's stall): the
            # longest gap that ends after the failure and begins within a second of it
            around = [g for g in res.get("gaps", []) if g[0] + g[1] / 1000 >= failed_wall
                      and g[0] <= failed_wall + 1.0]
            out["stall_ms"] = max(g[1] for g in around) if around else None
    if fin["hung"]:
        return dict(out, outcome="hung", why=f"no result within the deadline ({fin['seconds']} s)")
    if res is None:
        return dict(out, outcome="hung" if fin["returncode"] is None else "corrupted",
                    why=f"no JSON result (exit status {fin['returncode']})")
    sent, received = res.get("sent") or 0, res.get("received") or 0
    error = str(res.get("error") or "")
    if res.get("ok"):
        if (received == exp.received_len and sent == exp.sent_len and res.get("received_sha256") == exp.received_sha
                and res.get("sent_sha256") == exp.sent_sha):
            return dict(out, outcome="masked", why="")
        return dict(out, outcome="corrupted", why=f"ok but sent {sent}/{exp.sent_len} received "
                                                  f"{received}/{exp.received_len} or a SHA-256 differs")
    if "local_port" not in res:
        # connect() itself failed: a new connection while the service was unreachable
        # (the primary gone and no failover yet); there never was a byte to protect
        return dict(out, outcome="not_connected", why=f"the connection was never established: {error}")
    # not ok: what it got so far must be a correct prefix, whatever the error
    if sent > exp.sent_len or received > exp.received_len:
        return dict(out, outcome="corrupted", why=f"more bytes than expected: sent {sent}, received {received}")
    sent_sha, received_sha = exp.prefix_shas(sent, received)
    if res.get("sent_sha256") != sent_sha:
        return dict(out, outcome="corrupted", why=f"its first {sent} sent bytes are not the expected ones: {error}")
    if res.get("received_sha256") != received_sha:
        return dict(out, outcome="corrupted",
                    why=f"its first {received} received bytes are not the expected ones: {error or 'SHA-256 differs'}")
    if not error or any(word in error for word in CORRUPT_ERRORS):
        return dict(out, outcome="corrupted", why=error or "not ok without an error (a SHA-256 or answer differs)")
    if any(word in error for word in HUNG_ERRORS):
        return dict(out, outcome="hung", why=f"the client gave up: {error}")
    if not any(word in error for word in RESET_ERRORS):
        return dict(out, outcome="reset_unexplained", why=f"unknown client error: {error}")
    cid = conn_id(client.host, res.get("local_port")) if res.get("local_port") else None
    out["conn_id"] = cid
    failed = record.get("failed_map") or {}
    if record.get("status") == "failover-failed" and record.get("reason"):
        return dict(out, outcome="reset", why=error, reason=f"failover-failed: {record['reason']}")
    if cid and cid in failed:
        return dict(out, outcome="reset", why=error, reason=f"failed: {failed[cid]}")
    if "*" in failed:
        return dict(out, outcome="reset", why=error, reason=f"failed: * {failed['*']}")
    return dict(out, outcome="reset_unexplained",
                why=f"{error}; record status {record.get('status')}, {cid} not in failed {sorted(failed)}")


def reason_group(reason: str) -> str:
    """A reset's reason with the numbers and connection ids taken out, to group them."""
    reason = re.sub(r"\d+\.\d+\.\d+\.\d+:\d+-\d+\.\d+\.\d+\.\d+:\d+", "<conn>", reason)
    reason = re.sub(r"\b[0-9a-f]{16}\b", "<dpid>", reason)
    return re.sub(r"\d+", "N", reason)



def outcome_of(rec: dict) -> str:
    """The worst client's outcome; a harness error (the lab, a fault that could not be
    injected) only when no client was corrupted."""
    clients = rec.get("clients") or []
    worst = max((c["outcome"] for c in clients), key=WORST.__getitem__) if clients else None
    if worst != "corrupted" and (rec.get("error") or rec.get("fault_error") or not clients):
        return "error"
    return worst

"""Redis hashes as typed values: each field's type listed once (pure, no Redis)."""
from __future__ import annotations

import json

# --- decoding hashes into typed values ---------------------------------------------------
# Writers store None as "", bools as 0/1, containers as JSON (ftcp/agent/writer.py
# redis_fields) and numbers as text. Fields not listed stay text. A value that does
# not parse is returned as stored: a reader must not fail on a record written by a
# newer or broken writer.

def _kinds(ints=(), floats=(), bools=(), jsons=(), texts=(), default=None):
    """field -> how to decode it: int, float, bool, json.loads, or None for text."""
    table = {**dict.fromkeys(ints, int), **dict.fromkeys(floats, float), **dict.fromkeys(bools, bool),
             **dict.fromkeys(jsons, json.loads), **dict.fromkeys(texts)}
    return lambda field: table.get(field, default)


CONN_KINDS = _kinds(
    ints=("client_port", "server_port", "isn_c", "isn_s", "mss_c", "mss_s", "wscale_c", "wscale_s",
          "c2s_logged", "c2s_next", "c2s_acked", "c2s_stored", "s_ack", "s2c_sent", "s2c_next", "s2c_acked",
          "c_ack", "c_win", "c_win_scaled", "s_win", "s_win_scaled", "c_tsval", "c_tsecr", "s_tsval",
          "s_tsecr", "fin_c_seq", "fin_s_seq", "ooo_bytes", "divergent_bytes"),
    floats=("first_seen", "last_seen", "closed_at"),
    bools=("sack_ok", "ts_ok", "fin_c", "fin_s", "rst", "restored"),
    jsons=("c_opts", "s_opts"))
SERVICE_KINDS = _kinds(ints=("svc_port", "epoch", "flows"), floats=("updated",),
                      jsons=("primary", "backups", "config"))
# The heartbeat is counters, but for its times and two text fields.
AGENT_KINDS = _kinds(floats=("heartbeat", "started", "stopped"), texts=("iface", "services"), default=int)
EVENT_KINDS = _kinds(floats=("time",))


def _decode(fields: dict, kind_of) -> dict:
    out = {}
    for key, value in fields.items():
        kind = kind_of(key)
        if kind is None:
            out[key] = value
        elif value == "":
            out[key] = None
        else:
            try:
                out[key] = int(value) != 0 if kind is bool else kind(value)
            except ValueError:
                out[key] = value
    return out


def decode_conn(fields: dict) -> dict:
    return _decode(fields, CONN_KINDS)


def decode_service(fields: dict) -> dict:
    return _decode(fields, SERVICE_KINDS)


def decode_agent(fields: dict) -> dict:
    return _decode(fields, AGENT_KINDS)


def decode_event(record: dict) -> dict:
    """An event record: ``time`` a float, what the writer JSON-encoded (lists,
    objects) decoded, the rest text."""
    out = _decode(record, EVENT_KINDS)
    for key, value in out.items():
        if isinstance(value, str) and value[:1] in ("[", "{"):
            try:
                out[key] = json.loads(value)
            except ValueError:
                pass
    return out

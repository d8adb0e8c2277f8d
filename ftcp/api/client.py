"""ftcp: command-line client of the controller's REST API (docs/rest.md).

    ftcp services | service NAME | conns [--service S] [--status S] | conn ID | health | events
    ftcp put-service FILE | delete-service NAME | migrate NAME | failover NAME --backup B
                                                       (need --token or FTCP_API_TOKEN)

Tables by default, the API's JSON with --json. Standard library only, so it runs with
any python3 (YAML service files need PyYAML; JSON ones do not).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_API_ERROR, EXIT_UNREACHABLE = 1, 3


class ErrorAnswer(Exception):
    """The API answered with an error status: the status and its body."""

    def __init__(self, status: int, body):
        self.status, self.body = status, body
        text = str(body)[:200]
        if isinstance(body, dict) and "error" in body:
            text, field = body["error"], body.get("field")
            if field and not text.startswith(field):
                text = f"{field}: {text}"
        super().__init__(f"HTTP {status}: {text}")


class Client:
    def __init__(self, url: str, token: str = "", timeout: float = 10.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def call(self, method: str, path: str, query: dict = None, body=None):
        url = self.url + urllib.parse.quote(path)
        query = {k: v for k, v in (query or {}).items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:     # changes need it; reads show sequence numbers with it
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return _decode(resp.read(), resp.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as e:
            raise ErrorAnswer(e.code, _decode(e.read(), e.headers.get("Content-Type", ""))) from None


def _decode(data: bytes, content_type: str):
    if content_type.startswith("application/json") and data:
        return json.loads(data)
    return data.decode(errors="replace")


# --- output ---------------------------------------------------------------------------


def table(headers: list, rows: list) -> str:
    """Plain text columns, left-aligned, two spaces apart."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def when(t) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def port_of(ref: dict) -> str:
    return str(ref.get("port", ref.get("data_port")))


def show_services(data) -> str:
    rows = []
    for s in data["services"]:
        conns = s["connections"] or {}
        rows.append([s["name"], f"{s['address']}:{s['port']}", s["status"], s["primary"]["port"],
                     ",".join(b["name"] for b in s["backups"]),
                     f"{conns.get('protected', '-')}/{conns.get('unprotected', '-')}", s["epoch"], s["reason"]])
    return table(["NAME", "ADDRESS", "STATUS", "PRIMARY", "BACKUPS", "CONNS(P/U)", "EPOCH", "REASON"], rows)


def show_service(s) -> str:
    lines = [f"{k + ':':<14}{v}" for k, v in (
        ("name", s["name"]), ("address", f"{s['address']}:{s['port']}"), ("status", s["status"]),
        ("divergence", s.get("divergence", "strict")),
        ("reason", s["reason"] or "-"), ("epoch", s["epoch"]), ("switch", s["dpid"] or "-"),
        ("flows", s["flows"] if s["flows"] is not None else "-"), ("updated", when(s["updated"])),
        ("primary", f"port {s['primary']['port']}" + (f" mac {s['primary']['mac']}" if s["primary"].get("mac")
                                                      else "")),
        ("connections", ", ".join(f"{k} {v}" for k, v in (s["connections"] or {}).items()) or "-"))]
    backups = table(["BACKUP", "ADDRESS", "DATA PORT", "MIRROR PORT"],
                    [[b["name"], b["address"], b["data_port"], b["mirror_port"]] for b in s["backups"]])
    return "\n".join(lines) + "\n\n" + backups


def show_conns(data) -> str:
    rows = [[c["id"], c.get("service"), c.get("state"), c.get("status"), c.get("c2s_logged"), c.get("s2c_acked"),
             when(c.get("last_seen")), c.get("reason") or ""] for c in data["connections"]]
    out = table(["ID", "SERVICE", "STATE", "STATUS", "LOGGED", "ACKED", "LAST SEEN", "REASON"], rows)
    first = data["offset"] + 1 if rows else 0
    return f"{out}\n({first}-{data['offset'] + len(rows)} of {data['total']})"


def show_conn(c) -> str:
    width = max(map(len, c)) + 2
    return "\n".join(f"{k + ':':<{width}}{json.dumps(v) if isinstance(v, (dict, list)) else v}"
                     for k, v in c.items())


def show_health(h) -> str:
    ctl, redis = h["controller"], h["redis"]
    lines = [f"status:      {h['status']}" + (f" ({'; '.join(h['problems'])})" if h["problems"] else ""),
             f"controller:  {ctl['status']}, up {ctl['uptime']:.0f} s",
             f"redis:       {redis['status']} {redis['url']}" + (f": {redis['error']}" if redis["error"] else "")]
    switches = table(["SWITCH", "ADDRESS", "CONNECTED"],
                     [[s.get("dpid"), s.get("address"), when(s.get("connected_since"))] for s in h["switches"]])
    agents = table(["AGENT", "STATUS", "HEARTBEAT AGE", "CONNS", "KERNEL DROPS"],
                   [[a["name"], a["status"], "-" if a["age"] is None else f"{a['age']:.1f} s",
                     a["stats"].get("conns"), a["stats"].get("kernel_drops")] for a in h["agents"]])
    return "\n".join(lines) + "\n\n" + switches + "\n\n" + agents


def show_events(data) -> str:
    rows = []
    for e in data["events"]:
        details = " ".join(f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}"
                           for k, v in e.items() if k not in ("id", "kind", "time"))
        rows.append([when(e.get("time")), e["kind"], details])
    return table(["TIME", "KIND", "DETAILS"], rows)


# --- commands -----------------------------------------------------------------------------


def show_action(d) -> str:
    return f"{d.get('service')}: {d.get('status')} (epoch {d.get('epoch')}, to backup {d.get('backup')})"


def read_service(path: str) -> dict:
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml   # optional: the CLI itself needs only the standard library
    except ImportError:
        raise SystemExit(f"ftcp: {path} is not JSON (install PyYAML to read YAML)") from None
    return yaml.safe_load(text)


def put_service(client: Client, args):
    service = read_service(args.file)
    name = args.name or (service.get("name") if isinstance(service, dict) else None)
    if not name:
        raise SystemExit("ftcp: the file gives no service name; add one or use --name")
    return client.call("PUT", f"/ftcp/services/{name}", body=service)


COMMANDS = {
    "services": (lambda c, a: c.call("GET", "/ftcp/services"), show_services),
    "service": (lambda c, a: c.call("GET", f"/ftcp/services/{a.name}"), show_service),
    "conns": (lambda c, a: c.call("GET", "/ftcp/connections", {
        "service": a.service, "status": a.status, "client": a.client, "limit": a.limit, "offset": a.offset}),
        show_conns),
    "conn": (lambda c, a: c.call("GET", f"/ftcp/connections/{a.id}"), show_conn),
    "health": (lambda c, a: c.call("GET", "/ftcp/health"), show_health),
    "events": (lambda c, a: c.call("GET", "/ftcp/events", {"limit": a.limit}), show_events),
    "put-service": (put_service, show_service),
    "delete-service": (lambda c, a: c.call("DELETE", f"/ftcp/services/{a.name}"), None),
    "migrate": (lambda c, a: c.call("POST", f"/ftcp/services/{a.name}/migrate"), show_action),
    "failover": (lambda c, a: c.call("POST", f"/ftcp/services/{a.name}/failover", body={"backup": a.backup}),
                 show_action),
}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ftcp", description="Query and steer ftcp through its REST API.")
    ap.add_argument("--url", default=os.environ.get("FTCP_API_URL", DEFAULT_URL),
                    help=f"API base URL (FTCP_API_URL; default {DEFAULT_URL})")
    ap.add_argument("--token", default=os.environ.get("FTCP_API_TOKEN", ""),
                    help="bearer token for changes, and for a connection's sequence numbers "
                         "(default: FTCP_API_TOKEN)")
    ap.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("services", help="list services")
    sub.add_parser("service", help="one service").add_argument("name")
    conns = sub.add_parser("conns", help="list connections")
    conns.add_argument("--service")
    conns.add_argument("--status", choices=("protected", "unprotected"))
    conns.add_argument("--client", help="client address or address:port")
    conns.add_argument("--limit", type=int)
    conns.add_argument("--offset", type=int)
    sub.add_parser("conn", help="one connection's full TCP state").add_argument("id")
    sub.add_parser("health", help="controller, switches, Redis, agents")
    sub.add_parser("events", help="recent events").add_argument("--limit", type=int)
    put = sub.add_parser("put-service", help="create or replace a service from a JSON/YAML file ('-': stdin)")
    put.add_argument("file")
    put.add_argument("--name", help="service name, if the file has none")
    sub.add_parser("delete-service", help="remove a service").add_argument("name")
    sub.add_parser("migrate", help="planned migration of a service's live connections to its backup"
                   ).add_argument("name")
    fo = sub.add_parser("failover", help="fail a service over to a named backup now")
    fo.add_argument("name")
    fo.add_argument("--backup", required=True)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    fetch, show = COMMANDS[args.command]
    client = Client(args.url, args.token, args.timeout)
    try:
        data = fetch(client, args)
    except ErrorAnswer as e:
        print(f"ftcp: {e}", file=sys.stderr)
        return EXIT_API_ERROR
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        print(f"ftcp: cannot reach the API at {args.url}: {reason}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if show is None:   # 204: nothing to show
        if not args.json:
            print("done")
    else:
        print(json.dumps(data, indent=2) if args.json else show(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())

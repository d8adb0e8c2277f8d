#!/usr/bin/env python3
"""The lab's web example: Debian's stock nginx serving static files, keep-alive on.

    web_server.py --port 7000 --run-dir /run/ftcp

Writes the document root (``<run-dir>/www``: ``/index.html`` and ``/<N>.bin`` for a
few sizes, bytes from services/demo_server.py's ``stream_bytes(N, "web-N")``) with a
fixed modification time, so the primary and the backup serve the same bytes with the
same ``ETag`` and ``Last-Modified``, then execs nginx in the foreground with a
configuration of its own under ``<run-dir>/nginx-<port>-<pid>``. Every response
still carries the ``Date`` at which it was written (RFC 9110 section 6.6.1): the
reason this service runs with ``divergence: aligned`` (docs/failover.md).
"""
import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo_server import stream_bytes  # noqa: E402

SIZES = (1000, 20_000, 1_000_000)
MTIME = 1_767_225_600   # 2026-01-01 00:00:00 UTC: the same on every host
INDEX = b"<!doctype html>\n<title>ftcp lab</title>\n<p>served by nginx behind ftcp</p>\n"

CONFIG = """\
# written by services/web_server.py
daemon off;
master_process on;
worker_processes 1;
user root;                  # a lab: the document root and this directory are root's
pid {state}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type application/octet-stream;
    types {{ text/html html; }}
    sendfile on;
    keepalive_requests 1000000;   # one client connection for the whole experiment
    keepalive_timeout 300s;
    client_body_temp_path {state}/body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    server {{
        listen {port};
        root {root};
    }}
}}
"""


def body(size: int) -> bytes:
    return stream_bytes(size, f"web-{size}")


def write_docroot(root: str) -> None:
    """Each file written to a temporary name and renamed: the primary's and the
    backup's launchers may write the same directory at the same time."""
    os.makedirs(root, exist_ok=True)
    files = {"index.html": INDEX, **{f"{size}.bin": body(size) for size in SIZES}}
    for name, data in files.items():
        path = os.path.join(root, name)
        if not (os.path.exists(path) and os.path.getsize(path) == len(data)
                and os.path.getmtime(path) == MTIME):
            tmp = f"{path}.{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.utime(tmp, (MTIME, MTIME))
            os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--run-dir", default="/run/ftcp")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    args = ap.parse_args()
    if not os.path.exists(args.nginx):
        sys.exit(f"web_server: nginx not found at {args.nginx} (scripts/setup.sh installs nginx-light)")
    root = os.path.join(args.run_dir, "www")
    write_docroot(root)
    state = os.path.join(args.run_dir, f"nginx-{args.port}-{os.getpid()}")
    os.makedirs(state, exist_ok=True)
    conf = os.path.join(state, "nginx.conf")
    with open(conf, "w") as f:
        f.write(CONFIG.format(state=state, port=args.port, root=root))
    os.execv(args.nginx, [args.nginx, "-c", conf, "-p", state, "-e", "stderr"])


if __name__ == "__main__":
    main()

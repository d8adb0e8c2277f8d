#!/usr/bin/env python3
"""A line server whose answers carry its clock at full precision (stdlib only).

    python3 services/clock_server.py --port 7000

"T <anything>\\n" -> "T <anything> <time.time()>\\n". Python prints the float with as
many digits as it needs (1796093178.55 and 1796093178.550747 both occur), so the
answer's length depends on the moment it is written: the primary and the backup's
replica answer the same request with lines of different lengths. No divergence
rule can splice such a connection; ftcp must reset it, never garble it.
"""
import argparse
import socketserver
import time


class ClockHandler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            try:
                self.wfile.write(line.rstrip(b"\n") + b" %r\n" % time.time())
            except (BrokenPipeError, ConnectionResetError):
                return


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=7000)
    ap.add_argument("--host", default="0.0.0.0")
    args = ap.parse_args()
    with Server((args.host, args.port), ClockHandler) as srv:
        srv.serve_forever()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""TCP echo server (stdlib only): every byte received is sent back, per connection.

    python3 services/echo_server.py --port 7000 [--host 0.0.0.0]
"""
import argparse
import socket
import socketserver


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        while True:
            data = sock.recv(65536)
            if not data:
                break
            sock.sendall(data)
        # Half-close only after the client did: the client decides when we are done.
        sock.shutdown(socket.SHUT_WR)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=7000)
    args = ap.parse_args()
    with Server((args.host, args.port), EchoHandler) as srv:
        print(f"echo server listening on {args.host}:{args.port}", flush=True)
        srv.serve_forever()


if __name__ == "__main__":
    main()

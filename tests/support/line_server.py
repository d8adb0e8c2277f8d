"""A tiny line server on 127.0.0.1 (a replica, a service) for the agent's unit tests."""
import socket
import threading


def pong(index: int, line: bytes) -> bytes:
    """"PING X\\n" -> "PONG X\\n"; other lines get no answer."""
    return b"PONG " + line[5:] if line.startswith(b"PING ") else b""


class LineServer:
    """A thread per connection; each line gets ``answer(its index, line)``. "QUIT\\n"
    closes the connection, and so does the ``lines``-th answer. With a ``gate`` (a
    threading.Barrier) every answer waits until that many requests are in."""

    def __init__(self, answer=pong, lines: int = None, gate=None):
        self.answer, self.lines, self.gate = answer, lines, gate
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.addr = self.sock.getsockname()
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            with conn, conn.makefile("rb") as lines:
                for index, line in enumerate(lines):
                    if line == b"QUIT\n":
                        return
                    out = self.answer(index, line)
                    if out:
                        if self.gate is not None:
                            self.gate.wait()
                        conn.sendall(out)
                    if self.lines is not None and index + 1 >= self.lines:
                        return
        except (OSError, threading.BrokenBarrierError):
            pass

    def close(self):
        for s in [self.sock] + self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

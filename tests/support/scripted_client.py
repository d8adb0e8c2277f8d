#!/usr/bin/env python3
"""Test clients for single scenarios of the lab's integration tests, one sub-command
each. Run on a lab host with the system python3 (stdlib only), driven over stdin one
line at a time (what a line says does not matter, only that it came); each prints
plain words, one line per step, flushed at once:

    scripted_client.py older HOST PORT           (echo service)
        connects; prints its local port; at a stdin line sends 1000 bytes, reads the
        1000 echoed back and prints "done"
    scripted_client.py two-conns HOST PORT       (demo service)
        opens connections A and B, pings each once and prints
        "<answer A> <answer B> <local port A> <local port B>" ("PONG a0 PONG b0 ...");
        then, one stdin line each:
          1st line: pings B, prints its answer ("PONG b1")
          2nd line: pings A and B, prints both answers ("PONG a2 PONG b2")
          3rd line: pings A and B, prints both answers ("PONG a3 PONG b3")
        an answer is "reset" where the connection was reset
    scripted_client.py ping-until-reset HOST PORT   (demo service)
        pings once and prints the answer ("PONG a"); then pings every 0.2 s until the
        connection fails and prints "<error class> <seconds it took>"
        ("ConnectionResetError 5.3"); reads no stdin
    scripted_client.py open-then-wait HOST PORT  (demo service)
        pings once, prints "open"; at a stdin line pings again, prints "seen"; then
        waits for the server's next word (it sends none) and prints the verdict
    scripted_client.py pings-then-wait HOST PORT (demo service)
        pings 20 times; prints its local port; at a stdin line waits for the server's
        next word (it sends none) and prints the verdict
    scripted_client.py pings-until-end HOST PORT   (demo service)
        pings once and prints the answer ("PONG a"); then pings every 0.05 s, each answer
        checked ("PONG b"), until the connection ends, and prints how it ended and the
        seconds since the last good answer: "reset 0.1" (a RST), "eof 0.1" (a FIN: the
        stream ended), "wrong <answer>" or "timeout" (no answer in 20 s); reads no stdin
    scripted_client.py pings-steadily HOST PORT    (demo service)
        pings once and prints the answer ("PONG a"); then pings every 0.02 s, each answer
        checked; at each stdin line waits for 10 more good answers and prints "alive
        <good answers so far>"; if the connection ends first, prints how, as
        pings-until-end does ("reset 0.1", "eof 0.1", "wrong <answer>", "timeout")
    scripted_client.py half-closed HOST PORT BYTES  (demo service)
        asks for a stream of BYTES, sends its FIN at once and reads until the server's
        FIN; prints "half" once past 5 MB, then "eof <bytes read> <True if they are the
        stream's bytes>", or "<error class> <bytes read>" if the connection failed;
        reads no stdin

The verdict of the two waiting scenarios is "reset" (a RST came), "timeout" (nothing
in 20 s) or "got <bytes>" (data came). The demo service answers "PING x" with "PONG x".
"""
import hashlib
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "services"))
from demo_server import stream_bytes  # noqa: E402


def say(*words):
    print(*words, flush=True)


def await_go():
    sys.stdin.readline()


def connect(host, port, timeout=20):
    s = socket.create_connection((host, port))
    if timeout is not None:
        s.settimeout(timeout)
    return s


def ping(s, word):
    """One PING: the answer's text (one recv, as the demo service answers in one segment)."""
    s.sendall(b"PING " + word.encode() + b"\n")
    return s.recv(100).decode().strip()


def ping_or_reset(s, word):
    try:
        return ping(s, word)
    except ConnectionResetError:
        return "reset"


def await_verdict(s):
    """Wait for the server's next segment: what the client sees of the backup's verdict."""
    try:
        say("got", s.recv(100))
    except ConnectionResetError:
        say("reset")
    except socket.timeout:
        say("timeout")


def older(host, port):
    s = connect(host, port, timeout=None)
    say(s.getsockname()[1])
    await_go()
    s.sendall(b"x" * 1000)
    n = 0
    while n < 1000:
        n += len(s.recv(65536))
    say("done")


def two_conns(host, port):
    a, b = connect(host, port), connect(host, port)
    say(ping_or_reset(a, "a0"), ping_or_reset(b, "b0"), a.getsockname()[1], b.getsockname()[1])
    await_go()
    say(ping_or_reset(b, "b1"))
    for phase in ("2", "3"):
        await_go()
        say(ping_or_reset(a, "a" + phase), ping_or_reset(b, "b" + phase))


def ping_until_reset(host, port):
    s = connect(host, port, timeout=30)
    say(ping(s, "a"))
    start = time.time()
    while True:
        try:
            ping(s, "b")
            time.sleep(0.2)
        except OSError as e:
            say(type(e).__name__, round(time.time() - start, 1))
            return


def pings_until_end(host, port):
    s = connect(host, port)
    say(ping(s, "a"))
    last = time.monotonic()
    while True:
        try:
            answer = ping(s, "b")
        except (ConnectionResetError, BrokenPipeError):
            say("reset", round(time.monotonic() - last, 2))
            return
        except socket.timeout:
            say("timeout")
            return
        if answer == "":
            say("eof", round(time.monotonic() - last, 2))
            return
        if answer != "PONG b":
            say("wrong", answer)
            return
        last = time.monotonic()
        time.sleep(0.05)


def pings_steadily(host, port):
    s = connect(host, port)
    say(ping(s, "a"))
    state = {"good": 0, "end": None}
    changed = threading.Condition()

    def report():
        for _ in sys.stdin:
            with changed:
                want = state["good"] + 10
                changed.wait_for(lambda: state["good"] >= want or state["end"])
                say(*(state["end"] or ("alive", state["good"])))
                if state["end"]:
                    return
    threading.Thread(target=report).start()    # the process ends once it said how the connection ended
    last = time.monotonic()
    while True:
        try:
            answer = ping(s, "b")
            end = None if answer == "PONG b" else ("eof", round(time.monotonic() - last, 2)) if answer == "" \
                else ("wrong", answer)
        except (ConnectionResetError, BrokenPipeError):
            end = ("reset", round(time.monotonic() - last, 2))
        except socket.timeout:
            end = ("timeout",)
        with changed:
            if end:
                state["end"] = end
            else:
                state["good"] += 1
            changed.notify_all()
        if end:
            return
        last = time.monotonic()
        time.sleep(0.02)


def open_then_wait(host, port):
    s = connect(host, port)
    ping(s, "a")
    say("open")
    await_go()
    ping(s, "b")
    say("seen")
    await_verdict(s)


def pings_then_wait(host, port):
    s = connect(host, port)
    for i in range(20):
        ping(s, str(i))
    say(s.getsockname()[1])
    await_go()
    await_verdict(s)


def half_closed(host, port, n):
    s = connect(host, port)
    s.sendall(b"GET %d half\n" % n)
    s.shutdown(socket.SHUT_WR)
    got, h, told = 0, hashlib.sha256(), False
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += len(d)
            h.update(d)
            if got > 5_000_000 and not told:
                say("half")
                told = True
        say("eof", got, h.hexdigest() == hashlib.sha256(stream_bytes(n, "half")).hexdigest())
    except OSError as e:
        say(type(e).__name__, got)


SCENARIOS = {"older": older, "two-conns": two_conns, "ping-until-reset": ping_until_reset,
             "pings-until-end": pings_until_end, "pings-steadily": pings_steadily,
             "open-then-wait": open_then_wait, "pings-then-wait": pings_then_wait, "half-closed": half_closed}


def main(argv):
    if len(argv) < 3 or argv[0] not in SCENARIOS:
        sys.exit(__doc__)
    scenario, host, port, *rest = argv
    SCENARIOS[scenario](host, int(port), *map(int, rest))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Is the service alive? In-band TCP SYN probes and the FIN/RST hold (pure logic).

Every ``interval`` the controller sends a SYN from the probe address to the
service through the switch. A SYN-ACK means the service is up; a RST means the
host is up but nothing listens (the server process died); no answer at all for
``misses`` intervals since the last answered probe was sent (and at least ``misses``
probes sent in that time) means the host is gone. A late answer still counts: a loaded
primary whose answers take 30 ms is slow, not silent.

Segments with FIN or RST from the primary are held by the switch (sent to the
controller instead of the client): a crashed server makes its kernel close every
connection, and a client that saw those would be lost. A held segment triggers a
probe at once; it is released as soon as a probe says the service is alive, or
dropped when the service fails over.

A crashing server process closes its sockets in no fixed order: its kernel may emit
the FINs while its listening socket still answers a probe. So a held segment is
released only by a SYN-ACK to a probe sent ``hold_grace`` after the hold began; the
probe sent at once can only condemn (a RST), never acquit.

A prober is *armed* by the first SYN-ACK: until the service has been seen alive
(its server may start after the switch connects) silence and RSTs mean nothing.

Silence is confirmed before it condemns. With every probe the controller also reads
the primary's switch-port counters (``ReadPort``); when ``misses`` intervals pass
without an answer it asks once more and waits for that reply: if the port received
anything since the previous reading, the host is alive (its kernel sends), only the
switch's path to us is slow -- under a saturating load ovs-vswitchd can answer probes
150 ms late, and a verdict on silence alone would fail over a healthy primary. A really
silent host sends nothing, and the confirming reply comes back in a millisecond or two.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

ALIVE, DEAD, SILENT = "alive", "dead", "silent"
# Probe source ports are drawn from [PROBE_PORT_BASE, PROBE_PORT_BASE + PROBE_PORTS) and
# sequence numbers from all 2^32: a forged answer must guess both (an answer is only
# taken from the primary's switch port anyway, ftcp/controller/of/messages.py).
PROBE_PORT_BASE, PROBE_PORTS = 20000, 40000
_SECRET = random.SystemRandom()


@dataclass(frozen=True)
class SendProbe:
    service: str
    sport: int
    seq: int


@dataclass(frozen=True)
class Release:
    """Send the held segments on to their destination (and the mirror)."""
    service: str
    held: tuple


@dataclass(frozen=True)
class ReadPort:
    """Ask the switch for the primary port's counters; answer with ``port_counter``."""
    service: str
    token: int


@dataclass(frozen=True)
class Verdict:
    """The service is dead (RST) or silent (no answers): fail over."""
    service: str
    kind: str
    reason: str


@dataclass
class Prober:
    service: str
    interval: float
    misses: int
    timeout: float = 0.0                 # how long one probe may take; default: interval
    refusals: int = 1                    # RSTs in a row that condemn (each sends the next probe at once)
    refused: int = 0
    hold_grace: float = 0.01             # a released FIN/RST waits for a probe sent this much later
    outstanding: dict = field(default_factory=dict)   # sport -> (seq, sent at)
    missed: int = 0
    next_at: float = 0.0
    held: list = field(default_factory=list)
    held_since: float = 0.0              # when the oldest held segment arrived
    confirm_sent: bool = False           # the probe that may release them went out
    last_answer: float = 0.0             # when the last answered probe was sent (or the port moved)
    sent_since_answer: int = 0
    stopped: bool = False
    armed: bool = False
    confirming: int = 0                  # token of the port reading that may confirm silence
    _rx: int = -1                        # the primary port's received packets, last reading
    _tokens: int = 0
    _late: set = field(default_factory=set)
    rand: Callable[[int], int] = field(default=_SECRET.getrandbits, repr=False)   # k -> k random bits
    stats: dict = field(default_factory=lambda: {ALIVE: 0, DEAD: 0, "missed": 0, "held": 0, "released": 0})

    def _read_port(self) -> ReadPort:
        self._tokens += 1
        return ReadPort(self.service, self._tokens)

    def _send(self, now: float) -> SendProbe:
        self.sent_since_answer += 1
        sport = PROBE_PORT_BASE + self.rand(16) % PROBE_PORTS
        while sport in self.outstanding:
            sport = PROBE_PORT_BASE + self.rand(16) % PROBE_PORTS
        seq = self.rand(32)
        self.outstanding[sport] = (seq, now)
        self.next_at = now + self.interval
        return SendProbe(self.service, sport, seq)

    def tick(self, now: float) -> list:
        """Count probes that went unanswered; send the next one when it is due."""
        if self.stopped:
            return []
        out = []
        limit = self.timeout or self.interval
        for sport, (_, sent) in list(self.outstanding.items()):
            if now - sent >= limit and sport not in self._late:
                self._late.add(sport)   # missed, but an answer is still welcome
                if self.armed:
                    self.missed += 1
                    self.stats["missed"] += 1
            if now - sent >= 1.0 + self.misses * self.interval:
                del self.outstanding[sport]
                self._late.discard(sport)
        if now >= self.next_at:
            out.append(self._send(now))
            out.append(self._read_port())
        elif self.held and not self.confirm_sent and now >= self.held_since + self.hold_grace:
            self.confirm_sent = True
            out.append(self._send(now))
        # After the send: the tick that sends the misses-th probe since the last answer
        # (misses intervals after it) starts the confirmation, not the tick after.
        if (self.armed and not self.confirming and self.sent_since_answer >= self.misses
                and now - self.last_answer >= self.misses * self.interval):
            read = self._read_port()
            self.confirming = read.token
            out.append(read)
        return out

    def port_counter(self, rx_packets: int, token: int, now: float) -> list:
        """The reply to ReadPort ``token``: packets the primary's port has received."""
        if self.stopped:
            return []
        moved = 0 <= self._rx < rx_packets
        self._rx = max(self._rx, rx_packets)
        if moved:
            # the host sends: alive, whatever the probes say (they may be late)
            self.sent_since_answer = 0
            self.missed = 0
            self.last_answer = now
            self.confirming = 0
            return []
        if self.confirming and token >= self.confirming:
            silence = now - self.last_answer
            sent = self.sent_since_answer
            self.stop()
            return [Verdict(self.service, SILENT, f"no answer to {sent} probes in {silence:.3f} s, "
                                                  f"and nothing from the primary's port")]
        return []

    def answer(self, sport: int, ack: int, syn_ack: bool, rst: bool, now: float = None) -> list:
        """A reply to one of our probes (matched by port and acknowledged seq)."""
        probe = self.outstanding.get(sport)
        if self.stopped or probe is None or ack != (probe[0] + 1) & 0xFFFFFFFF:
            return []
        sent = probe[1]
        del self.outstanding[sport]
        self._late.discard(sport)
        self.missed = 0
        self.sent_since_answer = 0
        # Alive when it answered this probe, i.e. at least since the probe was sent:
        # count the silence from then. Counting from the answer's arrival would add the
        # delay of the switch's packet-in path (tens of ms while a stream saturates
        # ovs-vswitchd) to every silent-host verdict. A slow but live host is still
        # acquitted: by its next answer, or by its port's counter when silence is confirmed.
        self.last_answer = sent
        self.confirming = 0
        if syn_ack:
            self.armed = True
            self.refused = 0
            self.stats[ALIVE] += 1
            # Only a probe sent hold_grace after the segments were held may release
            # them: an earlier answer may come from a server that is in the middle
            # of crashing (its listener not closed yet).
            if self.held and sent >= self.held_since + self.hold_grace:
                held, self.held = tuple(self.held), []
                self.stats["released"] += len(held)
                return [Release(self.service, held)]
            return []
        if rst and self.armed:
            self.stats[DEAD] += 1
            self.refused += 1
            if self.refused < self.refusals:
                return [self._send(now)]    # confirm: ask again at once
            self.stop()
            return [Verdict(self.service, DEAD, f"the service refused {self.refused} connection(s) in a row (RST): "
                                                f"its server is down")]
        return []

    def hold(self, segment, now: float) -> list:
        """The switch held a FIN/RST from the primary. The first of a hold probes at
        once to decide its fate; the others join it without a probe of their own: a
        crashed server's kernel answers every client segment with a RST (160 within
        20 ms of an upload), and a probe for each would flood the controller with
        their answers, queued ahead of the one that decides."""
        if self.stopped:
            return []
        self.held.append(segment)
        self.stats["held"] += 1
        if len(self.held) > 1:
            return []
        self.held_since = now
        self.confirm_sent = False
        return [self._send(now)]

    def stop(self) -> None:
        """Failing over: no more probes; held segments are dropped, never released."""
        self.stopped = True
        self.outstanding.clear()
        self._late.clear()
        self.held = []

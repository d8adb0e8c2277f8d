"""Probes and the FIN/RST hold: verdicts only for an armed prober, releases on life."""
from ftcp.controller.prober import DEAD, PROBE_PORT_BASE, SILENT, Prober, ReadPort, Release, SendProbe, Verdict


def alive(p, now):
    probe, = [a for a in p.tick(now) if isinstance(a, SendProbe)]
    return p.answer(probe.sport, (probe.seq + 1) & 0xFFFFFFFF, syn_ack=True, rst=False)


def test_unarmed_prober_ignores_silence_and_rst():
    p = Prober("web", interval=0.05, misses=3)
    for i in range(10):
        acts = p.tick(i * 0.05)
        assert not any(isinstance(a, Verdict) for a in acts)
    probe = p.tick(1.0)[0]
    assert p.answer(probe.sport, probe.seq + 1, syn_ack=False, rst=True) == []
    assert not p.stopped


def switch_reads(p, acts, rx, now):
    """The switch answers every ReadPort at once with the primary port's counter."""
    out = []
    for a in acts:
        if isinstance(a, ReadPort):
            out += p.port_counter(rx, a.token, now)
    return out


def test_silence_after_arming_fails_after_misses_once_the_port_is_quiet_too():
    p = Prober("web", interval=0.05, misses=3)
    assert alive(p, 0.0) == [] and p.armed
    verdicts, i = [], 0
    while not verdicts:
        i += 1
        verdicts = [a for a in switch_reads(p, p.tick(i * 0.051), 1000, i * 0.051) if isinstance(a, Verdict)]
    assert verdicts[0].kind == SILENT and "3 probes in 0.153 s" in verdicts[0].reason
    assert "nothing from the primary's port" in verdicts[0].reason
    # last answer at 0; probes at 0.051, 0.102, 0.153: the tick that sends the third is
    # 3 intervals after the answer; the port counter, read then, did not move
    assert i == 3 and p.stopped and p.tick(10.0) == []


def test_silence_counts_from_the_last_answered_probe_not_from_its_late_answer():
    """The switch delivered the last answer 40 ms late (a stream saturated it); the
    host then fell silent. The verdict comes 3 intervals after that probe was sent,
    not 40 ms later."""
    p = Prober("web", interval=0.05, misses=3)
    probe, = [a for a in p.tick(0.0) if isinstance(a, SendProbe)]
    p.answer(probe.sport, probe.seq + 1, syn_ack=True, rst=False, now=0.04)
    verdicts, now = [], 0.0
    while not verdicts:
        now = round(now + 0.01, 2)
        verdicts = [a for a in switch_reads(p, p.tick(now), 1000, now) if isinstance(a, Verdict)]
    assert 0.15 <= now < 0.04 + 0.15 and verdicts[0].kind == SILENT   # one tick of float slack


def test_a_primary_whose_port_receives_is_alive_however_late_the_probes():
    """Under a saturating load the switch answered probes 150+ ms late; the primary's
    port kept receiving: no verdict."""
    p = Prober("web", interval=0.05, misses=3)
    alive(p, 0.0)
    rx = 1000
    for i in range(1, 40):
        rx += 500
        acts = p.tick(i * 0.05)
        assert not any(isinstance(a, Verdict) for a in switch_reads(p, acts, rx, i * 0.05))
    assert not p.stopped and p.stats["missed"] > 0


def test_silence_is_condemned_only_by_the_reading_asked_for_it():
    p = Prober("web", interval=0.05, misses=3)
    alive(p, 0.0)
    reads = []
    for i in range(1, 5):
        reads += [a for a in p.tick(i * 0.051) if isinstance(a, ReadPort)]
    earlier = [r for r in reads if r.token < p.confirming]
    assert p.confirming and earlier
    # replies to the readings asked before the silence: no verdict yet
    assert [v for r in earlier for v in p.port_counter(1000, r.token, 0.21)] == []
    verdict, = p.port_counter(1000, p.confirming, 0.21)
    assert verdict.kind == SILENT


def test_late_answers_mean_slow_not_silent():
    """A loaded primary answers each probe 1.5 intervals after it was sent: late (each
    probe is counted missed at the next tick) but within the 3 intervals that condemn.
    Its port is quiet (every reading the same), so only these late answers keep it
    alive: a prober that took a missed probe for a lost one would confirm silence and
    condemn it. (Times are binary fractions, so that every tick is exactly on time.)"""
    interval = 0.0625
    p = Prober("web", interval=interval, misses=3)
    alive(p, 0.0)
    previous = None
    for i in range(1, 40):
        now = i * interval
        acts = p.tick(now)
        verdicts = [a for a in acts if isinstance(a, Verdict)] + switch_reads(p, acts, 1000, now)
        assert verdicts == [], now
        if previous is not None:   # its answer arrives now, after the tick that counted it missed
            assert p.answer(previous.sport, previous.seq + 1, syn_ack=True, rst=False,
                            now=now - interval + 1.5 * interval) == []
        previous, = [a for a in acts if isinstance(a, SendProbe)]
    assert p.stats["missed"] == 38 and p.stats["alive"] == 39 and not p.stopped
def test_rst_answer_is_dead():
    p = Prober("web", interval=0.05, misses=3)
    alive(p, 0.0)
    probe = p.tick(0.05)[0]
    v, = p.answer(probe.sport, probe.seq + 1, syn_ack=False, rst=True)
    assert v.kind == DEAD


def test_wrong_ack_or_port_is_not_an_answer():
    p = Prober("web", interval=0.05, misses=3)
    probe = p.tick(0.0)[0]
    assert p.answer(probe.sport, probe.seq + 2, syn_ack=True, rst=False) == [] and not p.armed
    assert p.answer(probe.sport + 1, probe.seq + 1, syn_ack=True, rst=False) == [] and not p.armed


def test_held_segments_released_only_by_a_later_probe_dropped_when_failing():
    p = Prober("web", interval=0.05, misses=3, hold_grace=0.01)
    alive(p, 0.0)
    probe, = p.hold("fin-1", now=0.01)
    assert isinstance(probe, SendProbe)
    # The immediate probe may meet a server still crashing: its SYN-ACK acquits nothing.
    assert p.answer(probe.sport, probe.seq + 1, syn_ack=True, rst=False) == []
    assert p.tick(0.015) == []                       # grace not over yet
    confirm, = p.tick(0.021)                         # the confirming probe
    rel, = p.answer(confirm.sport, confirm.seq + 1, syn_ack=True, rst=False)
    assert rel == Release("web", ("fin-1",))
    probe, = p.hold("fin-2", now=0.03)
    p.answer(probe.sport, probe.seq + 1, syn_ack=False, rst=True)   # the crash completes: RST
    assert p.held == [] and p.stats["released"] == 1 and p.stats["held"] == 2 and p.stopped


def test_a_flood_of_held_segments_sends_one_probe_and_releases_them_all():
    """A crashed server's kernel answers every client segment with a RST: only the
    first held one probes; the verdict covers them all."""
    p = Prober("web", interval=0.05, misses=3, hold_grace=0.01)
    alive(p, 0.0)
    probe, = p.hold("rst-0", now=0.010)
    assert all(p.hold(f"rst-{i}", now=0.010 + i / 10000) == [] for i in range(1, 160))
    assert p.stats["held"] == 160 and len(p.held) == 160
    confirm, = p.tick(0.021)                         # the confirming probe still goes out
    rel, = p.answer(confirm.sport, confirm.seq + 1, syn_ack=True, rst=False)
    assert rel == Release("web", tuple(f"rst-{i}" for i in range(160)))
    again, = p.hold("fin", now=0.03)                 # a new hold probes at once again
    assert isinstance(again, SendProbe)


def test_answer_to_a_probe_older_than_the_hold_does_not_release():
    """A crash in progress: the periodic probe went out before the server died, its
    SYN-ACK arrives after the server's FINs were held. Releasing them would hand the
    client an EOF; only the probe sent after the hold decides."""
    p = Prober("web", interval=0.05, misses=3)
    alive(p, 0.0)
    old, = [a for a in p.tick(0.05) if isinstance(a, SendProbe)]   # periodic probe, server alive
    fresh, = p.hold("fin", now=0.051)        # the server's FIN, held
    assert p.answer(old.sport, old.seq + 1, syn_ack=True, rst=False) == []
    assert p.held == ["fin"]
    v, = p.answer(fresh.sport, fresh.seq + 1, syn_ack=False, rst=True)
    assert v.kind == DEAD and p.held == []


def test_probe_ports_and_sequence_numbers_come_from_the_secret_source():
    draws = iter([7, 9, 7, 9, 0xDEADBEEF])   # the second probe's first port draw is taken: drawn again
    p = Prober("web", interval=0.05, misses=3, rand=lambda bits: next(draws))
    first, = [a for a in p.tick(0.0) if isinstance(a, SendProbe)]
    assert (first.sport, first.seq) == (PROBE_PORT_BASE + 7, 9)
    second, = [a for a in p.tick(0.05) if isinstance(a, SendProbe)]
    assert (second.sport, second.seq) == (PROBE_PORT_BASE + 9, 0xDEADBEEF)
    # by default the operating system's randomness: not a sequence anyone can replay
    a, b = Prober("web", interval=0.05, misses=3), Prober("web", interval=0.05, misses=3)
    assert [x.seq for x in a.tick(0.0) if isinstance(x, SendProbe)] != \
        [x.seq for x in b.tick(0.0) if isinstance(x, SendProbe)]

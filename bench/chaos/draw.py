"""What a chaos trial's faults are: its draws, seeded, so any trial can be drawn again alone.

Per trial (each draw uniform, from a random.Random seeded with "<seed>:<trial>", so a
trial is reproducible on its own and --resume continues the same sequence):

* ``failure``  link | crash | silent                        (Lab.fail_primary)
* ``fault``    none | controller_kill | redis_restart | agent_pause | switch_disconnect,
  ``fault_offset_s`` relative to the failure: before it by 0-1 s (negative) or after it
  by 0-0.3 s; for the moment ``right_after_failover`` 0-0.3 s after the service was
  recorded failed-over instead. redis_restart: Redis down 0-1 s; agent_pause: SIGSTOP
  0.2-1.5 s; switch_disconnect: the switch loses its OpenFlow connection for 0.2-1 s
  (``Lab.cut_controller``: pointed at a port nobody listens on; it keeps its flows).
* ``moment``   handshake        the clients start and the primary fails 0-150 ms later
                                (before or around their SYN);
               mid_upload       the upload client has sent 10-35 % of its bytes;
               mid_download     the stream client has received 10-35 % of its bytes
                                (with a pair: once both are under way, at once if
                                the trigger client is past that by then);
               during_close     c1's last bytes are arriving (the last 0-512 KB of a
                                stream, the last 0-16 KB of the request loop's answers,
                                the upload's answer line): it shuts down and reads EOF;
               right_after_failover  as mid_*, on c1, and the fault comes right after
                                the failover is recorded.
  A "before" fault of mid_* moves the failure after the trigger by the offset (the
  fault fires at the trigger); of handshake it fires before the clients start; of
  during_close when c1's end, projected from its rate, is that far away (for an upload
  the projection is its last send, and its answer comes later by what the socket
  buffers hold: the gap is then larger). Each trial records the gap it got
  (``fault_minus_failure_s``) next to the one drawn.
* ``mix``      stream | upload | reqresp on c1, or two of them (c1 and c2) at once.
  mid_upload draws among the mixes with an upload, mid_download among those with a
  stream (the trigger watches that client); the others among all six.
"""
from __future__ import annotations

import random

FAILURES = ("link", "crash", "silent")
FAULTS = ("none", "controller_kill", "redis_restart", "agent_pause", "switch_disconnect")
MOMENTS = ("handshake", "mid_upload", "mid_download", "during_close", "right_after_failover")
MIXES = (("stream",), ("upload",), ("reqresp",), ("stream", "upload"), ("stream", "reqresp"),
         ("upload", "reqresp"))

# Sizes: each client transfers for ~2-3 s alone in this lab (stream ~20 MB/s once it
# reads, after ~1.4 s computing the SHA-256 it expects; upload ~25 MB/s; ~1,600
# requests/s), long enough that a failure moved 1 s after a trigger at 35 % still falls
# mid-transfer.
SIZES = {"stream": 40_000_000, "upload": 64_000_000, "reqresp": 4000}
HANDSHAKE_MAX_DELAY = 0.15


def draw(seed, index: int, force=()) -> dict:
    """Trial ``index``'s draws (all of them drawn, always in the same order), then
    --force's replacements, then what follows from them (the fault's side and params)."""
    rng = random.Random(f"{seed}:{index}")
    d = {"failure": rng.choice(FAILURES), "fault": rng.choice(FAULTS), "moment": rng.choice(MOMENTS)}
    mix_draw = rng.random()
    before, offset_draw = rng.random() < 0.5, rng.random()
    params = {"redis_restart": {"down_s": round(rng.uniform(0.0, 1.0), 4)},
              "agent_pause": {"pause_s": round(rng.uniform(0.2, 1.5), 4)},
              "switch_disconnect": {"disconnected_s": round(rng.uniform(0.2, 1.0), 4)}}
    d["trigger_fraction"] = round(rng.uniform(0.10, 0.35), 4)        # mid_* and right_after_failover
    d["handshake_delay_s"] = round(rng.uniform(0.0, HANDSHAKE_MAX_DELAY), 4)
    lead = {"stream": rng.randrange(0, 512 * 1024), "reqresp": rng.randrange(0, 16 * 1024), "upload": 0}
    d["close_jitter_s"] = round(rng.uniform(0.0, 0.005), 4)
    d["client_seed"] = str(rng.randrange(8))   # a few seeds: the expected bytes are cached
    for item in force or ():
        key, _, value = item.partition("=")
        if key == "mix":
            d["mix"] = value.split("+")
        elif key == "fault_offset_s":
            d[key] = float(value)
        elif key in d:
            d[key] = type(d[key])(value)
        else:
            raise SystemExit(f"chaos: --force {item}: no such draw")
        choices = {"failure": FAILURES, "fault": FAULTS, "moment": MOMENTS}.get(key)
        if choices and value not in choices or key == "mix" and not set(d["mix"]) <= set(SIZES):
            raise SystemExit(f"chaos: --force {item}: not one of {choices or sorted(SIZES)}")
        d.setdefault("forced", []).append(item)
    if "mix" not in d:
        mixes = [m for m in MIXES if d["moment"] != "mid_upload" or "upload" in m]
        mixes = [m for m in mixes if d["moment"] != "mid_download" or "stream" in m]
        d["mix"] = list(mixes[int(mix_draw * len(mixes))])
    d["close_lead"] = lead[d["mix"][0]]                        # bytes before c1's end (during_close)
    if "fault_offset_s" in d:
        d["fault_side"] = "before" if d["fault_offset_s"] < 0 else "after"
    elif d["moment"] == "right_after_failover":
        d["fault_side"], d["fault_offset_s"] = "after_failed_over", round(0.3 * offset_draw, 4)
    elif before:
        d["fault_side"], d["fault_offset_s"] = "before", round(-1.0 * offset_draw, 4)
    else:
        d["fault_side"], d["fault_offset_s"] = "after", round(0.3 * offset_draw, 4)
    if d["moment"] == "right_after_failover":
        d["fault_side"] = "after_failed_over"
    if d["fault"] == "none":
        d["fault_side"], d["fault_offset_s"] = "none", None
    d["fault_params"] = params.get(d["fault"], {})
    return d


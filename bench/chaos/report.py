"""Summaries of chaos trials: the summary the results JSON keeps, and the Markdown tables
printed at the end (outcomes by fault x moment, reset reasons, masked stalls)."""
from __future__ import annotations

from collections import Counter, defaultdict

from bench.chaos.draw import FAULTS, MOMENTS
from bench.chaos.oracle import OUTCOMES, reason_group


def summarize(trials: list) -> dict:
    out = {"trials": len(trials), "outcomes": dict(Counter(t["outcome"] for t in trials)),
           "client_outcomes": dict(Counter(c["outcome"] for t in trials for c in t.get("clients", [])))}
    for o in OUTCOMES:
        out["outcomes"].setdefault(o, 0)
    cells = defaultdict(Counter)
    for t in trials:
        cells[f"{t['fault']} x {t['moment']}"][t["outcome"]] += 1
    out["by_fault_moment"] = {k: dict(v) for k, v in sorted(cells.items())}
    for dim in ("failure", "fault", "moment"):
        table = defaultdict(Counter)
        for t in trials:
            table[t[dim]][t["outcome"]] += 1
        out[f"by_{dim}"] = {k: dict(v) for k, v in sorted(table.items())}
    mixes = defaultdict(Counter)
    for t in trials:
        mixes["+".join(t["mix"])][t["outcome"]] += 1
    out["by_mix"] = {k: dict(v) for k, v in sorted(mixes.items())}
    reasons = Counter(reason_group(c.get("reason", "")) for t in trials for c in t.get("clients", [])
                      if c["outcome"] == "reset")
    out["reset_reasons"] = dict(reasons.most_common())
    times = sorted(t["trial_s"] for t in trials if "trial_s" in t)
    if times:
        out["trial_seconds"] = {"mean": round(sum(times) / len(times), 2), "max": times[-1],
                                "p50": times[len(times) // 2]}
    stalls = defaultdict(list)
    for t in trials:
        for c in t.get("clients", []):
            if c["outcome"] == "masked" and c.get("stall_ms") is not None:
                stalls[t["fault"]].append(c["stall_ms"])
    out["masked_stall_ms_by_fault"] = {f: stall_stats(v) for f, v in sorted(stalls.items())}
    out["bad_trials"] = [t["trial"] for t in trials if t["outcome"] in ("corrupted", "hung", "reset_unexplained",
                                                                          "error")]
    return out


def stall_stats(values: list) -> dict:
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]   # noqa: E731
    return {"n": len(values), "p50": pick(0.5), "p90": pick(0.9), "max": values[-1]}


def markdown(trials: list) -> str:
    abbrev = {"masked": "M", "reset": "R", "reset_unexplained": "U", "corrupted": "C", "hung": "H", "error": "E"}
    cells = defaultdict(Counter)
    for t in trials:
        cells[(t["fault"], t["moment"])][t["outcome"]] += 1
    lines = ["Outcomes per trial by control-plane fault x moment, as M/R/C/H = masked / reset cleanly / "
             "corrupted / hung (+U reset unexplained, +E harness error when any):", "",
             "| fault \\ moment | " + " | ".join(MOMENTS) + " | all |",
             "|---|" + "---|" * (len(MOMENTS) + 1)]

    def cell(counter):
        if not counter:
            return "-"
        text = "/".join(str(counter.get(o, 0)) for o in ("masked", "reset", "corrupted", "hung"))
        extra = "".join(f" +{counter[o]}{abbrev[o]}" for o in ("reset_unexplained", "error") if counter.get(o))
        return text + extra
    for fault in FAULTS:
        row = [cell(cells.get((fault, m), Counter())) for m in MOMENTS]
        total = sum((cells.get((fault, m), Counter()) for m in MOMENTS), Counter())
        lines.append(f"| {fault} | " + " | ".join(row) + f" | {cell(total)} |")
    col = [sum((cells.get((f, m), Counter()) for f in FAULTS), Counter()) for m in MOMENTS]
    lines.append("| **all** | " + " | ".join(cell(c) for c in col) + f" | {cell(sum(col, Counter()))} |")
    totals = Counter(t["outcome"] for t in trials)
    clients = Counter(c["outcome"] for t in trials for c in t.get("clients", []))
    lines += ["", "| outcome | trials | client connections |", "|---|---|---|"]
    for o in OUTCOMES:
        lines.append(f"| {o.replace('_', ' ')} | {totals.get(o, 0)} | {clients.get(o, 0)} |")
    reasons = Counter(reason_group(c.get("reason", "")) for t in trials for c in t.get("clients", [])
                      if c["outcome"] == "reset")
    if reasons:
        lines += ["", "| reset cleanly: the record's reason | connections |", "|---|---|"]
        lines += [f"| {r} | {n} |" for r, n in reasons.most_common()]
    stalls = summarize(trials)["masked_stall_ms_by_fault"]
    if stalls:
        lines += ["", "| fault | masked connections | stall p50 ms | p90 ms | max ms |", "|---|---|---|---|---|"]
        lines += [f"| {f} | {v['n']} | {v['p50']:.0f} | {v['p90']:.0f} | {v['max']:.0f} |" for f, v in stalls.items()]
        lines += ["", "(stall: the client's longest silence that spans the failure, as in failover_bench)"]
    bad = [t for t in trials if t["outcome"] in ("corrupted", "hung", "reset_unexplained", "error")]
    if bad:
        lines += ["", "Trials to look at (evidence kept):"]
        for t in bad:
            why = "; ".join(f"{c['host']} {c['mode']}: {c['outcome']} ({c.get('why')})" for c in t.get("clients", [])
                            if c["outcome"] not in ("masked", "reset"))
            err = (t.get("error") or t.get("fault_error") or "").strip().splitlines()[-1:] or [""]
            lines.append(f"* trial {t['trial']}: {t['outcome']} — {t['failure']}, {t['fault']}, {t['moment']}, "
                         f"{'+'.join(t['mix'])}: {why or err[0]} ({t.get('evidence')})")
    return "\n".join(lines)


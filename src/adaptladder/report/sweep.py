"""The report's sweep tables (``run --sweep``): each swept rung's trials, their validation scores and
fit times, and the chosen setting (see :mod:`adaptladder.sweep`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _num(v: Any, digits: int = 3) -> str:
    return "-" if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{v:.{digits}f}"


def sweeps_view(rungs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per swept rung: headers (the swept keys) and one row per trial, as display strings."""
    out = []
    for r in rungs:
        sw = r.get("sweep")
        if not isinstance(sw, dict) or not sw.get("trials"):
            continue
        keys = list((sw.get("spec") or {}).keys())
        rows = []
        for t in sw["trials"]:
            settings = t.get("settings") or {}
            rows.append({"values": [repr(settings.get(k)) for k in keys], "status": str(t.get("status", "")),
                         "validation": _num(t.get("validation")), "fit": _num(t.get("fit_seconds"), 1),
                         "chosen": bool(t.get("chosen")), "reason": str(t.get("reason") or "")})
        budget = sw.get("budget") or {}
        chosen = ", ".join(f"{k}={v!r}" for k, v in (sw.get("chosen") or {}).items())
        note = (f"{len(rows)} trial(s) on {sw.get('executor', 'local')}"
                + (f" with {sw['scheduler']} early stopping" if sw.get("scheduler") else "")
                + f", scored on {sw.get('n_validation', '?')} validation examples"
                + (" (a stratified sample)" if sw.get("validation_sampled") else "")
                + f"; chosen: {chosen}" + (f"; budget: {budget['rule']}" if budget.get("rung_minutes") else "")
                + "; the rung's fit time includes every trial.")
        out.append({"rung": r.get("name"), "metric": sw.get("metric", ""), "keys": keys, "rows": rows,
                    "note": note})
    return out


def sweep_markdown(sweeps: list[dict[str, Any]], e: Callable[[Any], str]) -> list[str]:
    """report.md lines for :func:`sweeps_view` (``e`` escapes data text)."""
    if not sweeps:
        return []
    out = ["", "## Sweeps (settings searched on validation)"]
    for s in sweeps:
        out += ["", f"### {e(s['rung'])}", "", e(s["note"]), "",
                "| " + " | ".join(e(k) for k in s["keys"]) + f" | status | validation {e(s['metric'])} | fit s | |",
                "|" + "---|" * (len(s["keys"]) + 4)]
        for row in s["rows"]:
            status = row["status"] + (f" ({row['reason']})" if row["reason"] else "")
            out.append("| " + " | ".join(e(v) for v in row["values"]) + f" | {e(status)} | {row['validation']} | "
                       f"{row['fit']} | {'**chosen**' if row['chosen'] else ''} |")
    return out

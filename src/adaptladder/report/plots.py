"""Report figures as base64 PNG (matplotlib Agg, no pyplot global state), so report.html stays one
self-contained file that opens without a network. Text drawn into a PNG cannot inject markup."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

WINNER = "#d62728"
POINT = "#1f77b4"
FRONT = "#2ca02c"


def _figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _short(s: str, n: int = 22) -> str:
    s = " ".join(str(s).split())
    s = s if len(s) <= n else s[: n - 1] + "…"
    return s.replace("$", r"\$")  # a label such as "$5 off" must not switch matplotlib into mathtext


def scatter_png(rows: Sequence[dict[str, Any]], xkey: str, xlabel: str, metric: str, front: set[str],
                winner: str | None) -> str:
    """The decision estimate (filled, with CI bars) against a log-scaled cost axis, test as a hollow
    diamond beside it; the Pareto front of the decision estimate joined by a line."""
    pts = [r for r in rows if isinstance(r.get(xkey), (int, float)) and math.isfinite(r[xkey])
           and r.get("dec_value") is not None]
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot(111)
    if not pts:
        ax.text(0.5, 0.5, "no measurements", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _png(fig)
    positive = [r[xkey] for r in pts if r[xkey] > 0]
    floor = min(positive) / 3 if positive else 1e-9
    xs = np.array([max(r[xkey], floor) for r in pts])
    ys = np.array([r["dec_value"] for r in pts])
    cis = [r.get("dec_ci_values") or [r["dec_value"]] * 2 for r in pts]
    lo = np.array([y - c[0] for y, c in zip(ys, cis, strict=True)])
    hi = np.array([c[1] - y for y, c in zip(ys, cis, strict=True)])
    tests = np.array([r["test_value"] if r.get("test_value") is not None else np.nan for r in pts], dtype=float)
    ax.errorbar(xs, ys, yerr=[np.clip(lo, 0, None), np.clip(hi, 0, None)], fmt="none", ecolor="#999999",
                elinewidth=1, capsize=3, zorder=1)
    colors = [WINNER if r["name"] == winner else (FRONT if r["name"] in front else POINT) for r in pts]
    ax.scatter(xs, ys, c=colors, s=[160 if r["name"] == winner else 45 for r in pts],
               marker="o", zorder=3, edgecolors="white", linewidths=0.8, label="decision estimate (CV / validation)")
    ax.scatter(xs * 1.12, tests, marker="D", s=30, facecolors="none", edgecolors="#555555", linewidths=1.0,
               zorder=3, label="test (reference only)")
    for r, x, y in zip(pts, xs, ys, strict=True):
        if r["name"] == winner:
            ax.scatter([x], [y], marker="*", s=260, c=WINNER, zorder=4, edgecolors="black", linewidths=0.6)
        ax.annotate(_short(r["name"]), (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    fr = sorted((x, y) for r, x, y in zip(pts, xs, ys, strict=True) if r["name"] in front)
    if len(fr) > 1:
        ax.plot([p[0] for p in fr], [p[1] for p in fr], color=FRONT, linestyle="--", linewidth=1.2, zorder=2,
                label="Pareto front")
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    low = np.concatenate([ys - lo, tests[np.isfinite(tests)]])
    high = np.concatenate([ys + hi, tests[np.isfinite(tests)]])
    ax.set_ylim(max(0.0, float(np.nanmin(low)) - 0.05), min(1.02, float(np.nanmax(high)) + 0.05))
    ax.grid(True, which="major", alpha=0.3)
    span = np.log10(xs.max() / xs.min()) if xs.min() > 0 else 0
    pad = 10 ** max(0.3, span * 0.12)
    ax.set_xlim(xs.min() / pad, xs.max() * pad * 1.12)
    return _png(fig)


def confusion_png(confusion: Sequence[Sequence[int]], label_names: Sequence[str]) -> str:
    cm = np.asarray(confusion, dtype=float)
    k = len(cm)
    size = min(10.0, 2.8 + 0.42 * k)
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot(111)
    row_sums = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, row_sums, out=np.zeros_like(cm), where=row_sums > 0)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    names = [_short(n, 18) for n in label_names]
    ax.set_xticks(range(k), labels=names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center",
                  fontsize=8)
    ax.set_yticks(range(k), labels=names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7 if k > 8 else 9,
                        color="white" if frac[i, j] > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return _png(fig)


def per_class_png(per_class: dict[str, dict[str, float]]) -> str:
    names = list(per_class)
    f1 = [per_class[n]["f1"] for n in names]
    k = len(names)
    fig = _figure(6.4, max(1.6, 0.32 * k + 0.9))
    ax = fig.add_subplot(111)
    ypos = np.arange(k)
    ax.barh(ypos, f1, color=POINT)
    ax.set_yticks(ypos, labels=[_short(n, 24) for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("F1 (test)")
    for y, v in zip(ypos, f1, strict=True):
        ax.text(min(v + 0.01, 0.97), y, f"{v:.2f}", va="center", fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)

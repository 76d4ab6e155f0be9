"""Paired comparisons of rungs on the same examples: McNemar's exact test and a paired bootstrap.

Two rungs scored on the same test examples are compared example by example, which is far
more sensitive than comparing two independent confidence intervals. A rung with an
``eval_cap`` is scored on a stratified sample of the split, so a pair is compared on the
examples both rungs predicted (their common indices) and the result says how many that was.

The significance rule used everywhere (recommendation and report): for accuracy, McNemar's
exact test (two-sided binomial test on the discordant pairs) at alpha 0.05; for macro-F1,
the paired bootstrap 95% interval of the score difference excluding zero. Both numbers are
always reported. No multiple-comparison correction is applied (the report says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptladder.measure import fast_macro_f1

ALPHA = 0.05
N_BOOT = 1000


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test: is one classifier right more often where exactly one of them is right?"""
    from scipy.stats import binomtest

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_a, n, 0.5, alternative="two-sided").pvalue)
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": p}


def metric_value(y: np.ndarray, pred: np.ndarray, k: int, metric: str) -> float:
    if metric == "accuracy":
        return float((y == pred).mean()) if len(y) else float("nan")
    return fast_macro_f1(y, pred, k)


def metric_rows(y: np.ndarray, pred: np.ndarray, k: int, metric: str) -> np.ndarray:
    """The metric for each row of 2-D ``y`` / ``pred`` (one bootstrap resample per row), vectorised."""
    if metric == "accuracy":
        return (y == pred).mean(axis=1)
    c = y.shape[0]
    codes = (np.arange(c)[:, None] * (k * k) + y * k + pred).ravel()
    cm = np.bincount(codes, minlength=c * k * k).reshape(c, k, k)
    tp = cm[:, np.arange(k), np.arange(k)].astype(float)
    denom = cm.sum(axis=1) + cm.sum(axis=2)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1.mean(axis=1)


def bootstrap_rows(n: int, n_boot: int, rng: np.random.Generator, chunk_elems: int = 32_000):
    """Resample index matrices in cache-sized chunks: yields arrays of shape (rows, n).

    About 32k indices per chunk (arrays of ~256 KB that stay in cache) measured fastest; bigger chunks
    were up to 3x slower than a plain loop (see benchmarks/report_bootstrap.py).
    """
    per = max(1, min(n_boot, chunk_elems // max(n, 1)))
    done = 0
    while done < n_boot:
        rows = min(per, n_boot - done)
        yield rng.integers(0, n, (rows, n))
        done += rows


def paired_bootstrap_diff(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, k: int, metric: str, *,
                          n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """``metric(b) - metric(a)`` and its 95% percentile interval, resampling examples jointly."""
    y, pred_a, pred_b = (np.asarray(v, dtype=np.int64) for v in (y, pred_a, pred_b))
    diff = metric_value(y, pred_b, k, metric) - metric_value(y, pred_a, k, metric)
    rng = np.random.default_rng(seed)
    boots = np.concatenate([metric_rows(y[idx], pred_b[idx], k, metric) - metric_rows(y[idx], pred_a[idx], k, metric)
                            for idx in bootstrap_rows(len(y), n_boot, rng)])
    lo, hi = np.percentile(boots, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return {"diff": float(diff), "diff_ci": [float(lo), float(hi)]}


def part_labels(part: dict[str, Any], all_labels: np.ndarray | None) -> np.ndarray:
    """True label codes aligned with a scored part's ``predictions``."""
    if "labels" in part:
        return np.asarray(part["labels"], dtype=np.int64)
    if all_labels is None:
        raise ValueError("true labels are needed: the result has no 'labels' and no split.csv was given")
    return np.asarray(all_labels, dtype=np.int64)[np.asarray(part["indices"], dtype=np.int64)]


def compare_pair(a: dict[str, Any], b: dict[str, Any], part: str, metric: str, *,
                 all_labels: np.ndarray | None = None, seed: int = 0) -> dict[str, Any] | None:
    """Compare rung ``b`` with rung ``a`` on the examples of ``part`` that both predicted.

    Positive ``diff`` means b scores higher. None when they share no example.
    """
    pa, pb = a[part], b[part]
    ia = np.asarray(pa["indices"], dtype=np.int64)
    ib = np.asarray(pb["indices"], dtype=np.int64)
    common, pos_a, pos_b = np.intersect1d(ia, ib, assume_unique=True, return_indices=True)
    if len(common) == 0:
        return None
    y = part_labels(pa, all_labels)[pos_a]
    pred_a = np.asarray(pa["predictions"], dtype=np.int64)[pos_a]
    pred_b = np.asarray(pb["predictions"], dtype=np.int64)[pos_b]
    k = len(pa.get("label_names") or pb.get("label_names") or []) or int(max(y.max(), pred_a.max(), pred_b.max()) + 1)
    out: dict[str, Any] = {
        "a": a["name"], "b": b["name"], "part": part, "metric": metric, "n_common": len(common),
        "n_a": len(ia), "n_b": len(ib), "subset": bool(len(common) < max(len(ia), len(ib))),
        "a_score": metric_value(y, pred_a, k, metric), "b_score": metric_value(y, pred_b, k, metric),
        "a_accuracy": float((y == pred_a).mean()), "b_accuracy": float((y == pred_b).mean()),
    }
    out["mcnemar"] = mcnemar_exact(y == pred_a, y == pred_b)
    out.update(paired_bootstrap_diff(y, pred_a, pred_b, k, metric, seed=seed))
    out["significant"] = is_significant(out)
    if not out["significant"]:
        out["verdict"] = "no significant difference"
    else:
        out["verdict"] = f"{b['name']} better" if out["diff"] > 0 else f"{a['name']} better"
    return out


def is_significant(cmp: dict[str, Any]) -> bool:
    """The one significance rule (see the module docstring)."""
    if cmp["metric"] == "accuracy":
        return cmp["mcnemar"]["p_value"] < ALPHA
    lo, hi = cmp["diff_ci"]
    return bool(lo > 0 or hi < 0)


def pairwise(results: Sequence[dict[str, Any]], part: str, metric: str, *, all_labels: np.ndarray | None = None,
             seed: int = 0) -> list[dict[str, Any]]:
    """Every pair of finished rungs (cheaper first, as listed) compared on ``part``."""
    done = [r for r in results if r.get("status") == "done" and part in r and "predictions" in r[part]]
    out = []
    for i, a in enumerate(done):
        for b in done[i + 1:]:
            cmp = compare_pair(a, b, part, metric, all_labels=all_labels, seed=seed)
            if cmp is not None:
                out.append(cmp)
    return out


def describe(cmp: dict[str, Any]) -> str:
    """One sentence for the report about a pair (b is the more expensive rung)."""
    m = cmp["metric"]
    lo, hi = cmp["diff_ci"]
    where = f"on {cmp['n_common']} common {cmp['part']} examples" + (" (a stratified sample)" if cmp["subset"] else "")
    p = cmp["mcnemar"]["p_value"]
    if m == "accuracy":
        stats = (f"accuracy difference {cmp['diff']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}]; "
                 f"McNemar p={p:.3g}, the test used")
    else:  # the bootstrap CI decides; McNemar tests accuracy, which can disagree on imbalanced data
        stats = (f"{m} difference {cmp['diff']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}], the test used; "
                 f"on accuracy McNemar p={p:.3g}")
    if not cmp["significant"]:
        return f"{cmp['b']} is not significantly better than the cheaper {cmp['a']} {where} ({stats})."
    if cmp["diff"] > 0:
        return f"{cmp['b']} is significantly better than the cheaper {cmp['a']} {where} ({stats})."
    return f"{cmp['b']} is significantly worse than the cheaper {cmp['a']} {where} ({stats})."


def labels_from_split_csv(run_dir: str | Path, label_names: Sequence[str]) -> np.ndarray | None:
    """True label codes of every Task row, read back from the run's ``split.csv`` (for old results)."""
    import pandas as pd

    path = Path(run_dir) / "split.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    index = {n: k for k, n in enumerate(label_names)}
    try:
        return np.array([index[v] for v in frame["label"]], dtype=np.int64)
    except KeyError:
        return None

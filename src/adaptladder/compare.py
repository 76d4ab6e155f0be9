"""Paired comparisons of rungs on the same examples: McNemar's exact test and a paired bootstrap.

Two rungs scored on the same test examples are compared example by example, which is far
more sensitive than comparing two independent confidence intervals. A rung with an
``eval_cap`` is scored on a stratified sample of the split, so a pair is compared on the
examples both rungs predicted (their common indices) and the result says how many that was.

The significance rule used everywhere (recommendation and report): for accuracy, McNemar's
exact test (two-sided binomial test on the discordant pairs); for macro-F1, the paired
bootstrap (p-value and 95% interval of the score difference). Both numbers are always
reported. The comparisons of one table form a family: Holm's correction is applied across
them and a pair is "significant" when its Holm-adjusted p is below 0.05 (the report says so).
"Not significant" is reported as "no evidence of a difference at n=...", with the difference
that n could detect, never as equivalence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptladder.measure import bootstrap_rows, fast_macro_f1, macro_f1_rows, present_labels

__all__ = [
    "bootstrap_rows",
    "compare_pair",
    "describe",
    "holm",
    "mcnemar_exact",
    "metric_rows",
    "no_evidence",
    "paired_bootstrap_diff",
    "pairwise",
]

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


def metric_rows(y: np.ndarray, pred: np.ndarray, k: int, metric: str,
                present: np.ndarray | None = None) -> np.ndarray:
    """The metric for each row of 2-D ``y`` / ``pred`` (one bootstrap resample per row), vectorised.

    ``present``: for macro-F1, the labels of the original sample (see :func:`measure.macro_f1_rows`).
    """
    if metric == "accuracy":
        return (y == pred).mean(axis=1)
    return macro_f1_rows(y, pred, k, present)


def paired_bootstrap_diff(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, k: int, metric: str, *,
                          n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """``metric(b) - metric(a)``, its 95% interval, standard error and two-sided p-value, from a paired
    bootstrap (examples resampled jointly).

    The interval is the percentile interval re-centred on the observed difference (it contains it by
    construction; see :func:`measure.centred_interval`); the p-value is read from the same re-centred
    distribution (twice the smaller tail beyond 0), so "p < 0.05" and "the 95% interval excludes 0"
    agree. When no resample crosses 0 the tail is below 1/n_boot and is estimated from the normal
    approximation (difference / standard error) instead, so a large effect keeps a small p-value that a
    multiple-comparison correction can work with.
    """
    from scipy.stats import norm

    from adaptladder.measure import centred_interval

    y, pred_a, pred_b = (np.asarray(v, dtype=np.int64) for v in (y, pred_a, pred_b))
    diff = metric_value(y, pred_b, k, metric) - metric_value(y, pred_a, k, metric)
    rng = np.random.default_rng(seed)
    present = present_labels(k, y, pred_a, pred_b) if metric == "macro_f1" else None
    boots = np.concatenate([metric_rows(y[idx], pred_b[idx], k, metric, present)
                            - metric_rows(y[idx], pred_a[idx], k, metric, present)
                            for idx in bootstrap_rows(len(y), n_boot, rng)])
    ci = centred_interval(diff, boots, ALPHA, lo_clip=None, hi_clip=None)
    shifted = boots - np.median(boots) + diff
    se = float(boots.std(ddof=1)) if len(boots) > 1 else 0.0
    tail = min((shifted <= 0).mean(), (shifted >= 0).mean())
    if tail > 0:
        p = min(1.0, 2 * float(tail))
    elif se > 0:
        p = min(1.0 / n_boot, float(2 * norm.sf(abs(diff) / se)))
    else:
        p = 1.0 if diff == 0 else 0.0
    return {"diff": float(diff), "diff_ci": ci, "se": se, "p_bootstrap": p}


def part_labels(part: dict[str, Any], all_labels: np.ndarray | None) -> np.ndarray:
    """True label codes aligned with a scored part's ``predictions``."""
    if "labels" in part:
        return np.asarray(part["labels"], dtype=np.int64)
    if all_labels is None:
        raise ValueError("true labels are needed: the result has no 'labels' and no split.csv was given")
    return np.asarray(all_labels, dtype=np.int64)[np.asarray(part["indices"], dtype=np.int64)]


def compare_pair(a: dict[str, Any], b: dict[str, Any], part: str, metric: str, *,
                 all_labels: np.ndarray | None = None, seed: int = 0, part_b: str | None = None
                 ) -> dict[str, Any] | None:
    """Compare rung ``b`` with rung ``a`` on the examples of ``part`` that both predicted.

    ``part_b``: b's part when it differs (a cross-validated rung, scored on train + validation, against
    a rung scored on validation only: the pair is compared on the examples both have, the validation
    ones). Positive ``diff`` means b scores higher. None when they share no example. ``p_value`` is
    the test that decides (McNemar for accuracy, the paired bootstrap for macro-F1); ``p_holm`` and
    ``significant`` are set again by :func:`holm` when the comparison is one of a family.
    """
    part_b = part_b or part
    pa, pb = a.get(part), b.get(part_b)
    if not pa or not pb or "predictions" not in pa or "predictions" not in pb:
        return None
    ia = np.asarray(pa["indices"], dtype=np.int64)
    ib = np.asarray(pb["indices"], dtype=np.int64)
    common, pos_a, pos_b = np.intersect1d(ia, ib, assume_unique=True, return_indices=True)
    if len(common) == 0:
        return None
    y = part_labels(pa, all_labels)[pos_a]
    pred_a = np.asarray(pa["predictions"], dtype=np.int64)[pos_a]
    pred_b = np.asarray(pb["predictions"], dtype=np.int64)[pos_b]
    k = len(pa.get("label_names") or pb.get("label_names") or []) or int(max(y.max(), pred_a.max(), pred_b.max()) + 1)
    where = part if part == part_b else f"{part}/{part_b}"
    out: dict[str, Any] = {
        "a": a["name"], "b": b["name"], "part": where, "part_a": part, "part_b": part_b, "metric": metric,
        "n_common": len(common), "n_a": len(ia), "n_b": len(ib),
        "subset": bool(len(common) < max(len(ia), len(ib))),
        "a_score": metric_value(y, pred_a, k, metric), "b_score": metric_value(y, pred_b, k, metric),
        "a_accuracy": float((y == pred_a).mean()), "b_accuracy": float((y == pred_b).mean()),
    }
    out["mcnemar"] = mcnemar_exact(y == pred_a, y == pred_b)
    out.update(paired_bootstrap_diff(y, pred_a, pred_b, k, metric, seed=seed))
    out["p_value"] = out["mcnemar"]["p_value"] if metric == "accuracy" else out["p_bootstrap"]
    # the smallest difference this n would usually detect: 80% power at the 5% level (2.8 standard errors)
    out["detectable"] = 2.8 * out["se"]
    out["p_holm"] = out["p_value"]
    out["holm_m"] = 1
    _set_verdict(out)
    return out


def _set_verdict(cmp: dict[str, Any]) -> None:
    cmp["significant"] = is_significant(cmp)
    if not cmp["significant"]:
        cmp["verdict"] = "no evidence of a difference"
    else:
        cmp["verdict"] = f"{cmp['b']} better" if cmp["diff"] > 0 else f"{cmp['a']} better"


def is_significant(cmp: dict[str, Any]) -> bool:
    """The one significance rule (see the module docstring): the (Holm-adjusted) p-value below 0.05.

    Older records without p-values: McNemar for accuracy, the CI excluding 0 for macro-F1.
    """
    p = cmp.get("p_holm", cmp.get("p_value"))
    if p is not None:
        return bool(p < ALPHA)
    if cmp["metric"] == "accuracy":
        return cmp["mcnemar"]["p_value"] < ALPHA
    lo, hi = cmp["diff_ci"]
    return bool(lo > 0 or hi < 0)


def holm(cmps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Holm's step-down correction across a family of comparisons (in place; returns them).

    ``p_holm`` is the adjusted p-value (sorted p_(i) times (m - i + 1), made monotone, capped at 1);
    ``significant`` and ``verdict`` are set from it; ``holm_m`` is the family size.
    """
    m = len(cmps)
    order = sorted(range(m), key=lambda i: cmps[i]["p_value"])
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * cmps[i]["p_value"]))
        cmps[i]["p_holm"] = running
        cmps[i]["holm_m"] = m
        _set_verdict(cmps[i])
    return cmps


def holm_family(rungs: Sequence[dict[str, Any]], compare: Callable[[dict[str, Any], dict[str, Any]], Any],
                pairs: Iterable[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
    """``compare(a, b)`` (a paired comparison dict, or None where there is none) over ``pairs`` (positions
    in ``rungs``, cheaper first; default every pair), Holm-corrected as one family."""
    if pairs is None:
        pairs = ((i, j) for i in range(len(rungs)) for j in range(i + 1, len(rungs)))
    return holm([c for i, j in pairs if (c := compare(rungs[i], rungs[j])) is not None])


def pairwise(results: Sequence[dict[str, Any]], part: str, metric: str, *, all_labels: np.ndarray | None = None,
             seed: int = 0) -> list[dict[str, Any]]:
    """Every pair of finished rungs (cheaper first, as listed) compared on ``part``, Holm-corrected
    across the pairs (one family per split)."""
    done = [r for r in results if r.get("status") == "done" and part in r and "predictions" in r[part]]
    return holm_family(done, lambda a, b: compare_pair(a, b, part, metric, all_labels=all_labels, seed=seed))


def no_evidence(cmp: dict[str, Any]) -> str:
    """"no evidence of a difference at n=..." with the difference that n could detect (never "equal")."""
    det = cmp.get("detectable")
    tail = f"; a difference below about {det:.3f} would usually go undetected at this n" if det else ""
    return f"no evidence of a difference at n={cmp['n_common']}{tail}"


def describe(cmp: dict[str, Any]) -> str:
    """One sentence for the report about a pair (b is the more expensive rung)."""
    m = cmp["metric"]
    lo, hi = cmp["diff_ci"]
    part = cmp["part"]
    where = f"on {cmp['n_common']} common {part} examples" + (" (a stratified sample)" if cmp["subset"] else "")
    p = cmp["mcnemar"]["p_value"]
    holm_txt = (f", Holm-adjusted p={cmp['p_holm']:.3g} over {cmp['holm_m']} tests"
                if cmp.get("holm_m", 1) > 1 else "")
    if m == "accuracy":
        stats = (f"accuracy difference {cmp['diff']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}]; "
                 f"McNemar p={p:.3g}, the test used{holm_txt}")
    else:  # the bootstrap decides; McNemar tests accuracy, which can disagree on imbalanced data
        pb = cmp.get("p_bootstrap")
        ptxt = f", p={pb:.3g}" if pb is not None else ""
        stats = (f"{m} difference {cmp['diff']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}]{ptxt}, the test used"
                 f"{holm_txt}; on accuracy McNemar p={p:.3g}")
    if not cmp["significant"]:
        return f"{cmp['b']} vs the cheaper {cmp['a']}: {no_evidence(cmp)} ({where}; {stats})."
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

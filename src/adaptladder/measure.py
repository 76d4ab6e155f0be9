"""Measuring every rung the same way: scores with bootstrap CIs, latency, throughput, memory.

Scores are computed from class probabilities so all rungs are comparable; confidence
intervals are bootstraps over examples (seeded, so reports are reproducible), re-centred on the
point estimate so they always contain it (see ``centred_interval``).
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

N_BOOT = 1000


def _macro_f1(y: np.ndarray, p: np.ndarray, k: int) -> float:
    from sklearn.metrics import f1_score  # lazy: sklearn costs seconds at start-up (--set errors must be instant)

    return float(f1_score(y, p, average="macro", labels=np.arange(k), zero_division=0))


def fast_macro_f1(y: np.ndarray, p: np.ndarray, k: int) -> float:
    """Macro-F1 over all ``k`` labels from a confusion count (vectorised; used in the bootstrap)."""
    cm = np.bincount(y * k + p, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1.mean())


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


def macro_f1_rows(y: np.ndarray, p: np.ndarray, k: int, present: np.ndarray | None = None) -> np.ndarray:
    """Macro-F1 of each row of 2-D ``y`` / ``p`` (one bootstrap resample per row), vectorised.

    ``present``: a boolean mask of the ``n_present`` labels that occur (as truth or prediction) in the
    original sample. A resample that happens to leave out every example of such a label (likely for a
    class with one or two examples) has no F1 for it; counting it as 0 biases the bootstrap low (500
    classes, most with one example: point 0.118, biased "CI" [0.067, 0.094]). So each resample averages
    over the present labels it still defines and scales by ``n_present / k``, the same weight the point
    estimate gives the present labels (labels absent from the sample score 0 in both).
    """
    r = y.shape[0]
    rows = np.arange(r)[:, None] * k
    tp = np.bincount((rows + y)[y == p], minlength=r * k).reshape(r, k).astype(float)
    denom = (np.bincount((rows + y).ravel(), minlength=r * k)
             + np.bincount((rows + p).ravel(), minlength=r * k)).reshape(r, k)  # support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    if present is None:
        return f1.mean(axis=1)
    defined = (denom > 0) & present[None, :]
    n_def = defined.sum(axis=1)
    mean_def = np.divide((f1 * defined).sum(axis=1), n_def, out=np.zeros(r), where=n_def > 0)
    return mean_def * (present.sum() / k)


def present_labels(k: int, *arrays: np.ndarray) -> np.ndarray:
    """Boolean mask of the labels ``0..k-1`` occurring in any of ``arrays``."""
    mask = np.zeros(k, dtype=bool)
    for a in arrays:
        mask[np.asarray(a, dtype=np.int64)] = True
    return mask


def centred_interval(point: float, boots: np.ndarray, alpha: float = 0.05, lo_clip: float | None = 0.0,
                     hi_clip: float | None = 1.0) -> list[float]:
    """The percentile interval re-centred on the point estimate: ``point - (median - q_lo)`` to
    ``point + (q_hi - median)``.

    It keeps the bootstrap's spread and skew but not the bootstrap's own location bias, so it
    contains the point estimate by construction (a plain percentile interval need not when the
    statistic is biased under resampling, as macro-F1 over rare classes is).
    """
    q_lo, med, q_hi = np.percentile(boots, [100 * alpha / 2, 50, 100 * (1 - alpha / 2)])
    lo, hi = point - (med - q_lo), point + (q_hi - med)
    if lo_clip is not None:
        lo = max(lo, lo_clip)
    if hi_clip is not None:
        hi = min(hi, hi_clip)
    return [float(min(lo, point)), float(max(hi, point))]


def bootstrap_ci(
    y_true: np.ndarray, y_pred: np.ndarray, k: int, n_boot: int = N_BOOT, seed: int = 0, alpha: float = 0.05
) -> dict[str, list[float]]:
    """95% bootstrap intervals of accuracy and macro-F1 over examples (seeded), each containing its
    point estimate by construction (see :func:`centred_interval` and :func:`macro_f1_rows`)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    n = len(y_true)
    if n == 0:
        return {"accuracy_ci": [float("nan")] * 2, "macro_f1_ci": [float("nan")] * 2}
    rng = np.random.default_rng(seed)
    correct = (y_true == y_pred).astype(float)
    present = present_labels(k, y_true, y_pred)
    acc, mf1 = [], []
    for idx in bootstrap_rows(n, n_boot, rng):
        acc.append(correct[idx].mean(axis=1))
        mf1.append(macro_f1_rows(y_true[idx], y_pred[idx], k, present))
    return {
        "accuracy_ci": centred_interval(float(correct.mean()), np.concatenate(acc), alpha),
        "macro_f1_ci": centred_interval(fast_macro_f1(y_true, y_pred, k), np.concatenate(mf1), alpha),
    }


def score(y_true: np.ndarray, proba: np.ndarray, label_names: Sequence[str], *, seed: int = 0,
          sampled: bool = False) -> dict[str, Any]:
    """Accuracy and macro-F1 with CIs, per-class precision/recall/F1 and the confusion matrix."""
    y_true = np.asarray(y_true)
    proba = np.asarray(proba)
    k = len(label_names)
    y_pred = proba.argmax(axis=1)
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    prec, rec, f1, sup = precision_recall_fscore_support(y_true, y_pred, labels=np.arange(k), zero_division=0)
    out: dict[str, Any] = {
        "n": len(y_true),
        "sampled": sampled,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": _macro_f1(y_true, y_pred, k),
    }
    out.update(bootstrap_ci(y_true, y_pred, k, seed=seed))
    out["per_class"] = {
        label_names[i]: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                         "support": int(sup[i])}
        for i in range(k)
    }
    out["confusion"] = confusion_matrix(y_true, y_pred, labels=np.arange(k)).tolist()
    out["label_names"] = list(label_names)
    return out


# ------------------------------------------------------------------ memory
def rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


class _Sampler:
    """The one thread that samples this process's RSS, shared by every open :class:`PeakMemory` block.

    Nested blocks (the ladder around a rung's fit, the rung's own measurement inside it) add
    themselves to one set; the thread runs while any block is open and stops with the last.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[PeakMemory] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.interval = 0.02

    def add(self, block: PeakMemory) -> None:
        with self._lock:
            self._active.add(block)
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._stop,), daemon=True,
                                                name="adaptladder-rss")
                self._thread.start()

    def remove(self, block: PeakMemory) -> None:
        thread = None
        with self._lock:
            self._active.discard(block)
            if not self._active and self._thread is not None:
                self._stop.set()
                thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def observe(self, now: float) -> None:
        """A reading taken outside the thread (a block's entry or exit) counts for every open block, so
        an enclosing block's peak is never below a nested one's."""
        with self._lock:
            for block in self._active:
                block.peak_mb = max(block.peak_mb, now)

    def threads(self) -> int:
        return int(self._thread is not None)

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            now = rss_mb()
            with self._lock:
                for block in self._active:
                    block.peak_mb = max(block.peak_mb, now)
            stop.wait(self.interval)


_SAMPLER = _Sampler()


class PeakMemory:
    """Peak resident memory (MB) of this process while the block runs, sampled every 20 ms.

    ``peak_mb`` is the absolute peak RSS; ``delta_mb`` the peak above the RSS at entry,
    i.e. what the block itself needed on top of what was already loaded. Blocks may nest:
    all share one sampling thread.
    """

    def __init__(self) -> None:
        self.start_mb = 0.0
        self.peak_mb = 0.0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.start_mb = self.peak_mb = rss_mb()
        _SAMPLER.observe(self.start_mb)
        _SAMPLER.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _SAMPLER.observe(rss_mb())  # this block's last reading, for it and every block around it
        _SAMPLER.remove(self)

    @property
    def delta_mb(self) -> float:
        return max(0.0, self.peak_mb - self.start_mb)


# ------------------------------------------------------------------ speed
def time_predictions(predict: Callable[[list[str]], Any], texts: Sequence[str], *, n_single: int = 30,
                     seed: int = 0) -> dict[str, float]:
    """Single-example latency (p50/p95 over ``n_single`` calls) of a fitted rung's predict."""
    texts = list(texts)
    if not texts:
        return {}
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(texts), size=min(n_single, len(texts)), replace=False)
    predict([texts[int(picks[0])]])  # warm-up
    lat = []
    for i in picks:
        t0 = time.perf_counter()
        predict([texts[int(i)]])
        lat.append(time.perf_counter() - t0)
    lat_ms = np.array(lat) * 1000
    return {"latency_ms_p50": float(np.percentile(lat_ms, 50)), "latency_ms_p95": float(np.percentile(lat_ms, 95)),
            "n_latency": len(lat)}

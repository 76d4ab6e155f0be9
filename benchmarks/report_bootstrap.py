"""Paired bootstrap of a score difference: per-resample loop (baseline) vs chunked vectorised.

Run: PYTHONPATH=src python benchmarks/report_bootstrap.py
Both are timed interleaved in the same process; medians of 5 repeats; 1,000 resamples, macro-F1.
"""

from __future__ import annotations

import time

import numpy as np

from adaptladder.compare import metric_value, paired_bootstrap_diff


def loop_baseline(y: np.ndarray, a: np.ndarray, b: np.ndarray, k: int, n_boot: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(0)
    out = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        out[i] = metric_value(y[idx], b[idx], k, "macro_f1") - metric_value(y[idx], a[idx], k, "macro_f1")
    return np.percentile(out, [2.5, 97.5])


def main() -> None:
    rng = np.random.default_rng(0)
    print("| n examples | classes | loop (s) | vectorised (s) | speed-up |")
    print("|---|---|---|---|---|")
    for n, k in ((400, 2), (2000, 6), (7500, 20)):
        y = rng.integers(0, k, n)
        a = np.where(rng.random(n) < 0.8, y, rng.integers(0, k, n))
        b = np.where(rng.random(n) < 0.85, y, rng.integers(0, k, n))
        t_loop, t_vec = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            lo_hi = loop_baseline(y, a, b, k)
            t_loop.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            res = paired_bootstrap_diff(y, a, b, k, "macro_f1")
            t_vec.append(time.perf_counter() - t0)
        assert abs(res["diff_ci"][0] - lo_hi[0]) < 0.02 and abs(res["diff_ci"][1] - lo_hi[1]) < 0.02
        ml, mv = float(np.median(t_loop)), float(np.median(t_vec))
        print(f"| {n:,} | {k} | {ml:.3f} | {mv:.3f} | {ml / mv:.1f}x |")


if __name__ == "__main__":
    main()

"""Audit speed: blockwise near-duplicate search, and the label-error model, against baselines.

1. Near-duplicates on news20-sized embeddings (18,821 x 384, random but with planted copies):
   ``near_duplicate_pairs`` (blockwise upper-triangle matrix products) vs a per-row NumPy loop
   (``e[i] @ e[i+1:].T``, what a straightforward implementation does) and vs one full n x n
   similarity matrix (fast but 1.4 GB at this size). Same pairs from all three is asserted.
2. Label errors: out-of-fold probabilities from TF-IDF + averaged SGD logistic regression (what the
   audit uses) vs TF-IDF + lbfgs LogisticRegression (the textbook choice), side by side on the
   same texts: time ratio, out-of-fold accuracy, and overlap of the rows cleanlab flags.

Runs interleave baseline and candidate, repeat, and report medians.
``python benchmarks/bench_audit.py [--repeats 3] [--label-set trec6] [--label-n 2500]``
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np


def _loop_pairs(e: np.ndarray, thr: float) -> set[tuple[int, int]]:
    out = set()
    for i in range(len(e) - 1):
        s = e[i + 1:] @ e[i]
        for j in np.flatnonzero(s >= thr):
            out.add((i, i + 1 + int(j)))
    return out


def _full_pairs(e: np.ndarray, thr: float) -> set[tuple[int, int]]:
    s = e @ e.T
    i, j = np.nonzero(np.triu(s >= thr, k=1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


def bench_near(n: int, d: int, repeats: int) -> None:
    from adaptladder.audit import near_duplicate_pairs

    rng = np.random.default_rng(0)
    e = rng.normal(size=(n, d)).astype(np.float32)
    src = rng.choice(n, 200, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), 200, replace=False)
    e[dst] = e[src] + rng.normal(scale=0.05, size=(200, d)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    times: dict[str, list[float]] = {"blockwise": [], "row_loop": [], "full_matrix": []}
    peaks: dict[str, float] = {}
    ref = None
    for _ in range(repeats):
        for name in ("blockwise", "row_loop", "full_matrix"):
            tracemalloc.start()
            t = time.perf_counter()
            if name == "blockwise":
                pairs, _, _ = near_duplicate_pairs(e, 0.95)
                got = set(map(tuple, pairs.tolist()))
            elif name == "row_loop":
                got = _loop_pairs(e, 0.95)
            else:
                got = _full_pairs(e, 0.95)
            times[name].append(time.perf_counter() - t)
            peaks[name] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            ref = got if ref is None else ref
            assert got == ref, name
    base = statistics.median(times["blockwise"])
    print(f"\n## near-duplicates, n={n:,} d={d} (pairs found: {len(ref or ())})")
    print("| method | median s | x blockwise time | peak extra memory (MiB) |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {m:.2f} | {m / base:.1f} | {peaks[name]:.0f} |")


def bench_label_errors(name: str, n: int, repeats: int) -> None:
    from cleanlab.filter import find_label_issues
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from adaptladder.audit import out_of_fold_probs
    from adaptladder.task import load_builtin

    task = load_builtin(name)
    if n < len(task.texts):
        task = task.sample(n // 3, seed=0)
    texts, y = task.texts, task.labels

    def lbfgs() -> np.ndarray:
        x = TfidfVectorizer(sublinear_tf=True, min_df=2, max_features=50_000, dtype=np.float32).fit_transform(
            [t[:5000] for t in texts])
        probs = np.zeros((len(y), int(y.max()) + 1))
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=13).split(np.zeros(len(y)), y):
            clf = LogisticRegression(max_iter=1000, C=10.0).fit(x[tr], y[tr])
            probs[np.ix_(te, clf.classes_)] = clf.predict_proba(x[te])
        return probs

    times: dict[str, list[float]] = {"sgd (audit)": [], "lbfgs LR": []}
    probs: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for key in times:
            t = time.perf_counter()
            p = out_of_fold_probs(texts, y, model="tfidf", seed=13) if key.startswith("sgd") else lbfgs()
            times[key].append(time.perf_counter() - t)
            probs[key] = p
    flagged = {k: set(find_label_issues(y, p, n_jobs=1).nonzero()[0].tolist()) for k, p in probs.items()}
    a, b = flagged["sgd (audit)"], flagged["lbfgs LR"]
    base = statistics.median(times["lbfgs LR"])
    print(f"\n## label errors on {name} ({len(y):,} rows, 5-fold)")
    print("| model | median s | x lbfgs time | out-of-fold accuracy | rows flagged |")
    print("|---|---:|---:|---:|---:|")
    for k, ts in times.items():
        acc = float((probs[k].argmax(1) == y).mean())
        print(f"| {k} | {statistics.median(ts):.2f} | {statistics.median(ts) / base:.2f} | {acc:.3f} | "
              f"{len(flagged[k])} |")
    jac = len(a & b) / max(len(a | b), 1)
    print(f"flagged by both: {len(a & b)}; Jaccard overlap {jac:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=18_821)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--label-set", default="trec6")
    ap.add_argument("--label-n", type=int, default=2500)
    ap.add_argument("--skip-near", action="store_true")
    ap.add_argument("--skip-labels", action="store_true")
    args = ap.parse_args()
    import os

    print(f"machine: {os.cpu_count()} cores (shared with other jobs; load average {os.getloadavg()[0]:.1f})")
    if not args.skip_near:
        bench_near(args.n, args.d, args.repeats)
    if not args.skip_labels:
        bench_label_errors(args.label_set, args.label_n, args.repeats)


if __name__ == "__main__":
    main()

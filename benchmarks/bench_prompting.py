"""Prompting speed and scoring method, measured side by side on the same inputs.

Compares, on one few-shot prompt (k examples per class from the training split) and the same
stratified validation queries:

1. ``naive``: one full forward pass per (query, label), no batching, no cache;
2. ``batched``: full forward passes, all (query, label) rows batched, no cache;
3. ``prefix-cache``: the shared prefix run once, its KV cache reused, all labels of a batch of
   queries scored in one pass (the default path);
4. ``generate``: greedy generation of the answer (up to 6 tokens) and parsing it into a label.

Methods are interleaved within every repeat (so a busy machine slows all alike) and medians
of the repeats are reported. Accuracy / macro-F1 come from the same queries.

    PYTHONPATH=src python benchmarks/bench_prompting.py --data trec6 --n 12 --k 1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="trec6")
    ap.add_argument("--n", type=int, default=12, help="validation queries")
    ap.add_argument("--k", type=int, default=1, help="shots per class")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--format", default="plain", choices=["plain", "chat"])
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    from sklearn.metrics import accuracy_score, f1_score

    from adaptladder.backends.base import parse_label
    from adaptladder.rungs.prompting import FewShotRung
    from adaptladder.task import load_builtin, stratified_subset

    task = load_builtin(args.data)
    tx, ty = task.part("train")
    vx, vy = task.part("validation")
    pos = stratified_subset(vy, args.n, 0)
    queries, gold = [vx[i] for i in pos], vy[pos]
    rung = FewShotRung(k=args.k, calibrate=False, prompt_format=args.format, threads=args.threads)
    rung.fit(tx, ty, label_names=task.label_names)
    bk = rung.backend
    users = [rung._user(q, rung.shots_used_) for q in queries]
    prefix = rung._shared_user_prefix()
    names = rung.label_names_
    prompt_tokens = [bk.count_tokens(bk.format_chat(rung.system_prompt_, u)) for u in users]

    def run(method: str) -> tuple[float, np.ndarray]:
        bk._prefix_memo = None  # every repeat pays for its prefix
        t0 = time.perf_counter()
        if method == "generate":
            answers = bk.generate_prompts(rung.system_prompt_, users, max_tokens=6, stop=["\n"])
            pred = np.array([-1 if (j := parse_label(a, names)) is None else j for a in answers])
        else:
            bk.prefix_cache = method == "prefix-cache"
            bk.batch_size = 1 if method == "naive" else 8
            sc = bk.score_prompts(rung.system_prompt_, users, names, user_prefix=prefix)
            pred = sc.normalized().argmax(1)
        return time.perf_counter() - t0, pred

    methods = ["naive", "batched", "prefix-cache", "generate"]
    times: dict[str, list[float]] = {m: [] for m in methods}
    preds: dict[str, np.ndarray] = {}
    run("prefix-cache")  # warm-up
    for r in range(args.repeats):
        for m in methods[r % len(methods):] + methods[:r % len(methods)]:  # rotate the order
            dt, p = run(m)
            times[m].append(dt)
            preds[m] = p
    out = {"data": args.data, "n_queries": len(queries), "labels": len(names), "shots": len(rung.shots_used_),
           "prompt_format": args.format, "median_prompt_tokens": float(np.median(prompt_tokens)),
           "repeats": args.repeats, "torch_threads": __import__("torch").get_num_threads(),
           "load_avg_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(), "machine": platform.processor(),
           "methods": {}}
    base = float(np.median(times["naive"]))
    for m in methods:
        med = float(np.median(times[m]))
        p = preds[m]
        out["methods"][m] = {
            "median_s": round(med, 3), "examples_per_s": round(len(queries) / med, 3),
            "speedup_vs_naive": round(base / med, 2), "all_s": [round(t, 3) for t in times[m]],
            "accuracy": round(float(accuracy_score(gold, p)), 3),
            "macro_f1": round(float(f1_score(gold, p, average="macro", labels=list(range(len(names))),
                                             zero_division=0)), 3),
            "unparsed": int((p < 0).sum()),
        }
    agree = float(np.mean(preds["naive"] == preds["prefix-cache"]))
    out["prefix_cache_same_predictions_as_naive"] = agree
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()

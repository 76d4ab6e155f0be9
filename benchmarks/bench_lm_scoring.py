"""LM label-scoring throughput on CPU: today's path at several batch sizes, against the matmul rate.

Scores the same stratified validation queries (zero-shot, plain prompt, packaged SmolLM2-135M)
with the shared-prefix KV cache path of :class:`adaptladder.backends.hf.HFBackend` at batch
sizes 8 (today's default) and 32, interleaved within each repeat so a busy machine slows all
alike; medians of the repeats. Between runs it times a float32 matmul of the model's shapes in
the same process, so "fraction of matmul peak" = achieved GFLOP/s of the scoring (2 x
non-embedding parameters per computed token, + the LM head per scored position) over the
measured matmul GFLOP/s. Prints JSON.

    PYTHONPATH=src python benchmarks/bench_lm_scoring.py --data trec6 --n 16 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="trec6")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", default="8,32")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from adaptladder.rungs.prompting import ZeroShotRung
    from adaptladder.task import load_builtin, stratified_subset

    task = load_builtin(args.data)
    tx, ty = task.part("train")
    vx, vy = task.part("validation")
    queries = [vx[i] for i in stratified_subset(vy, args.n, 0)]
    rung = ZeroShotRung(calibrate=False, prompt_format="plain", threads=1)
    rung.fit(tx[:50], ty[:50], label_names=task.label_names)
    bk = rung.backend
    users = [rung._user(q, []) for q in queries]
    prefix = rung._shared_user_prefix()
    model = bk._model
    nonemb = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)
    vocab, hidden = model.get_output_embeddings().weight.shape
    label_tokens = [len(bk.encode(" " + v, first=False)) for v in rung.verbal_]
    head_rows = 1 + sum(t - 1 for t in label_tokens)  # LM-head rows per query (first token + the rest)

    def run(bs: int) -> tuple[float, int, np.ndarray]:
        bk._prefix_memo = None  # every run pays for its prefix
        bk.batch_size = bs
        c0 = bk.usage.computed_tokens
        t0 = time.perf_counter()
        sc = bk.score_prompts(rung.system_prompt_, users, rung.verbal_, user_prefix=prefix)
        return time.perf_counter() - t0, bk.usage.computed_tokens - c0, sc.normalized().argmax(1)

    a, b = torch.randn(192, hidden), torch.randn(hidden, 1536)

    def matmul_gflops() -> float:
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t0)
        return 2 * a.shape[0] * hidden * 1536 / float(np.median(ts)) / 1e9

    sizes = [int(s) for s in args.batch_sizes.split(",")]
    times: dict[int, list[float]] = {s: [] for s in sizes}
    tokens: dict[int, int] = {}
    preds: dict[int, np.ndarray] = {}
    gf: list[float] = []
    run(sizes[0])  # warm-up
    for r in range(args.repeats):
        for s in (sizes if r % 2 == 0 else sizes[::-1]):
            dt, n_tok, p = run(s)
            times[s].append(dt)
            tokens[s], preds[s] = n_tok, p
            gf.append(matmul_gflops())
    peak = float(np.median(gf))
    out = {"data": args.data, "n_queries": len(queries), "torch_threads": torch.get_num_threads(),
           "load_avg_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "non_embedding_params": nonemb,
           "matmul_gflops_median": round(peak, 2), "batch_sizes": {}}
    base = float(np.median(times[sizes[0]]))
    for s in sizes:
        med = float(np.median(times[s]))
        flops = 2 * nonemb * tokens[s] + 2 * vocab * hidden * head_rows * len(queries)
        out["batch_sizes"][s] = {
            "median_s": round(med, 2), "texts_per_s": round(len(queries) / med, 3),
            "speedup_vs_first": round(base / med, 2), "computed_tokens": tokens[s],
            "achieved_gflops": round(flops / med / 1e9, 2), "fraction_of_matmul": round(flops / med / 1e9 / peak, 2),
            "same_predictions_as_first": float(np.mean(preds[s] == preds[sizes[0]])),
            "all_s": [round(t, 2) for t in times[s]]}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()

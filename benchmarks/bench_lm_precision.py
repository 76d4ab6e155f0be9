"""LM precision on CPU: fp32 vs bf16 weights, side by side in one run (issue #28 item 1).

1. Label scoring: zero-shot (plain prompt, no calibration) on ``--cls-data`` validation queries,
   the shared-prefix KV-cache path of HFBackend; texts/s and identical label choices.
2. Few-shot generation: the few-shot generation rung on ``--gen-data`` test inputs, three arms: fp32
   without the shared-prefix cache (the path before it), fp32 with it, bf16 with it; outputs/s,
   identical outputs and the primary metric of each.
The packaged SmolLM2-135M; fp32 and bf16 runs interleave within each repeat (a busy machine slows
both alike); medians of ``--repeats``. Prints JSON with the CPU flags. bf16 is only fast where the
CPU computes it natively (AVX512-BF16 / AMX): elsewhere this shows the emulation's cost.

    PYTHONPATH=src python benchmarks/bench_lm_precision.py [--n-cls 64] [--n-gen 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cls-data", default="trec6")
    ap.add_argument("--gen-data", default="sms-abbreviations")
    ap.add_argument("--n-cls", type=int, default=64)
    ap.add_argument("--n-gen", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ["ADAPTLADDER_NATIVE_BF16"] = "1"  # both precisions are forced below; this only skips nothing

    import torch

    from adaptladder.encode import cpu_flags
    from adaptladder.generation.metrics import per_example_scores
    from adaptladder.generation.rungs import GenSpec, make_gen_rung
    from adaptladder.generation.task import load_generation_task
    from adaptladder.rungs.prompting import ZeroShotRung
    from adaptladder.task import load_builtin, stratified_subset

    threads = args.threads if args.threads == "auto" else int(args.threads)
    out: dict = {"cpu_flags": cpu_flags(), "load_avg_1min": os.getloadavg()[0], "repeats": args.repeats}

    # ---- 1. label scoring
    task = load_builtin(args.cls_data)
    tx, ty = task.part("train")
    vx, vy = task.part("validation")
    queries = [vx[i] for i in stratified_subset(vy, args.n_cls, 0)]
    rungs = {p: ZeroShotRung(calibrate=False, prompt_format="plain", threads=threads, precision=p)
             for p in ("fp32", "bf16")}
    for r in rungs.values():
        r.fit(tx[:50], ty[:50], label_names=task.label_names)

    def score(p: str) -> tuple[float, np.ndarray]:
        r = rungs[p]
        bk = r.backend
        bk._prefix_memo = None
        users = [r._user(q, []) for q in queries]
        t0 = time.perf_counter()
        sc = bk.score_prompts(r.system_prompt_, users, r.verbal_, user_prefix=r._shared_user_prefix())
        return time.perf_counter() - t0, sc.normalized().argmax(1)

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    choice: dict[str, np.ndarray] = {}
    for p in rungs:
        score(p)  # warm-up
    for i in range(args.repeats):
        for p in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")):
            dt, choice[p] = score(p)
            times[p].append(dt)
    med = {p: float(np.median(v)) for p, v in times.items()}
    out["label_scoring"] = {"data": args.cls_data, "n": len(queries),
                            "texts_per_s": {p: round(len(queries) / med[p], 2) for p in med},
                            "bf16_speedup": round(med["fp32"] / med["bf16"], 2),
                            "identical_choices": float(np.mean(choice["fp32"] == choice["bf16"])),
                            "all_s": {p: [round(t, 2) for t in v] for p, v in times.items()}}
    print(json.dumps(out["label_scoring"]), flush=True)

    # ---- 2. few-shot generation
    gtask = load_generation_task(args.gen_data)
    gx, gy = gtask.part("train")
    ex, ey = gtask.part("test")
    ex, ey = ex[:args.n_gen], ey[:args.n_gen]
    spec = GenSpec.of(gtask)
    # "fp32, no prefix cache" is the path before shared-prefix reuse and bf16 (the baseline)
    arms = {"fp32, no prefix cache": ("fp32", False), "fp32": ("fp32", True), "bf16": ("bf16", True)}
    gens = {}
    for a, (p, _) in arms.items():
        g = make_gen_rung("few-shot", threads=threads, precision=p)
        g.fit(gx[:200], gy[:200], spec=spec)
        gens[a] = g
    gtimes: dict[str, list[float]] = {a: [] for a in arms}
    texts: dict[str, list[str]] = {}
    for a in gens:
        gens[a].generate(ex[:1])  # warm-up
    for i in range(args.repeats):
        for a in (list(arms) if i % 2 == 0 else list(arms)[::-1]):
            gens[a].backend.backend.prefix_cache = arms[a][1]  # fp32 arms share one loaded model
            t0 = time.perf_counter()
            texts[a] = gens[a].generate(ex)
            gtimes[a].append(time.perf_counter() - t0)
    gmed = {a: float(np.median(v)) for a, v in gtimes.items()}
    metric = gtask.metric if hasattr(gtask, "metric") else "chrf"
    scores = {a: float(np.mean(per_example_scores(texts[a], ey, metrics=[metric])[0][metric])) for a in texts}
    base = "fp32, no prefix cache"
    out["few_shot_generation"] = {"data": args.gen_data, "n": len(ex), "metric": metric,
                                  "outputs_per_s": {a: round(len(ex) / gmed[a], 3) for a in gmed},
                                  "speedup_vs_baseline": {a: round(gmed[base] / gmed[a], 2) for a in gmed},
                                  "bf16_speedup": round(gmed["fp32"] / gmed["bf16"], 2),
                                  "prefix_cache_identical_outputs": float(np.mean([
                                      a == b for a, b in zip(texts[base], texts["fp32"], strict=True)])),
                                  "identical_outputs": float(np.mean([a == b for a, b in
                                                                      zip(texts["fp32"], texts["bf16"], strict=True)])),
                                  "metric_mean": {p: round(v, 4) for p, v in scores.items()},
                                  "all_s": {p: [round(t, 2) for t in v] for p, v in gtimes.items()}}
    out["torch_threads_end"] = torch.get_num_threads()
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()

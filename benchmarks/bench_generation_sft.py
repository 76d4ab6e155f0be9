"""LoRA SFT of the packaged SmolLM2 vs few-shot prompting on a built-in generation set.

Seeded sample of the task (``--train`` / ``--val`` / ``--test`` pairs). Few-shot: the same LM
with ``--k`` seeded training pairs as chat turns (the registry's ``few-shot`` rung when it is
installed, else ``Generator.build_prompt(..., shots=...)`` directly). LoRA SFT: the
``lora-sft`` rung with a ``--budget`` minute training budget, early stopping on a seeded
validation subset. Both generate greedily for the same test inputs with the same token
budget; the primary metric's per-example scores are compared with a paired bootstrap
(``generation.metrics.paired_compare``). Selection uses validation only; test is scored once.

    ADAPTLADDER_CACHE=/work/cache PYTHONPATH=src python benchmarks/bench_generation_sft.py \\
        --task us-cities-json --train 300 --val 100 --test 60 --budget 9 --out /tmp/gen-sft/bench_sft.json

On a loaded machine the arms can run as two processes (``--arms few-shot`` and ``--arms lora-sft``)
and be joined with ``--arms none --reuse A.json --reuse B.json`` (same sample checked).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="us-cities-json")
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--test", type=int, default=60)
    ap.add_argument("--k", type=int, default=3, help="few-shot examples")
    ap.add_argument("--budget", type=float, default=9.0, help="LoRA training budget, minutes")
    ap.add_argument("--val-size", type=int, default=16, help="validation pairs scored at each evaluation")
    ap.add_argument("--eval-every", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default="/tmp/gen-sft/bench_sft.json")
    ap.add_argument("--arms", default="few-shot,lora-sft", help="which arms to run here")
    ap.add_argument("--reuse", action="append", default=[],
                    help="an earlier output of this script whose arms are taken as they are (same sample checked); "
                         "lets the two arms run as separate processes")
    args = ap.parse_args()

    from adaptladder.generation.decode import Generator, max_new_tokens_for
    from adaptladder.generation.metrics import paired_compare, score_generations
    from adaptladder.generation.rungs import GenSpec, make_gen_rung
    from adaptladder.generation.task import load_generation_task

    t_all = time.perf_counter()
    task = load_generation_task(args.task, seed=args.seed).sample(
        {"train": args.train, "validation": args.val, "test": args.test}, seed=args.seed)
    tr_x, tr_y = task.part("train")
    va_x, va_y = task.part("validation")
    te_x, te_y = task.part("test")
    metric = task.default_metric
    kind = task.output
    res: dict[str, Any] = {"task": args.task, "sizes": task.summary()["split_sizes"], "metric": metric,
                           "args": vars(args), "load_avg_start": os.getloadavg(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(json.dumps(res), flush=True)
    arms = set(args.arms.split(","))
    res["test_inputs_sha"] = hashlib.sha256(json.dumps(te_x).encode()).hexdigest()[:16]
    for path in args.reuse:
        old = json.loads(Path(path).read_text())
        same = (old.get("sizes") == res["sizes"] and old["args"]["seed"] == args.seed and old["task"] == args.task
                and old.get("test_inputs_sha", res["test_inputs_sha"]) == res["test_inputs_sha"])
        if not same:
            raise SystemExit(f"{path} was measured on another sample")
        for arm in ("few_shot", "lora_sft"):
            if arm in old:
                res[arm] = {**old[arm], "reused_from": path}

    def score(preds: list[str]) -> dict[str, Any]:
        s = score_generations(preds, task.refs(te_y), kind=kind, schema=task.schema)
        return {"metrics": s["metrics"], "per_example": s["per_example"]}

    spec = GenSpec.of(task, seed=args.seed, metric=metric, budget_minutes=args.budget)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out_path.write_text(json.dumps(res, indent=1, default=str))

    if "few-shot" in arms:  # ---------------- few-shot
        t0 = time.perf_counter()
        try:
            fs = make_gen_rung("few-shot", k=args.k)
            fs.fit(tr_x, tr_y, spec=spec, val_inputs=va_x, val_targets=va_y)
            fs_out = fs.generate(te_x)
            fs_info = {"impl": "few-shot rung", "usage": fs.last_usage}
        except Exception as e:  # the prompting rungs may not be installed in this build
            print(f"few-shot rung unavailable ({type(e).__name__}: {e}); using Generator shots directly", flush=True)
            gen = Generator(batch_size=8)
            rng = np.random.default_rng(args.seed)
            shots = [(tr_x[i], tr_y[i]) for i in rng.choice(len(tr_x), args.k, replace=False)]
            mnt = max_new_tokens_for(tr_y, gen.count_tokens)
            out = gen.generate([gen.build_prompt(x, task.instruction, shots=shots) for x in te_x], max_new_tokens=mnt)
            fs_out = out.texts
            fs_info = {"impl": "Generator.build_prompt(shots=k seeded train pairs)", "max_new_tokens": mnt,
                       "usage": {"new_tokens": sum(out.new_tokens), "prompt_tokens": sum(out.prompt_tokens),
                                 "seconds": out.seconds}, "settings": out.settings}
            del gen
        fs_sec = time.perf_counter() - t0
        res["few_shot"] = {**fs_info, "seconds": round(fs_sec, 1), "outputs": fs_out, **score(fs_out)}
        print(f"few-shot: {metric} {res['few_shot']['metrics'][metric]} in {fs_sec:.0f}s; load {os.getloadavg()}",
              flush=True)
        save()

    if "lora-sft" in arms:  # ---------------- LoRA SFT
        t0 = time.perf_counter()
        lora = make_gen_rung("lora-sft", val_size=args.val_size, eval_every=args.eval_every, max_epochs=args.epochs,
                             patience=2)
        lora.fit(tr_x, tr_y, spec=spec, val_inputs=va_x, val_targets=va_y)
        fit_sec = time.perf_counter() - t0
        brief = {k: v for k, v in lora.extra_info()["training"].items() if k != "history"}
        print(f"lora fit {fit_sec:.0f}s: {json.dumps(brief)}", flush=True)
        t1 = time.perf_counter()
        lo_out = lora.generate(te_x)
        gen_sec = time.perf_counter() - t1
        res["lora_sft"] = {"fit_seconds": round(fit_sec, 1), "generate_seconds": round(gen_sec, 1),
                           "usage": {k: v for k, v in lora.last_usage.items() if k != "new_tokens_per_example"},
                           "training": lora.extra_info()["training"], "outputs": lo_out, **score(lo_out)}
        print(f"lora-sft: {metric} {res['lora_sft']['metrics'][metric]}; generate {gen_sec:.0f}s", flush=True)
        save()

    if "few_shot" in res and "lora_sft" in res:
        lo, fs_ = res["lora_sft"]["per_example"], res["few_shot"]["per_example"]
        res["paired"] = {m: paired_compare(lo[m], fs_[m]) for m in lo}
        print("paired (lora - few-shot):", json.dumps(res["paired"][metric]), flush=True)
    res["load_avg_end"] = os.getloadavg()
    res["total_seconds"] = round(time.perf_counter() - t_all, 1)
    save()
    print(f"total {res['total_seconds']}s, load {res['load_avg_end']}", flush=True)


if __name__ == "__main__":
    main()

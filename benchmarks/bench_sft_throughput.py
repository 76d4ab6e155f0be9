"""SFT training throughput: pairs/min and tokens/s of adaptladder's SFT loop, three ways side by side.

  - ``fp32, random batches``: the loop as it was (fp32 forward, batches in random order);
  - ``fp32, length-bucketed``: batches of similar length (less padding);
  - ``auto (bf16 autocast where native), length-bucketed``: what the rungs do now.
The packaged SmolLM2-135M, full fine-tuning or LoRA (``--method``), ``--steps`` steps of batch 8 on
a seeded sample of a built-in generation set's training pairs at ``--max-length``; the validation
check is one pair of one token (its time is excluded: the record's training seconds count steps
only). Each configuration starts from a fresh copy of the weights; rounds interleave the three,
medians of ``--repeats``. Prints JSON with the CPU flags.

    PYTHONPATH=src python benchmarks/bench_sft_throughput.py --task sms-abbreviations --steps 6 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

CONFIGS = {"fp32, random batches": ("fp32", False), "fp32, length-bucketed": ("fp32", True),
           "auto, length-bucketed": ("auto", True)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="sms-abbreviations")
    ap.add_argument("--method", default="full", choices=["full", "lora"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from adaptladder.encode import cpu_flags
    from adaptladder.generation.decode import Generator
    from adaptladder.generation.sft import SFTConfig, train_sft
    from adaptladder.generation.task import load_generation_task
    from adaptladder.precision import native_bf16

    task = load_generation_task(args.task)
    tx, ty = task.part("train")
    n = min(len(tx), args.steps * args.batch_size)
    train = list(zip(tx[:n], ty[:n], strict=True))
    vx, vy = task.part("validation")
    val = [(vx[0], vy[0])]
    res: dict[str, list[dict]] = {k: [] for k in CONFIGS}
    for r in range(args.repeats):
        names = list(CONFIGS) if r % 2 == 0 else list(CONFIGS)[::-1]
        for name in names:
            precision, bucket = CONFIGS[name]
            gen = Generator("smollm2", batch_size=1, threads="auto", device="cpu")
            cfg = SFTConfig(lr=1e-5, batch_size=args.batch_size, max_epochs=1, max_steps=args.steps, eval_every=10**6,
                            patience=10**6, max_length=args.max_length, max_new_tokens=1, budget_minutes=60,
                            eval_share=1.0, seed=r, precision=precision, bucket_by_length=bucket)
            out = train_sft(gen, train, val, task.instruction, lambda p, q: 0.0, config=cfg, method=args.method)
            tp = out.val_check["throughput"]
            res[name].append(tp)
            print(f"round {r + 1} {name}: {tp['examples_per_min']} pairs/min, {tp['tokens_per_s']} tokens/s, "
                  f"padding {tp['padding_share']:.1%}, {tp['precision']}", flush=True)
    base = statistics.median(t["examples_per_min"] for t in res["fp32, random batches"])
    summary = {"task": args.task, "method": args.method, "steps": args.steps, "batch_size": args.batch_size,
               "max_length": args.max_length, "cpu_flags": cpu_flags(), "native_bf16": native_bf16("cpu")[1],
               "load_avg_1min": os.getloadavg()[0], "configs": {}}
    for name, runs in res.items():
        ppm = statistics.median(t["examples_per_min"] for t in runs)
        summary["configs"][name] = {"pairs_per_min": round(ppm, 2), "vs_fp32_random": round(ppm / base, 2),
                                    "tokens_per_s": round(statistics.median(t["tokens_per_s"] for t in runs), 1),
                                    "padding_share": round(statistics.median(t["padding_share"] for t in runs), 4),
                                    "precision": runs[-1]["precision"]}
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()

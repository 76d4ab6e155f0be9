"""Generation speed with the packaged SmolLM2: batched vs one prompt at a time, and
JSON-Schema-constrained (xgrammar) vs unconstrained decoding, measured side by side.

Each comparison runs its two arms alternately on the same prompts, ``--reps`` times, and
reports the median generated tokens/s of each arm and their ratio; it also checks that the
batched and one-at-a-time outputs are identical, and reports the constrained vs unconstrained
schema-valid rates. Keep the sample small: on a shared 2-core machine this is minutes.

    ADAPTLADDER_CACHE=/work/cache PYTHONPATH=src python benchmarks/bench_generation.py \\
        --n 4 --reps 3 --out /tmp/generation/bench_generation.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any


def _median_tps(runs: list[Any]) -> float:
    return statistics.median(sum(r.new_tokens) / r.seconds for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4, help="prompts per comparison")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from adaptladder.generation.datasets import load_generation_builtin
    from adaptladder.generation.decode import (
        Generator,
        bound_schema,
        max_new_tokens_for,
        string_cap_from_targets,
    )
    from adaptladder.generation.metrics import score_generations

    threads = int(args.threads) if str(args.threads).isdigit() else args.threads
    gen = Generator(batch_size=args.n, threads=threads)
    gen._load()
    import torch

    result: dict[str, Any] = {"n": args.n, "reps": args.reps, "torch_threads": torch.get_num_threads(),
                              "load_avg_start": os.getloadavg()[0], "started": time.strftime("%Y-%m-%d %H:%M")}

    # 1) batched vs one at a time (dialogue: short free-text replies)
    d = load_generation_builtin("movie-replies")
    budget = max_new_tokens_for(d.targets[:2000], gen.count_tokens)
    prompts = [gen.build_prompt(x, d.instruction) for x in d.inputs[-args.n:]]
    gen.generate(prompts[:1], max_new_tokens=4)  # warm-up
    batched, single = [], []
    for _ in range(args.reps):
        batched.append(gen.generate(prompts, max_new_tokens=budget, batch_size=args.n))
        single.append(gen.generate(prompts, max_new_tokens=budget, batch_size=1))
    result["batching"] = {
        "set": "movie-replies", "max_new_tokens": budget,
        "batched_tokens_per_s": _median_tps(batched), "single_tokens_per_s": _median_tps(single),
        "speedup": _median_tps(batched) / _median_tps(single),
        "identical_outputs": all(b.texts == single[0].texts for b in batched + single),
        "tokens": sum(batched[0].new_tokens),
    }
    print(json.dumps(result["batching"]), flush=True)

    # 2) constrained vs unconstrained (extraction to JSON)
    d = load_generation_builtin("us-cities-json")
    train = d.targets[2000:2400]
    schema = bound_schema(d.schema, max_string=string_cap_from_targets(train))
    budget = max_new_tokens_for(train, gen.count_tokens)
    xs, ys = d.inputs[:args.n], d.targets[:args.n]
    prompts = [gen.build_prompt(x, d.instruction) for x in xs]
    t0 = time.perf_counter()
    gen.constraint(schema)
    compile_s = time.perf_counter() - t0
    free, cons = [], []
    for _ in range(args.reps):
        free.append(gen.generate(prompts, max_new_tokens=budget))
        cons.append(gen.generate(prompts, max_new_tokens=budget, schema=schema))

    def valid(o: Any) -> float:
        sc = score_generations(o.texts, ys, kind="json", schema=d.schema, n_boot=50)
        return sc["metrics"]["schema_valid"]["mean"]

    result["constrained"] = {
        "set": "us-cities-json", "max_new_tokens_free": budget, "compile_s": compile_s,
        "free_tokens_per_s": _median_tps(free), "constrained_tokens_per_s": _median_tps(cons),
        "free_s_median": statistics.median(r.seconds for r in free),
        "constrained_s_median": statistics.median(r.seconds for r in cons),
        "time_ratio": statistics.median(r.seconds for r in cons) / statistics.median(r.seconds for r in free),
        "tokens_per_s_ratio": _median_tps(cons) / _median_tps(free),
        "free_schema_valid": valid(free[0]), "constrained_schema_valid": valid(cons[0]),
        "free_tokens": sum(free[0].new_tokens), "constrained_tokens": sum(cons[0].new_tokens),
    }
    print(json.dumps(result["constrained"]), flush=True)
    result["load_avg_end"] = os.getloadavg()[0]
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

"""Generation speed with the packaged SmolLM2, measured side by side.

``--mode rungs`` (default): tokens/s of each prompting generation rung (zero-shot, few-shot,
knn-few-shot on movie-replies; structured on us-cities-json) generating the same ``--n`` test
inputs with ``batch_size=8`` vs one at a time, and the structured rung (xgrammar-constrained)
vs the few-shot rung with the *same prompt* unconstrained, each fitted once on a seeded sample of
the built-in set's training pairs. The arms of a comparison run alternately, ``--reps`` times;
medians and ratios are reported, with the check that batched and one-at-a-time outputs are
identical and the schema-valid rates of both JSON arms. The text rungs' budget is capped at
``--max-new-tokens`` (keep the run short on a shared machine).

``--mode decoder``: the earlier Generator-level comparison (batched vs one at a time on plain
zero-shot prompts; constrained vs unconstrained zero-shot JSON).

    ADAPTLADDER_CACHE=/work/cache PYTHONPATH=src python benchmarks/bench_generation.py \\
        --n 8 --reps 3 --out /tmp/generation/bench_generation_rungs.json
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


def _tps(usages: list[dict[str, Any]]) -> float:
    return statistics.median(u["new_tokens"] / u["seconds"] for u in usages)


def _save(result: dict[str, Any], out: str) -> None:
    result["load_avg_now"] = os.getloadavg()[0]
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=1)


def bench_rungs(args: argparse.Namespace) -> None:
    from adaptladder.generation.metrics import score_generations
    from adaptladder.generation.rungs import GenSpec, make_gen_rung
    from adaptladder.generation.task import load_generation_task

    result: dict[str, Any] = {"mode": "rungs", "n": args.n, "reps": args.reps, "train": args.train,
                              "max_new_tokens_text": args.max_new_tokens, "load_avg_start": os.getloadavg()[0],
                              "started": time.strftime("%Y-%m-%d %H:%M"), "rungs": {}}
    common = {"threads": int(args.threads) if str(args.threads).isdigit() else args.threads}

    def run(rung: Any, inputs: list[str], bs: int) -> tuple[list[str], dict[str, Any]]:
        rung.params["batch_size"] = bs
        out = rung.generate(inputs)
        return out, dict(rung.last_usage)

    # -- text rungs on movie-replies: batch 8 vs one at a time
    t = load_generation_task("movie-replies").sample({"train": args.train, "validation": 8, "test": args.n},
                                                     seed=0)
    tx, ty = t.part("train")
    xs, _ = t.part("test")
    for name in [n for n in ("zero-shot", "few-shot", "knn-few-shot") if n in args.rungs]:
        r = make_gen_rung(name, max_new_tokens=args.max_new_tokens, **common).fit(tx, ty, spec=GenSpec.of(t))
        r.generate(xs[:1])  # warm-up
        arms: dict[str, list[dict[str, Any]]] = {"batch8": [], "single": []}
        outs: dict[str, list[list[str]]] = {"batch8": [], "single": []}
        for _ in range(args.reps):
            for arm, bs in (("batch8", 8), ("single", 1)):
                o, u = run(r, xs, bs)
                arms[arm].append(u)
                outs[arm].append(o)
        result["rungs"][name] = {
            "set": "movie-replies", "max_new_tokens": r.max_new_tokens_, "k": r.extra_info()["k"],
            "prompt_tokens_mean": arms["batch8"][0]["prompt_tokens"] / len(xs),
            "new_tokens": arms["batch8"][0]["new_tokens"],
            "batch8_tokens_per_s": _tps(arms["batch8"]), "single_tokens_per_s": _tps(arms["single"]),
            "batch8_s_median": statistics.median(u["seconds"] for u in arms["batch8"]),
            "single_s_median": statistics.median(u["seconds"] for u in arms["single"]),
            "speedup": _tps(arms["batch8"]) / _tps(arms["single"]),
            "identical_outputs": all(o == outs["batch8"][0] for o in outs["batch8"] + outs["single"]),
        }
        print(name, json.dumps(result["rungs"][name]), flush=True)
        _save(result, args.out)

    # -- structured on us-cities-json: constrained batch 8 / one at a time, and few-shot (same prompt) unconstrained
    if "structured" in args.rungs:
        t = load_generation_task("us-cities-json").sample({"train": args.train, "validation": 8, "test": args.n},
                                                          seed=0)
        tx, ty = t.part("train")
        xs, ys = t.part("test")
        spec = GenSpec.of(t)
        t0 = time.perf_counter()
        s = make_gen_rung("structured", unconstrained_check=0, **common).fit(tx, ty, spec=spec)
        s.backend.constraint(s.bounded_schema_)
        compile_s = time.perf_counter() - t0
        f = make_gen_rung("few-shot", **common).fit(tx, ty, spec=spec)
        assert f.prompts_used(xs) == s.prompts_used(xs), "structured and few-shot prompts differ"
        s.generate(xs[:1])
        arms = {"constrained_batch8": [], "constrained_single": [], "free_batch8": []}
        outs = {k: [] for k in arms}
        for _ in range(args.reps):
            for arm, rung, bs in (("constrained_batch8", s, 8), ("free_batch8", f, 8), ("constrained_single", s, 1)):
                o, u = run(rung, xs, bs)
                arms[arm].append(u)
                outs[arm].append(o)

        def valid(texts: list[str]) -> float:
            sc = score_generations(texts, t.refs(ys), kind="json", schema=t.schema, n_boot=50)
            return sc["metrics"]["schema_valid"]["mean"]

        def secs(arm: str) -> float:
            return statistics.median(u["seconds"] for u in arms[arm])

        result["rungs"]["structured"] = {
            "set": "us-cities-json", "k": s.extra_info()["k"], "compile_and_fit_s": compile_s,
            "max_new_tokens_constrained": s.decoding()["max_new_tokens"], "max_new_tokens_free": f.max_new_tokens_,
            "prompt_tokens_mean": arms["constrained_batch8"][0]["prompt_tokens"] / len(xs),
            "batch8_tokens_per_s": _tps(arms["constrained_batch8"]),
            "single_tokens_per_s": _tps(arms["constrained_single"]),
            "speedup": _tps(arms["constrained_batch8"]) / _tps(arms["constrained_single"]),
            "identical_outputs": all(o == outs["constrained_batch8"][0]
                                     for o in outs["constrained_batch8"] + outs["constrained_single"]),
            "free_tokens_per_s": _tps(arms["free_batch8"]),
            "constrained_vs_free_tokens_per_s": _tps(arms["constrained_batch8"]) / _tps(arms["free_batch8"]),
            "constrained_s_median": secs("constrained_batch8"), "free_s_median": secs("free_batch8"),
            "constrained_vs_free_time": secs("constrained_batch8") / secs("free_batch8"),
            "constrained_tokens": arms["constrained_batch8"][0]["new_tokens"],
            "free_tokens": arms["free_batch8"][0]["new_tokens"],
            "constrained_schema_valid": valid(outs["constrained_batch8"][0]),
            "free_schema_valid": valid(outs["free_batch8"][0]),
        }
        print("structured", json.dumps(result["rungs"]["structured"]), flush=True)
    result["load_avg_end"] = os.getloadavg()[0]
    _save(result, args.out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("rungs", "decoder"), default="rungs")
    ap.add_argument("--n", type=int, default=8, help="prompts per comparison")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--train", type=int, default=200, help="training pairs the rungs are fitted on (rungs mode)")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="budget of the text rungs (rungs mode)")
    ap.add_argument("--rungs", default="zero-shot,few-shot,knn-few-shot,structured")
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    args.rungs = args.rungs.split(",")
    if args.mode == "rungs":
        bench_rungs(args)
    else:
        bench_decoder(args)


def bench_decoder(args: argparse.Namespace) -> None:
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

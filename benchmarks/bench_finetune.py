"""LoRA vs full fine-tuning vs feature extraction on the same data and the same time budget.

Each candidate runs in a fresh subprocess (so peak memory is its own, not the sum of what an
earlier candidate left behind), candidates are interleaved repeat by repeat (so a busy
neighbour on the shared machine slows all of them alike), and the table reports medians over
repeats (seeds). The embedding cache is pointed at an empty folder per run, so the features
rung pays for encoding like the fine-tuning rungs pay for training.

    PYTHONPATH=src python benchmarks/bench_finetune.py --task trec6 --train 1200 --budget 2 --repeats 3
    PYTHONPATH=src python benchmarks/bench_finetune.py --precision-probe   # fp32 vs bf16 autocast s/step
    PYTHONPATH=src python benchmarks/bench_finetune.py --threads-probe     # 1 vs 2 torch threads, wall and CPU s/step
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

CANDIDATES = ("features", "lora", "full-ft")


def run_one(name: str, task_name: str, n_train: int, n_eval: int, budget: float, seed: int) -> dict[str, Any]:
    """Fit one candidate in this process and measure it (called in a subprocess)."""

    from adaptladder.measure import PeakMemory, score
    from adaptladder.rungs import make_rung
    from adaptladder.task import load_task

    task = load_task(task_name).sample({"train": n_train, "validation": n_eval, "test": n_eval}, seed=0)
    tx, y = task.part("train")
    vx, vy = task.part("validation")
    sx, sy = task.part("test")
    if name == "features":
        rung = make_rung("features", heads=["logreg"], seed=seed)
    else:
        rung = make_rung(name, seed=seed, budget_minutes=budget, progress=False)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        rung.fit(tx, y, label_names=task.label_names, val_texts=vx, val_y=vy)
        fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    proba = rung.predict_proba(sx)
    pred_s = time.perf_counter() - t0
    test = score(sy, proba, task.label_names, seed=seed)
    info = rung.extra_info()
    return {
        "name": name, "seed": seed, "fit_s": fit_s, "test_macro_f1": test["macro_f1"],
        "test_accuracy": test["accuracy"], "predict_per_s": len(sx) / pred_s,
        "peak_rss_mb": mem.peak_mb, "rss_delta_mb": mem.peak_mb - mem.start_mb,
        "tokens_per_s": info.get("train_tokens_per_s"), "steps": info.get("steps"),
        "epochs": info.get("epochs_run"), "stopped_by": info.get("stopped_by"),
        "trainable_pct": info.get("trainable_pct"), "best_val_macro_f1": info.get("best_val_macro_f1"),
        "max_length": info.get("max_length"), "s_per_step": info.get("seconds_per_step"),
        "n_train": len(tx), "n_test": len(sx),
    }


def precision_probe(steps: int, repeats: int) -> list[dict[str, Any]]:
    """Seconds per full fine-tuning step of MiniLM, fp32 vs bf16 autocast, interleaved."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adaptladder.models import resolve_encoder
    from adaptladder.task import load_task

    path = resolve_encoder("minilm")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    texts, y = load_task("trec6").part("train")
    rng = np.random.default_rng(0)
    rows = []
    for r in range(repeats):
        for prec in ("fp32", "bf16"):
            times = []
            for _ in range(steps):
                idx = rng.choice(len(texts), 16, replace=False)
                batch = tok([texts[i] for i in idx], truncation=True, max_length=64, padding=True,
                            return_tensors="pt")
                t0 = time.perf_counter()
                ctx = torch.autocast("cpu", dtype=torch.bfloat16) if prec == "bf16" else _null()
                with ctx:
                    logits = model(**batch).logits
                loss = F.cross_entropy(logits.float(), torch.as_tensor(y[idx]))
                loss.backward()
                opt.step()
                opt.zero_grad()
                times.append(time.perf_counter() - t0)
            rows.append({"repeat": r, "precision": prec, "s_per_step": statistics.median(times[2:])})
    return rows


def threads_probe(repeats: int) -> list[dict[str, Any]]:
    """Wall and CPU seconds of one MiniLM training step with 1 vs 2 torch threads, interleaved."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adaptladder.models import resolve_encoder

    path = resolve_encoder("minilm")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=6)
    batch = tok(["what is the capital city of a small country in europe ?"] * 16, return_tensors="pt", padding=True)
    y = torch.zeros(16, dtype=torch.long)
    rows = []
    for r in range(repeats):
        for n in (1, 2):
            torch.set_num_threads(n)
            t0, c0 = time.perf_counter(), time.process_time()
            F.cross_entropy(model(**batch).logits, y).backward()
            rows.append({"repeat": r, "threads": n, "wall_s": time.perf_counter() - t0,
                         "cpu_s": time.process_time() - c0, "load1": os.getloadavg()[0]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="trec6")
    ap.add_argument("--train", type=int, default=1200, help="training examples (stratified sample)")
    ap.add_argument("--eval", type=int, default=400, help="validation and test examples each")
    ap.add_argument("--budget", type=float, default=2.0, help="minutes per fine-tuning rung")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--precision-probe", action="store_true")
    ap.add_argument("--threads-probe", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.task, args.train, args.eval, args.budget, args.seed)))
        return
    if args.threads_probe:
        rows = threads_probe(args.repeats)
        for n in (1, 2):
            sel = [r for r in rows if r["threads"] == n]
            print(f"{n} thread(s): median wall {statistics.median(r['wall_s'] for r in sel):.2f} s, "
                  f"CPU {statistics.median(r['cpu_s'] for r in sel):.2f} s per step (load {sel[0]['load1']:.1f})")
        return
    if args.precision_probe:
        rows = precision_probe(steps=12, repeats=args.repeats)
        for prec in ("fp32", "bf16"):
            vals = [r["s_per_step"] for r in rows if r["precision"] == prec]
            print(f"{prec}: median {statistics.median(vals):.3f} s/step over {len(vals)} repeats {vals}")
        fp32 = statistics.median(r["s_per_step"] for r in rows if r["precision"] == "fp32")
        bf16 = statistics.median(r["s_per_step"] for r in rows if r["precision"] == "bf16")
        print(f"bf16 / fp32 time ratio: {bf16 / fp32:.2f}")
        return

    results: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for name in args.candidates.split(","):
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, ADAPTLADDER_CACHE=cache, HF_HUB_OFFLINE="1")
                cmd = [sys.executable, __file__, "--one", name, "--seed", str(rep), "--task", args.task,
                       "--train", str(args.train), "--eval", str(args.eval), "--budget", str(args.budget)]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(out.stdout[-2000:], out.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{name} failed")
            res = json.loads(line[7:])
            results.append(res)
            print(json.dumps(res), flush=True)

    print(f"\n{args.task}: {results[0]['n_train']} train / {results[0]['n_test']} test, budget {args.budget} min "
          f"per fine-tuning rung, medians of {args.repeats} seeds (shared 2-core CPU)\n")
    print("| rung | test macro-F1 | fit s | train tokens/s | s/step | steps (epochs) | stopped by | "
          "peak RSS MB (delta) | trainable % | predict texts/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def med(rows: list[dict[str, Any]], key: str) -> float | None:
        vals = [r[key] for r in rows if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for name in args.candidates.split(","):
        rows = [r for r in results if r["name"] == name]
        f1s = [round(r["test_macro_f1"], 3) for r in rows]
        stops = ",".join(sorted({str(r["stopped_by"]) for r in rows if r["stopped_by"]})) or "-"
        print(f"| {name} | {fmt(med(rows, 'test_macro_f1'), '.3f')} {f1s} | {fmt(med(rows, 'fit_s'), '.0f')} | "
              f"{fmt(med(rows, 'tokens_per_s'), '.0f')} | {fmt(med(rows, 's_per_step'), '.2f')} | "
              f"{fmt(med(rows, 'steps'), '.0f')} ({fmt(med(rows, 'epochs'), '.1f')}) | {stops} | "
              f"{fmt(med(rows, 'peak_rss_mb'), '.0f')} ({fmt(med(rows, 'rss_delta_mb'), '.0f')}) | "
              f"{fmt(med(rows, 'trainable_pct'), '.2f')} | {fmt(med(rows, 'predict_per_s'), '.0f')} |")


if __name__ == "__main__":
    main()

"""What each prompting choice is worth: prompt format x answer words (verbalizer) x calibration.

A prompting rung chooses these on stratified validation subsets (every candidate screened on
``choice_screen`` = 60 examples, the two best format x verbalizer pairs compared on
``calibration_val_max`` = 180). This script scores *every* candidate on the ladder's evaluation
samples (the same stratified 300-example validation and test samples ``adaptladder run``
uses, seed 13), so one can see how much each choice helps and whether the small-subset choice
was a good one: "regret" is the macro-F1 of the best candidate minus the chosen one's.
Test scores are for reading only; nothing here is chosen on them.

    PYTHONPATH=src python benchmarks/prompt_choices.py --data sms-spam --rung zero-shot
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="sms-spam")
    ap.add_argument("--rung", default="zero-shot", choices=["zero-shot", "few-shot", "knn-few-shot"])
    ap.add_argument("--n", type=int, default=300, help="evaluation sample per split (the ladder's eval cap)")
    ap.add_argument("--seed", type=int, default=13, help="the ladder's default seed")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    from sklearn.metrics import f1_score

    from adaptladder.rungs import make_rung
    from adaptladder.task import load_builtin, stratified_subset

    warnings.simplefilter("ignore")
    task = load_builtin(args.data, seed=args.seed)
    tx, ty = task.part("train")
    parts = {}
    for part in ("validation", "test"):
        x, y = task.part(part)
        pos = stratified_subset(y, min(args.n, len(y)), args.seed)
        parts[part] = ([x[i] for i in pos], y[pos])
    vx, vy = task.part("validation")
    t0 = time.perf_counter()
    from adaptladder.ladder import RunConfig, rung_params_for

    params = rung_params_for(args.rung, RunConfig(data=args.data, seed=args.seed))  # as `adaptladder run` does
    rung = make_rung(args.rung, **params).fit(tx, ty, label_names=task.label_names, val_texts=vx, val_y=vy)
    fit_s = time.perf_counter() - t0
    chosen = (rung.prompt_format_, dict(rung.verbalizer_), bool(rung.calibrate_))
    labels = list(range(len(task.label_names)))
    verbs = rung._verbalizer_candidates()
    pairs = [(vi, fmt) for vi in range(len(verbs)) for fmt in rung._formats()]
    memos: dict = {}  # the rung's own candidate scoring, on every pair and the whole samples
    scores = {p: rung._score_candidates(pairs, verbs, [False, True], x, y, np.arange(len(y)), memos)
              for p, (x, y) in parts.items()}
    rows = []
    for (vi, fmt), cal in scores["validation"]:
        words = verbs[vi][1]
        rows.append({"format": fmt, "verbalizer": {k: v for k, v in words.items() if k != v} or "label names",
                     "calibrated": cal, "chosen": (fmt, words, cal) == chosen,
                     **{f"{p}_macro_f1": round(scores[p][((vi, fmt), cal)], 4) for p in parts}})
    ty_s = parts["test"][1]
    floor = float(f1_score(ty_s, np.full(len(ty_s), np.bincount(ty).argmax()), average="macro", labels=labels,
                           zero_division=0))
    best_test = max(r["test_macro_f1"] for r in rows)
    chosen_test = next(r["test_macro_f1"] for r in rows if r["chosen"])
    regret_val = max(r["validation_macro_f1"] for r in rows) - next(r["validation_macro_f1"] for r in rows
                                                                    if r["chosen"])
    out = {"data": args.data, "rung": args.rung, "n_eval": args.n, "seed": args.seed,
           "selection_subset": rung.calibration_scores_.get("n_validation"), "fit_seconds": round(fit_s, 1),
           "majority_test_macro_f1": round(floor, 4), "chosen_test_macro_f1": chosen_test,
           "regret_validation": round(regret_val, 4),
           "regret_test": round(best_test - chosen_test, 4), "candidates": rows,
           "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")}
    print(f"{args.data} {args.rung}: majority floor on the test sample {floor:.3f}; chosen on "
          f"{out['selection_subset']} validation examples (fit {fit_s:.0f} s)")
    print(f"{'format':7} {'verbalizer':40} {'cal':5} {'val':>6} {'test':>6}")
    for r in rows:
        print(f"{r['format']:7} {json.dumps(r['verbalizer'])[:40]:40} {r['calibrated']!s:5} "
              f"{r['validation_macro_f1']:6.3f} {r['test_macro_f1']:6.3f}{'  <- chosen' if r['chosen'] else ''}")
    print(f"regret (best candidate - chosen): validation {out['regret_validation']:+.3f}, "
          f"test {out['regret_test']:+.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

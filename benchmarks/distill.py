"""What distillation buys: a teacher vs. the student distilled from it, timed side by side.

Fits the teacher on a few gold labels, lets the distill rung label the rest of the training
texts with it and train the student, then times teacher and student *interleaved* on the same
validation texts (embedding cache off), several repeats, medians. Also prints both validation
scores and the student trained on the gold labels alone.

    PYTHONPATH=src python benchmarks/distill.py --teacher features --student tfidf --gold 300

The machine is shared by other jobs: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from adaptladder.encode import cache_disabled
from adaptladder.rungs import load_rung, make_rung
from adaptladder.task import load_builtin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="trec6")
    ap.add_argument("--teacher", default="features")
    ap.add_argument("--teacher-params", default="{}", help="JSON")
    ap.add_argument("--student", default="tfidf")
    ap.add_argument("--student-params", default="{}", help="JSON")
    ap.add_argument("--gold", default="300", help="gold training labels kept (count, fraction or 'all')")
    ap.add_argument("--max-unlabelled", type=int, default=4000)
    ap.add_argument("--probe", type=int, default=128, help="validation texts timed")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    task = load_builtin(args.data)
    tx, ty = task.part("train")
    vx, vy = task.part("validation")
    gold = None if args.gold == "all" else args.gold
    with tempfile.TemporaryDirectory() as tmp:
        # the teacher, fitted on the same gold subset the distill rung keeps (same seed)
        from adaptladder.rungs.distill import _gold_subset

        idx = _gold_subset(ty, gold, 13)
        t0 = time.perf_counter()
        teacher = make_rung(args.teacher, **json.loads(args.teacher_params)).fit(
            [tx[i] for i in idx], ty[idx], label_names=task.label_names, val_texts=vx, val_y=vy)
        teacher_fit = time.perf_counter() - t0
        teacher.save(Path(tmp) / "teacher")
        distill = make_rung("distill", teacher_path=str(Path(tmp) / "teacher"), student=args.student,
                            student_params=json.loads(args.student_params), gold_labels=gold,
                            max_unlabelled=args.max_unlabelled, seed=13)
        t0 = time.perf_counter()
        distill.fit(tx, ty, label_names=task.label_names, val_texts=vx, val_y=vy)
        distill_fit = time.perf_counter() - t0
        distill.save(Path(tmp) / "distill")
        student = load_rung(Path(tmp) / "distill")
        teacher = load_rung(Path(tmp) / "teacher")

    probe = vx[: args.probe]
    times: dict[str, list[float]] = {"teacher": [], "student": []}
    with cache_disabled():
        for rung in (teacher, student):
            rung.predict_proba(probe[:2])  # warm-up
        for _ in range(args.repeats):  # interleaved, so load changes hit both alike
            for who, rung in (("teacher", teacher), ("student", student)):
                t0 = time.perf_counter()
                for i in range(0, len(probe), args.batch):
                    rung.predict_proba(probe[i:i + args.batch])
                times[who].append((time.perf_counter() - t0) / len(probe) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    info = student.extra_info()
    lab = info["labelling"]
    out = {
        "data": args.data, "teacher": args.teacher, "student": args.student, "gold_labels": len(idx),
        "teacher_fit_s": round(teacher_fit, 1), "distill_fit_s": round(distill_fit, 1),
        "teacher_labels": {k: lab[k] for k in ("labelled", "kept", "used_for_student", "throughput_per_s")},
        "teacher_label_accuracy": lab["accuracy_of_used_labels"],
        "val_macro_f1": {"teacher": info["teacher"]["validation"]["macro_f1"],
                         "student": info["student"]["validation"]["macro_f1"],
                         "student_gold_only": (info["gold_only_student"] or {}).get("validation", {}).get("macro_f1")},
        "val_n": info["student"]["validation"]["n"],
        "ms_per_example_median": {k: round(v, 4) for k, v in med.items()},
        "ms_per_example_all": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "speedup_student_vs_teacher": round(med["teacher"] / med["student"], 1),
        "cost_per_1k_usd": {"teacher": info["teacher"]["cost_per_1k_usd"],
                            "student": info["student"]["cost_per_1k_usd"]},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""How far the cross-validated decision estimate of tfidf sits from its test score (optimism).

Runs ``majority,tfidf`` with ``--sample N`` per split on built-in sets over several seeds and prints,
per run, validation / cross-validated / test macro-F1 and the CV - test gap. Run it with the old
and the new code on the path to compare (see BENCHMARKS.md "Cross-validation honesty"):

    PYTHONPATH=<tree>/src python benchmarks/cv_honesty.py --data news20,trec6 --seeds 13,14,15 --sample 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

import adaptladder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="news20,trec6")
    ap.add_argument("--seeds", default="13,14,15")
    ap.add_argument("--sample", type=int, default=200)
    args = ap.parse_args()
    rows = []
    for data in args.data.split(","):
        for seed in map(int, args.seeds.split(",")):
            with tempfile.TemporaryDirectory() as d:
                res = adaptladder.run(data=data, sample=args.sample, rungs=["majority", "tfidf"], seed=seed,
                                      out=f"{d}/r", no_audit=True, run_all=True)
            tf = res.result("tfidf")
            row = {"data": data, "seed": seed, "val": tf["validation"]["macro_f1"], "cv": tf["cv"]["macro_f1"],
                   "test": tf["test"]["macro_f1"]}
            row["cv_minus_test"] = row["cv"] - row["test"]
            row["val_minus_test"] = row["val"] - row["test"]
            rows.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    for data in args.data.split(","):
        sel = [r for r in rows if r["data"] == data]
        print(f"{data}: median cv-test {statistics.median(r['cv_minus_test'] for r in sel):+.3f}, "
              f"median val-test {statistics.median(r['val_minus_test'] for r in sel):+.3f} over {len(sel)} seeds")


if __name__ == "__main__":
    main()

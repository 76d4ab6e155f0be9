"""Batch prediction at scale: ``predict`` locally vs ``predict --executor ray`` on a 1,000,000-row file.

The file is generated from a built-in set (sms-spam texts repeated and shuffled with a seed, an
``id`` column in file order). The winner is a cheap rung (tfidf, fitted once on sms-spam). Each
repeat runs, interleaved: the local path (``adaptladder.winner.predict_file``) and the Ray path
(``adaptladder.ray_data.predict_file_ray`` on a local Ray instance started once, with
``--cpus`` CPUs), both end to end (read the file, predict, write the output file). The Ray output
must equal the local one: the label column on every row (and the whole file's bytes, recorded).

``python benchmarks/bench_ray_predict.py [--rows 1000000] [--repeats 3] [--cpus 2] [--out results/ray_predict.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def make_file(path: Path, rows: int, seed: int = 0) -> int:
    from adaptladder.task import load_task

    task = load_task("sms-spam", seed=seed)
    texts = np.asarray(task.texts, dtype=object)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(texts), size=rows)
    pd.DataFrame({"id": np.arange(rows), "text": texts[pick]}).to_csv(path, index=False)
    return len(texts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    import adaptladder
    from adaptladder.ray_data import predict_file_ray
    from adaptladder.winner import predict_file

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-ray-predict-"))
    work.mkdir(parents=True, exist_ok=True)
    run_dir = work / "run"
    if not (run_dir / "results.json").is_file():
        adaptladder.run(data="sms-spam", rungs=["tfidf"], no_audit=True, cv_folds=0, out=str(run_dir))
    big = work / f"sms-{args.rows}.csv"
    t0 = time.perf_counter()
    distinct = make_file(big, args.rows)
    gen_s = time.perf_counter() - t0
    print(f"generated {big} ({args.rows:,} rows from {distinct:,} sms-spam texts) in {gen_s:.1f}s", flush=True)

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    ray_start_s = time.perf_counter() - t0
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    same_labels = same_bytes = None
    for rep in range(args.repeats):
        for kind in ("local", "ray"):
            out = work / f"{kind}.csv"
            load = _load_avg()
            t0 = time.perf_counter()
            if kind == "local":
                info = predict_file(run_dir, big, out, overwrite=True)
            else:
                info = predict_file_ray(run_dir, big, out, overwrite=True)
            wall = time.perf_counter() - t0
            rec = {"wall_s": round(wall, 2), "predict_s": round(info["seconds"], 2),
                   "rows_per_s": round(args.rows / wall, 1),
                   "predict_rows_per_s": round(args.rows / info["seconds"], 1),
                   "load_avg_before": load}
            runs[kind].append(rec)
            print(f"repeat {rep + 1} {kind}: {rec}", flush=True)
        a = pd.read_csv(work / "local.csv", usecols=["id", "label"])
        b = pd.read_csv(work / "ray.csv", usecols=["id", "label"])
        same_labels = bool(a["label"].equals(b["label"]) and b["id"].tolist() == list(range(args.rows)))
        same_bytes = (work / "local.csv").read_bytes() == (work / "ray.csv").read_bytes()
        print(f"labels equal on all {args.rows:,} rows, in order: {same_labels}; files identical: {same_bytes}",
              flush=True)
        if not same_labels:
            raise SystemExit("the Ray path's labels differ from the local path's")

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    summary = {kind: {"median_wall_s": med(kind, "wall_s"), "median_rows_per_s": med(kind, "rows_per_s"),
                      "median_predict_rows_per_s": med(kind, "predict_rows_per_s")} for kind in runs}
    summary["ray_over_local_throughput"] = round(summary["ray"]["median_rows_per_s"]
                                                 / summary["local"]["median_rows_per_s"], 3)
    doc = {"rows": args.rows, "distinct_texts": distinct, "rung": "tfidf", "cpus_for_ray": args.cpus,
           "repeats": args.repeats, "ray_start_s": round(ray_start_s, 2), "generate_s": round(gen_s, 1),
           "labels_equal_all_rows": same_labels, "files_identical": same_bytes, "runs": runs, "summary": summary,
           "machine": {"cpus": os.cpu_count(), "load_avg_end": _load_avg()}}
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=2))
    ray.shutdown()


if __name__ == "__main__":
    main()

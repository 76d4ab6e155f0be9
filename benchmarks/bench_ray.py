"""The Ray executor's overhead: the same cheap ladder with and without ``--executor ray``.

Three ways to run ``adaptladder run DATA --rungs majority,tfidf`` (the CLI, one process per run,
as a user runs it), interleaved and repeated, medians reported:

* ``local``: the default executor, rungs one after the other in the process;
* ``ray-local``: ``--executor ray`` with no address: each run starts (and stops) a local Ray
  instance sized to the machine; the rungs are two Ray tasks running concurrently;
* ``ray-cluster``: ``--executor ray --ray-address`` to a two-node local cluster
  (``ray.cluster_utils.Cluster``, 1 CPU per node, separate temp dirs) started once before the runs:
  the per-run cost without Ray's start-up.

Every Ray run must give the local run's recommendation and every measured number that is not a
time (validation/test scores, CIs, predictions, cross-validation): asserted here.

``python benchmarks/bench_ray.py [--data sms-spam] [--sample 500] [--repeats 3] [--out results/ray.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _measured(res: dict[str, Any]) -> dict[str, Any]:
    out = {part: res.get(part) for part in ("validation", "test")}
    out["cv"] = {k: v for k, v in (res.get("cv") or {}).items() if k != "seconds"}
    out["status"] = res.get("status")
    return out


def _decision(doc: dict[str, Any]) -> dict[str, Any]:
    rec = doc["recommendation"]
    return {k: rec.get(k) for k in ("rung", "rule", "bar_met", "reasons", "estimates", "stopped_at", "not_run")}


def run_cli(args: list[str], out: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "adaptladder", "run", *args, "--out", str(out), "--json"],
                          capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, json.loads((out / "results.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="sms-spam")
    ap.add_argument("--sample", type=int, default=500)
    ap.add_argument("--rungs", default="majority,tfidf")
    ap.add_argument("--bar", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-cluster", action="store_true", help="skip the two-node cluster runs")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="albench", dir="/tmp"))
    (work / "ray").mkdir()
    env = dict(os.environ, RAY_TMPDIR=str(work), ADAPTLADDER_PROGRESS="lines",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p))
    os.environ.update(RAY_TMPDIR=str(work))
    base = [a.data, "--sample", str(a.sample), "--rungs", a.rungs, "--bar", str(a.bar), "--no-audit"]
    modes: dict[str, list[str]] = {"local": [], "ray-local": ["--executor", "ray"]}
    cluster = None
    if not a.no_cluster:
        from ray.cluster_utils import Cluster

        t0 = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": str(work / "head"),
                                                                "include_dashboard": False})
        cluster.add_node(num_cpus=1, temp_dir=str(work / "worker"))
        cluster.wait_for_nodes(timeout=120)
        print(f"two-node cluster up in {time.perf_counter() - t0:.1f} s at {cluster.address}", flush=True)
        modes["ray-cluster"] = ["--executor", "ray", "--ray-address", cluster.address]
    walls: dict[str, list[float]] = {m: [] for m in modes}
    docs: dict[str, dict[str, Any]] = {}
    try:
        for rep in range(a.repeats):
            for mode, extra in modes.items():  # interleaved: load drifts hit every mode alike
                wall, doc = run_cli(base + extra, work / f"run-{mode}", env)
                walls[mode].append(wall)
                docs[mode] = doc
                print(f"repeat {rep + 1} {mode:12s} {wall:7.1f} s  -> {doc['recommendation']['rung']}", flush=True)
                ref = docs["local"]
                assert _decision(doc) == _decision(ref), f"{mode}: another recommendation than local"
                assert [r["name"] for r in doc["rungs"]] == [r["name"] for r in ref["rungs"]]
                for x, y in zip(doc["rungs"], ref["rungs"], strict=True):
                    assert _measured(x) == _measured(y), f"{mode}: {x['name']} measured differently from local"
    finally:
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    med = {m: statistics.median(w) for m, w in walls.items()}
    print(f"\n{a.data} --sample {a.sample} --rungs {a.rungs} --bar {a.bar}, {a.repeats} runs each, "
          f"load average {os.getloadavg()[0]:.1f}; identical recommendation and measurements: yes")
    print("| executor | median wall s | runs (s) | ratio to local |")
    print("|---|---|---|---|")
    for m in modes:
        print(f"| {m} | {med[m]:.1f} | {', '.join(f'{w:.1f}' for w in walls[m])} | {med[m] / med['local']:.2f}x |")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"args": vars(a), "walls": walls, "median": med,
                                           "ratio_to_local": {m: med[m] / med["local"] for m in modes},
                                           "identical": True}, indent=2))


if __name__ == "__main__":
    main()

"""SetFit against its neighbours on the ladder, on the four built-in data sets.

Runs ``adaptladder run DATA --sample N --rungs majority,tfidf,features,setfit[,lora]
--budget-minutes B --no-audit`` through the API for each built-in set and prints one markdown
table (validation and test macro-F1 with the test 95% CI, fit seconds). One run per set: a
quality comparison on the same split and seed, not a timing benchmark.

    PYTHONPATH=src python benchmarks/setfit_ladder.py --sample 300 --budget-minutes 3 --out /tmp/setfit-bench
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DATASETS = ("sms-spam", "trec6", "rotten-tomatoes", "news20")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sample", type=int, default=300)
    ap.add_argument("--budget-minutes", type=float, default=3.0)
    ap.add_argument("--rungs", default="majority,tfidf,features,setfit")
    ap.add_argument("--data", default=",".join(DATASETS))
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default="/tmp/setfit-bench")
    args = ap.parse_args()

    import adaptladder
    from adaptladder.config import RunConfig

    rows = []
    for data in args.data.split(","):
        t0 = time.perf_counter()
        cfg = RunConfig(data=data, sample=args.sample, rungs=args.rungs.split(","), budget_minutes=args.budget_minutes,
                        no_audit=True, run_all=True, seed=args.seed, out=str(Path(args.out) / data))
        res = adaptladder.run(cfg)
        for r in res.results:
            row = {"data": data, "rung": r["name"], "status": r.get("status")}
            if r.get("status") == "done":
                row.update(val=r["validation"]["macro_f1"], test=r["test"]["macro_f1"],
                           test_ci=r["test"]["macro_f1_ci"], fit_s=r["fit_seconds"],
                           extra={k: r["extra"].get(k) for k in ("contrastive_steps", "stopped_by") if k in r["extra"]})
            else:
                row["reason"] = r.get("reason")
            rows.append(row)
        print(f"{data}: {time.perf_counter() - t0:.0f} s", flush=True)
    print("\n| data | rung | val macro-F1 | test macro-F1 [95% CI] | fit s |\n|---|---|---|---|---|")
    for r in rows:
        if r["status"] != "done":
            print(f"| {r['data']} | {r['rung']} | {r['status']}: {r.get('reason')} | | |")
            continue
        lo, hi = r["test_ci"]
        print(f"| {r['data']} | {r['rung']} | {r['val']:.3f} | {r['test']:.3f} [{lo:.3f}, {hi:.3f}] | "
              f"{r['fit_s']:.0f} |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()

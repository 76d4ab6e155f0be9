"""Decision quality: does the recommendation survive noise? Old rule vs new rule vs best-on-validation.

For each built-in classification set x seed, the cheap ladder (majority, tfidf, features) runs once
with ``run_all`` (every rung measured; cross-validated estimates on), on ``--sample`` rows per split
to stay feasible on a shared 2-core machine. Each rule is then applied offline to the same
measurements at two bars per set, as the ladder would (it stops at the first rung that meets the
bar, so costlier rungs are not available to the rule):

* ``old``: the rule before #15 (validation score >= bar, first in cost order; with none, the
  cheapest rung not significantly worse than the best on validation; unadjusted tests);
* ``new``: :func:`adaptladder.decide.recommend` (decision estimates: CV for these rungs; margin;
  paired Holm-corrected comparisons);
* ``best-val``: always the rung with the best validation score (no bar, no test).

Bars per set, from validation medians across seeds (never test): ``low`` = tfidf's median
estimate minus 0.01 rounded down to 0.01 (the floor passes), ``high`` = half-way between tfidf's
median and the best rung's median (or tfidf's median + 0.003 when they are within 0.01: a bar the
floor narrowly misses).

Counted per rule: regret events (the recommended rung is significantly worse on test, paired
bootstrap p < 0.05 unadjusted, than a cheaper rung that ran), how many seeds agree with the most
common recommendation per (set, bar), and the mean test score and cost per 1,000 predictions of
the recommendation. Usage::

    ADAPTLADDER_CACHE=/work/cache python benchmarks/decision.py --sample 1000 --seeds 5 --out /tmp/decision/bench
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import adaptladder
from adaptladder.compare import compare_pair
from adaptladder.decide import DEFAULT_MARGIN, decision_part, meets_bar, recommend
from adaptladder.ladder import RunConfig

SETS = ("sms-spam", "trec6", "rotten-tomatoes", "news20")
RUNGS = ["majority", "tfidf", "features"]
METRIC = "macro_f1"
# kept small for a shared 2-core machine: one pinned encoder precision (no calibration pass), 128 tokens,
# and speed measured on 32 texts and 5 single predictions instead of 256 and 20-50 (cost per 1,000 predictions
# comes from that throughput: rough, but the same for every rule compared)
FEATURES_PRECISION = "int8"
FEATURES_MAX_LENGTH = 128


def _quick_speed() -> None:
    import adaptladder.ladder as L

    orig = L.measure_speed
    L.measure_speed = lambda *a, **kw: orig(*a, **dict(kw, batch=32, n_single=5))


def measure(name: str, seed: int, sample: int, out: Path, cached_only: bool = False) -> list[dict[str, Any]]:
    cache = out / f"{name}-seed{seed}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    if cached_only:
        raise FileNotFoundError(f"{cache} (not measured yet)")
    cfg = RunConfig(data=name, rungs=RUNGS, run_all=True, no_audit=True, sample=sample, seed=seed,
                    out=str(out / "runs" / f"{name}-seed{seed}"), metric=METRIC,
                    rung_params={"features": {"precision": FEATURES_PRECISION, "max_length": FEATURES_MAX_LENGTH}})
    t0 = time.perf_counter()
    res = adaptladder.run(cfg)
    print(f"{name} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    results = [r for r in res.results if r.get("status") == "done"]
    failed = [f"{r['name']}: {r.get('reason')}" for r in res.results if r.get("status") != "done"]
    if failed:
        raise RuntimeError("; ".join(failed))
    cache.write_text(json.dumps(results))
    return results


def old_rule(results: list[dict[str, Any]], bar: float, seed: int) -> str:
    """The rule before #15: validation only, no margin, no multiple-comparison correction."""
    for r in results:
        if r["validation"][METRIC] >= bar:
            return r["name"]
    best = max(results, key=lambda r: r["validation"][METRIC])
    for r in results:
        if r is best:
            return r["name"]
        c = compare_pair(r, best, "validation", METRIC, seed=seed)
        if c is not None and not (c["p_value"] < 0.05 and c["diff"] > 0):
            return r["name"]
    return best["name"]


def climbed(results: list[dict[str, Any]], cfg: Any, old: bool) -> list[dict[str, Any]]:
    """The rungs the ladder would have run: up to the first that meets the bar under that rule."""
    out = []
    for r in results:
        out.append(r)
        ok = r["validation"][METRIC] >= cfg.bar if old else meets_bar(r, cfg)
        if ok:
            break
    return out


def regret(results: list[dict[str, Any]], chosen: str, seed: int) -> str | None:
    names = [r["name"] for r in results]
    pos = names.index(chosen)
    for cheaper in results[:pos]:
        c = compare_pair(cheaper, results[pos], "test", METRIC, seed=seed)
        if c is not None and c["p_value"] < 0.05 and c["diff"] < 0:
            return f"{chosen} worse than {cheaper['name']} on test by {c['diff']:+.3f} (p={c['p_value']:.3g})"
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--sample", type=int, default=1000)
    ap.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
    ap.add_argument("--out", default="/tmp/decision/bench")
    ap.add_argument("--cached-only", action="store_true", help="summarise the runs measured so far, run nothing")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _quick_speed()
    seeds = list(range(13, 13 + args.seeds))
    rows: list[dict[str, Any]] = []
    se_rows: list[tuple[str, str, float, float, int]] = []
    for name in args.sets.split(","):
        per_seed = {}
        for seed in seeds:
            try:
                per_seed[seed] = measure(name, seed, args.sample, out, args.cached_only)
            except Exception as e:  # one set failing must not lose the others
                print(f"{name} seed {seed}: FAILED {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        if not per_seed:
            continue

        def med(rung: str, part: str | None = None, _ps: dict = per_seed) -> float:
            vals = [next(r for r in rs if r["name"] == rung)[part or decision_part(next(
                r for r in rs if r["name"] == rung))][METRIC] for rs in _ps.values()
                if any(r["name"] == rung for r in rs)]
            return statistics.median(vals)

        floor = med("tfidf")
        best = max(med(r) for r in RUNGS if all(any(x["name"] == r for x in rs) for rs in per_seed.values()))
        low = math.floor((floor - 0.01) * 100) / 100
        high = round((floor + best) / 2, 3) if best - floor > 0.01 else round(floor + 0.003, 3)
        for rung in ("tfidf", "features"):
            for rs in per_seed.values():
                r = next((x for x in rs if x["name"] == rung), None)
                if r:
                    for part in ("validation", "cv"):
                        if part in r:
                            lo, hi = r[part][METRIC + "_ci"]
                            se_rows.append((name, f"{rung}/{part}", (hi - lo) / 3.92, r[part][METRIC], r[part]["n"]))
        for label, bar in (("low", low), ("high", high)):
            for seed, results in per_seed.items():
                cfg = RunConfig(bar=bar, metric=METRIC, margin=args.margin, seed=seed)
                ran_old = climbed(results, cfg, old=True)
                ran_new = climbed(results, cfg, old=False)
                recs = {"old": (old_rule(ran_old, bar, seed), ran_old),
                        "new": (recommend(ran_new, cfg)["rung"], ran_new),
                        "best-val": (max(results, key=lambda r: r["validation"][METRIC])["name"], results)}
                for rule, (chosen, _ran) in recs.items():
                    r = next(x for x in results if x["name"] == chosen)
                    rows.append({"set": name, "bar_kind": label, "bar": bar, "seed": seed, "rule": rule,
                                 "rung": chosen, "test": r["test"][METRIC], "cost": r["cost_per_1k_usd"],
                                 "regret": regret(results, chosen, seed)})
    (out / ("rows-" + args.sets.replace(",", "-") + ".json")).write_text(json.dumps(rows, indent=1))
    print_summary(rows, se_rows)


def print_summary(rows: list[dict[str, Any]], se_rows: list[tuple[str, str, float, float, int]]) -> None:
    print("\n| set | bar | rule | recommendations (5 seeds) | seeds agreeing | regret events | mean test macro-F1 "
          "| mean $/1k |")
    print("|---|---|---|---|---|---|---|---|")
    totals: dict[str, dict[str, float]] = {}
    groups: dict[tuple[str, str, float, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["bar_kind"], r["bar"], r["rule"]), []).append(r)
    for (name, kind, bar, rule), g in groups.items():
        cnt = Counter(x["rung"] for x in g)
        agree = cnt.most_common(1)[0][1]
        reg = sum(1 for x in g if x["regret"])
        t = totals.setdefault(rule, {"n": 0, "agree": 0, "regret": 0, "test": 0.0, "cost": 0.0})
        t["n"] += len(g)
        t["agree"] += agree
        t["regret"] += reg
        t["test"] += sum(x["test"] for x in g)
        t["cost"] += sum(x["cost"] for x in g)
        recs = ", ".join(f"{k} x{v}" for k, v in cnt.most_common())
        print(f"| {name} | {kind} {bar:.3f} | {rule} | {recs} | {agree}/{len(g)} | {reg} | "
              f"{statistics.mean(x['test'] for x in g):.3f} | {statistics.mean(x['cost'] for x in g):.2e} |")
    print("\n| rule | decisions | seeds agreeing with the mode | regret events | mean test macro-F1 | mean $/1k |")
    print("|---|---|---|---|---|---|")
    for rule, t in totals.items():
        print(f"| {rule} | {t['n']:.0f} | {t['agree'] / t['n']:.0%} | {t['regret']:.0f} | {t['test'] / t['n']:.3f} | "
              f"{t['cost'] / t['n']:.2e} |")
    for r in rows:
        if r["regret"]:
            print(f"regret: {r['set']} bar {r['bar_kind']} {r['bar']} seed {r['seed']} {r['rule']}: {r['regret']}")
    if se_rows:
        print("\nstandard error of the estimate (95% CI width / 3.92), median per set and kind:")
        by: dict[tuple[str, str], list[float]] = {}
        ns: dict[tuple[str, str], int] = {}
        for name, kind, se, _, n in se_rows:
            by.setdefault((name, kind), []).append(se)
            ns[(name, kind)] = n
        for (name, kind), v in sorted(by.items()):
            print(f"  {name} {kind}: SE {statistics.median(v):.4f} (n={ns[(name, kind)]})")


if __name__ == "__main__":
    main()

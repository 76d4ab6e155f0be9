"""Sweeps: ``run --sweep RUNG.KEY=v1,v2,...`` searches a rung's settings on the VALIDATION split.

Every combination of the swept values (a grid, in the order given) is a trial: the rung is
fitted on train with those settings and scored on validation with the run's metric (the test
split is never looked at). The best trial's settings (ties: the first in grid order) are what
the ladder then uses for the rung: its fitted model is the rung's model, measured like any
other rung. The rung's record carries ``sweep``: the trials with their settings, validation
score, fit time and which one was chosen.

Executors: ``local`` runs the trials one after another in this process; ``ray`` runs them as a
Ray Tune grid (one CPU per trial), with the ASHA scheduler stopping weak trials early for the
fine-tuning rungs, whose training loop reports its validation macro-F1 at each evaluation.

Budget: the rung's time budget (its ``budget_minutes`` or ``--budget-minutes``; for the
fine-tuning rungs without one, their 10-minute default) is split evenly across the trials: a
rung that trains to a budget gets ``budget / trials`` minutes per trial, and the local
executor starts no further trial once the whole budget is spent (those are listed as not run).
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from adaptladder.errors import AdaptError

Spec = dict[str, list[Any]]


# ------------------------------------------------------------------ parsing and checking
def _split_values(raw: str) -> list[str]:
    """``0.1,1,[a,b]`` -> ``["0.1", "1", "[a,b]"]``: commas inside brackets or braces stay."""
    out, depth, cur = [], 0, ""
    for ch in raw:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out]


def parse_sweep(values: Sequence[str] | None) -> dict[str, Spec]:
    """``--sweep tfidf.C=0.1,1,10 --sweep tfidf.ngram_max=1,2`` -> ``{"tfidf": {"C": [0.1, 1, 10], ...}}``.

    Values are parsed as YAML, like ``--set`` values. A malformed item, an empty value or the
    same RUNG.KEY twice is a one-line error.
    """
    import yaml

    out: dict[str, Spec] = {}
    for item in values or []:
        key, eq, raw = item.partition("=")
        rung, dot, param = key.strip().partition(".")
        parts = _split_values(raw) if eq else []
        if not eq or not dot or not rung or not param or not parts or any(p == "" for p in parts):
            raise AdaptError(f"--sweep {item!r} is not of the form RUNG.KEY=V1,V2,... "
                             "(e.g. --sweep tfidf.C=0.1,1,10).")
        if param in out.get(rung, {}):
            raise AdaptError(f"--sweep {rung}.{param} is given twice; give all its values in one --sweep.")
        parsed: list[Any] = []
        for p in parts:
            try:
                v = yaml.safe_load(p)
            except yaml.YAMLError:
                v = p
            if v not in parsed:
                parsed.append(v)
        out.setdefault(rung, {})[param] = parsed
    return out


def grid(spec: Spec) -> list[dict[str, Any]]:
    """Every combination of the swept values, the first key varying slowest (the order given)."""
    keys = list(spec)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(spec[k] for k in keys))]


def check_sweep(sweep: dict[str, Spec], order: Sequence[str],
                params_for: Callable[[str, dict[str, Any]], dict[str, Any]]) -> None:
    """Before any work: every swept rung is climbed in this run, every key is one of its settings,
    every value is valid for it (the settings are built for each combination)."""
    from adaptladder.rungs import RUNGS, get_rung_class

    for rung, spec in sweep.items():
        if rung not in RUNGS:
            raise AdaptError(f"--sweep {rung}.…: unknown rung {rung!r}; choose from {', '.join(RUNGS)}.")
        if rung not in order:
            raise AdaptError(f"--sweep {rung}.…: the {rung} rung is not climbed in this run; add it to --rungs "
                             "or drop the sweep.")
        declared = [f.name for f in fields(get_rung_class(rung).Settings)]
        for key, values in spec.items():
            if key not in declared:
                raise AdaptError(f"--sweep {rung}.{key}: {key!r} is not a setting of the {rung} rung; accepted: "
                                 f"{', '.join(declared) or 'none'} (see `adaptladder rungs`).")
            if not isinstance(values, list) or not values:
                raise AdaptError(f"--sweep {rung}.{key}: give at least one value (e.g. {rung}.{key}=V1,V2).")
        for combo in grid(spec):
            try:
                params_for(rung, combo)
            except AdaptError as e:
                shown = ", ".join(f"{k}={v!r}" for k, v in combo.items())
                raise AdaptError(f"--sweep {rung} ({shown}): {e}") from None


def spec_record(spec: Spec, metric: str) -> dict[str, Any]:
    """What identifies a sweep for resume: a finished swept rung is reused only with the same one."""
    return {"spec": {k: list(v) for k, v in spec.items()}, "metric": metric, "selected_on": "validation"}


# ------------------------------------------------------------------ running
def _val_score(rung: Any, texts: list[str], y: np.ndarray, k: int, metric: str) -> float:
    from adaptladder.measure import fast_macro_f1

    pred = np.asarray(rung.predict_proba(texts)).argmax(axis=1)
    if metric == "accuracy":
        return float((pred == y).mean())
    return float(fast_macro_f1(np.asarray(y), pred, k))


def _budget_minutes(cls: type, params: dict[str, Any], budget_s: float | None) -> float | None:
    """The rung's whole budget in minutes: its own/``--budget-minutes``, else a declared default."""
    if budget_s:
        return budget_s / 60
    if "budget_minutes" in params:
        return float(params["budget_minutes"])
    for f in fields(cls.Settings):
        if f.name == "budget_minutes" and isinstance(f.default, (int, float)):
            return float(f.default)
    return None


def plan_trials(name: str, spec: Spec, params_for: Callable[[str, dict[str, Any]], dict[str, Any]],
                budget_s: float | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(the grid's combinations, each one's resolved rung params, the budget record)."""
    from adaptladder.rungs import get_rung_class

    cls = get_rung_class(name)
    combos = grid(spec)
    declared = {f.name for f in fields(cls.Settings)}
    total = _budget_minutes(cls, params_for(name, {}), budget_s)
    per_trial = None
    if total and "budget_minutes" in declared and "budget_minutes" not in spec:
        per_trial = total / len(combos)
        trial_params = [params_for(name, {**c, "budget_minutes": per_trial}) for c in combos]
    else:
        trial_params = [params_for(name, c) for c in combos]
    budget = {"rung_minutes": total, "per_trial_minutes": per_trial,
              "rule": "the rung's budget is split evenly across the trials"
                      + ("" if per_trial is None else f" ({per_trial:.2f} min of training each)")}
    return combos, trial_params, budget


def run_sweep(name: str, spec: Spec, task: Any, *, metric: str, seed: int,
              params_for: Callable[[str, dict[str, Any]], dict[str, Any]], budget_s: float | None = None,
              executor: str = "local", address: str | None = None,
              log: Callable[[str], None] = print) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Run the sweep; return (the chosen trial's fitted rung, its params, the sweep record)."""
    from adaptladder.rungs import get_rung_class
    from adaptladder.task import stratified_subset

    cls = get_rung_class(name)
    combos, trial_params, budget = plan_trials(name, spec, params_for, budget_s)
    tr_texts, tr_y = task.part("train")
    va_texts, va_y = task.part("validation")
    # the validation examples each trial is scored on (a slow rung's eval_cap: a seeded stratified sample)
    cap = cls.eval_cap
    sampled = bool(cap and len(va_y) > cap)
    if sampled:
        keep = stratified_subset(np.asarray(va_y), int(cap), seed)
        s_texts, s_y = [va_texts[i] for i in keep], np.asarray(va_y)[keep]
    else:
        s_texts, s_y = list(va_texts), np.asarray(va_y)
    k = len(task.label_names)
    t0 = time.perf_counter()
    log(f"{name}: sweeping {len(combos)} setting(s) of {', '.join(spec)} on validation {metric} ({executor})")
    if executor == "ray":
        rows, best_rung, scheduler = _run_ray(name, cls, combos, trial_params, task, tr_texts, tr_y, va_texts,
                                              va_y, s_texts, s_y, k, metric, address, log)
    else:
        rows, best_rung = _run_local(name, cls, combos, trial_params, task, tr_texts, tr_y, va_texts, va_y,
                                     s_texts, s_y, k, metric, budget_s, t0, log)
        scheduler = None
    done = [i for i, r in enumerate(rows) if r["status"] == "done"]
    if not done or best_rung is None:
        why = "; ".join(f"{r['settings']}: {r.get('reason')}" for r in rows[:3])
        raise RuntimeError(f"no trial of the {name} sweep finished ({why})")
    best = max(done, key=lambda i: (rows[i]["validation"], -i))  # ties: the first in grid order
    rows[best]["chosen"] = True
    record = dict(spec_record(spec, metric), executor=executor, scheduler=scheduler, budget=budget,
                  n_validation=len(s_y), validation_sampled=sampled, trials=rows,
                  chosen=dict(combos[best]), chosen_index=best, seconds=round(time.perf_counter() - t0, 3))
    shown = ", ".join(f"{k_}={v!r}" for k_, v in combos[best].items())
    log(f"{name}: sweep chose {shown} (validation {metric} {rows[best]['validation']:.3f})")
    return best_rung, trial_params[best], record


def _row(combo: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"settings": dict(combo), "status": "done", "validation": None, "fit_seconds": None,
            "chosen": False, "reason": None, **kw}


def _run_local(name: str, cls: type, combos: list[dict[str, Any]], trial_params: list[dict[str, Any]], task: Any,
               tr_texts: list[str], tr_y: np.ndarray, va_texts: list[str], va_y: np.ndarray, s_texts: list[str],
               s_y: np.ndarray, k: int, metric: str, budget_s: float | None, t0: float,
               log: Callable[[str], None]) -> tuple[list[dict[str, Any]], Any]:
    import os

    rows: list[dict[str, Any]] = []
    best: tuple[float, Any] | None = None
    for i, (combo, params) in enumerate(zip(combos, trial_params, strict=True)):
        if budget_s and i > 0 and time.perf_counter() - t0 >= budget_s:
            rows.append(_row(combo, status="not_run", reason="the rung's budget was spent by earlier trials"))
            continue
        ts = time.perf_counter()
        try:
            rung = cls(**params)
            rung.fit(tr_texts, tr_y, label_names=task.label_names, val_texts=va_texts, val_y=va_y)
            fit_s = time.perf_counter() - ts
            score = _val_score(rung, s_texts, s_y, k, metric)
        except AdaptError:
            raise
        except Exception as e:  # one failed trial must not lose the others
            if os.environ.get("ADAPTLADDER_DEBUG") == "1":
                raise
            rows.append(_row(combo, status="failed", reason=f"{type(e).__name__}: {e}",
                             fit_seconds=round(time.perf_counter() - ts, 3)))
            log(f"{name}: trial {combo} failed ({type(e).__name__}: {e})")
            continue
        rows.append(_row(combo, validation=score, fit_seconds=round(fit_s, 3)))
        log(f"{name}: trial {i + 1}/{len(combos)} {combo}: validation {metric} {score:.3f}, fit {fit_s:.1f}s")
        if best is None or score > best[0]:
            best = (score, rung)
    return rows, None if best is None else best[1]


# ------------------------------------------------------------------ Ray Tune
def _run_ray(name: str, cls: type, combos: list[dict[str, Any]], trial_params: list[dict[str, Any]], task: Any,
             tr_texts: list[str], tr_y: np.ndarray, va_texts: list[str], va_y: np.ndarray, s_texts: list[str],
             s_y: np.ndarray, k: int, metric: str, address: str | None,
             log: Callable[[str], None]) -> tuple[list[dict[str, Any]], Any, str | None]:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from adaptladder.executors.ray_cluster import ray_init
    from adaptladder.rungs.base import load_rung

    ctx = ray_init(address)  # the executor's session when it runs; else a local one, shut down after
    intermediate = bool(getattr(cls, "validation_hook", False))
    label_names = list(task.label_names)

    def trial(config: dict[str, Any], data: dict[str, Any]) -> None:
        import os
        import tempfile as _tmp
        import time as _time

        from ray import tune as _tune

        from adaptladder.rungs import get_rung_class
        from adaptladder.sweep import _val_score

        rcls = get_rung_class(data["name"])
        rung = rcls(**data["params"][config["trial"]])
        if intermediate:  # the fine-tuning loop reports each validation evaluation (ASHA acts on them)
            rung.on_validation = lambda rec: _tune.report({"score": float(rec["val_macro_f1"]), "final": False})
        ts = _time.perf_counter()
        rung.fit(data["tr_texts"], data["tr_y"], label_names=data["label_names"], val_texts=data["va_texts"],
                 val_y=data["va_y"])
        fit_s = _time.perf_counter() - ts
        score = _val_score(rung, data["s_texts"], data["s_y"], data["k"], data["metric"])
        with _tmp.TemporaryDirectory() as d:
            rung.save(os.path.join(d, "model"))
            _tune.report({"score": score, "final": True, "fit_seconds": fit_s},
                         checkpoint=_tune.Checkpoint.from_directory(d))

    data = {"name": name, "params": trial_params, "tr_texts": list(tr_texts), "tr_y": np.asarray(tr_y),
            "va_texts": list(va_texts), "va_y": np.asarray(va_y), "s_texts": s_texts, "s_y": s_y, "k": k,
            "metric": metric, "label_names": label_names}
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=10_000, grace_period=2, reduction_factor=2)
                 if intermediate and len(combos) > 1 else None)
    storage = tempfile.mkdtemp(prefix="adaptladder-sweep-")
    try:
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trial, data=data), {"cpu": 1}),
            param_space={"trial": tune.grid_search(list(range(len(combos))))},
            tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=scheduler),
            run_config=tune.RunConfig(name=f"sweep-{name}", storage_path=storage, verbose=0),
        )
        grid_results = tuner.fit()
        rows: list[dict[str, Any]] = [_row(c, status="failed", reason="no result") for c in combos]
        best: tuple[float, int, Any] | None = None
        for res in grid_results:
            i = int((res.config or {}).get("trial", -1))
            if not 0 <= i < len(combos):
                continue
            m = res.metrics or {}
            reports = int(m.get("training_iteration") or 0)  # validation reports (intermediate + final)
            if res.error is not None:
                rows[i] = _row(combos[i], status="failed", reason=f"{type(res.error).__name__}: {res.error}"[:300])
            elif not m.get("final"):
                rows[i] = _row(combos[i], status="stopped", validation=m.get("score"), reports=reports,
                               reason="stopped early by ASHA (validation macro-F1 behind the other trials)")
            else:
                rows[i] = _row(combos[i], validation=float(m["score"]), fit_seconds=round(float(m["fit_seconds"]), 3),
                               reports=reports)
                if best is None or (m["score"], -i) > (best[0], -best[1]):
                    best = (float(m["score"]), i, res.checkpoint)
        rung = None
        if best is not None and best[2] is not None:
            with best[2].as_directory() as d:
                rung = load_rung(Path(d) / "model")
        for i, r in enumerate(rows):
            if r["status"] == "done":
                log(f"{name}: trial {i + 1}/{len(combos)} {combos[i]}: validation {metric} {r['validation']:.3f}, "
                    f"fit {r['fit_seconds']:.1f}s")
            else:
                log(f"{name}: trial {i + 1}/{len(combos)} {combos[i]}: {r['status']} ({r['reason']})")
        return rows, rung, ("ASHA" if scheduler is not None else None)
    finally:
        import shutil

        shutil.rmtree(storage, ignore_errors=True)
        ctx.shutdown()

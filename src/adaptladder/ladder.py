"""The ladder: climb rungs in order of adaptation cost, measure each the same way, stop at the bar.

Data flows one way: Task -> (audit) -> rungs (fit on train, select on validation) ->
measurements -> run directory. The validation split alone decides; the test split is scored
for every rung that ran and never used to choose.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptladder import progress
from adaptladder.budget import spread_by_length
from adaptladder.config import (  # (re-exported: adaptladder.ladder.RunConfig, rung_budget_s)
    METRICS,
    RunConfig,
    rung_budget_s,
)
from adaptladder.decide import meets_bar, recommend  # the decision rule (adaptladder.ladder.recommend still works)
from adaptladder.errors import AdaptError, BudgetExceeded
from adaptladder.measure import PeakMemory, rss_mb, score, time_predictions
from adaptladder.pricing import local_cost_per_1k
from adaptladder.rungs import RUNGS, get_rung_class, rungs_in_cost_order
from adaptladder.rungs.base import Rung
from adaptladder.runresult import RunResult
from adaptladder.store import (
    SCHEMA_VERSION,
    RunStore,
    atomic_write_json,
    atomic_write_text,
    config_hash,
    load_results,
)
from adaptladder.task import Task, check_split_sanity, load_task, stratified_subset

if TYPE_CHECKING:
    from adaptladder.generation.task import GenTask


def rung_params_for(name: str, cfg: RunConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameters a rung gets: the run-wide values it takes (encoder, seed, budget, LM) + its own
    settings (config file and ``--set``; ``extra``: one sweep trial's settings on top), checked against
    its declared settings (:mod:`adaptladder.rungs.settings`): an unknown or invalid one is a one-line error."""
    from adaptladder.rungs.settings import resolve_params

    cls = get_rung_class(name)
    own = dict(cfg.rung_params.get(name, {}), **(extra or {}))
    declared = {f.name for f in fields(cls.Settings)}
    if "budget_minutes" not in declared:  # a ladder-level setting for this rung (see rung_budget_s)
        own.pop("budget_minutes", None)
    run_values = {"encoder": cfg.encoder, "seed": cfg.seed, "budget_minutes": cfg.budget_minutes, "lm": cfg.lm}
    return resolve_params(name, run_values, own)


def check_rung_settings(cfg: RunConfig, order: list[str]) -> dict[str, dict[str, Any]]:
    """Every chosen rung's settings built and validated, before any data is read or compute spent."""
    out = {}
    for name in order:
        out[name] = rung_params_for(name, cfg)
        rung_budget_s(name, cfg)  # a bad per-rung budget_minutes, likewise at once
    if cfg.sweep:  # --sweep RUNG.KEY=...: every trial's settings valid, the rung climbed
        from adaptladder.sweep import check_sweep

        check_sweep(cfg.sweep, climbing_order(cfg), lambda n, combo: rung_params_for(n, cfg, combo))
    return out


def params_hash_for(name: str, cfg: RunConfig, params: dict[str, Any]) -> str:
    """What a finished rung is reused by (resume): its settings, and for a swept rung the sweep too."""
    spec = (cfg.sweep or {}).get(name)
    if not spec:
        return config_hash(params)
    from adaptladder.sweep import spec_record

    return config_hash({"params": params, "sweep": spec_record(spec, cfg.metric)})


def climbing_order(cfg: RunConfig) -> list[str]:
    names = cfg.rungs or list(RUNGS)
    if cfg.order:
        ordered = [n for n in cfg.order if n in names]
        return ordered + [n for n in rungs_in_cost_order(names) if n not in ordered]
    return rungs_in_cost_order(names)


def _eval_indices(task: Task, part: str, cap: int | None, seed: int) -> tuple[np.ndarray, bool]:
    idx = task.indices(part)
    if cap is None or len(idx) <= cap:
        return idx, False
    return idx[stratified_subset(task.labels[idx], cap, seed)], True


#: Examples the timing probe predicts before a rung's evaluation (from the test split).
PROBE_N = 8
#: The smallest stratified sample per split a budgeted rung may be evaluated on.
MIN_EVAL_N = 30
#: A rung whose fit used up its budget (fine-tuning trains to it) still gets this share of the
#: budget for its evaluation, so a rung's wall time stays under 1.25 x its budget.
EVAL_FLOOR_SHARE = 0.25
#: Likewise the cross-validated estimate of a cheap rung gets at least this share of the budget.
CV_FLOOR_SHARE = 0.25


@dataclass
class EvalPlan:
    """How a rung is evaluated: per-split caps sized to the budget and the ETA they imply."""

    caps: dict[str, int | None]
    seconds_per_example: float | None = None
    probe_examples: int = 0
    probe_seconds: float = 0.0
    estimate_s: float | None = None
    allowance_s: float | None = None
    speed_batch: int | None = None
    n_single: int | None = None
    reason: str = "full splits"

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("seconds_per_example", "probe_seconds", "estimate_s", "allowance_s"):
            if out[k] is not None:
                out[k] = round(float(out[k]), 4)
        return out


def _speed_sizes(rung: Rung) -> tuple[int, int]:
    return (64, 20) if rung.eval_cap else (256, 50)


def _plan_or_shorten(rung: Rung, name: str, task: Task, seed: int, budget_s: float | None, t_start: float,
                     log: Callable[[str], None], clock: Callable[[], float] = time.perf_counter) -> EvalPlan:
    """:func:`plan_evaluation`; when a prompting rung is too slow for even a minimal evaluation in what
    is left of its budget, its prompts are halved (``shorten_prompts``) and the probe repeated, down to
    the rung's shortest sensible prompt, before the rung is skipped (:class:`BudgetExceeded`)."""
    while True:
        try:
            with progress.step(f"{name}: timing probe"):
                return plan_evaluation(rung, task, seed, budget_s=budget_s, spent_s=clock() - t_start, clock=clock)
        except BudgetExceeded as e:
            window = rung.shorten_prompts(str(e))
            if window is None:
                raise
            log(f"{name}: too slow for a minimal evaluation in its budget; prompts shortened to {window} tokens")


def plan_evaluation(rung: Rung, task: Task, seed: int, *, budget_s: float | None = None,
                    spent_s: float = 0.0, clock: Callable[[], float] = time.perf_counter,
                    probe_n: int = PROBE_N) -> EvalPlan:
    """Time a few predictions, then size the evaluation to what is left of the budget.

    Without a budget a rung keeps its ``eval_cap`` (if any). With one, the full splits are
    evaluated when the estimate fits; otherwise a stratified sample per split sized to fit
    (at least :data:`MIN_EVAL_N`), or :class:`BudgetExceeded` when even that cannot fit.
    """
    sizes = {part: len(task.indices(part)) for part in ("validation", "test")}
    batch, single = _speed_sizes(rung)
    test_idx = task.indices("test")
    probe_n = min(probe_n, len(test_idx))
    per_ex = None
    t_probe = 0.0
    if probe_n:
        # spread over the split's lengths: a random few can all be short (budget.spread_by_length)
        pick = spread_by_length([len(task.texts[int(i)]) for i in test_idx], probe_n)
        texts = [task.texts[int(test_idx[i])] for i in pick]
        t0 = clock()
        rung.predict_proba(texts)
        t_probe = clock() - t0
        per_ex = t_probe / probe_n

    def cost(n_val: int, n_test: int, b: int, s: int) -> float:
        # the speed measurement predicts ~2 + b (batch) + 1 + s (single, warmed) more examples
        return (per_ex or 0.0) * (n_val + n_test + b + s + 3)

    if budget_s is None:
        caps = {p: (rung.eval_cap if rung.eval_cap and sizes[p] > rung.eval_cap else None) for p in sizes}
        n = {p: caps[p] or sizes[p] for p in sizes}
        reason = f"capped at {rung.eval_cap} per split (slow rung)" if any(caps.values()) else "full splits"
        return EvalPlan(caps, per_ex, probe_n, t_probe, cost(n["validation"], n["test"], batch, single),
                        None, batch, single, reason)
    # a rung whose fit keeps to a share of the budget (prompting, tfidf, features: FIT_BUDGET_SHARE) leaves
    # the rest to its evaluation, even when the fit ran over (its timing probe underestimated the texts)
    floor = max(EVAL_FLOOR_SHARE, 1.0 - rung.FIT_BUDGET_SHARE)
    allowance = max(budget_s - spent_s, floor * budget_s)
    full = cost(sizes["validation"], sizes["test"], batch, single)
    if full <= allowance or not per_ex:
        return EvalPlan({"validation": None, "test": None}, per_ex, probe_n, t_probe, full, allowance, batch,
                        single, "full splits fit the budget")
    # shrink the speed measurement first (to a tenth of the allowance), then the splits
    afford = allowance / per_ex
    batch = int(min(batch, max(8, 0.07 * afford)))
    single = int(min(single, max(5, 0.03 * afford)))
    left = afford - batch - single - 3
    per_split = int(left // 2)
    minimum = min(MIN_EVAL_N, min(sizes.values()))
    if per_split < minimum:
        need = cost(minimum, minimum, 8, 5)
        raise BudgetExceeded(
            f"over budget: the timing probe measured {per_ex:.2f} s per example, so even a minimal evaluation "
            f"({minimum} validation + {minimum} test examples) needs ~{need / 60:.1f} min, more than the "
            f"{allowance / 60:.1f} min left of its {budget_s / 60:.1f} min budget; raise --budget-minutes "
            f"(or --set RUNG.budget_minutes=...)")
    # a split smaller than its share gives the rest to the other
    caps: dict[str, int | None] = {}
    small = min(sizes, key=lambda p: sizes[p])
    big = "test" if small == "validation" else "validation"
    n_small = min(sizes[small], per_split)
    n_big = min(sizes[big], int(left) - n_small)
    caps[small] = n_small if n_small < sizes[small] else None
    caps[big] = n_big if n_big < sizes[big] else None
    est = cost(n_small, n_big, batch, single)
    return EvalPlan(caps, per_ex, probe_n, t_probe, est, allowance, batch, single,
                    f"stratified sample sized to the budget (full splits: ~{full / 60:.1f} min)")


#: The largest chunk a deadline-bound evaluation predicts at once (the first is a quarter of it).
EVAL_CHUNK = 64


#: An evaluation planned to take less than this is not cut by its deadline (predicted whole, in
#: one call, as without a budget): seconds cannot overrun a budget of minutes by much.
DEADLINE_MIN_ESTIMATE_S = 10.0


def eval_deadline(plan: EvalPlan, now: float) -> float | None:
    """When a budgeted evaluation must end: the plan's allowance, counted from the probe's start
    (None without a budget, or for an evaluation planned to take seconds)."""
    if plan.allowance_s is None or (plan.estimate_s or 0.0) < DEADLINE_MIN_ESTIMATE_S:
        return None
    return now - (plan.probe_seconds or 0.0) + plan.allowance_s


def _predict_until(rung: Rung, texts: list[str], deadline: float, rate: float | None,
                   clock: Callable[[], float]) -> np.ndarray:
    """``predict_proba`` of a prefix of ``texts`` in chunks, each holding only the texts that the
    seconds per text measured so far (at first ``rate``, the probe's) say end by ``deadline``; stops
    when not one more does (at least one text is predicted)."""
    parts: list[np.ndarray] = []
    done, spent = 0, 0.0
    while done < len(texts):
        per = spent / done if done else rate
        size = EVAL_CHUNK if done else max(1, EVAL_CHUNK // 4)  # the probe's rate may be stale: measure small
        if per:
            size = min(size, int(max(0.0, deadline - clock()) / per))
            if size < 1:
                if done:
                    break
                size = 1
        t0 = clock()
        parts.append(np.asarray(rung.predict_proba(texts[done:done + size])))
        spent += clock() - t0
        done += len(texts[done:done + size])
        progress.update(advance=size)
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def evaluate_rung(rung: Rung, task: Task, seed: int, plan: EvalPlan | None = None, *,
                  deadline: float | None = None, clock: Callable[[], float] = time.perf_counter,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score a fitted rung on validation and test (sized by ``plan``; default: ``eval_cap``) and time it.

    With ``deadline`` (a ``clock()`` time: the end of the rung's evaluation allowance) the evaluation
    holds its budget whatever the load: each split is predicted in a seeded random order, in chunks,
    with the share of the time left that its planned examples are of those left, and stops at it with
    the examples done (a random sample; ``stopped_early`` in the split's record); the speed
    measurement shrinks to what is left."""
    if plan is None:
        plan = EvalPlan({p: rung.eval_cap for p in ("validation", "test")}, speed_batch=_speed_sizes(rung)[0],
                        n_single=_speed_sizes(rung)[1])
    out: dict[str, Any] = {}
    mem: dict[str, float] = {}
    picked = {part: _eval_indices(task, part, plan.caps.get(part), seed) for part in ("validation", "test")}
    total = sum(len(idx) for idx, _ in picked.values())
    spent, n_done = 0.0, 0
    with progress.step(f"{rung.name}: evaluate", total, eta_s=plan.estimate_s):
        done = 0
        planned_left = total
        for part in ("validation", "test"):
            idx, sampled = picked[part]
            progress.update(detail=part)
            stopped = None
            t0 = clock()
            with PeakMemory() as pm:
                if deadline is None:
                    proba = rung.predict_proba([task.texts[i] for i in idx])
                    done += len(idx)
                    progress.update(done=done)
                else:
                    perm = np.random.default_rng(seed + (11 if part == "validation" else 17)).permutation(len(idx))
                    part_deadline = clock() + max(0.0, deadline - clock()) * len(idx) / max(planned_left, 1)
                    proba = _predict_until(rung, [task.texts[int(idx[j])] for j in perm], part_deadline,
                                           plan.seconds_per_example, clock)
                    keep = np.argsort(perm[:len(proba)])  # back to row order
                    if len(proba) < len(idx):
                        stopped = {"planned": len(idx), "done": len(proba),
                                   "reason": "time allowance of the rung's budget reached"}
                        if log:
                            log(f"{rung.name}: {part} stopped at its share of the budget after {len(proba)} of "
                                f"{len(idx)} examples; the {len(proba)} done are a random sample")
                        total -= len(idx) - len(proba)
                        progress.update(total=total)
                        sampled = True
                    idx, proba = idx[perm[:len(proba)][keep]], proba[keep]
                    done += len(idx)
            planned_left -= len(picked[part][0])
            spent += clock() - t0
            n_done += len(idx)
            mem[part] = pm.delta_mb
            out[part] = score(task.labels[idx], proba, task.label_names, seed=seed, sampled=sampled)
            out[part]["predictions"] = [int(p) for p in np.asarray(proba).argmax(axis=1)]
            out[part]["indices"] = [int(i) for i in idx]
            out[part]["labels"] = [int(v) for v in task.labels[idx]]  # so pairs can be compared from the file alone
            if stopped:
                out[part]["stopped_early"] = stopped
        progress.update(detail="speed")
        batch, n_single = plan.speed_batch or _speed_sizes(rung)[0], plan.n_single
        afford = None
        if deadline is not None and n_done and spent > 0:  # what the time left holds, at the measured rate
            afford = int(max(0.0, deadline - clock()) / (spent / n_done))
            batch = max(2, min(batch, afford // 2))
            n_single = max(1, min(n_single if n_single is not None else _speed_sizes(rung)[1], afford // 4))
        if afford is not None and afford < batch + n_single + 4:  # no time left to time it apart
            per_ms = spent / n_done * 1000
            out["predict"] = {"throughput_per_s": n_done / spent, "throughput_batch": None, "batch_seconds": spent,
                              "latency_ms_p50": per_ms, "latency_ms_p95": per_ms, "n_latency": 0,
                              "source": "the evaluation's own rate (its budget left no time for a separate "
                                        "speed measurement)"}
        else:
            out["predict"] = measure_speed(rung, [task.texts[i] for i in out["test"]["indices"]], seed,
                                           batch=batch, n_single=n_single)
    out["predict_memory_mb"] = max(mem.values())
    return out


def measure_speed(rung: Rung, texts: list[str], seed: int, batch: int = 256,
                  n_single: int | None = None) -> dict[str, float]:
    """Batch throughput and single-example latency, with the embedding cache bypassed.

    Scores may reuse cached embeddings (they are identical), but speed must measure the model
    as production would run it on texts it has never seen.
    """
    from adaptladder.encode import cache_disabled

    rng = np.random.default_rng(seed)
    n = min(len(texts), batch if not rung.eval_cap else min(batch, 64))
    pick = [texts[int(i)] for i in rng.choice(len(texts), size=n, replace=False)]
    if n_single is None:
        n_single = 20 if rung.eval_cap else 50
    with cache_disabled():
        rung.predict_proba(pick[:2])  # warm-up (lazy loads, thread pools)
        t0 = time.perf_counter()
        rung.predict_proba(pick)
        seconds = time.perf_counter() - t0
        lat = time_predictions(rung.predict_proba, texts, n_single=n_single, seed=seed)
    return {"throughput_per_s": n / seconds if seconds > 0 else float("inf"), "throughput_batch": n,
            "batch_seconds": seconds, **lat}


def _esc(obj: Any) -> str:
    """``str(obj)`` safe to embed in a rich-markup log line (a path or message like ``[/x]`` prints as is)."""
    from rich.markup import escape

    return escape(str(obj))


def _skip_result(cls: type[Rung], params: dict[str, Any], reason: str) -> dict[str, Any]:
    details = cls.skip_details(params)
    return {"name": cls.name, "family": cls.family, "cost_rank": cls.cost_rank, "status": "skipped",
            "reason": reason, "params": params, "skip_details": details}


def cv_folds_within(folds: int, per_fold_s: float, left_s: float | None) -> int:
    """The most folds (``folds`` down to 2) whose refits fit ``left_s`` seconds; 0 when even 2 do not."""
    if left_s is None:
        return folds
    for f in range(folds, 1, -1):
        # a fold refit trains on (f-1)/f of train+validation: scale the measured refit time by that
        if f * per_fold_s * (f - 1) / f <= left_s:
            return f
    return 0


def cv_estimate(cls: type[Rung], params: dict[str, Any], rung: Rung, task: Task, cfg: RunConfig,
                fit_seconds: float, log: Callable[[str], None], left_s: float | None = None) -> dict[str, Any] | None:
    """The k-fold cross-validated estimate over train + validation for a cheap rung, or None
    (see :mod:`adaptladder.crossval`); a failure here only costs the estimate, never the rung.

    With ``left_s`` (what is left of the rung's budget) the folds are cut (to 2 at least) so the
    refits fit, from the rung's measured refit time (``refit_seconds_`` when it sets one, else
    its fit time) scaled to train + validation; when even 2 folds cannot fit, no estimate.
    """
    from adaptladder.crossval import cross_validate, cv_eligible

    if not cv_eligible(cls, fit_seconds, cfg.cv_folds, cfg.cv_max_fit_seconds):
        return None
    idx = np.concatenate([task.indices("train"), task.indices("validation")])
    folds = cfg.cv_folds
    budget_note = None
    if left_s is not None:
        refit = float(getattr(rung, "refit_seconds_", None) or fit_seconds)
        # a fold trains on (f-1)/f of train + validation (at most the training split's size: an overestimate)
        per_fold = refit * len(idx) / max(len(task.indices("train")), 1)
        folds = cv_folds_within(cfg.cv_folds, per_fold, left_s)
        budget_note = {"folds_asked": cfg.cv_folds, "folds": folds, "refit_seconds_estimate": round(per_fold, 2),
                       "seconds_left": round(left_s, 1)}
        if folds == 0:
            log(f"{cls.name}: no cross-validated estimate: {cfg.cv_folds} folds need ~{per_fold * 2:.0f}+ s, more "
                f"than the {max(left_s, 0):.0f} s left of its budget; the validation split decides")
            return None
        if folds < cfg.cv_folds:
            log(f"{cls.name}: cross-validation with {folds} folds instead of {cfg.cv_folds} to fit its budget")
    try:
        out = cross_validate(cls, params, rung, task.texts, task.labels, idx, list(task.label_names),
                             folds=folds, seed=cfg.seed, max_train=len(task.indices("train")))
        if budget_note:
            out["budget"] = budget_note
        return out
    except AdaptError:
        raise
    except Exception as e:
        if os.environ.get("ADAPTLADDER_DEBUG") == "1":
            raise
        log(f"{cls.name}: no cross-validated estimate ({type(e).__name__}: {e}); the validation split decides")
        return None


def run_rung(name: str, task: Task, cfg: RunConfig, store: RunStore,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit, evaluate, save and record one rung (or record why it was skipped / failed).

    With a budget (``--budget-minutes`` or the rung's own ``budget_minutes``), a timing probe
    after the fit sizes the evaluation to what is left of it (:func:`plan_evaluation`).
    """
    from adaptladder.progress import fmt_seconds

    cls = get_rung_class(name)
    params = rung_params_for(name, cfg)
    budget_s = rung_budget_s(name, cfg)
    reason = cls.unavailable_reason(params)
    base = {"name": name, "family": cls.family, "cost_rank": cls.cost_rank, "description": cls.description,
            "params": params, "params_hash": params_hash_for(name, cfg, params),
            "budget_minutes": budget_s and budget_s / 60}
    spec = (cfg.sweep or {}).get(name)
    sweep: dict[str, Any] | None = None
    if reason:
        return dict(_skip_result(cls, params, reason), **base, status="skipped", reason=reason)
    rung = cls(**params)
    # rungs that can trim their own fit to a budget read it (tfidf's C grid, features' training encoding)
    rung.time_budget_s = budget_s
    tr_texts, tr_y = task.part("train")
    va_texts, va_y = task.part("validation")
    rss_before = rss_mb()
    t_start = time.perf_counter()
    try:
        with PeakMemory() as pm:
            t0 = time.perf_counter()
            # the budget is an ETA only for rungs that train to it (fine-tuning, prompting's choice)
            with progress.step(f"{name}: fit", eta_s=budget_s if "budget_minutes" in params else None):
                if spec:  # --sweep: the trial best on validation is the rung (fit_seconds: all trials)
                    from adaptladder.sweep import run_sweep

                    rung, params, sweep = run_sweep(
                        name, spec, task, metric=cfg.metric, seed=cfg.seed, budget_s=budget_s, log=log,
                        params_for=lambda n, combo: rung_params_for(n, cfg, combo),
                        executor=getattr(cfg, "executor", "local") or "local",
                        address=getattr(cfg, "ray_address", None))
                    base["params"] = params
                else:
                    rung.fit(tr_texts, tr_y, label_names=task.label_names, val_texts=va_texts, val_y=va_y)
            fit_seconds = time.perf_counter() - t0
        plan = _plan_or_shorten(rung, name, task, cfg.seed, budget_s, t_start, log)
        n_eval = {p: plan.caps[p] or len(task.indices(p)) for p in ("validation", "test")}
        per = f"{plan.seconds_per_example * 1000:.0f} ms/example" if plan.seconds_per_example else "no probe"
        log(f"{name}: fit took {fmt_seconds(fit_seconds)}; evaluation ETA {fmt_seconds(plan.estimate_s)} "
            f"({n_eval['validation']} validation + {n_eval['test']} test, {per}; {plan.reason})")
        evaluation = evaluate_rung(rung, task, cfg.seed, plan, deadline=eval_deadline(plan, time.perf_counter()),
                                   log=log)
        store.save_model(name, rung)  # complete model dir first; result.json (written after) marks it finished
    except BudgetExceeded as e:
        log(f"[yellow]rung {name} skipped[/yellow]: {e}")
        return dict(base, status="skipped", reason=str(e), fit_seconds=time.perf_counter() - t_start)
    except AdaptError:
        raise
    except Exception as e:  # a rung's own failure must not lose the other rungs' results
        if os.environ.get("ADAPTLADDER_DEBUG") == "1":
            raise
        log(f"[red]rung {name} failed[/red]: {type(e).__name__}: {_esc(e)}")
        return dict(base, status="failed", reason=f"{type(e).__name__}: {e}",
                    traceback=traceback.format_exc(limit=8))
    eval_seconds = time.perf_counter() - t_start - fit_seconds
    with progress.step(f"{name}: cross-validation"):
        left = None if budget_s is None else max(budget_s - (time.perf_counter() - t_start), CV_FLOOR_SHARE * budget_s)
        cv = cv_estimate(cls, params, rung, task, cfg, fit_seconds, log, left_s=left)
    extra = rung.extra_info()
    predict = evaluation.pop("predict")
    cost = extra.get("cost_per_1k_usd")
    if cost is None and predict["throughput_per_s"] > 0:
        cost = local_cost_per_1k(1.0 / predict["throughput_per_s"])
    return dict(
        base,
        status="done",
        reason=None,
        validation=evaluation["validation"],
        test=evaluation["test"],
        fit_seconds=fit_seconds,
        evaluation_plan=dict(plan.record(), actual_s=round(eval_seconds, 3)),
        predict=predict,
        peak_memory_mb={"fit": pm.delta_mb, "predict": evaluation.pop("predict_memory_mb"),
                        "process_rss_before": rss_before, "process_peak_rss": pm.peak_mb},
        cost_per_1k_usd=cost,
        **({"cv": cv} if cv else {}),
        **({"sweep": sweep} if sweep else {}),
        extra=extra,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def default_run_dir(cfg: RunConfig, task: Task) -> Path:
    if cfg.out:  # 'a/../b' is 'b': never leave an empty 'a' behind
        return Path(os.path.normpath(cfg.out))
    name = cfg.name or task.name
    return Path("runs") / name


def prepare_task(cfg: RunConfig, log: Callable[[str], None] | None = None) -> Task | GenTask:
    """The run's task: a :class:`GenTask` for generation data (``--task generation``, a built-in
    generation set, or a target column detected as text to generate; see
    :mod:`adaptladder.generation.loaders`), else a classification :class:`Task`."""
    from adaptladder.generation.loaders import (
        check_gen_split_sanity,
        check_run_context,
        detect_task,
        load_generation,
        resolve_generation_metric,
    )

    if detect_task(cfg, log) == "generation":
        gen = load_generation(cfg, log)
        resolve_generation_metric(cfg, gen)  # a metric that does not fit the task stops here, before any compute
        if cfg.sample:
            gen = gen.sample(cfg.sample, seed=cfg.seed)
        check_gen_split_sanity(gen)
        check_run_context(gen, cfg, log)  # inputs too long for the LM's context: one line, before any compute
        return gen
    for flag, value in (("--schema", cfg.schema), ("--instruction", cfg.instruction)):
        if value is not None:
            raise AdaptError(f"{flag} is for generation tasks, but this is a classification task; drop it or "
                             "pass --task generation.")
    if cfg.metric not in METRICS:
        raise AdaptError(f"--metric {cfg.metric} is a generation metric, but this is a classification task; use "
                         f"{' or '.join(METRICS)} (or --task generation for text targets).")
    label_col = cfg.label_col if cfg.label_col is not None else cfg.target_col
    task = load_task(cfg.data, text_col=cfg.text_col, label_col=label_col, split_col=cfg.split_col,
                     train=cfg.train, validation=cfg.validation, test=cfg.test, seed=cfg.seed)
    if cfg.sample:
        task = task.sample(cfg.sample, seed=cfg.seed)
    check_split_sanity(task)  # with or without the audit: an empty split or an unseen class stops here
    return task


def run(cfg: RunConfig | None = None, *, log: Callable[[str], None] | None = None,
        on_rung: Callable[[dict[str, Any]], None] | None = None, **kwargs: Any) -> RunResult:
    """Run the ladder. ``adaptladder.run(data="sms-spam", rungs=["tfidf", "features"])`` works too."""
    cfg = cfg or RunConfig(**kwargs)
    cfg.validate()
    from adaptladder.generation.loaders import config_task_type

    # every chosen (or configured) rung's settings checked before the data is read or any compute spent
    # (classification rungs; a generation run checks its own, and an undecided run naming generation
    # rungs is checked once the data has said which kind of task it is)
    named = (cfg.rungs or []) + (cfg.order or []) + list(cfg.rung_params)
    early = config_task_type(cfg) == "classification" or (
        config_task_type(cfg) is None and all(n in RUNGS for n in named))
    if early:
        chosen = climbing_order(cfg)
        check_rung_settings(cfg, chosen + [n for n in cfg.rung_params if n not in chosen])
    from adaptladder.executors import make_executor, preflight

    preflight(cfg)  # e.g. a --ray-address nothing answers at: one line before anything is written
    # heartbeat lines go through the run's log (to stderr when none is given)
    previous_reporter = progress.install(progress.Heartbeat(log))
    log = log or (lambda s: None)
    try:
        task = prepare_task(cfg, log)
    except BaseException:
        progress.install(previous_reporter)
        raise
    if getattr(task, "is_generation", False):
        from adaptladder.generation.rungs import GEN_RUNGS

        wrong = [n for n in named if n not in GEN_RUNGS]
        if wrong:  # e.g. --rungs tfidf on data detected as generation
            progress.install(previous_reporter)
            raise AdaptError(f"{task.name} is a generation task and {', '.join(map(repr, wrong))} "
                             f"{'is not a generation rung' if len(wrong) == 1 else 'are not generation rungs'}: "
                             f"choose from {', '.join(GEN_RUNGS)} (or pass --task classification).")
        try:
            from adaptladder.generation.ladder import run_generation  # type: ignore[import-not-found]
        except ImportError:
            progress.install(previous_reporter)
            raise AdaptError(f"{task.name} is a generation task, and the generation ladder is not installed in "
                             "this build yet (adaptladder.generation.ladder).") from None
        if cfg.sweep:
            progress.install(previous_reporter)
            raise AdaptError(f"--sweep is not supported for generation tasks yet ({task.name} is one): drop --sweep "
                             "and compare settings with --set in separate run directories.")
        if cfg.executor == "ray":  # not wired for generation rungs yet (docs/scaling.md): say so, never silently
            log("--executor ray: generation rungs are not Ray tasks yet; this generation ladder climbs locally")
        try:
            return run_generation(cfg, task, log, on_rung)
        finally:
            progress.install(previous_reporter)
    if not early:
        chosen = climbing_order(cfg)
        check_rung_settings(cfg, chosen + [n for n in cfg.rung_params if n not in chosen])
    order = climbing_order(cfg)
    run_dir = default_run_dir(cfg, task)
    store = RunStore(run_dir)
    identity = {"task": task.fingerprint(), "seed": cfg.seed, "sample": cfg.sample}
    chash = config_hash(identity)
    store.open(_config_record(cfg, order), chash, fresh=cfg.fresh)
    atomic_write_json(run_dir / "task.json", task.summary())
    if not (run_dir / "split.csv").exists():
        tmp = run_dir / ".split.csv.tmp"
        task.split_frame().to_csv(tmp, index=False)
        tmp.replace(run_dir / "split.csv")

    audit = run_audit_step(task, cfg, run_dir, log)

    results: list[dict[str, Any]] = []
    cancelled: list[dict[str, Any]] = []
    stopped_at = None
    # where rungs run (--executor): this process, or Ray tasks submitted all at once and collected here
    # in climbing order, so the decision below is the same as a local climb's
    executor = make_executor(cfg, task, store, log, run_rung)
    try:
        jobs = {name: rung_params_for(name, cfg) for name in order}
        executor.start({name: params for name, params in jobs.items() if not _reusable(store, name, params)})
        for name in order:
            params = rung_params_for(name, cfg)
            prev = store.load_result(name)
            if prev and store.is_finished(name, prev, params_hash_for(name, cfg, params)):
                log(f"{name}: finished earlier, reusing its result")
                res = dict(prev)
                res.pop("resumed", None)
                res["meets_bar"] = meets_bar(res, cfg)
                if res != prev:  # only the bar verdict can change (another --bar); the measurements never do
                    store.save_result(name, res)
                res["resumed"] = True  # this invocation's view (results.json), not the rung's own record
            else:
                if prev is not None:  # stale (other settings, failed, or model missing): never mixed in
                    store.discard_result(name)
                log(f"{name}: running")
                res = executor.run_rung(name)
                res["meets_bar"] = meets_bar(res, cfg)
                store.save_result(name, res)
            results.append(res)
            if on_rung:
                on_rung(res)
            if res["meets_bar"] and not cfg.run_all:
                stopped_at = name
                log(f"{name} clears the bar {cfg.bar} on validation {cfg.metric}: stopping here")
                break
        cancelled = executor.cancel_outstanding(stopped_at) if stopped_at else []
        for res in cancelled:
            res["meets_bar"] = meets_bar(res, cfg)
    except KeyboardInterrupt:  # Ctrl-C: finished rungs are on disk; leave a readable partial report too
        executor.abort()
        if results:
            _write_partial(run_dir, task, cfg, results, audit, order, log)
        raise
    except AdaptError as e:  # a rung stopped the run (e.g. a server that does not answer): keep what finished
        executor.abort()
        progress.install(previous_reporter)
        if results:
            _write_partial(run_dir, task, cfg, results, audit, order, log, why=str(e))
            raise AdaptError(f"{e} (the rungs that finished are saved: results.json and the report in "
                             f"{run_dir} show them; fix this and re-run to resume.)") from e
        raise
    finally:
        executor.close()
    progress.install(previous_reporter)
    not_run = order[len(results):]  # costlier rungs left out because the bar was met
    # a Ray run's costlier rungs cancelled once the bar was met: shown in the report, never in the decision
    results = with_earlier_rungs(results, store, cfg, log) + cancelled
    rec = recommend(results, cfg, all_labels=task.labels)
    rec["stopped_at"] = stopped_at
    rec["not_run"] = not_run
    if stopped_at is None and cfg.bar is not None and not cfg.run_all:
        rec["stopped_at_reason"] = "no rung cleared the bar: every rung ran"
    write_results(run_dir, task, cfg, results, rec, audit, log=log)
    return RunResult(run_dir, task, results, rec, stopped_at)


def _reusable(store: RunStore, name: str, params: dict[str, Any]) -> bool:
    """Will the climb reuse this rung's finished result (resume) instead of running it?"""
    prev = store.load_result(name)
    return bool(prev) and store.is_finished(name, prev, config_hash(params))


def with_earlier_rungs(results: list[dict[str, Any]], store: RunStore, cfg: RunConfig,
                       log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """This command's results plus rungs an earlier command finished in the same run directory.

    The directory's config hash already guarantees the same data, split, seed and sample (another
    one is refused unless ``--fresh``), so ``--rungs majority,tfidf`` then ``--rungs features``
    into one ``--out`` gives results, a report and a recommendation over all three. Only
    finished rungs with a complete saved model are taken; the bar verdict is re-judged with this
    command's bar. Returned in cost order, each earlier one marked ``from_earlier_command``.
    """
    have = {r.get("name") for r in results}
    earlier: list[dict[str, Any]] = []
    rungs_dir = store.root / "rungs"
    for path in sorted(rungs_dir.glob("*/result.json")) if rungs_dir.is_dir() else []:
        name = path.parent.name
        if name in have or name not in RUNGS:
            continue
        prev = store.load_result(name)
        if not prev or not store.is_finished(name, prev, prev.get("params_hash", "")):
            continue
        res = dict(prev)
        res["meets_bar"] = meets_bar(res, cfg)
        res["resumed"] = True
        res["from_earlier_command"] = True
        earlier.append(res)
    if not earlier:
        return results
    if log:
        log(f"kept from earlier commands in this directory: {', '.join(r['name'] for r in earlier)} "
            "(--fresh starts over)")
    merged = results + earlier
    rank = {n: i for i, n in enumerate(rungs_in_cost_order([str(r.get("name")) for r in merged]))}
    return sorted(merged, key=lambda r: rank.get(str(r.get("name")), len(rank)))


def _write_partial(run_dir: Path, task: Task, cfg: RunConfig, results: list[dict[str, Any]],
                   audit: dict[str, Any] | None, order: list[str], log: Callable[[str], None],
                   why: str | None = None) -> None:
    try:
        rec = recommend(results, cfg, all_labels=task.labels)
        left = order[len(results):]
        how = f"stopped by an error in {left[0]} ({why})" if why and left else "interrupted"
        rec["reasons"].append(f"This run was {how} ({', '.join(left)} not run); re-run the same command "
                              "to resume it.")
        rec["stopped_at"] = None
        write_results(run_dir, task, cfg, results, rec, audit, log=log, partial=True)
    except Exception as e:  # never hide the interrupt behind a reporting problem
        log(f"could not write the partial results ({type(e).__name__}: {_esc(e)})")


def run_audit_step(task: Task, cfg: RunConfig, run_dir: Path, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The data audit, before any rung spends compute; its errors stop the run unless ``force``.

    A resumed run reuses the audit.json it wrote (same data, same config hash) instead of
    auditing again, but still enforces its errors.
    """
    from adaptladder.audit import AuditReport, audit_for_run, enforce_audit, is_current

    existing = run_dir / "audit.json"
    if not cfg.no_audit and existing.is_file():
        try:
            old = json.loads(existing.read_text())
        except (OSError, ValueError):
            old = {}
        if is_current(old, task, encoder=cfg.encoder, seed=cfg.seed):
            report = AuditReport.from_dict(old)
            log(f"data audit: reusing {existing.name} ({report.summary_line()})")
            enforce_audit(report, force=cfg.force)
            return report.to_dict()
        log(f"data audit: {existing.name} was made with other rules or settings; auditing again")
    with progress.step("data audit"):  # heartbeat lines while it works (its stages may add detail)
        if getattr(cfg, "executor", "local") == "ray":  # its near-duplicate encoding as a Ray Data job
            from adaptladder.ray_encode import encoding_on_ray

            with encoding_on_ray(cfg.ray_address):
                return audit_for_run(task, cfg, run_dir, log)
        return audit_for_run(task, cfg, run_dir, log)


def _config_record(cfg: RunConfig, order: list[str]) -> dict[str, Any]:
    rec = asdict(cfg)
    rec["climbing_order"] = order
    rec["rung_params_resolved"] = {n: rung_params_for(n, cfg) for n in order}
    return rec


def results_document(task_summary: dict[str, Any], cfg: RunConfig, results: list[dict[str, Any]],
                     rec: dict[str, Any], audit: dict[str, Any] | None, labels: np.ndarray | None,
                     partial: bool = False) -> dict[str, Any]:
    """The content of ``results.json``: the one place that document is built (finished and partial runs)."""
    from adaptladder.compare import pairwise

    comparisons = {part: pairwise(results, part, cfg.metric, all_labels=labels, seed=cfg.seed)
                   for part in ("validation", "test")}
    comparisons["decision"] = rec.get("comparisons") or []  # the Holm family the recommendation used
    rec = {k: v for k, v in rec.items() if k != "comparisons"}
    doc = {"schema_version": SCHEMA_VERSION, "task": task_summary, "config": asdict(cfg), "bar": cfg.bar,
           "metric": cfg.metric, "rungs": results, "recommendation": rec, "audit": audit,
           "comparisons": comparisons, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if partial:
        doc["partial"] = True
    return doc


def write_results(run_dir: Path, task: Task, cfg: RunConfig, results: list[dict[str, Any]],
                  rec: dict[str, Any], audit: dict[str, Any] | None,
                  log: Callable[[str], None] | None = None, partial: bool = False) -> None:
    """results.json + summary.md, then the report (report.html / report.md) built from them.

    The results are on disk before the report is drawn, so a failure while drawing never
    loses a measurement (``adaptladder report RUN_DIR`` redraws it).
    """
    doc = results_document(task.summary(), cfg, results, rec, audit, task.labels, partial=partial)
    try:
        _write_record(run_dir, doc)
    except OSError as e:  # disk full, read-only: say what is missing, never claim it was written
        raise AdaptError(f"could not write results.json / summary.md (nor report.html, report.md) in {run_dir} "
                         f"({e.strerror or e}); the finished rungs are saved under rungs/: free space and re-run "
                         "the same command to write them.") from e
    try:
        from adaptladder.report import write_report

        write_report(run_dir, doc)
    except OSError as e:
        if os.environ.get("ADAPTLADDER_DEBUG") == "1":
            raise
        raise AdaptError(f"could not write the report (report.html, report.md) in {run_dir} ({e.strerror or e}); "
                         f"results.json and summary.md are saved: free space and run `adaptladder report "
                         f"{run_dir}` to draw the report.") from e
    except Exception as e:
        if os.environ.get("ADAPTLADDER_DEBUG") == "1":
            raise
        (log or print)(f"[red]could not draw the report[/red] ({type(e).__name__}: {_esc(e)}); the results are "
                       f"saved in {_esc(run_dir / 'results.json')}; `adaptladder report {_esc(run_dir)}` retries.")


def _write_record(run_dir: Path, doc: dict[str, Any]) -> None:
    from adaptladder.trust import write_manifest

    write_manifest(run_dir)  # the saved rungs' files, rung.json included, as readers will verify them
    atomic_write_json(run_dir / "results.json", doc)
    atomic_write_text(run_dir / "summary.md", summary_markdown(doc))


def assemble_partial(run_dir: str | Path) -> dict[str, Any]:
    """results.json content rebuilt from the per-rung files of an unfinished (killed) run."""
    from adaptladder.compare import labels_from_split_csv
    from adaptladder.store import read_json

    run_dir = Path(run_dir)
    record = read_json(run_dir / "config.json")
    task = read_json(run_dir / "task.json")
    store = RunStore(run_dir)
    known = {f.name for f in fields(RunConfig)}
    cfg = RunConfig(**{k: v for k, v in record.items() if k in known})
    order = list(record.get("climbing_order") or [])
    order += sorted(p.parent.name for p in (run_dir / "rungs").glob("*/result.json") if p.parent.name not in order)
    results = [r for r in (store.load_result(n) for n in order) if r is not None]
    if not results:
        raise AdaptError(f"{run_dir} has no finished rung yet; nothing to report (re-run the ladder to resume).")
    for r in results:
        r["meets_bar"] = meets_bar(r, cfg)
    labels = labels_from_split_csv(run_dir, task["label_names"])
    rec = recommend(results, cfg, all_labels=labels)
    missing = [n for n in order if n not in {r["name"] for r in results}]
    rec["reasons"].append("This run did not finish" + (f" ({', '.join(missing)} not run yet)" if missing else "")
                          + "; re-run the same command to resume it.")
    rec["stopped_at"] = None
    audit = read_json(run_dir / "audit.json") if (run_dir / "audit.json").is_file() else None
    return results_document(task, cfg, results, rec, audit, labels, partial=True)


def ensure_results(run_dir: str | Path) -> dict[str, Any]:
    """The run's results.json; for a run killed before writing one, a partial one is assembled from
    its finished rungs and written first (so ``report`` and ``predict`` can use the evidence so far)."""
    run_dir = Path(run_dir)
    if not (run_dir / "results.json").is_file() and (run_dir / "config.json").is_file():
        from adaptladder.generation.ladder import is_generation_run, write_gen_partial

        if is_generation_run(run_dir):
            write_gen_partial(run_dir)
        else:
            _write_record(run_dir, assemble_partial(run_dir))
    return load_results(run_dir)


def summary_markdown(doc: dict[str, Any]) -> str:
    """summary.md: the run in a few lines and the results table (the same table as the terminal and report.md)."""
    from adaptladder.report.markdown import md_escape
    from adaptladder.report.table import ladder_table, markdown_table

    m = doc["metric"]
    task = doc["task"]
    rec = doc["recommendation"]
    headers, rows = ladder_table(doc["rungs"], m, rec.get("rung"), escape=md_escape)
    lines = [f"# adaptladder run: {md_escape(task['name'])}", "",
             f"{task['n']:,} examples, {task['n_classes']} classes; split {task['split_sizes']}; "
             f"metric {m}" + (f", bar {doc['bar']:.2f}" if doc["bar"] is not None else ", no bar"),
             "", *markdown_table(headers, rows)]
    lines += ["", f"**Recommendation: {rec.get('rung')}**", ""] + [f"- {s}" for s in rec.get("reasons", [])]
    return "\n".join(lines) + "\n"


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2)

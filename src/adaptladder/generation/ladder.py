"""The generation ladder: climb the generation rungs in order of cost, measure each the same way,
stop at the bar, recommend one (issue #17).

The counterpart of :func:`adaptladder.ladder.run` for a :class:`~adaptladder.generation.task.GenTask`
(``ladder.run`` hands a generation task here). Per rung: fit on the training pairs (validation pairs
given for early stopping), generate on a seeded sample of validation and test sized to the rung's
budget, score every example with :mod:`adaptladder.generation.metrics`, time it (latency per example,
tokens/s, throughput, cost per 1,000 generations, memory), save the model, write the record
(``rungs/<name>/result.json``; its format is in the module :data:`RECORD_KEYS` and README).

The decision reads the validation split only: a rung meets the bar when its validation mean of the
primary metric clears it (or is within the non-inferiority margin and not significantly below it,
as in :mod:`adaptladder.decide`); the recommendation is the cheapest rung that meets it and that no
costlier rung beats significantly (paired bootstrap of the per-example scores, Holm-corrected over
every pair); without a bar, or when none meets it, the cheapest rung no costlier one beats
significantly. Test scores are reported for every rung and never used to choose.
"""

from __future__ import annotations

import inspect
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from adaptladder import progress
from adaptladder.budget import spread_by_length
from adaptladder.compare import holm_family
from adaptladder.config import rung_budget_s
from adaptladder.decide import Wording, _num, bar_check, choose_rung, margin_of
from adaptladder.errors import AdaptError, BudgetExceeded
from adaptladder.generation.metrics import per_example_scores, summarise
from adaptladder.generation.rungs import GEN_RUNGS, GenRung, GenSpec, get_gen_rung_class
from adaptladder.generation.task import GenTask
from adaptladder.measure import PeakMemory, rss_mb
from adaptladder.rungs.settings import resolve_params
from adaptladder.store import SCHEMA_VERSION, RunStore, atomic_write_json, atomic_write_text, config_hash

Log = Callable[[str], None]

#: Examples the timing probe generates (from the test split) before a rung's evaluation.
PROBE_N = 4
#: The smallest random sample per split a budgeted rung may be evaluated on.
MIN_EVAL_N = 20
#: Single-example calls timed for the latency percentiles (each costs a whole unbatched generation).
N_SINGLE = 3
#: Exact prompts kept in the record (for the report).
N_PROMPTS = 3
#: Inputs per generate() call while evaluating (progress is reported between chunks).
CHUNK = 16
#: A rung whose fit used up its budget still gets this share of it for its evaluation.
EVAL_FLOOR_SHARE = 0.25
#: Generations a budgeted training rung keeps time for after training: the timing probe, the minimal
#: sample of both splits, the unbatched latency calls, and 10% slack (the probe's rate is not the check's).
EVAL_RESERVE_GENERATIONS = round(1.1 * (PROBE_N + 2 * MIN_EVAL_N + 1 + 2), 1)
#: Run-wide values a rung gets when it declares the setting (see :func:`gen_rung_params`).
RUN_WIDE = ("lm", "budget_minutes", "seed", "encoder")


# ------------------------------------------------------------------ order and settings
def gen_rungs_in_order(names: Sequence[str]) -> list[str]:
    return sorted(names, key=lambda n: (get_gen_rung_class(n).cost_rank, n))


def gen_climbing_order(cfg: Any) -> list[str]:
    """``cfg.rungs`` (default: every generation rung) in cost order; ``cfg.order`` first when given."""
    names = list(cfg.rungs or GEN_RUNGS)
    for n in names + list(cfg.order or []) + list(cfg.rung_params or {}):
        if n not in GEN_RUNGS:
            raise AdaptError(f"unknown generation rung {n!r}: choose from {', '.join(GEN_RUNGS)}.")
    if cfg.order:
        ordered = [n for n in cfg.order if n in names]
        return ordered + [n for n in gen_rungs_in_order(names) if n not in ordered]
    return gen_rungs_in_order(names)


def declared_settings(cls: type[GenRung]) -> set[str]:
    """The setting names a rung class declares (its ``Settings`` dataclass)."""
    return {f.name for f in fields(cls.Settings)}


def gen_rung_params(name: str, cfg: Any) -> dict[str, Any]:
    """A generation rung's parameters (plain dict, ``GenRung(**params)``): its own settings (config
    file and ``--set``) over the run-wide ``lm``, ``budget_minutes``, ``seed`` and ``encoder`` it declares.
    A ``budget_minutes`` the rung does not take stays a ladder-level setting (it sizes the evaluation)."""
    cls = get_gen_rung_class(name)
    declared = declared_settings(cls)
    own = dict((cfg.rung_params or {}).get(name, {}))
    if "budget_minutes" not in declared:
        own.pop("budget_minutes", None)
    out: dict[str, Any] = {}
    for key in RUN_WIDE:
        v = getattr(cfg, key, None)
        if v is not None and key in declared:
            out[key] = v
    out.update(own)
    # checked against the declared settings: an unknown or invalid one is a one-line error naming it
    return resolve_params(name, None, out, kind="generation")


def _esc(obj: Any) -> str:
    """``str(obj)`` safe inside a rich-markup log line."""
    from rich.markup import escape

    return escape(str(obj))


def default_run_dir(cfg: Any, task: GenTask) -> Path:
    """``--out``, else ``runs/<name or task name>`` (as ``adaptladder.ladder.default_run_dir``)."""
    if cfg.out:
        return Path(os.path.normpath(cfg.out))
    return Path("runs") / (cfg.name or task.name)


def spec_for(task: GenTask, cfg: Any, name: str, metric: str | None = None) -> GenSpec:
    """The rung's view of the task; ``metric`` (the run's primary metric) is what fine-tuning rungs
    early-stop on, so ``--metric`` reaches them."""
    budget = rung_budget_s(name, cfg)
    extra: dict[str, Any] = {"budget_minutes": budget / 60} if budget else {}
    if budget:  # a training rung keeps time for the minimal evaluation after it (``train_sft``)
        extra["eval_reserve_generations"] = EVAL_RESERVE_GENERATIONS
    if metric:
        extra["metric"] = metric
    shape = getattr(get_gen_rung_class(name), "training_shape", None)
    if callable(shape):  # e.g. qlora-sft: its skip estimate is for this task's pairs and token lengths
        extra["training_shape"] = shape(gen_rung_params(name, cfg), *task.part("train"), task.instruction)
    return GenSpec.of(task, seed=cfg.seed, **extra)


# ------------------------------------------------------------------ evaluation plan
@dataclass
class GenEvalPlan:
    """How a rung is evaluated: per-split caps sized to the budget and the ETA they imply."""

    caps: dict[str, int | None]
    seconds_per_example: float | None = None
    probe_examples: int = 0
    probe_seconds: float = 0.0
    estimate_s: float | None = None
    allowance_s: float | None = None
    n_single: int = N_SINGLE
    reason: str = "full splits"

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("seconds_per_example", "probe_seconds", "estimate_s", "allowance_s"):
            if out[k] is not None:
                out[k] = round(float(out[k]), 4)
        return out


def plan_evaluation(rung: GenRung, task: GenTask, seed: int, *, budget_s: float | None = None,
                    spent_s: float = 0.0, clock: Callable[[], float] = time.perf_counter,
                    probe_n: int = PROBE_N) -> GenEvalPlan:
    """Time a few generations, then size the evaluation to what is left of the budget.

    Without a budget: the full splits (or the rung's ``eval_cap`` per split, when it declares one), and
    no probe. With one: the full splits when they fit, else a seeded random sample per split that fits (at
    least :data:`MIN_EVAL_N`), or :class:`BudgetExceeded` when even that does not.
    """
    sizes = {p: len(task.indices(p)) for p in ("validation", "test")}
    cap = getattr(rung, "eval_cap", None)
    if budget_s is None:  # nothing to size: no probe (a generation costs seconds); the progress line has the rate
        caps = {p: (cap if cap and sizes[p] > cap else None) for p in sizes}
        reason = f"capped at {cap} per split (slow rung)" if any(caps.values()) else "full splits, no budget"
        return GenEvalPlan(caps, None, 0, 0.0, None, None, N_SINGLE, reason)
    test_idx = task.indices("test")
    probe_n = min(probe_n, len(test_idx))
    per_ex, t_probe = None, 0.0
    if probe_n:
        # spread over the split's input lengths: a random few can all be short (budget.spread_by_length)
        pick = spread_by_length([len(task.inputs[int(i)]) for i in test_idx], probe_n)
        t0 = clock()
        rung.generate([task.inputs[int(test_idx[i])] for i in pick])
        t_probe = clock() - t0
        per_ex = t_probe / probe_n

    def cost(n_val: int, n_test: int, single: int) -> float:
        return (per_ex or 0.0) * (n_val + n_test + 1 + single)

    allowance = max(budget_s - spent_s, EVAL_FLOOR_SHARE * budget_s)
    full = cost(sizes["validation"], sizes["test"], N_SINGLE)
    if full <= allowance or not per_ex:
        return GenEvalPlan({"validation": None, "test": None}, per_ex, probe_n, t_probe, full, allowance, N_SINGLE,
                           "full splits fit the budget")
    afford = allowance / per_ex
    single = int(min(N_SINGLE, max(2, 0.05 * afford)))
    left = afford - single - 1
    minimum = min(MIN_EVAL_N, min(sizes.values()))
    if left // 2 < minimum:
        need = cost(minimum, minimum, 2)
        raise BudgetExceeded(
            f"over budget: the timing probe measured {per_ex:.2f} s per generation, so even a minimal evaluation "
            f"({minimum} validation + {minimum} test examples) needs ~{need / 60:.1f} min, more than the "
            f"{allowance / 60:.1f} min left of its {budget_s / 60:.1f} min budget; raise --budget-minutes "
            "(or --set RUNG.budget_minutes=...)")
    small = min(sizes, key=lambda p: sizes[p])
    big = "test" if small == "validation" else "validation"
    n_small = min(sizes[small], int(left // 2))
    n_big = min(sizes[big], int(left) - n_small)
    caps: dict[str, int | None] = {small: n_small if n_small < sizes[small] else None,
                                   big: n_big if n_big < sizes[big] else None}
    return GenEvalPlan(caps, per_ex, probe_n, t_probe, cost(n_small, n_big, single), allowance, single,
                       f"random sample sized to the budget (full splits: ~{full / 60:.1f} min)")


def eval_deadline(plan: Any, now: float) -> float | None:
    """When a budgeted evaluation must end: the plan's allowance, counted from the probe's start
    (None without a budget)."""
    if plan.allowance_s is None:
        return None
    return now - (plan.probe_seconds or 0.0) + plan.allowance_s


def eval_indices(task: GenTask, part: str, cap: int | None, seed: int) -> tuple[np.ndarray, bool]:
    """The split's row positions, or a seeded random sample of ``cap`` of them (sorted).

    The sample is a prefix of one seeded permutation of the split, so a smaller sample is a subset
    of a larger one: rungs evaluated on samples of different sizes still share examples to pair.
    """
    idx = task.indices(part)
    if cap is None or len(idx) <= cap:
        return idx, False
    order = np.random.default_rng(seed + (0 if part == "validation" else 7)).permutation(len(idx))
    return np.sort(idx[order[:cap]]), True


# ------------------------------------------------------------------ scoring
def make_encode(cfg: Any, log: Log) -> Callable[[list[str]], Any] | None:
    """The run's cached sentence encoder's ``encode`` (for embedding_sim), loaded on first use."""
    state: dict[str, Any] = {}

    def encode(texts: list[str]) -> Any:
        if "enc" not in state:
            from adaptladder.encode import get_encoder

            state["enc"] = get_encoder(cfg.encoder or "minilm")
        return state["enc"].encode(texts)

    return encode


def make_judge(log: Log) -> Any:
    """The LLM-as-judge backend when ``ADAPTLADDER_JUDGE_MODEL`` is set (see :mod:`.judge`), else None."""
    from adaptladder.generation.judge import judge_settings, make_backend

    settings = judge_settings()
    if settings is None:
        return None
    log(f"LLM-as-judge on: {settings['model']} at {settings['base_url']} grades each rung's test outputs "
        "(llm_judge; never the primary metric)")
    return make_backend(settings)


#: characters of an input / reference kept in the test record (the report shows up to 600)
TEXT_CHARS = 600


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + f" … ({len(text):,} characters)"


def score_part(task: GenTask, idx: np.ndarray, outputs: list[str], *, encode: Callable[[list[str]], Any] | None,
               metric: str, seed: int, log: Log, sampled: bool, judge: Any = None, texts: bool = False
               ) -> dict[str, Any]:
    """One split's record: n, sampled, indices, outputs, every metric's mean + CI, per-example scores;
    with ``texts`` also the inputs and references (cut at :data:`TEXT_CHARS`) for the report's side-by-side
    sample (the run directory holds no copy of the data)."""
    refs = task.refs([task.targets[int(i)] for i in idx])
    kind = task.output
    if kind == "json":
        per, per_field = per_example_scores(outputs, refs, kind="json", schema=task.schema)
    else:
        per, per_field = per_example_scores(outputs, refs, kind="text")
        if encode is not None:
            try:
                sim, _ = per_example_scores(outputs, refs, kind="text", encode=encode, metrics=["embedding_sim"])
                per.update(sim)
            except AdaptError:
                raise
            except Exception as e:
                if metric == "embedding_sim" or os.environ.get("ADAPTLADDER_DEBUG") == "1":
                    raise
                log(f"embedding_sim not computed ({type(e).__name__}: {e}); the other metrics stand")
    out: dict[str, Any] = {"n": len(idx), "sampled": bool(sampled), "indices": [int(i) for i in idx],
                           "outputs": list(outputs)}
    if texts:
        out["inputs"] = [_cut(task.inputs[int(i)]) for i in idx]
        out["references"] = [_cut(task.targets[int(i)]) for i in idx]
    for m, v in per.items():
        s = summarise(v, seed=seed)
        out[m] = s["mean"]
        out[m + "_ci"] = s["ci"]
    if judge is not None:  # the optional LLM-as-judge (generation.judge): test split only, never decides
        from adaptladder.generation.judge import judge_scores

        try:
            per["llm_judge"], out["judge"] = judge_scores([task.inputs[int(i)] for i in idx], outputs,
                                                          [task.targets[int(i)] for i in idx],
                                                          instruction=task.instruction, backend=judge)
            s = summarise(per["llm_judge"], seed=seed)
            out["llm_judge"], out["llm_judge_ci"] = s["mean"], s["ci"]
        except Exception as e:  # an extra opinion: its failure costs only itself
            if os.environ.get("ADAPTLADDER_DEBUG") == "1":
                raise
            log(f"llm_judge not computed ({type(e).__name__}: {e}); the other metrics stand")
    out["per_example"] = {m: [float(x) for x in v] for m, v in per.items()}
    if kind == "json":
        out["per_field_exact_match"] = {f: {"mean": (s := summarise(v, seed=seed))["mean"], "ci": s["ci"]}
                                        for f, v in per_field.items()}
    return out


def _generate_chunked(rung: GenRung, inputs: list[str], done0: int, deadline: float | None = None,
                      clock: Callable[[], float] = time.perf_counter, rate: float | None = None
                      ) -> tuple[list[str], dict[str, float], float]:
    """Generate in chunks (progress between them); summed usage and wall seconds. With ``deadline``
    (a ``clock()`` time), each chunk holds only the examples that the seconds per example measured so
    far (at first ``rate``, the probe's) say end by then, and generation stops when not one more
    does: the outputs are those of a prefix of ``inputs`` (at least one)."""
    outs: list[str] = []
    usage = {"new_tokens": 0.0, "prompt_tokens": 0.0, "seconds": 0.0}
    wall = 0.0
    s = 0
    while s < len(inputs):
        size = CHUNK
        if deadline is not None:
            per = wall / len(outs) if outs else rate
            if not outs:  # the probe's rate may be stale (the machine got busy): measure on a small chunk
                size = max(1, CHUNK // 4)
            if per:
                size = min(size, int(max(0.0, deadline - clock()) / per))
                if size < 1:
                    if outs:
                        break
                    size = 1  # a split is never empty
        batch = inputs[s:s + size]
        s += len(batch)
        t0 = clock()
        got = rung.generate(batch)
        wall += clock() - t0
        if len(got) != len(batch):
            raise RuntimeError(f"{rung.name} returned {len(got)} outputs for {len(batch)} inputs")
        outs.extend("" if o is None else str(o) for o in got)
        u = rung.last_usage or {}
        for k in usage:
            usage[k] += float(u.get(k) or 0.0)
        progress.update(done=done0 + len(outs))
    return outs, usage, wall


def measure_latency(rung: GenRung, inputs: list[str], n_single: int, seed: int) -> dict[str, Any]:
    """p50 / p95 milliseconds of single-example generate calls (embedding cache bypassed)."""
    from adaptladder.encode import cache_disabled

    if not inputs or n_single < 1:
        return {}
    picks = np.random.default_rng(seed + 3).choice(len(inputs), size=min(n_single, len(inputs)), replace=False)
    lat = []
    with cache_disabled():
        for i in picks:
            t0 = time.perf_counter()
            rung.generate([inputs[int(i)]])
            lat.append(time.perf_counter() - t0)
    ms = np.array(lat) * 1000
    return {"latency_ms_p50": float(np.percentile(ms, 50)), "latency_ms_p95": float(np.percentile(ms, 95)),
            "n_latency": len(lat)}


def evaluate_gen_rung(rung: GenRung, task: GenTask, plan: GenEvalPlan, *, metric: str, seed: int,
                      encode: Callable[[list[str]], Any] | None, log: Log, judge: Any = None,
                      deadline: float | None = None, clock: Callable[[], float] = time.perf_counter
                      ) -> dict[str, Any]:
    """Generate on validation and test (sized by ``plan``), score, and time it.

    Each split is generated in a seeded random order, so any prefix of it is a random sample. With
    ``deadline`` (a ``clock()`` time: the end of the rung's budget) the evaluation holds its budget
    whatever the load: each split gets the share of the time left that its planned examples are of
    those left (validation first, then test, each with its own cut-off), stops at that time with the
    examples done, and says so (``stopped_early`` in the split's record, and a log line)."""
    picked = {p: eval_indices(task, p, plan.caps.get(p), seed) for p in ("validation", "test")}
    total = sum(len(i) for i, _ in picked.values())
    out: dict[str, Any] = {}
    mem: dict[str, float] = {}
    usage_all = {"new_tokens": 0.0, "prompt_tokens": 0.0, "seconds": 0.0}
    wall_all, n_all = 0.0, 0
    with progress.step(f"{rung.name}: generate", total, eta_s=plan.estimate_s):
        done = 0
        planned_left = total
        for part in ("validation", "test"):
            idx, sampled = picked[part]
            progress.update(detail=part)
            # a seeded random order (any prefix is a random sample); the record keeps row order
            perm = np.random.default_rng(seed + (11 if part == "validation" else 17)).permutation(len(idx))
            part_deadline = None
            if deadline is not None:
                left_s = max(0.0, deadline - clock())
                part_deadline = clock() + left_s * len(idx) / max(planned_left, 1)
            planned_left -= len(idx)
            with PeakMemory() as pm:
                outputs, usage, wall = _generate_chunked(rung, [task.inputs[int(idx[j])] for j in perm], done,
                                                         part_deadline, clock, plan.seconds_per_example)
            if len(outputs) < len(idx):
                log(f"{rung.name}: {part} stopped at its share of the budget after {len(outputs)} of {len(idx)} "
                    f"examples ({wall / max(len(outputs), 1):.2f} s each, against the probe's "
                    f"{plan.seconds_per_example or 0:.2f} s); the {len(outputs)} done are a random sample")
                sampled = True
                progress.update(total=total - (len(idx) - len(outputs)))
            kept = np.sort(perm[:len(outputs)])
            rank = {int(j): r for r, j in enumerate(perm[:len(outputs)])}
            outputs = [outputs[rank[int(j)]] for j in kept]
            stopped = len(outputs) < len(idx)
            idx = idx[kept]
            done += len(idx)
            mem[part] = pm.delta_mb
            for k in usage_all:
                usage_all[k] += usage[k]
            wall_all += wall
            n_all += len(idx)
            with progress.step(f"{rung.name}: score {part}"):
                out[part] = score_part(task, idx, outputs, encode=encode, metric=metric, seed=seed, log=log,
                                       sampled=sampled, judge=judge if part == "test" else None,
                                       texts=part == "test")
            if stopped:
                out[part]["stopped_early"] = {"planned": len(perm), "done": len(idx),
                                              "reason": "time allowance of the rung's budget reached"}
        progress.update(detail="latency")
        test_inputs = [task.inputs[int(i)] for i in out["test"]["indices"]]
        n_single = plan.n_single
        if deadline is not None and n_all:  # single calls only while the budget holds them
            per = wall_all / n_all
            n_single = min(n_single, max(0, int((deadline - clock()) / max(per, 1e-9))))
        lat = measure_latency(rung, test_inputs, n_single, seed)
    gen_s = usage_all["seconds"] or wall_all
    out["predict"] = {
        **lat,
        "throughput_per_s": n_all / wall_all if wall_all > 0 else None,
        "tokens_per_s": usage_all["new_tokens"] / gen_s if gen_s > 0 and usage_all["new_tokens"] else None,
        "new_tokens_mean": usage_all["new_tokens"] / n_all if n_all else None,
        "prompt_tokens_mean": usage_all["prompt_tokens"] / n_all if n_all else None,
        "n_generated": n_all,
        "generate_seconds": wall_all,
    }
    out["predict_memory_mb"] = max(mem.values()) if mem else 0.0
    try:
        out["prompts"] = list(rung.prompts_used(test_inputs[:N_PROMPTS]))[:N_PROMPTS]
    except Exception as e:  # the prompts are for the report; never lose a rung over them
        log(f"{rung.name}: could not record its prompts ({type(e).__name__}: {e})")
        out["prompts"] = []
    return out


# ------------------------------------------------------------------ one rung
def _skip(cls: type[GenRung], base: dict[str, Any], params: dict[str, Any], reason: str,
          spec: GenSpec | None = None) -> dict[str, Any]:
    try:  # the spec (the task's training shape) only to a skip_details that takes it
        takes_spec = spec is not None and "spec" in inspect.signature(cls.skip_details).parameters
        details = cls.skip_details(params, spec) if takes_spec else cls.skip_details(params)
    except Exception as e:  # the estimate is a courtesy; the skip stands
        details = {"error": f"{type(e).__name__}: {e}"}
    return dict(base, status="skipped", reason=reason, skip_details=details)


def run_gen_rung(name: str, task: GenTask, cfg: Any, store: RunStore, *, metric: str,
                 encode: Callable[[list[str]], Any] | None, log: Log = print, judge: Any = None) -> dict[str, Any]:
    """Fit, evaluate, save and record one generation rung (or record why it was skipped / failed)."""
    from adaptladder.pricing import local_cost_per_1k
    from adaptladder.progress import fmt_seconds

    cls = get_gen_rung_class(name)
    params = gen_rung_params(name, cfg)
    budget_s = rung_budget_s(name, cfg)
    spec = spec_for(task, cfg, name, metric)
    base = {"name": name, "task": "generation", "family": cls.family, "cost_rank": cls.cost_rank,
            "description": cls.description, "params": params, "params_hash": config_hash(params),
            "budget_minutes": budget_s and budget_s / 60}
    reason = cls.unavailable_reason(params, spec)
    if reason:
        log(f"{name}: skipped ({reason})")
        return _skip(cls, base, params, reason, spec)
    tr_x, tr_y = task.part("train")
    va_x, va_y = task.part("validation")
    rss_before = rss_mb()
    t_start = time.perf_counter()
    try:
        rung = cls(**params)
        with PeakMemory() as pm:
            t0 = time.perf_counter()
            with progress.step(f"{name}: fit", eta_s=budget_s if params.get("budget_minutes") else None):
                rung.fit(tr_x, tr_y, spec=spec, val_inputs=va_x, val_targets=va_y)
            fit_seconds = time.perf_counter() - t0
        while True:  # a prompting rung too slow for a minimal evaluation halves its prompts, then re-probes
            try:
                with progress.step(f"{name}: timing probe"):
                    plan = plan_evaluation(rung, task, cfg.seed, budget_s=budget_s,
                                           spent_s=time.perf_counter() - t_start, clock=time.perf_counter)
                break
            except BudgetExceeded as e:
                window = rung.shorten_prompts(str(e))
                if window is None:
                    raise
                log(f"{name}: too slow for a minimal evaluation in its budget; prompts shortened to {window} tokens")
        n_eval = {p: plan.caps[p] or len(task.indices(p)) for p in ("validation", "test")}
        per = f", {plan.seconds_per_example:.2f} s/generation" if plan.seconds_per_example else ""
        eta = f"; evaluation ETA {fmt_seconds(plan.estimate_s)}" if plan.estimate_s is not None else ""
        log(f"{name}: fit took {fmt_seconds(fit_seconds)}{eta} ({n_eval['validation']} validation + "
            f"{n_eval['test']} test{per}; {plan.reason})")
        evaluation = evaluate_gen_rung(rung, task, plan, metric=metric, seed=cfg.seed, encode=encode, log=log,
                                       deadline=eval_deadline(plan, time.perf_counter()), clock=time.perf_counter,
                                       judge=judge)
        store.save_model(name, rung)  # the complete model first; result.json (written after) marks it finished
    except BudgetExceeded as e:
        log(f"[yellow]rung {name} skipped[/yellow]: {e}")
        return dict(base, status="skipped", reason=str(e), fit_seconds=time.perf_counter() - t_start)
    except AdaptError:
        raise
    except Exception as e:  # one rung's failure must not lose the others' results
        if os.environ.get("ADAPTLADDER_DEBUG") == "1":
            raise
        log(f"[red]rung {name} failed[/red]: {type(e).__name__}: {_esc(e)}")
        return dict(base, status="failed", reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=8))
    eval_seconds = time.perf_counter() - t_start - fit_seconds
    extra = dict(rung.extra_info() or {})
    predict = evaluation.pop("predict")
    cost = extra.get("cost_per_1k_usd")
    if cost is None and predict.get("throughput_per_s"):
        cost = local_cost_per_1k(1.0 / predict["throughput_per_s"])
    decoding = extra.get("decoding")
    if decoding is None and callable(getattr(rung, "decoding", None)):
        try:
            decoding = rung.decoding()
        except Exception:
            decoding = None
    return dict(
        base,
        status="done",
        reason=None,
        validation=evaluation["validation"],
        test=evaluation["test"],
        fit_seconds=fit_seconds,
        evaluation_plan=dict(plan.record(), actual_s=round(eval_seconds, 3)),
        predict=predict,
        peak_memory_mb={"fit": pm.delta_mb, "predict": evaluation["predict_memory_mb"],
                        "process_rss_before": rss_before, "process_peak_rss": pm.peak_mb},
        cost_per_1k_usd=cost,
        decoding=decoding or {},
        prompts=evaluation["prompts"],
        spec=rung.spec_.record() if rung.spec_ is not None else spec.record(),
        extra=extra,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


# ------------------------------------------------------------------ decision
def decision_cfg(cfg: Any, metric: str) -> Any:
    """What :mod:`adaptladder.decide` reads, with the generation run's primary metric."""
    return SimpleNamespace(bar=cfg.bar, metric=metric, margin=margin_of(cfg),
                           require_lower_bound=bool(getattr(cfg, "require_lower_bound", False)),
                           seed=getattr(cfg, "seed", 0) or 0)


def gen_meets_bar(res: dict[str, Any], cfg: Any, metric: str) -> bool | None:
    if res.get("status") != "done" or metric not in (res.get("validation") or {}):
        return None if cfg.bar is None or res.get("status") != "done" else False
    check = bar_check(res, decision_cfg(cfg, metric))
    return None if check is None else bool(check["ok"])


def compare_gen(a: dict[str, Any], b: dict[str, Any], part: str, metric: str, seed: int = 0
                ) -> dict[str, Any] | None:
    """Paired bootstrap of ``b - a`` on the examples of ``part`` both were scored on (positive: b better)."""
    from adaptladder.generation.metrics import paired_compare

    pa, pb = a.get(part) or {}, b.get(part) or {}
    sa, sb = (pa.get("per_example") or {}).get(metric), (pb.get("per_example") or {}).get(metric)
    if sa is None or sb is None:
        return None
    ia, ib = np.asarray(pa["indices"], dtype=np.int64), np.asarray(pb["indices"], dtype=np.int64)
    common, pos_a, pos_b = np.intersect1d(ia, ib, assume_unique=True, return_indices=True)
    if len(common) == 0:
        return None
    va, vb = np.asarray(sa, dtype=float)[pos_a], np.asarray(sb, dtype=float)[pos_b]
    c = paired_compare(vb, va, seed=seed)
    return {"a": a["name"], "b": b["name"], "part": part, "metric": metric, "diff": c["diff"], "ci": c["ci"],
            "diff_ci": c["ci"], "excludes_zero": c["excludes_zero"], "p_value": c["p_value"], "n": c["n"],
            "n_common": c["n"], "n_a": len(ia), "n_b": len(ib), "subset": bool(len(common) < max(len(ia), len(ib))),
            "a_score": c["mean_b"], "b_score": c["mean_a"], "p_holm": c["p_value"], "holm_m": 1}


def comparison_family(done: Sequence[dict[str, Any]], part: str, metric: str, pairs: Sequence[tuple[int, int]],
                      seed: int = 0) -> list[dict[str, Any]]:
    """The paired comparisons of ``pairs`` (positions in ``done``, cheaper first), Holm-corrected together."""
    return holm_family(done, lambda a, b: compare_gen(a, b, part, metric, seed=seed), pairs)


def _beaten_sentence(cheap: dict[str, Any], costly: dict[str, Any], c: dict[str, Any], why: str) -> str:
    lo, hi = c["ci"]
    return (f"{cheap['name']} {why}, but {costly['name']} is significantly better by {c['diff']:+.3f} {c['metric']} "
            f"(paired 95% CI [{lo:+.3f}, {hi:+.3f}], n={c['n']} validation examples, Holm-adjusted "
            f"p={c['p_holm']:.3g}){_cost_phrase(cheap, costly)}.")


def _versus_sentence(other: dict[str, Any], chosen: dict[str, Any], c: dict[str, Any]) -> str:
    verdict = f"significantly worse than {chosen['name']}" if c["significant"] else "no evidence of a difference"
    lo, hi = c["ci"]
    return (f"{other['name']} vs {chosen['name']}: {c['diff']:+.3f} {c['metric']} (paired 95% CI [{lo:+.3f}, "
            f"{hi:+.3f}], n={c['n']}), {verdict} (Holm-adjusted p={c['p_holm']:.3g})")


#: How the generation recommendation words the shared rule (:func:`adaptladder.decide.choose_rung`).
GEN_WORDING = Wording(beaten=_beaten_sentence, versus=_versus_sentence, test="paired bootstrap",
                      bar_names_metric=True, near_misses=False)


def recommend_generation(results: Sequence[dict[str, Any]], cfg: Any, metric: str) -> dict[str, Any]:
    """Choose a rung from the validation scores of the primary metric (never test); see the module doc.
    The rule is :func:`adaptladder.decide.choose_rung`'s, with the paired bootstrap of per-example scores."""
    results = list(results)
    done = [r for r in results if r.get("status") == "done" and metric in (r.get("validation") or {})]
    dc = decision_cfg(cfg, metric)
    rec = choose_rung(results, done, dc, compare=lambda a, b: compare_gen(a, b, "validation", metric, seed=dc.seed),
                      wording=GEN_WORDING, extra={"metric": metric})
    if rec["rung"] is not None:
        rec["reasons"] += [f"{r['name']} {r['status']}: {r.get('reason')}." for r in results
                           if r.get("status") in ("skipped", "failed")]
    return rec


def _cost_phrase(cheap: dict[str, Any], costly: dict[str, Any]) -> str:
    """' at 3.2x the latency (812 vs 254 ms per generation) and 3.0x the cost (...)' or ''."""
    bits = []
    lc, lx = (_num((r.get("predict") or {}).get("latency_ms_p50")) for r in (cheap, costly))
    if lc and lx:
        bits.append(f"{lx / lc:.1f}x the latency ({lx:,.0f} vs {lc:,.0f} ms per generation)")
    cc, cx = _num(cheap.get("cost_per_1k_usd")), _num(costly.get("cost_per_1k_usd"))
    if cc and cx:
        bits.append(f"{cx / cc:.1f}x the cost (${cx:.4f} vs ${cc:.4f} per 1,000 generations)")
    return (" at " + " and ".join(bits)) if bits else ""


def document_comparisons(results: Sequence[dict[str, Any]], metric: str, recommended: str | None,
                         seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Paired comparisons per split: consecutive finished rungs and each rung vs the recommended one."""
    done = [r for r in results if r.get("status") == "done"]
    pairs = {(i, i + 1) for i in range(len(done) - 1)}
    names = [r["name"] for r in done]
    if recommended in names:
        k = names.index(recommended)
        pairs |= {(min(i, k), max(i, k)) for i in range(len(done)) if i != k}
    ordered = sorted(pairs)
    return {part: comparison_family(done, part, metric, ordered, seed=seed) for part in ("validation", "test")}


# ------------------------------------------------------------------ documents
#: The headline metrics shown in tables: text tasks, JSON tasks
TABLE_METRICS = {"text": ("exact_match", "token_f1", "rouge_l", "chrf", "embedding_sim"),
                 "json": ("json_parse", "schema_valid", "field_f1", "json_exact_match")}


def _ci_cell(part: dict[str, Any] | None, m: str) -> str:
    if not part or m not in part:
        return "-"
    ci = part.get(m + "_ci")
    return f"{part[m]:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{part[m]:.3f}"


def _money(v: Any) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v:.4f}" if v >= 0.01 or v == 0 else f"{v:.2e}"


def training_flags(r: dict[str, Any]) -> list[str]:
    """Short flags for a fine-tuning rung that did not train enough to judge (table and report)."""
    from adaptladder.decide import training_record

    tr = training_record(r)
    return [f for f, on in (("base model: no step improved", tr.get("base_model_outputs")),
                            (f"under-trained: {float(tr.get('epochs') or 0):.0%} of an epoch",
                             tr.get("under_trained"))) if on]


def gen_ladder_table(results: Sequence[dict[str, Any]], metric: str, recommended: str | None = None
                     ) -> tuple[list[str], list[list[str]]]:
    """Columns and cells of the generation ladder table (terminal and summary.md)."""
    headers = ["rung", "status", f"val {metric} (95% CI)", f"test {metric} (95% CI)", "bar", "n val/test",
               "p50 ms", "tokens/s", "$/1k gen", "fit s"]
    rows = []
    for r in results:
        name = r["name"] + (" *" if r["name"] == recommended else "")
        if r.get("status") != "done":
            rows.append([name, f"{r.get('status')}: {str(r.get('reason') or '')[:70]}", "-", "-", "-", "-", "-", "-",
                         "-", "-"])
            continue
        p = r.get("predict") or {}
        v, t = r.get("validation") or {}, r.get("test") or {}
        bar = {True: "yes", False: "no"}.get(r.get("meets_bar"), "-")
        status = "done" + "".join(f" ({flag})" for flag in training_flags(r))
        rows.append([name, status, _ci_cell(v, metric), _ci_cell(t, metric), bar,
                     f"{v.get('n', '-')}/{t.get('n', '-')}",
                     f"{p['latency_ms_p50']:,.0f}" if p.get("latency_ms_p50") is not None else "-",
                     f"{p['tokens_per_s']:.1f}" if p.get("tokens_per_s") else "-",
                     _money(r.get("cost_per_1k_usd")),
                     f"{r.get('fit_seconds', 0):.1f}"])
    return headers, rows


def gen_summary_markdown(doc: dict[str, Any]) -> str:
    """summary.md of a generation run: what ran, the table, every metric on test, the recommendation."""
    from adaptladder.report.markdown import md_escape
    from adaptladder.report.table import markdown_table

    m, task, rec = doc["metric"], doc["task"], doc["recommendation"]
    headers, rows = gen_ladder_table(doc["rungs"], m, rec.get("rung"))
    rows = [[md_escape(c) for c in row] for row in rows]
    lines = [f"# adaptladder run: {md_escape(task['name'])} (generation, {task['kind']})", "",
             f"{task['n']:,} pairs; split {task['split_sizes']}; primary metric {m}"
             + (f", bar {doc['bar']:.2f}" if doc["bar"] is not None else ", no bar"), "",
             *markdown_table(headers, rows), ""]
    mets = TABLE_METRICS.get(task.get("output", "text"), TABLE_METRICS["text"])
    done = [r for r in doc["rungs"] if r.get("status") == "done"]
    if any("llm_judge" in (r.get("test") or {}) for r in done):
        mets = (*mets, "llm_judge")
    if done:
        lines += ["Test scores, every metric (95% CI):", ""]
        mh = ["rung", *mets]
        mrows = [[md_escape(r["name"]), *(_ci_cell(r.get("test"), x) for x in mets)] for r in done]
        lines += [*markdown_table(mh, mrows), ""]
    lines += [f"**Recommendation: {md_escape(str(rec.get('rung')))}**", ""]
    lines += [f"- {md_escape(s)}" for s in rec.get("reasons", [])]
    return "\n".join(lines) + "\n"


def gen_results_document(task: GenTask | dict[str, Any], cfg: Any, results: list[dict[str, Any]],
                         rec: dict[str, Any], audit: dict[str, Any] | None, metric: str, partial: bool = False
                         ) -> dict[str, Any]:
    """The content of a generation run's ``results.json`` (``task``: the GenTask or its summary)."""
    comparisons: dict[str, Any] = document_comparisons(results, metric, rec.get("rung"), seed=cfg.seed)
    comparisons["decision"] = rec.get("comparisons") or []
    rec = {k: v for k, v in rec.items() if k != "comparisons"}
    summary = task if isinstance(task, dict) else task.summary()
    doc = {"schema_version": SCHEMA_VERSION, "task": summary, "config": asdict(cfg), "bar": cfg.bar,
           "metric": metric, "rungs": results, "recommendation": rec, "audit": audit, "comparisons": comparisons,
           "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if partial:
        doc["partial"] = True
    return doc


def write_gen_results(run_dir: Path, task: GenTask, cfg: Any, results: list[dict[str, Any]], rec: dict[str, Any],
                      audit: dict[str, Any] | None, metric: str, log: Log, partial: bool = False) -> dict[str, Any]:
    """results.json + summary.md, then the report (a failure to draw it is a warning only)."""
    doc = gen_results_document(task, cfg, results, rec, audit, metric, partial=partial)
    try:
        from adaptladder.trust import write_manifest

        write_manifest(run_dir)  # the saved rungs' files, rung.json included, as readers will verify them
        atomic_write_json(run_dir / "results.json", doc)
        atomic_write_text(run_dir / "summary.md", gen_summary_markdown(doc))
    except OSError as e:
        raise AdaptError(f"could not write results.json / summary.md in {run_dir} ({e.strerror or e}); the finished "
                         "rungs are saved under rungs/: free space and re-run the same command.") from e
    try:
        from adaptladder.report import write_report

        write_report(run_dir, doc)
    except Exception as e:
        if os.environ.get("ADAPTLADDER_DEBUG") == "1":
            raise
        log(f"[yellow]could not draw the report[/yellow] ({type(e).__name__}: {_esc(e)}); the results are saved in "
            f"{_esc(run_dir / 'results.json')} and summary.md.")
    return doc


def run_gen_audit(task: GenTask, cfg: Any, run_dir: Path, log: Log) -> dict[str, Any] | None:
    """The generation audit (:mod:`adaptladder.audit.generation`, which writes ``run_dir/audit.json``);
    its errors stop the run unless ``--force``."""
    if cfg.no_audit:
        return None
    from adaptladder.audit.generation import audit_generation

    with progress.step("data audit"):
        return audit_generation(task, cfg, log, run_dir=run_dir)


# ------------------------------------------------------------------ the run
def _earlier(results: list[dict[str, Any]], store: RunStore, cfg: Any, metric: str, log: Log
             ) -> list[dict[str, Any]]:
    """This command's results plus rungs an earlier command finished in the same run directory."""
    have = {r.get("name") for r in results}
    rungs_dir = store.root / "rungs"
    earlier = []
    for path in sorted(rungs_dir.glob("*/result.json")) if rungs_dir.is_dir() else []:
        name = path.parent.name
        if name in have or name not in GEN_RUNGS:
            continue
        prev = store.load_result(name)
        if not prev or prev.get("task") != "generation" or not store.is_finished(name, prev,
                                                                                  prev.get("params_hash", "")):
            continue
        res = dict(prev, meets_bar=gen_meets_bar(prev, cfg, metric), resumed=True, from_earlier_command=True)
        earlier.append(res)
    if not earlier:
        return results
    log(f"kept from earlier commands in this directory: {', '.join(r['name'] for r in earlier)} (--fresh starts over)")
    merged = results + earlier
    rank = {n: i for i, n in enumerate(gen_rungs_in_order([r["name"] for r in merged]))}
    return sorted(merged, key=lambda r: rank[r["name"]])


def run_generation(cfg: Any, task: GenTask, log: Log | None = None,
                   on_rung: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """Climb the generation ladder on ``task`` (``ladder.run`` calls this for a generation task);
    returns an :class:`adaptladder.ladder.RunResult` (defined in :mod:`adaptladder.runresult`)."""
    from adaptladder.generation.loaders import resolve_generation_metric
    from adaptladder.runresult import RunResult

    log = log or (lambda s: None)
    metric = resolve_generation_metric(cfg, task)
    order = gen_climbing_order(cfg)
    params_all = {n: gen_rung_params(n, cfg) for n in order}
    for n in order:  # a bad per-rung budget: at once, before any compute
        rung_budget_s(n, cfg)
    run_dir = default_run_dir(cfg, task)
    store = RunStore(run_dir)
    identity = {"task": task.fingerprint(), "seed": cfg.seed, "sample": cfg.sample, "type": "generation"}
    record = dict(asdict(cfg), climbing_order=order,
                  rung_params_resolved=params_all, metric_resolved=metric, task_type="generation")
    store.open(record, config_hash(identity), fresh=cfg.fresh)
    atomic_write_json(run_dir / "task.json", task.summary())
    if not (run_dir / "split.csv").exists():
        tmp = run_dir / ".split.csv.tmp"
        task.split_frame().to_csv(tmp, index=False)
        tmp.replace(run_dir / "split.csv")
    audit = run_gen_audit(task, cfg, run_dir, log)
    encode = make_encode(cfg, log) if task.output == "text" else None
    judge = make_judge(log)
    log(f"generation task {task.name} ({task.kind}, {task.output} output): primary metric {metric}; "
        f"rungs {', '.join(order)}")

    results: list[dict[str, Any]] = []
    stopped_at = None
    try:
        for name in order:
            params = params_all[name]
            prev = store.load_result(name)
            if prev and prev.get("task") == "generation" and store.is_finished(name, prev, config_hash(params)):
                log(f"{name}: finished earlier, reusing its result")
                res = dict(prev)
                res.pop("resumed", None)
                res["meets_bar"] = gen_meets_bar(res, cfg, metric)
                if res != prev:
                    store.save_result(name, res)
                res["resumed"] = True
            else:
                if prev is not None:
                    store.discard_result(name)
                log(f"{name}: running")
                res = run_gen_rung(name, task, cfg, store, metric=metric, encode=encode, log=log, judge=judge)
                res["meets_bar"] = gen_meets_bar(res, cfg, metric)
                store.save_result(name, res)
            results.append(res)
            if on_rung:
                on_rung(res)
            if res["meets_bar"] and not cfg.run_all:
                stopped_at = name
                log(f"{name} clears the bar {cfg.bar} on validation {metric}: stopping here")
                break
    except KeyboardInterrupt:
        if results:
            _partial(run_dir, task, cfg, results, audit, order, metric, log)
        raise
    except AdaptError as e:
        if results:
            _partial(run_dir, task, cfg, results, audit, order, metric, log, why=str(e))
            raise AdaptError(f"{e} (the rungs that finished are saved: results.json and the report in {run_dir} show "
                             "them; fix this and re-run to resume.)") from e
        raise
    not_run = order[len(results):]
    results = _earlier(results, store, cfg, metric, log)
    rec = recommend_generation(results, cfg, metric)
    rec["stopped_at"] = stopped_at
    rec["not_run"] = not_run
    if stopped_at is None and cfg.bar is not None and not cfg.run_all:
        rec["stopped_at_reason"] = "no rung cleared the bar: every rung ran"
    if not_run:
        rec["reasons"].append(f"Not run (the bar was met by {stopped_at}; --all runs them): {', '.join(not_run)}.")
    write_gen_results(run_dir, task, cfg, results, rec, audit, metric, log)
    return RunResult(run_dir, task, results, rec, stopped_at)


def _partial(run_dir: Path, task: GenTask, cfg: Any, results: list[dict[str, Any]], audit: dict[str, Any] | None,
             order: list[str], metric: str, log: Log, why: str | None = None) -> None:
    try:
        rec = recommend_generation(results, cfg, metric)
        left = order[len(results):]
        how = f"stopped by an error in {left[0]} ({why})" if why and left else "interrupted"
        rec["reasons"].append(f"This run was {how} ({', '.join(left)} not run); re-run the same command to resume it.")
        rec["stopped_at"] = None
        write_gen_results(run_dir, task, cfg, results, rec, audit, metric, log, partial=True)
    except Exception as e:  # never hide the interrupt behind a reporting problem
        log(f"could not write the partial results ({type(e).__name__}: {e})")


def on_rung_line(res: dict[str, Any]) -> str:
    """The terminal line after a finished generation rung."""
    v = res.get("validation") or {}
    p = res.get("predict") or {}
    shown = [m for m in (*TABLE_METRICS["text"], *TABLE_METRICS["json"]) if m in v][:5]
    scores = ", ".join(f"{m} {v[m]:.3f}" for m in shown)
    tps = f", {p['tokens_per_s']:.1f} tokens/s" if p.get("tokens_per_s") else ""
    return f"        {res['name']}: validation {scores} (n={v.get('n')}), fit {res.get('fit_seconds', 0):.1f}s{tps}"


def is_generation_run(run_dir: str | Path) -> bool:
    """Does the run directory hold a generation run? (:func:`adaptladder.kinds.kind_of` decides.)"""
    from adaptladder.kinds import GENERATION, kind_of

    return kind_of(run_dir) == GENERATION


def assemble_gen_partial(run_dir: str | Path) -> dict[str, Any]:
    """results.json content rebuilt from the per-rung files of an unfinished (killed) generation run."""
    from dataclasses import fields

    from adaptladder.config import RunConfig
    from adaptladder.store import read_json

    run_dir = Path(run_dir)
    record = read_json(run_dir / "config.json")
    task = read_json(run_dir / "task.json")
    known = {f.name for f in fields(RunConfig)}
    cfg = RunConfig(**{k: v for k, v in record.items() if k in known})
    metric = record.get("metric_resolved") or task.get("default_metric")
    store = RunStore(run_dir)
    order = list(record.get("climbing_order") or [])
    order += sorted(p.parent.name for p in (run_dir / "rungs").glob("*/result.json") if p.parent.name not in order)
    results = [r for r in (store.load_result(n) for n in order) if r is not None]
    if not results:
        raise AdaptError(f"{run_dir} has no finished rung yet; nothing to report (re-run the ladder to resume).")
    for r in results:
        r["meets_bar"] = gen_meets_bar(r, cfg, metric)
    rec = recommend_generation(results, cfg, metric)
    missing = [n for n in order if n not in {r["name"] for r in results}]
    rec["reasons"].append("This run did not finish" + (f" ({', '.join(missing)} not run yet)" if missing else "")
                          + "; re-run the same command to resume it.")
    rec["stopped_at"] = None
    audit = read_json(run_dir / "audit.json") if (run_dir / "audit.json").is_file() else None
    return gen_results_document(task, cfg, results, rec, audit, metric, partial=True)


def write_gen_partial(run_dir: str | Path) -> None:
    """results.json + summary.md of a killed generation run, from its finished rungs."""
    run_dir = Path(run_dir)
    doc = assemble_gen_partial(run_dir)
    from adaptladder.trust import write_manifest

    write_manifest(run_dir)
    atomic_write_json(run_dir / "results.json", doc)
    atomic_write_text(run_dir / "summary.md", gen_summary_markdown(doc))

"""Should this task be prompted, retrieved, fine-tuned or distilled? Rules of thumb + measured evidence.

The practitioners' decision tree, in the order it is applied:

1. the model must know new or changing facts      -> retrieval (RAG) first: fine-tuning teaches
   form far more reliably than facts, and facts change faster than anyone retrains;
2. fewer than ~50 labelled examples               -> do not fine-tune; prompt / few-shot and label more;
3. no evaluation set                              -> build one first (nothing else can be decided);
4. prompting (zero/few-shot) already good enough  -> stop at prompting;
5. requirements change often                      -> keep it in the prompt (an edit, not a retrain);
6. lower latency or cost at scale                 -> fine-tune a small model or distill;
7. consistent style / format / persona            -> fine-tune with LoRA;
8. otherwise                                      -> measure: run the ladder.

Answers come from flags, interactive questions, or a ladder run directory (``results.json``,
``audit.json``): measured scores settle "prompting is good enough" and "fine-tuning did not
improve"; the audit's sizes settle "too little data". Evidence beats an answer given by hand
when both exist, and the reasons say which was used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adaptladder.errors import AdaptError

MIN_EXAMPLES = 50  # below this, fine-tuning is not worth trying (rule of thumb; the audit has finer ones)

PROMPTING_RUNGS = {"zero-shot", "few-shot", "knn-few-shot"}
FINETUNE_RUNGS = {"prompt-tuning", "lora", "qlora", "full-ft"}
CHEAP_RUNGS = {"majority", "tfidf", "features"}
DISTILL_RUNGS = {"distill"}

STRATEGIES = {
    "rag": "Retrieval-augmented generation (RAG) first",
    "collect-data": "Do not fine-tune yet: prompt, and label more data",
    "build-eval-set": "Build an evaluation set first",
    "prompting": "Stop at prompting",
    "cheap-model": "Use the cheap model that already clears the bar",
    "fine-tune-lora": "Fine-tune with LoRA",
    "small-model-or-distill": "Fine-tune a small model or distill",
    "measure": "Measure before deciding: run the ladder",
}


@dataclass
class Answers:
    """The decision tree's questions; ``None`` means not answered (unknown)."""

    needs_facts: bool | None = None
    needs_style: bool | None = None
    needs_scale: bool | None = None
    prompting_ok: bool | None = None
    requirements_change: bool | None = None
    has_eval_set: bool | None = None
    n_examples: int | None = None

    def answered(self) -> bool:
        return any(v is not None for v in asdict(self).values())


QUESTIONS: list[tuple[str, str]] = [
    ("needs_facts", "Must the model know new or changing facts (documents, prices, policies)?"),
    ("needs_style", "Do you need a consistent style, format or persona that prompting does not hold?"),
    ("needs_scale", "Do you need lower latency or cost at high volume?"),
    ("prompting_ok", "Is prompting (zero-/few-shot) already good enough on your evaluation?"),
    ("requirements_change", "Do the requirements (labels, format, rules) change often?"),
    ("has_eval_set", "Do you have a labelled evaluation set?"),
]


@dataclass
class CheckItem:
    """One "when not to fine-tune" check: ``triggered`` True means it argues against fine-tuning."""

    check: str
    triggered: bool | None
    evidence: str
    instead: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Advice:
    strategy: str
    headline: str
    reasons: list[str]
    next_step: str
    checklist: list[CheckItem]
    evidence: dict[str, Any] = field(default_factory=dict)
    answers: dict[str, Any] = field(default_factory=dict)
    estimate: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "headline": self.headline, "reasons": self.reasons,
                "next_step": self.next_step, "checklist": [c.to_dict() for c in self.checklist],
                "answers": self.answers, "evidence": self.evidence, "estimate": self.estimate}


# ----------------------------------------------------------------------------- evidence
def _read_json(path: Path) -> dict[str, Any]:
    from adaptladder.store import read_json

    try:
        data = read_json(path)  # one reader for run files (too deep, not UTF-8, not JSON: one line)
    except OSError as e:
        raise AdaptError(f"{path} could not be read ({e}); re-run the ladder or fix the file.") from e
    if not isinstance(data, dict):
        raise AdaptError(f"{path} must hold a JSON object; re-run the ladder.")
    if "rungs" in data and not (isinstance(data["rungs"], list) and all(isinstance(r, dict) for r in data["rungs"])):
        raise AdaptError(f"{path}: 'rungs' is not a list of rung records; the run directory is damaged.")
    return data


def _score(rung: dict[str, Any], metric: str) -> tuple[float | None, list[float] | None]:
    val = rung.get("validation") or {}
    s = val.get(metric)
    ci = val.get(f"{metric}_ci")
    return (float(s) if isinstance(s, int | float) else None), (list(ci) if isinstance(ci, list) else None)


def _group(rung: dict[str, Any]) -> str:
    name, fam = str(rung.get("name", "")), str(rung.get("family", ""))
    if name in PROMPTING_RUNGS or ("prompt" in fam and name not in FINETUNE_RUNGS):
        return "prompting"
    if name in FINETUNE_RUNGS or "finetune" in fam or "fine-tune" in fam:
        return "finetune"
    if name in DISTILL_RUNGS or fam == "distill":
        return "distill"
    return "cheap"


def load_evidence(run_dir: str | Path) -> dict[str, Any]:
    """The measured facts the advisor uses, read from a ladder run directory."""
    run = Path(run_dir)
    if not run.is_dir():
        raise AdaptError(f"run directory {run} not found; pass the folder `adaptladder run` wrote (runs/<name>).")
    res_path = run / "results.json"
    if not res_path.is_file():
        raise AdaptError(f"{res_path} is missing; the run did not finish - re-run `adaptladder run` to complete it.")
    res = _read_json(res_path)
    rungs = res.get("rungs")
    if not isinstance(rungs, list):
        raise AdaptError(f"{res_path} has no 'rungs' list; it is not a ladder results file.")
    metric = str(res.get("metric") or "macro_f1")
    bar = res.get("bar")
    rows = []
    for r in rungs:
        if not isinstance(r, dict) or "name" not in r:
            continue
        score, ci = _score(r, metric)
        rows.append({"name": r["name"], "group": _group(r), "status": r.get("status"), "reason": r.get("reason"),
                     "score": score, "ci": ci, "cost_per_1k_usd": r.get("cost_per_1k_usd"),
                     "meets_bar": r.get("meets_bar"), "cost_rank": r.get("cost_rank", 0),
                     "latency_ms_p50": (r.get("predict") or {}).get("latency_ms_p50"),
                     "fit_seconds": r.get("fit_seconds"), "params": r.get("params") or {},
                     "has_test": bool(r.get("test"))})
    rows.sort(key=lambda x: x["cost_rank"] or 0)
    ev: dict[str, Any] = {"run": str(run), "metric": metric, "bar": bar, "rungs": rows,
                          "ladder_recommendation": res.get("recommendation")}
    task = res.get("task") or {}
    audit_path = run / "audit.json"
    audit = _read_json(audit_path) if audit_path.is_file() else (res.get("audit") or None)
    size = ((audit or {}).get("stats") or {}).get("size") or {}
    splits = task.get("split_sizes") or task.get("splits") or {}
    n_train = size.get("n_train") or task.get("n_train") or splits.get("train")
    ev["n_train"] = int(n_train) if isinstance(n_train, int | float) else None
    ev["n_validation"] = size.get("n_validation") or splits.get("validation")
    if audit:
        keep = [f for f in audit.get("findings", []) if isinstance(f, dict) and
                (f.get("code", "").startswith("size") or f.get("code") in {"small_classes", "tiny_class"})]
        ev["audit_size_findings"] = [{"severity": f.get("severity"), "code": f.get("code"),
                                      "message": f.get("message")} for f in keep]
        ft = (audit.get("family_support") or {}).get("finetune")
        if isinstance(ft, dict):
            ev["audit_finetune_support"] = ft
    return ev


def _best(rows: list[dict[str, Any]], group: str) -> dict[str, Any] | None:
    done = [r for r in rows if r["group"] == group and r["status"] == "done" and r["score"] is not None]
    return max(done, key=lambda r: r["score"]) if done else None


def _fmt_rung(r: dict[str, Any], metric: str) -> str:
    ci = f" (95% CI {r['ci'][0]:.3f}-{r['ci'][1]:.3f})" if r.get("ci") and len(r["ci"]) == 2 else ""
    c = r.get("cost_per_1k_usd")
    cost = f", {_money(c)} per 1,000 predictions" if isinstance(c, int | float) else ""
    return f"{r['name']} {metric} {r['score']:.3f}{ci}{cost}"


# ----------------------------------------------------------------------------- the tree
def advise(answers: Answers | None = None, run_dir: str | Path | None = None, *,
           model: str | None = None, seq_len: int = 512, batch: int = 8) -> Advice:
    """Apply the decision tree to ``answers`` and, when given, a ladder run's measured evidence."""
    a = answers or Answers()
    if a.n_examples is not None and a.n_examples < 0:
        raise AdaptError(f"--examples {a.n_examples} must be >= 0.")
    ev = load_evidence(run_dir) if run_dir else {}
    rows = ev.get("rungs", [])
    metric = ev.get("metric", "macro_f1")
    bar = ev.get("bar")
    reasons: list[str] = []
    n = a.n_examples if a.n_examples is not None else ev.get("n_train")
    n_src = "given" if a.n_examples is not None else "training split of the run"

    best_prompt, best_ft = _best(rows, "prompting"), _best(rows, "finetune")
    best_cheap, best_distill = _best(rows, "cheap"), _best(rows, "distill")
    best_nonft = max((r for r in (best_prompt, best_cheap) if r), key=lambda r: r["score"], default=None)
    prompting_ok = a.prompting_ok
    if best_prompt and best_prompt.get("meets_bar") is not None:
        prompting_ok = bool(best_prompt["meets_bar"])
        word = "clears" if prompting_ok else "misses"
        reasons.append(f"measured: {_fmt_rung(best_prompt, metric)} {word} the bar {bar}")
    cheap_ok = bool(best_cheap and best_cheap.get("meets_bar"))
    has_eval = a.has_eval_set
    if rows:
        has_eval = any(r["score"] is not None for r in rows) or a.has_eval_set
    ft_gain: float | None = None
    ft_clear: bool | None = None
    if best_ft and best_nonft:
        ft_gain = best_ft["score"] - best_nonft["score"]
        lo_ft = best_ft["ci"][0] if best_ft.get("ci") else best_ft["score"]
        hi_base = best_nonft["ci"][1] if best_nonft.get("ci") else best_nonft["score"]
        ft_clear = ft_gain > 0 and lo_ft > hi_base
        reasons.append(f"measured: best fine-tuned {_fmt_rung(best_ft, metric)} vs best cheaper "
                       f"{_fmt_rung(best_nonft, metric)}: {ft_gain:+.3f}"
                       + (" (intervals do not overlap)" if ft_clear else " (within the confidence intervals)"))
    skipped_ft = [r for r in rows if r["group"] == "finetune" and r["status"] == "skipped"]

    checklist = [
        CheckItem("facts to add (knowledge, documents, changing data)", a.needs_facts,
                  _yn(a.needs_facts, "answered"), "retrieval (RAG): put the facts in the prompt at query time"),
        CheckItem("requirements change often", a.requirements_change, _yn(a.requirements_change, "answered"),
                  "prompting: a change is an edit to the prompt, not a retrain"),
        CheckItem("few-shot prompting already good enough", prompting_ok,
                  (_fmt_rung(best_prompt, metric) + f" vs bar {bar}") if best_prompt and bar is not None
                  else _yn(prompting_ok, "answered"), "stop at prompting"),
        CheckItem("no evaluation set", None if has_eval is None else not has_eval,
                  "the run measured validation scores" if rows else _yn(has_eval, "answered (has one)"),
                  "label a held-out set first; without it no choice can be checked"),
        CheckItem("no improvement in evaluation", None if ft_clear is None else not ft_clear,
                  f"fine-tuning {ft_gain:+.3f} {metric} over the best cheaper rung" if ft_gain is not None
                  else "no fine-tuned rung measured", "keep the cheaper rung"),
        CheckItem(f"too little data (under {MIN_EXAMPLES} examples)", None if n is None else n < MIN_EXAMPLES,
                  f"{n:,} examples ({n_src})" if n is not None else "unknown", "prompt / few-shot, and label more"),
    ]
    rec = ev.get("ladder_recommendation") or {}
    if isinstance(rec, dict) and rec.get("rung"):
        reasons.append(f"the ladder's own pick (cheapest rung that clears the bar): {rec['rung']}")
    if ev.get("audit_size_findings"):
        reasons.extend(f"audit: {f['message']}" for f in ev["audit_size_findings"] if f.get("severity") != "info"
                       or f.get("code") == "size")

    # ---- the tree
    if a.needs_facts:
        strategy = "rag"
        reasons.insert(0, "the model must know new or changing facts: fine-tuning teaches form, not reliable "
                          "recall of facts, and facts change faster than you would retrain")
        nxt = ("index your documents and retrieve the top passages into the prompt; fine-tune later only if "
               "the style or format still misses")
    elif n is not None and n < MIN_EXAMPLES:
        strategy = "collect-data"
        reasons.insert(0, f"only {n:,} examples ({n_src}): under ~{MIN_EXAMPLES} a fine-tune mostly memorises "
                          "and its evaluation is too noisy to trust")
        nxt = "use few-shot prompting now and label more examples (hundreds per class) before fine-tuning"
    elif has_eval is False:
        strategy = "build-eval-set"
        reasons.insert(0, "there is no evaluation set, so no strategy can be shown to work or compared")
        nxt = "label a held-out evaluation set (a few hundred examples), then run `adaptladder run` on it"
    elif prompting_ok:
        strategy = "prompting"
        reasons.insert(0, "prompting is already good enough" + (" (measured)" if best_prompt else " (answered)"))
        if a.needs_scale and best_prompt and isinstance(best_prompt.get("cost_per_1k_usd"), int | float):
            reasons.append("you asked for lower cost at scale: compare the prompting cost above with a "
                           "distilled or fine-tuned small model before traffic grows")
        nxt = "ship the prompt with its evaluation set as a regression test; revisit if volume or the bar grows"
    elif cheap_ok and best_cheap:
        strategy = "cheap-model"
        reasons.insert(0, f"measured: {_fmt_rung(best_cheap, metric)} already clears the bar {bar}")
        nxt = (f"use the saved {best_cheap['name']} model (`adaptladder predict {ev.get('run')} --rung "
               f"{best_cheap['name']} --input FILE --output FILE`)")
    elif a.requirements_change:
        strategy = "prompting"
        reasons.insert(0, "requirements change often: keep them in the prompt so a change is an edit, not a retrain")
        nxt = "iterate on the prompt against your evaluation set; fine-tune once the requirements settle"
    elif a.needs_scale:
        strategy = "small-model-or-distill"
        reasons.insert(0, "you need lower latency or cost at scale: a small fine-tuned (or distilled) model "
                          "serves for a fraction of a large model's cost")
        if best_distill:
            reasons.append(f"measured: {_fmt_rung(best_distill, metric)}")
        nxt = "fine-tune a small model with LoRA (or distill a large model's labels into it) and compare cost per 1,000"
    elif a.needs_style or (ft_clear and not prompting_ok):
        strategy = "fine-tune-lora"
        reasons.insert(0, "consistent style/format/persona is what fine-tuning teaches best" if a.needs_style
                       else "fine-tuning measurably beats the cheaper rungs")
        nxt = "fine-tune with LoRA (r 8-16 on the attention projections) and keep the evaluation set as the judge"
    else:
        strategy = "measure"
        reasons.insert(0, "nothing yet rules a strategy in or out")
        nxt = "run `adaptladder run <data>` to measure the ladder, then `adaptladder advise runs/<name>`"

    if strategy == "fine-tune-lora" and ft_clear is False:
        strategy = "prompting" if best_prompt else "cheap-model" if best_cheap else strategy
        reasons.insert(0, "fine-tuning did not improve on the cheaper rungs beyond the confidence intervals")
        nxt = "keep the cheaper rung; more or cleaner data is the lever, not a bigger method"

    est: dict[str, Any] | None = None
    if strategy in {"fine-tune-lora", "small-model-or-distill"} or skipped_ft:
        est = _estimates(model or _run_model(rows) or "7B", seq_len=seq_len, batch=batch)
        lora, qlora = est["lora"], est["qlora"]
        reasons.append(f"estimate for {est['model']} (seq {seq_len}, batch {batch}): LoRA peaks at "
                       f"{lora['peak_gib']:.1f} GiB ({lora['smallest_gpu'] or 'no single GPU'}), QLoRA at "
                       f"{qlora['peak_gib']:.1f} GiB ({qlora['smallest_gpu'] or 'no single GPU'})")
        for r in skipped_ft:
            reasons.append(f"the {r['name']} rung was skipped ({r.get('reason') or 'no reason given'}); "
                           "the estimate above says what it would need")
    return Advice(strategy=strategy, headline=STRATEGIES[strategy], reasons=reasons, next_step=nxt,
                  checklist=checklist, evidence=ev, answers=asdict(a), estimate=est)


def _money(x: float) -> str:
    if x == 0:
        return "$0"
    return f"${x:.4f}" if x >= 0.01 else f"${x:.7f}".rstrip("0")


def _yn(v: bool | None, how: str) -> str:
    return "unknown (not answered)" if v is None else f"{'yes' if v else 'no'} ({how})"


def _run_model(rows: list[dict[str, Any]]) -> str | None:
    from adaptladder.estimate import resolve_model

    for r in rows:
        if r["group"] == "finetune":
            m = r["params"].get("model")
            if isinstance(m, str):
                try:
                    resolve_model(m)
                    return m
                except AdaptError:
                    continue
    return None


def _estimates(model: str, *, seq_len: int, batch: int) -> dict[str, Any]:
    from adaptladder.estimate import estimate_training

    out: dict[str, Any] = {"model": model}
    for method in ("lora", "qlora"):
        e = estimate_training(model, method, seq_len=seq_len, batch=batch, grad_checkpointing=True)
        fits = sorted((f for f in e.fits if f["fits"]), key=lambda f: f["memory_gib"])
        out[method] = {"peak_gib": round(e.peak_gib, 2), "smallest_gpu": fits[0]["gpu"] if fits else None,
                       "trainable_params": e.params["trainable"]}
    return out


__all__ = ["QUESTIONS", "STRATEGIES", "Advice", "Answers", "CheckItem", "advise", "load_evidence"]

"""The report of a generation run (results.json with ``task.task == "generation"``).

Drawn from the generation rung records (README "Generation runs"; written by
:mod:`adaptladder.generation.ladder`): the primary metric and why it is the default for the task
kind, the ladder table (validation / test primary metric with CIs, the other metrics, latency per
generation, tokens/s, $ per 1,000 generations), every metric on test, for JSON tasks the
schema-valid rate with and without the constraint and per-field exact match, the paired
comparisons, a seeded side-by-side sample of test inputs with the reference and every rung's
output, the exact prompts, the recommendation with its reasons and the generation audit.

As in :mod:`adaptladder.report.view`, the view is plain data; every text from the data, the
rungs' outputs or the prompts is escaped by the renderers (Jinja2 autoescape, ``md_escape`` or a
fenced block in Markdown). The one pre-rendered fragment is the generation audit's own HTML
renderer (:func:`adaptladder.audit.generation.generation_audit_html`, which escapes its data).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from adaptladder.report.view import (
    _json_short,
    audit_view,
    evaluations_view,
    fmt,
    fmt_money,
    fmt_seconds,
    provenance_view,
)

#: test examples shown side by side
N_SIDE_BY_SIDE = 8
#: characters of an input / reference / output shown in the side-by-side table
SIDE_CHARS = 600
TEXT_METRICS = ("exact_match", "token_f1", "rouge_l", "chrf", "embedding_sim", "llm_judge")
JSON_METRICS = ("json_parse", "schema_valid", "field_f1", "json_exact_match", "llm_judge")
METRIC_WORDS = {
    "exact_match": "exact match (after lower-casing, dropping punctuation and articles)",
    "token_f1": "token F1 (overlap of the words, order-free)",
    "rouge_l": "ROUGE-L F-measure (longest common word subsequence with the reference)",
    "chrf": "chrF (character n-gram F-score with the reference)",
    "embedding_sim": "embedding similarity (cosine of the encoder's vectors of output and reference)",
    "json_parse": "JSON parse rate",
    "schema_valid": "schema-valid rate (parses and validates against the task's JSON Schema)",
    "field_f1": "field F1 (F1 over the (field, value) leaves of the output and the reference JSON)",
    "json_exact_match": "JSON exact match (every field equal)",
    "llm_judge": "LLM-as-judge score (an API model grading each output with a written rubric; test only)",
}
#: why each task kind's default primary metric is its default
DEFAULT_WHY = {
    "summarisation": "ROUGE-L is the usual summary measure: it rewards keeping the reference's content in "
                     "its order without demanding the same wording throughout",
    "rewrite": "chrF compares character n-grams, so a rewrite that is close to the reference (spelling, "
               "inflection, punctuation) gets partial credit that word-level or exact-match metrics miss",
    "dialogue": "replies are open-ended (many are valid), so exact match is near zero for every rung; chrF's "
                "character n-grams give graded credit for wording and style close to the reference",
    "json": "field F1 scores each extracted field against the reference, so one wrong field costs a share of "
            "the example rather than all of it (exact match) and an unparsable output scores 0",
}


def is_generation(doc: dict[str, Any]) -> bool:
    """Kept for callers of the old predicate: the kind comes from :func:`adaptladder.kinds.kind_of`."""
    from adaptladder.kinds import GENERATION, kind_of

    return kind_of(doc) == GENERATION


def metric_sentence(metric: str, task: dict[str, Any], cfg: dict[str, Any]) -> str:
    """The primary metric, what it measures and why it is the default (or that --metric chose it)."""
    kind = task.get("kind") or "?"
    output = task.get("output") or "text"
    default = task.get("default_metric")
    what = METRIC_WORDS.get(metric, metric)
    a = "an" if kind[:1] in "aeiou" else "a"
    if default and metric != default:
        return (f"Primary metric: {metric}, {what}; chosen with --metric (the default for {a} {kind} task with "
                f"{output} output is {default}).")
    why = DEFAULT_WHY["json"] if output == "json" else DEFAULT_WHY.get(kind, "")
    return (f"Primary metric: {metric}, {what}; the default for {a} {kind} task with {output} output"
            + (f": {why}." if why else "."))


def _cell(part: dict[str, Any] | None, m: str, digits: int = 3) -> tuple[str, str]:
    """(point, "[lo, hi]") of a metric in a split record, or ("-", "")."""
    if not part or not isinstance(part.get(m), (int, float)):
        return "-", ""
    ci = part.get(m + "_ci")
    ci_text = f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci and len(ci) == 2 else ""
    return f"{part[m]:.{digits}f}", ci_text


def _metrics_of(output: str, rungs: list[dict[str, Any]]) -> list[str]:
    names = JSON_METRICS if output == "json" else TEXT_METRICS
    present = {m for r in rungs for m in (r.get("test") or {}) if m in names}
    return [m for m in names if m in present]


def _skip_lines(details: Any, prefix: str = "") -> list[dict[str, str]]:
    """skip_details flattened into key: value lines (the estimate's figures one per line)."""
    out = []
    if not isinstance(details, dict):
        return [{"key": prefix or "details", "value": _json_short(details, 300)}]
    for k, v in details.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _skip_lines(v, key + ".")
        elif v is not None:
            out.append({"key": key, "value": _json_short(v, 300)})
    return out


def _estimate_text(details: Any) -> str:
    """The estimator's figures of a skipped rung (qlora-sft on CPU) in one phrase."""
    est = (details or {}).get("estimate") if isinstance(details, dict) else None
    if not isinstance(est, dict):
        err = (details or {}).get("estimate_error") if isinstance(details, dict) else None
        return f"no estimate ({err})" if err else ""
    bits = []
    if est.get("gpu_memory_gb") is not None:
        bits.append(f"~{est['gpu_memory_gb']:.2f} GB GPU memory")
    if est.get("train_hours") is not None:
        bits.append(f"~{fmt_seconds(float(est['train_hours']) * 3600)} training"
                    + (f" on {est['device_assumed']}" if est.get("device_assumed") else ""))
    if est.get("train_cost_usd") is not None:
        bits.append(f"~{fmt_money(est['train_cost_usd'])}")
    if est.get("smallest_gpu"):
        bits.append(f"smallest GPU {est['smallest_gpu']}")
    return "estimate: " + ", ".join(bits) if bits else ""


def _training_notes(r: dict[str, Any]) -> list[str]:
    """A fine-tuning rung that did not train enough to judge, in words (base model kept; under-trained)."""
    from adaptladder.decide import training_record

    tr = training_record(r)
    return [str(tr[k]) for k in ("base_model_note", "under_trained_note") if tr.get(k)]


def gen_rung_row(r: dict[str, Any], metric: str, recommended: str | None, others: list[str]) -> dict[str, Any]:
    done = r.get("status") == "done"
    v, t = r.get("validation") or {}, r.get("test") or {}
    p = r.get("predict") or {}
    bar = r.get("meets_bar")
    val_point, val_ci = _cell(v, metric) if done else ("-", "")
    test_point, test_ci = _cell(t, metric) if done else ("-", "")
    other = [{"metric": m, "value": fmt(t.get(m))} for m in others if m != metric and m in t] if done else []
    cost = r.get("cost_per_1k_usd")
    tps = p.get("tokens_per_s")
    return {
        "name": r["name"], "family": r.get("family") or "", "description": r.get("description") or "",
        "status": r.get("status") or "?", "reason": r.get("reason") or "", "done": done,
        "training_notes": _training_notes(r) if done else [],
        "estimate": _estimate_text(r.get("skip_details")) if not done else "",
        "recommended": r["name"] == recommended, "resumed": bool(r.get("resumed")),
        "val_point": val_point, "val_ci": val_ci, "val_n": v.get("n"),
        "test_point": test_point, "test_ci": test_ci, "test_n": t.get("n"),
        "sampled": bool(t.get("sampled") or v.get("sampled")),
        "val_value": v.get(metric) if done else None, "test_value": t.get(metric) if done else None,
        "val_ci_values": v.get(metric + "_ci") if done else None,
        "others": other,
        "p50": fmt(p.get("latency_ms_p50"), 0), "p95": fmt(p.get("latency_ms_p95"), 0),
        "p50_value": p.get("latency_ms_p50") if done else None,
        "tokens_per_s": f"{tps:,.1f}" if isinstance(tps, (int, float)) and math.isfinite(tps) else "-",
        "new_tokens": fmt(p.get("new_tokens_mean"), 1),
        "cost": fmt_money(cost) if done else "-", "cost_value": cost if done else None,
        "fit": fmt_seconds(r.get("fit_seconds")) if done else "-",
        "bar": {True: "yes", False: "no", None: "-"}[bar],
    }


def _first(rungs: list[dict[str, Any]], key: str) -> Any:
    for r in rungs:
        v = (r.get("test") or {}).get(key)
        if v:
            return v
    return None


def _short(text: Any, n: int = SIDE_CHARS) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= n + 30 else s[:n] + f" … ({len(s):,} characters)"  # +30: already cut in the record


def _task_texts(doc: dict[str, Any], run_dir: Path | None, wanted: list[int]) -> tuple[dict[int, str], dict[int, str],
                                                                                      str]:
    """Inputs and references of the test rows ``wanted``: from the records' ``test.inputs`` /
    ``test.references`` (parallel to ``test.indices``); the report reads only the run directory, so
    rows the record lacks stay missing (the third value: ``record`` or ``missing``)."""
    inputs: dict[int, str] = {}
    refs: dict[int, str] = {}
    for r in doc.get("rungs") or []:
        t = r.get("test") or {}
        idx = t.get("indices") or []
        for key, into in (("inputs", inputs), ("references", refs)):
            vals = t.get(key)
            if isinstance(vals, list) and len(vals) == len(idx):
                for i, x in zip(idx, vals, strict=True):
                    into.setdefault(int(i), str(x))
    if all(i in inputs and i in refs for i in wanted):
        return inputs, refs, "record"
    return inputs, refs, "missing"  # the report reads only the run directory: never the data again


def side_by_side(doc: dict[str, Any], run_dir: Path | None, k: int = N_SIDE_BY_SIDE) -> dict[str, Any]:
    """A seeded sample of test examples with the input, the reference and every finished rung's output."""
    done = [r for r in doc.get("rungs") or [] if r.get("status") == "done" and (r.get("test") or {}).get("indices")]
    if not done:
        return {"rows": [], "rungs": [], "source": "none", "n_pool": 0}
    outs = {r["name"]: dict(zip([int(i) for i in r["test"]["indices"]], r["test"].get("outputs") or [], strict=False))
            for r in done}
    common = sorted(set.intersection(*(set(o) for o in outs.values())))
    pool = common or sorted(set().union(*(set(o) for o in outs.values())))
    seed = (doc.get("config") or {}).get("seed", 0) or 0
    rng = np.random.default_rng(seed + 11)
    pick = sorted(rng.choice(pool, size=min(k, len(pool)), replace=False).tolist()) if pool else []
    inputs, refs, source = _task_texts(doc, run_dir, pick)
    metric = doc.get("metric")
    scores: dict[str, dict[int, float]] = {}
    for r in done:
        per = ((r["test"].get("per_example") or {}).get(metric)) or []
        scores[r["name"]] = dict(zip([int(i) for i in r["test"]["indices"]], per, strict=False))
    rows = []
    for i in pick:
        cells = []
        for r in done:
            o = outs[r["name"]].get(i)
            s = scores[r["name"]].get(i)
            text = "(not generated: evaluated on a sample)" if o is None else _short(o)
            cells.append({"rung": r["name"], "text": text,
                          "missing": o is None, "empty": o == "",
                          "score": f"{s:.2f}" if isinstance(s, (int, float)) else ""})
        rows.append({"index": i, "input": _short(inputs.get(i, "(not in the record)")),
                     "reference": _short(refs.get(i, "(not in the record)")), "outputs": cells})
    return {"rows": rows, "rungs": [r["name"] for r in done], "source": source, "n_pool": len(pool),
            "common": bool(common)}


def json_validity(rungs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Per finished rung of a JSON task: schema-valid and parse rates on test; for the structured rung
    also the same prompt decoded without the constraint (its ``extra.unconstrained_schema_valid``)."""
    out = []
    for r in rungs:
        if r.get("status") != "done":
            continue
        t = r.get("test") or {}
        if "schema_valid" not in t:
            continue
        sv, sv_ci = _cell(t, "schema_valid")
        jp, _ = _cell(t, "json_parse")
        ex = r.get("extra") or {}
        un = ex.get("unconstrained") if isinstance(ex.get("unconstrained"), dict) else {}
        u_valid = ex.get("unconstrained_schema_valid")
        out.append({"rung": r["name"], "constrained": "yes" if (r.get("decoding") or {}).get("constrained")
                    or r.get("family") == "structured" else "no",
                    "schema_valid": sv, "schema_valid_ci": sv_ci, "json_parse": jp,
                    "unconstrained": fmt(u_valid) if u_valid is not None else "-",
                    "unconstrained_parse": fmt(un.get("json_parse")) if un.get("json_parse") is not None else "-",
                    "unconstrained_n": str(un.get("n")) if un.get("n") is not None else "",
                    "has_unconstrained": u_valid is not None})
    return out


def per_field_table(rungs: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rungs if r.get("status") == "done" and (r.get("test") or {}).get("per_field_exact_match")]
    fields: list[str] = []
    for r in done:
        for f in r["test"]["per_field_exact_match"]:
            if f not in fields:
                fields.append(f)
    rows = []
    for f in fields:
        cells = []
        for r in done:
            d = r["test"]["per_field_exact_match"].get(f) or {}
            ci = d.get("ci")
            cells.append({"point": fmt(d.get("mean")),
                          "ci": f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci and len(ci) == 2 else ""})
        rows.append({"field": f, "cells": cells})
    return {"rungs": [r["name"] for r in done], "rows": rows}


def _p(p: Any) -> str:
    """A bootstrap p-value (resolution 1/1000: 0 is shown as < 0.001)."""
    if not isinstance(p, (int, float)):
        return "-"
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def gen_comparison_rows(cmps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for c in cmps or []:
        ci = c.get("ci") or c.get("diff_ci") or [float("nan"), float("nan")]
        sig = bool(c.get("significant", c.get("excludes_zero")))
        better = c.get("b", "?") if (c.get("diff") or 0) > 0 else c.get("a", "?")
        verdict = c.get("verdict") or (f"{better} better" if sig else "no evidence of a difference")
        p, ph = c.get("p_value"), c.get("p_holm")
        rows.append({"a": c.get("a", "?"), "b": c.get("b", "?"), "part": c.get("part", ""),
                     "metric": c.get("metric", ""), "n": fmt(c.get("n_common", c.get("n"))),
                     "subset": bool(c.get("subset")),
                     "a_score": fmt(c.get("a_score")), "b_score": fmt(c.get("b_score")),
                     "diff": f"{c['diff']:+.3f}" if isinstance(c.get("diff"), (int, float)) else "-",
                     "ci": f"[{ci[0]:+.3f}, {ci[1]:+.3f}]",
                     "p": _p(p), "p_holm": _p(ph),
                     "excludes_zero": "yes" if c.get("excludes_zero") else "no",
                     "significant": sig, "verdict": verdict})
    return rows


def prompts_view(rungs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The exact prompts each rung sent (record ``prompts``) and its instruction and decoding settings."""
    out = []
    for r in rungs:
        prompts = [str(p) for p in (r.get("prompts") or []) if isinstance(p, str) and p.strip()]
        ex = r.get("extra") or {}
        dec = r.get("decoding") or ex.get("decoding") or {}
        if not prompts and not dec:
            continue
        out.append({"rung": r["name"], "prompts": prompts,
                    "instruction": str(ex.get("instruction") or ""),
                    "decoding": ", ".join(f"{k}={_json_short(v, 80)}" for k, v in dec.items())
                    if isinstance(dec, dict) else _json_short(dec, 300)})
    return out


_EXTRA_SKIP = {"decoding", "instruction", "unconstrained", "unconstrained_schema_valid"}


def extras_view(rungs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rung-specific facts: the distill teacher/student table, training summaries, the rest as JSON."""
    out = []
    for r in rungs:
        if r.get("status") != "done" or not r.get("extra"):
            continue
        ex = dict(r["extra"])
        table = None
        training = ex.get("training") if isinstance(ex.get("training"), dict) else None
        distill = (training or {}).get("distill") or ex.get("distill")
        if isinstance(distill, dict) and isinstance(distill.get("table"), list) and distill["table"]:
            cols: list[str] = []
            for row in distill["table"]:
                for key in row if isinstance(row, dict) else []:
                    if key not in cols:
                        cols.append(key)
            table = {"columns": cols, "rows": [[_json_short(row.get(c, "-"), 80) for c in cols]
                                               for row in distill["table"] if isinstance(row, dict)]}
        entries = [{"key": k, "value": _json_short(v, 500)} for k, v in ex.items() if k not in _EXTRA_SKIP]
        if entries or table:
            out.append({"rung": r["name"], "entries": entries, "table": table})
    return out


def gen_audit_view(audit: dict[str, Any] | None) -> dict[str, Any] | None:
    """The generation audit through its own renderers (gen-task's module) when present, else generic."""
    if not audit:
        return None
    try:
        from markupsafe import Markup

        from adaptladder.audit.generation import generation_audit_html, generation_audit_markdown

        return {"html": Markup(generation_audit_html(audit)), "markdown": generation_audit_markdown(audit),
                "generic": None}
    except Exception:  # an older or partial audit must not stop the report
        return {"html": None, "markdown": None, "generic": audit_view(audit)}


def build_gen_view(doc: dict[str, Any], run_dir: Path | None = None, *, plots: bool = True) -> dict[str, Any]:
    """Everything the generation templates show, from a generation results.json document."""
    from adaptladder.report import plots as P

    metric = doc["metric"]
    task = doc.get("task") or {}
    cfg = doc.get("config") or {}
    rec = doc.get("recommendation") or {}
    winner_name = rec.get("rung")
    rungs = doc.get("rungs") or []
    output = task.get("output") or "text"
    metrics = _metrics_of(output, rungs)
    rows = [gen_rung_row(r, metric, winner_name, metrics) for r in rungs]
    winner = next((r for r in rungs if r["name"] == winner_name and r.get("status") == "done"), None)

    every = []
    for r in rungs:
        if r.get("status") == "done":
            every.append({"rung": r["name"], "cells": [dict(zip(("point", "ci"), _cell(r.get("test"), m), strict=True))
                                                       for m in metrics]})
    not_done = [{"name": r["name"], "status": r.get("status"), "reason": r.get("reason") or "",
                 "estimate": _estimate_text(r.get("skip_details")),
                 "details": _skip_lines(r.get("skip_details") or {}), "traceback": r.get("traceback") or ""}
                for r in rungs if r.get("status") != "done"]

    figures: list[dict[str, str]] = []
    plotted = [dict(r, dec_value=r["val_value"], dec_ci_values=r["val_ci_values"])
               for r in rows if r["done"] and r["val_value"] is not None]
    if plots and plotted:
        from adaptladder.report.view import pareto

        what = ("Filled dots with error bars: validation (the decision estimate) and its 95% CI; hollow diamonds: "
                "test, for reference only. Line: Pareto front. Star: recommended rung.")
        front_cost = pareto([(r["name"], r["cost_value"], r["dec_value"]) for r in plotted
                             if r["cost_value"] is not None])
        front_lat = pareto([(r["name"], r["p50_value"], r["dec_value"]) for r in plotted
                            if r["p50_value"] is not None])
        figures.append({"title": f"{metric} vs cost per 1,000 generations",
                        "png": P.scatter_png(plotted, "cost_value", "Cost per 1,000 generations (USD, log)", metric,
                                             front_cost, winner_name), "caption": what})
        figures.append({"title": f"{metric} vs latency per generation",
                        "png": P.scatter_png(plotted, "p50_value", "Latency p50 per generation (ms, log)", metric,
                                             front_lat, winner_name), "caption": what})

    cmps = doc.get("comparisons") or {}
    comparisons = {"decision": gen_comparison_rows(cmps.get("decision") or cmps.get("validation") or []),
                   "test": gen_comparison_rows(cmps.get("test") or [])}

    notes = []
    if doc.get("partial"):
        notes.append("PARTIAL: this run was interrupted; the report shows the rungs that finished. Re-run the "
                     "same command to resume it.")
    sampled = [r["name"] for r in rows if r["sampled"]]
    if sampled:
        notes.append(f"{', '.join(sampled)} were evaluated on a seeded random sample of the validation/test split "
                     "(sized to the time budget); paired comparisons use the examples both rungs generated for.")
    if any(r["resumed"] for r in rows):
        notes.append("Rungs marked (reused) were finished by an earlier invocation of the same run and reused "
                     "unchanged.")
    if cfg.get("sample"):
        notes.append(f"Quick run: at most {cfg['sample']} examples per split (--sample).")

    schema = task.get("schema")
    margin = rec.get("margin", cfg.get("margin"))
    view = {
        "title": f"adaptladder report: {task.get('name', '?')} (generation)",
        "task": task, "kind": task.get("kind") or "?", "output": output, "n": task.get("n") or 0,
        "split_sizes": task.get("split_sizes") or {}, "instruction": task.get("instruction") or "",
        "schema": json.dumps(schema, indent=2, ensure_ascii=False) if schema else "",
        "origin": _json_short((task.get("source") or {}).get("origin") or (task.get("source") or {}).get("path")
                              or (task.get("source") or {}).get("builtin") or "", 300),
        "metric": metric, "metric_sentence": metric_sentence(metric, task, cfg), "metrics": metrics,
        "bar": doc.get("bar"), "margin": margin, "lower_bound": bool(cfg.get("require_lower_bound")),
        "recommendation": {"rung": winner_name, "reasons": [str(x) for x in rec.get("reasons") or []],
                           "bar_met": rec.get("bar_met"), "stopped_at": rec.get("stopped_at"),
                           "not_run": list(rec.get("not_run") or []),
                           "test": " ".join(_cell(winner.get("test"), metric)) if winner else "-",
                           "cost": fmt_money(winner.get("cost_per_1k_usd")) if winner else "-"},
        "rule": ("Rule: the cheapest rung " + (f"whose validation {metric} meets the bar {doc['bar']:.2f} and "
                                                 if doc.get("bar") is not None else "(no bar) ")
                 + "that no costlier rung which ran beats significantly (paired bootstrap on the same "
                   "validation examples, Holm-corrected); the test split never chooses."),
        "rows": rows, "every": every, "not_done": not_done, "figures": figures,
        "json_validity": json_validity(rungs) if output == "json" else [],
        "per_field": per_field_table(rungs) if output == "json" else {"rungs": [], "rows": []},
        "comparisons": comparisons, "side": side_by_side(doc, run_dir),
        "prompts": prompts_view(rungs), "extras": extras_view(rungs),
        "audit": gen_audit_view(doc.get("audit")), "notes": notes,
        "evaluations": evaluations_view(run_dir), "provenance": provenance_view(run_dir),
        "written_at": doc.get("written_at", ""), "schema_version": doc.get("schema_version"),
    }
    return view


# ------------------------------------------------------------------ Markdown
def render_gen_markdown(v: dict[str, Any]) -> str:
    from adaptladder.report.markdown import _fence, evaluations_section, findings_table, md_escape
    from adaptladder.report.table import markdown_table

    e = md_escape
    m = v["metric"]
    ss = v["split_sizes"]
    rec = v["recommendation"]
    bar = (f"bar {v['bar']:.2f}" + (f" (margin {v['margin']})" if v.get("margin") is not None else "")
           if v["bar"] is not None else "no bar")
    out = [f"# {e(v['title'])}", "",
           f"{v['n']:,} pairs, {e(v['kind'])} task, {e(v['output'])} output; split {ss.get('train')}/"
           f"{ss.get('validation')}/{ss.get('test')} (train/validation/test); {bar}.", "",
           e(v["metric_sentence"]), ""]
    if v["instruction"]:
        out += [f"Instruction: {e(v['instruction'])}", ""]
    out += [f"## Recommendation: {e(rec['rung']) if rec['rung'] else 'none'}", ""]
    if rec["rung"]:
        out += [f"Test {m} {rec['test']}, cost per 1,000 generations {rec['cost']}.", ""]
    out += [f"- {e(r)}" for r in rec["reasons"]]
    out.append(f"- {e(v['rule'])}")
    out += [""] + [f"> {e(n)}" for n in v["notes"]]
    headers = ["rung", "status", f"validation {m} [95% CI] (n)", f"test {m} [95% CI] (n)", "other metrics (test)",
               "latency p50/p95 ms", "tokens/s", "$ per 1k generations", "fit time", "bar"]
    rows = []
    for r in v["rows"]:
        name = e(r["name"]) + (" ★" if r["recommended"] else "")
        status = r["status"] + (" (reused)" if r["resumed"] else "")
        if not r["done"]:
            status += f": {e(r['reason'])}" + (f" ({e(r['estimate'])})" if r["estimate"] else "")
        for note in r.get("training_notes") or []:
            status += f"; ⚠ {e(note)}"
        val = f"{r['val_point']} {r['val_ci']} (n={r['val_n']})" if r["done"] else "-"
        test = (f"{r['test_point']} {r['test_ci']} (n={r['test_n']}{', sample' if r['sampled'] else ''})"
                if r["done"] else "-")
        others = ", ".join(f"{o['metric']} {o['value']}" for o in r["others"]) or "-"
        rows.append([name, status, val, test, others, f"{r['p50']} / {r['p95']}", r["tokens_per_s"], r["cost"],
                     r["fit"], r["bar"]])
    out += ["", "## The ladder", "", *markdown_table(headers, rows)]
    if v["every"]:
        out += ["", "## Every metric on test (mean [95% CI])", "",
                *markdown_table(["rung", *v["metrics"]],
                                [[e(x["rung"]), *(f"{c['point']} {c['ci']}".strip() for c in x["cells"])]
                                 for x in v["every"]])]
    if v["not_done"]:
        out += ["", "## Skipped and failed rungs", ""]
        for r in v["not_done"]:
            details = "; ".join(f"{e(d['key'])}: {e(d['value'])}" for d in r["details"])
            out.append(f"- **{e(r['name'])}** ({r['status']}): {e(r['reason'])}" + (f" ({details})" if details else ""))
    if v["json_validity"]:
        out += ["", "## Schema-valid outputs: constrained vs unconstrained", "",
                "| rung | constrained decoding | schema-valid (test) [95% CI] | parses (test) | same prompt "
                "unconstrained: schema-valid (validation sample) | unconstrained parses |", "|---|---|---|---|---|---|"]
        for j in v["json_validity"]:
            un = f"{j['unconstrained']} (n={j['unconstrained_n']})" if j["has_unconstrained"] else "-"
            out.append(f"| {e(j['rung'])} | {j['constrained']} | {j['schema_valid']} {j['schema_valid_ci']} | "
                       f"{j['json_parse']} | {un} | {j['unconstrained_parse']} |")
    pf = v["per_field"]
    if pf["rows"]:
        out += ["", "## Per-field exact match (test, mean [95% CI])", "",
                *markdown_table(["field", *(e(n) for n in pf["rungs"])],
                                [[e(r["field"]), *(f"{c['point']} {c['ci']}".strip() for c in r["cells"])]
                                 for r in pf["rows"]])]
    for key, title in (("decision", "Paired comparisons that decided (validation)"),
                       ("test", "Paired comparisons on the test split (held out, reference only)")):
        out += ["", f"## {title}", ""]
        cmps = v["comparisons"][key]
        if cmps:
            out += ["Δ = B − A on the same examples; 95% CI and p from a paired bootstrap of the per-example "
                    "scores; significant when the Holm-adjusted p < 0.05.", "",
                    "| A | B | metric | n | A | B | Δ | 95% CI | p | Holm p | verdict |",
                    "|---|---|---|---|---|---|---|---|---|---|---|"]
            out += [f"| {e(c['a'])} | {e(c['b'])} | {e(c['metric'])} | {c['n']}{' (sample)' if c['subset'] else ''} | "
                    f"{c['a_score']} | {c['b_score']} | {c['diff']} | {c['ci']} | {c['p']} | {c['p_holm']} | "
                    f"{'**' + e(c['verdict']) + '**' if c['significant'] else e(c['verdict'])} |" for c in cmps]
        else:
            out.append("Fewer than two rungs finished: nothing to compare.")
    side = v["side"]
    if side["rows"]:
        out += ["", f"## Side by side: {len(side['rows'])} test examples (seeded sample)", ""]
        if side["source"] == "missing":
            out += ["Some inputs and references are not in this run's record (the report reads only the run "
                    "directory).", ""]
        for row in side["rows"]:
            out += [f"### Test example (row {row['index']})", "", "Input:", "", _fence(row["input"]), "",
                    "Reference:", "", _fence(row["reference"]), ""]
            for c in row["outputs"]:
                score = f" ({m} {c['score']})" if c["score"] else ""
                out += [f"{e(c['rung'])}{score}:", "", _fence(c["text"]), ""]
    if v["prompts"]:
        out += ["", "## Prompts used (exact)"]
        for p in v["prompts"]:
            out += ["", f"### {e(p['rung'])}", ""]
            if p["decoding"]:
                out += [f"Decoding: {e(p['decoding'])}", ""]
            for k, text in enumerate(p["prompts"], 1):
                out += [f"Prompt {k}:", "", _fence(text), ""]
    if v["extras"]:
        out += ["", "## Rung details"]
        for x in v["extras"]:
            out += ["", f"### {e(x['rung'])}", ""]
            if x["table"]:
                out += [*markdown_table([e(c) for c in x["table"]["columns"]],
                                        [[e(c) for c in row] for row in x["table"]["rows"]]), ""]
            out += [f"- {e(i['key'])}: {e(i['value'])}" for i in x["entries"]]
    a = v["audit"]
    if a:
        out.append("")
        if a["markdown"]:
            out.append(a["markdown"].rstrip())
        elif a["generic"]:
            out += ["## Data audit", ""]
            out += findings_table(a["generic"]["findings"])
    out += evaluations_section(v["evaluations"])
    if v["schema"]:
        out += ["", "## JSON Schema", "", _fence(v["schema"])]
    if v["provenance"]:
        out += ["", "## Provenance", "", "| | |", "|---|---|"]
        out += [f"| {e(r['key'])} | {e(r['value'])} |" for r in v["provenance"]]
    return "\n".join(out) + "\n"


def render_gen_html(view: dict[str, Any]) -> str:
    from importlib.resources import files

    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    tpl = files("adaptladder").joinpath("templates")
    source = tpl.joinpath("report_generation.html.j2").read_text(encoding="utf-8")
    return env.from_string(source).render(v=view, style=_shared_style(tpl.joinpath("report.html.j2")
                                                                      .read_text(encoding="utf-8")))


def _shared_style(classification_template: str) -> Any:
    """The classification report's stylesheet (one look for both reports), as markup: it is our own
    template text, never data."""
    from markupsafe import Markup

    start = classification_template.find("<style>")
    end = classification_template.find("</style>")
    return Markup(classification_template[start + len("<style>"):end] if start != -1 and end != -1 else "")

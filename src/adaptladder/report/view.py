"""The report's content, computed once from results.json and rendered as HTML and Markdown.

Everything here is plain data (strings and numbers); escaping is the renderers' job (Jinja2
autoescape for HTML, ``md_escape`` for Markdown), so text from the data or from rung outputs
(label names, prompts, error messages) is never trusted.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from adaptladder.compare import describe, labels_from_split_csv, pairwise

PROMPT_KEY = re.compile(r"prompt|template", re.IGNORECASE)
SEVERITY_ORDER = {"error": 0, "critical": 0, "warning": 1, "warn": 1, "info": 2, "note": 2}


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "-"
        if math.isinf(v):
            return "inf"
        return f"{v:.{digits}f}"
    return str(v)


def fmt_money(v: Any) -> str:
    if v is None or not isinstance(v, (int, float)) or math.isnan(v):
        return "-"
    if v == 0:
        return "$0"
    if v < 0.01:
        return f"${v:.2e}"
    return f"${v:,.2f}"


def fmt_seconds(v: Any) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    if v < 120:
        return f"{v:.1f} s"
    if v < 7200:
        return f"{v / 60:.1f} min"
    return f"{v / 3600:.1f} h"


def fmt_ci(part: dict[str, Any] | None, metric: str) -> str:
    if not part or metric not in part:
        return "-"
    ci = part.get(metric + "_ci") or [float("nan"), float("nan")]
    return f"{part[metric]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _ci_text(part: dict[str, Any], metric: str) -> str:
    ci = part.get(metric + "_ci")
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _json_short(v: Any, limit: int = 400) -> str:
    s = v if isinstance(v, str) else json.dumps(v, indent=None, default=str, ensure_ascii=False)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def rung_row(r: dict[str, Any], metric: str, recommended: str | None) -> dict[str, Any]:
    """One line of the ladder table, as display strings plus the numbers the plots need."""
    done = r.get("status") == "done"
    v, t = r.get("validation") or {}, r.get("test") or {}
    p = r.get("predict") or {}
    mem = r.get("peak_memory_mb") or {}
    bar = r.get("meets_bar")
    dec = _decision(r, metric) if done else None
    return {
        "dec_label": dec["label"] if dec else "", "dec_point": fmt(dec["value"]) if dec else "-",
        "dec_ci": f"[{dec['ci'][0]:.3f}, {dec['ci'][1]:.3f}]" if dec else "", "dec_n": dec["n"] if dec else None,
        "dec_value": dec["value"] if dec else None, "dec_ci_values": dec["ci"] if dec else None,
        "dec_folds": (dec or {}).get("folds"), "dec_is_cv": bool(dec and dec["part"] == "cv"),
        "name": r["name"], "family": r.get("family") or "", "status": r.get("status") or "?",
        "description": r.get("description") or "", "reason": r.get("reason") or "", "done": done,
        "recommended": r["name"] == recommended, "resumed": bool(r.get("resumed")),
        "val": fmt_ci(v, metric) if done else "-", "test": fmt_ci(t, metric) if done else "-",
        "val_point": fmt(v.get(metric)) if done else "-", "test_point": fmt(t.get(metric)) if done else "-",
        "val_ci": _ci_text(v, metric) if done else "", "test_ci_text": _ci_text(t, metric) if done else "",
        "val_value": v.get(metric), "test_value": t.get(metric), "test_ci": t.get(metric + "_ci"),
        "test_n": t.get("n"), "val_n": v.get("n"), "sampled": bool(t.get("sampled") or v.get("sampled")),
        "test_acc": fmt(t.get("accuracy")) if done else "-",
        "fit": fmt_seconds(r.get("fit_seconds")) if done else "-",
        "p50": fmt(p.get("latency_ms_p50"), 2), "p95": fmt(p.get("latency_ms_p95"), 2),
        "p50_value": p.get("latency_ms_p50"),
        "throughput": f"{p['throughput_per_s']:,.0f}" if isinstance(p.get("throughput_per_s"), (int, float)) else "-",
        "mem_fit": fmt(mem.get("fit"), 0), "mem_predict": fmt(mem.get("predict"), 0),
        "cost": fmt_money(r.get("cost_per_1k_usd")) if done else "-", "cost_value": r.get("cost_per_1k_usd"),
        "bar": {True: "yes", False: "no", None: "-"}[bar],
    }


def _decision(r: dict[str, Any], metric: str) -> dict[str, Any] | None:
    from adaptladder.decide import estimate

    try:
        return estimate(r, metric)
    except (KeyError, TypeError, ValueError):
        return None


def pareto(points: list[tuple[str, float, float]]) -> set[str]:
    """Names on the Pareto front of (cost, score): nothing cheaper-or-equal scores at least as well."""
    front = set()
    for name, c, s in points:
        dominated = any((c2 <= c and s2 >= s) and (c2 < c or s2 > s) for n2, c2, s2 in points if n2 != name)
        if not dominated:
            front.add(name)
    return front


def prompts_of(extra: dict[str, Any]) -> list[dict[str, str]]:
    """``extra`` keys named like ``*prompt*`` / ``template`` (string values): the exact prompts used."""
    out = []
    for key, value in (extra or {}).items():
        if PROMPT_KEY.search(key) and isinstance(value, str) and value.strip():
            out.append({"key": key, "text": value})
    return out


def prompt_choices_of(extra: dict[str, Any]) -> dict[str, Any] | None:
    """A prompting rung's candidate prompts (format x answer words x calibration) with their
    validation macro-F1, for a table; None when the rung chose nothing on validation."""
    pc = (extra or {}).get("prompt_choices")
    if not isinstance(pc, dict) or not pc.get("candidates"):
        return None
    n = pc.get("validation_examples") or {}

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    rows = [{"prompt": c.get("prompt", ""), "words": c.get("answer_words", ""),
             "calibrated": "yes" if c.get("calibrated") else "no", "screening": f(c.get("screening_macro_f1")),
             "final": f(c.get("macro_f1")), "chosen": bool(c.get("chosen"))} for c in pc["candidates"]]
    return {"n_screening": n.get("screening"), "n_final": n.get("final"), "rows": rows}


def other_extra(extra: dict[str, Any]) -> list[dict[str, str]]:
    return [{"key": k, "value": _json_short(v)} for k, v in (extra or {}).items()
            if not (PROMPT_KEY.search(k) and isinstance(v, str)) and k != "prompt_choices"]


def audit_view(audit: dict[str, Any] | None) -> dict[str, Any] | None:
    """Any audit dict rendered generically: its findings (severity, message, count) and its scalars."""
    if not audit:
        return None
    findings_raw = audit.get("findings") or audit.get("issues") or []
    findings = []
    for f in findings_raw if isinstance(findings_raw, list) else []:
        if not isinstance(f, dict):
            findings.append({"severity": "info", "message": str(f), "count": "", "details": ""})
            continue
        rest = {k: v for k, v in f.items() if k not in ("severity", "level", "message", "count", "n")}
        findings.append({
            "severity": str(f.get("severity") or f.get("level") or "info"),
            "message": str(f.get("message") or f.get("title") or f.get("check") or ""),
            "count": fmt(f.get("count", f.get("n"))) if f.get("count", f.get("n")) is not None else "",
            "details": _json_short(rest, 300) if rest else "",
        })
    findings.sort(key=lambda f: SEVERITY_ORDER.get(f["severity"].lower(), 3))
    scalars = [{"key": k, "value": _json_short(v, 200)} for k, v in audit.items()
               if k not in ("findings", "issues") and not isinstance(v, (dict, list))]
    return {"findings": findings, "scalars": scalars}


def comparison_rows(cmps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for c in cmps:
        rows.append({
            "a": c["a"], "b": c["b"], "n": c["n_common"], "subset": c["subset"],
            "a_score": fmt(c["a_score"]), "b_score": fmt(c["b_score"]),
            "diff": f"{c['diff']:+.3f}", "ci": f"[{c['diff_ci'][0]:+.3f}, {c['diff_ci'][1]:+.3f}]",
            "disc": f"{c['mcnemar']['only_a_correct']} / {c['mcnemar']['only_b_correct']}",
            "p": f"{c['mcnemar']['p_value']:.3g}", "verdict": c["verdict"], "significant": c["significant"],
            "p_used": f"{c['p_value']:.3g}" if c.get("p_value") is not None else "-",
            "p_holm": f"{c['p_holm']:.3g}" if c.get("p_holm") is not None else "-",
            "detectable": f"{c['detectable']:.3f}" if c.get("detectable") is not None else "-",
            "part": c.get("part", ""),
            "sentence": describe(c),
        })
    return rows


def ensure_comparisons(doc: dict[str, Any], run_dir: Path | None) -> dict[str, list[dict[str, Any]]]:
    """The pairwise comparisons stored in results.json, or recomputed (older run directories)."""
    cmps = doc.get("comparisons")
    if isinstance(cmps, dict) and "test" in cmps:
        return cmps
    labels = labels_from_split_csv(run_dir, doc["task"]["label_names"]) if run_dir else None
    seed = (doc.get("config") or {}).get("seed", 0)
    out = {}
    for part in ("validation", "test"):
        try:
            out[part] = pairwise(doc["rungs"], part, doc["metric"], all_labels=labels, seed=seed)
        except ValueError:
            out[part] = []
    return out


def evaluations_view(run_dir: Path | None) -> list[dict[str, str]]:
    """Earlier `adaptladder evaluate` results kept in ``run_dir/evaluations/`` (newest first)."""
    if run_dir is None or not (Path(run_dir) / "evaluations").is_dir():
        return []
    rows = []
    for path in sorted((Path(run_dir) / "evaluations").glob("*.json"), reverse=True)[:50]:
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            for e in rec.get("evaluations") or []:
                m = e["metric"]
                rows.append({"when": str(rec.get("written_at", "")), "data": Path(str(rec.get("data", ""))).name,
                             "rung": e["rung"], "n": fmt(e["n_new"]), "new": fmt(e["new"][m]),
                             "test": fmt(e["run_test"][m]), "metric": m,
                             "diff": f"{e['diff']:+.3f} [{e['diff_ci'][0]:+.3f}, {e['diff_ci'][1]:+.3f}]",
                             "verdict": e["verdict"] + (" (beyond tolerance)" if e.get("beyond_tolerance") else "")})
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged record must not stop the report
    return rows


def _off_front(winner: str | None, front: set[str], rows: list[dict[str, Any]], axis: str) -> str:
    """The sentence a recommended rung drawn off the Pareto front needs."""
    if not winner or winner in front or winner not in {r["name"] for r in rows}:
        return ""
    return (f" {winner} is off this front: a cheaper rung's estimate is higher by a difference the paired, "
            f"Holm-corrected test does not support, or the margin let {winner} meet the bar (see the "
            "recommendation's reasons).") if axis == "cost" else (
        f" {winner} is off the latency front: the ladder orders rungs by adaptation cost, not latency.")


def test_disagreements(cmps: list[dict[str, Any]], winner: str | None) -> list[str]:
    """Where the held-out test split significantly prefers another rung to the recommended one: said, not hidden."""
    out = []
    for c in cmps:
        if not winner or not c.get("significant") or winner not in (c["a"], c["b"]):
            continue
        better = c["b"] if c["diff"] > 0 else c["a"]
        if better != winner:
            out.append(f"On the test split {better} is significantly better than the recommended {winner} "
                       f"({c['diff']:+.3f} {c['metric']}, Holm-adjusted p={c.get('p_holm', c.get('p_value', 0)):.3g}). "
                       "The test split is held out and never chooses (choosing on it would make its scores "
                       "optimistic); treat this as a sign the decision evidence was too thin and check with more "
                       "labelled data.")
    return out


def rule_sentence(v: dict[str, Any]) -> str:
    """The decision rule in one sentence, with this run's numbers (bar, margin)."""
    margin = v.get("margin")
    est = ("cross-validated (train + validation) for rungs marked CV, validation for the others"
           if v.get("any_cv") else "validation")
    if v["bar"] is not None and not v["lower_bound"]:
        bar = (f"meets the bar {v['bar']:.2f} (its estimate clears it, or is within the margin "
               f"{margin if margin is not None else '-'} of it and the bar lies inside its 95% CI)")
    elif v["bar"] is not None:
        bar = f"meets the bar {v['bar']:.2f} with the lower end of its 95% CI"
    else:
        bar = "finished (no bar)"
    return (f"Rule: the cheapest rung that {bar} and that no costlier rung which ran beats significantly (paired "
            f"on the same examples, Holm-corrected). Estimates: {est}; the test split never chooses.")


def comparison_header(m: str, count: int, key: str) -> str:
    test = "McNemar's exact test" if m == "accuracy" else "the paired bootstrap"
    where = ("each pair on the examples both rungs' decision estimates share (a cross-validated rung against a "
             "validation-only one: the validation examples)" if key == "decision" else
             "each pair on the same test examples")
    return (f"B is the costlier rung; Δ = B − A in {m} ({where}). p: {test}; significant when the "
            f"Holm-adjusted p < 0.05 (Holm correction across the {count} tests in this table). Not significant "
            "means no evidence of a difference at that n, not equivalence; detectable Δ: the difference that n "
            "would detect with 80% power.")


def build_view(doc: dict[str, Any], run_dir: Path | None = None, *, plots: bool = True) -> dict[str, Any]:
    """Everything the templates show, from a results.json document."""
    from adaptladder.report import plots as P

    metric = doc["metric"]
    rec = doc.get("recommendation") or {}
    winner_name = rec.get("rung")
    rungs = doc.get("rungs") or []
    rows = [rung_row(r, metric, winner_name) for r in rungs]
    done_rows = [r for r in rows if r["done"] and r["test_value"] is not None]
    cmps = ensure_comparisons(doc, run_dir)
    winner = next((r for r in rungs if r["name"] == winner_name and r.get("status") == "done"), None)

    plotted = [r for r in done_rows if r["dec_value"] is not None]
    front_cost = pareto([(r["name"], r["cost_value"], r["dec_value"]) for r in plotted
                         if r["cost_value"] is not None])
    front_lat = pareto([(r["name"], r["p50_value"], r["dec_value"]) for r in plotted
                        if r["p50_value"] is not None])
    figures: list[dict[str, str]] = []
    what = ("Filled dots with error bars: the estimate the decision used (cross-validated over train + validation "
            "where marked CV in the ladder table, else validation) and its 95% CI; hollow diamonds: test, "
            "for reference only (test never chooses). ")
    if plots and plotted:
        figures.append({"title": f"{metric} vs cost per 1,000 predictions",
                        "png": P.scatter_png(plotted, "cost_value", "Cost per 1,000 predictions (USD, log)",
                                             metric, front_cost, winner_name),
                        "caption": what + "Line: Pareto front of the decision estimate (nothing cheaper scores "
                                   "higher). Star: recommended rung." + _off_front(winner_name, front_cost,
                                                                                   plotted, "cost")})
        figures.append({"title": f"{metric} vs single-example latency",
                        "png": P.scatter_png(plotted, "p50_value", "Latency p50 per example (ms, log)",
                                             metric, front_lat, winner_name),
                        "caption": what + "Line: Pareto front on latency. Star: recommended rung."
                                   + _off_front(winner_name, front_lat, plotted, "latency")})
    winner_view = None
    if winner is not None:
        t = winner["test"]
        names = t.get("label_names") or doc["task"]["label_names"]
        per_class = [{"label": k, "precision": fmt(v["precision"]), "recall": fmt(v["recall"]),
                      "f1": fmt(v["f1"]), "support": fmt(v["support"])} for k, v in (t.get("per_class") or {}).items()]
        winner_view = {"name": winner["name"], "per_class": per_class, "confusion": t.get("confusion"),
                       "label_names": names, "sampled": bool(t.get("sampled")), "n": t.get("n"),
                       "test": fmt_ci(t, metric), "test_acc": fmt(t.get("accuracy")), "figures": []}
        if plots and t.get("confusion"):
            winner_view["figures"].append({"title": f"Confusion matrix of {winner['name']} (test)",
                                           "png": P.confusion_png(t["confusion"], names), "caption":
                                           "Rows: true label; columns: predicted label."})
            winner_view["figures"].append({"title": f"Per-class F1 of {winner['name']} (test)",
                                           "png": P.per_class_png(t.get("per_class") or {}), "caption": ""})

    not_done = []
    for r in rungs:
        if r.get("status") != "done":
            details = r.get("skip_details") or {}
            not_done.append({"name": r["name"], "status": r.get("status"), "reason": r.get("reason") or "",
                             "details": [{"key": k, "value": _json_short(v, 300)} for k, v in details.items()],
                             "traceback": r.get("traceback") or ""})
    prompts = [{"rung": r["name"], "entries": prompts_of(r.get("extra") or {}),
                "choices": prompt_choices_of(r.get("extra") or {})} for r in rungs]
    prompts = [p for p in prompts if p["entries"]]
    extras = [{"rung": r["name"], "entries": other_extra(r.get("extra") or {})} for r in rungs
              if r.get("status") == "done" and r.get("extra")]
    extras = [e for e in extras if e["entries"]]

    task = doc.get("task") or {}
    cfg = doc.get("config") or {}
    sampled_rungs = [r["name"] for r in rows if r["sampled"]]
    notes = []
    if sampled_rungs:
        notes.append(f"{', '.join(sampled_rungs)} were evaluated on a stratified sample of the validation/test "
                     "split (slow to predict); pairwise comparisons involving them use only the examples both "
                     "rungs predicted.")
    if any(r["resumed"] for r in rows):
        notes.append("Rungs marked (reused) were finished by an earlier invocation of the same run and reused "
                     "unchanged.")
    if doc.get("partial"):
        notes.insert(0, "PARTIAL: this run was interrupted; the report shows the rungs that finished. Re-run the "
                        "same command to resume it.")
    if cfg.get("sample"):
        notes.append(f"Quick run: at most {cfg['sample']} examples per split (--sample).")
    stopped = rec.get("stopped_at")
    view = {
        "title": f"adaptladder report: {task.get('name', '?')}",
        "task": task, "config": cfg, "metric": metric, "bar": doc.get("bar"),
        "lower_bound": bool(cfg.get("require_lower_bound")),
        "recommendation": {"rung": winner_name, "reasons": rec.get("reasons") or [],
                           "bar_met": rec.get("bar_met"), "stopped_at": stopped,
                           "not_run": list(rec.get("not_run") or []),
                           "test": fmt_ci(winner["test"], metric) if winner else "-",
                           "cost": rung_row(winner, metric, winner_name)["cost"] if winner else "-"},
        "rows": rows, "not_done": not_done, "figures": figures, "winner": winner_view,
        "audit": audit_view(doc.get("audit")), "prompts": prompts, "extras": extras,
        "comparisons": {"test": comparison_rows(cmps.get("test") or []),
                        "validation": comparison_rows(cmps.get("validation") or []),
                        "decision": comparison_rows(cmps.get("decision") or cmps.get("validation") or [])},
        "test_disagreements": test_disagreements(cmps.get("test") or [], winner_name),
        "margin": rec.get("margin", cfg.get("margin")),
        "any_cv": any(r["dec_is_cv"] for r in rows),
        "notes": notes, "written_at": doc.get("written_at", ""), "evaluations": evaluations_view(run_dir),
        "schema_version": doc.get("schema_version"), "provenance": provenance_view(run_dir),
        "split_sizes": task.get("split_sizes") or {}, "label_names": task.get("label_names") or [],
        "sweeps": sweeps_view(rungs),
    }
    view["rule"] = rule_sentence(view)
    view["comparison_headers"] = {k: comparison_header(metric, len(view["comparisons"][k]), k)
                                  for k in ("decision", "test")}
    return view


def sweeps_view(rungs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from adaptladder.report.sweep import sweeps_view as view_of

    return view_of(rungs)


def provenance_view(run_dir: Path | None) -> list[dict[str, str]]:
    """The run's provenance.json (packages, Python, CPU, GPU, load, git) as rows for the report's last section."""
    from adaptladder.store import PROVENANCE_FILE, provenance_rows

    if run_dir is None or not (Path(run_dir) / PROVENANCE_FILE).is_file():
        return []
    try:
        prov = json.loads((Path(run_dir) / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [{"key": k, "value": v} for k, v in provenance_rows(prov if isinstance(prov, dict) else None)]

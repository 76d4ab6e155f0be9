"""report.md: the report's content for a terminal or a pull request (no figures)."""

from __future__ import annotations

from typing import Any

from adaptladder.report.table import ladder_headers, markdown_table, row_cells


def md_escape(s: Any) -> str:
    """Make data text inert in Markdown tables: no table breaks, no HTML, no emphasis surprises."""
    text = " ".join(str(s).split())
    for ch in "\\`*[]<>|":
        text = text.replace(ch, "\\" + ch)
    return text


def _fence(text: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}text\n{text}\n{ticks}"


def findings_table(findings: list[dict[str, Any]]) -> list[str]:
    """The audit's findings as Markdown table lines ("No findings." when there are none)."""
    e = md_escape
    if not findings:
        return ["No findings."]
    return markdown_table(["severity", "finding", "count"],
                          [[e(f["severity"]), e(f["message"]), str(f["count"])] for f in findings])


def evaluations_section(evaluations: list[dict[str, Any]]) -> list[str]:
    """The "Evaluations on new data" section's lines (none without evaluations)."""
    e = md_escape
    if not evaluations:
        return []
    headers = ["when", "data", "rung", "n", "metric", "new", "run test", "difference [95% CI]", "verdict"]
    rows = [[e(r["when"]), e(r["data"]), e(r["rung"]), str(r["n"]), str(r["metric"]), str(r["new"]), str(r["test"]),
             str(r["diff"]), e(r["verdict"])] for r in evaluations]
    return ["", "## Evaluations on new data", "", *markdown_table(headers, rows)]


def render_markdown(v: dict[str, Any]) -> str:
    e = md_escape
    m = v["metric"]
    task = v["task"]
    rec = v["recommendation"]
    out = [f"# {e(v['title'])}", ""]
    bar = (f"bar {v['bar']:.2f}" + (f" (margin {v['margin']})" if v.get("margin") is not None else "")
           + (" (lower 95% bound)" if v["lower_bound"] else "")
           if v["bar"] is not None else "no bar")
    out.append(f"{task.get('n', 0):,} examples, {task.get('n_classes')} classes; split "
               f"{v['split_sizes'].get('train')}/{v['split_sizes'].get('validation')}/{v['split_sizes'].get('test')}"
               f" (train/validation/test); metric {m}; {bar}.")
    out += ["", f"## Recommendation: {e(rec['rung']) if rec['rung'] else 'none'}", ""]
    if rec["rung"]:
        out.append(f"Test {m} {rec['test']}, cost per 1,000 predictions {rec['cost']}.")
        out.append("")
    out += [f"- {e(r)}" for r in rec["reasons"]]
    if rec.get("stopped_at"):
        left = f": {e(', '.join(rec['not_run']))} not run" if rec.get("not_run") else ""
        out.append(f"- The ladder stopped at {e(rec['stopped_at'])}, the first rung to meet the bar"
                   f"{left} (`--all` runs the rest).")
    out.append("- " + v["rule"])
    out += [f"- {e(t)}" for t in v.get("test_disagreements") or []]
    out += [""] + [f"> {e(n)}" for n in v["notes"]]
    headers = ladder_headers(m)
    out += ["", "## The ladder", "", *markdown_table(headers, [row_cells(r, e) for r in v["rows"]])]
    if v["not_done"]:
        out += ["", "## Skipped and failed rungs", ""]
        for r in v["not_done"]:
            details = "; ".join(f"{e(d['key'])}: {e(d['value'])}" for d in r["details"])
            out.append(f"- **{e(r['name'])}** ({r['status']}): {e(r['reason'])}" + (f" ({details})" if details else ""))
    w = v["winner"]
    if w:
        out += ["", f"## Per-class scores of {e(w['name'])} (test)", "",
                "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        out += [f"| {e(c['label'])} | {c['precision']} | {c['recall']} | {c['f1']} | {c['support']} |"
                for c in w["per_class"]]
    for key, title in (("decision", "Pairwise comparisons that decided (decision estimates)"),
                       ("test", "Pairwise comparisons on the test split (held out, reference only)")):
        out += ["", f"## {title}", ""]
        cmps = v["comparisons"][key]
        if cmps:
            out += [v["comparison_headers"][key], "",
                    "| A | B | examples | n common | Δ | 95% CI | p (test used) | Holm p | detectable Δ | "
                    "A-only/B-only correct | McNemar p | verdict |",
                    "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for c in cmps:
                n = f"{c['n']}" + (" (sample)" if c["subset"] else "")
                out.append(f"| {e(c['a'])} | {e(c['b'])} | {e(c['part'])} | {n} | {c['diff']} | {c['ci']} | "
                           f"{c['p_used']} | {c['p_holm']} | {c['detectable']} | {c['disc']} | {c['p']} | "
                           f"{e(c['verdict'])} |")
            out.append("")
            out += [f"- {e(c['sentence'])}" for c in cmps if not c["significant"]]
        else:
            out.append("Fewer than two rungs finished: nothing to compare.")
    a = v["audit"]
    if a:
        out += ["", "## Data audit", "", *findings_table(a["findings"])]
    out += evaluations_section(v["evaluations"])
    if v["prompts"]:
        out += ["", "## Prompts used"]
        for p in v["prompts"]:
            out += ["", f"### {e(p['rung'])}"]
            ch = p.get("choices")
            if ch:
                screen = bool(ch["n_screening"])
                where = (f"all screened on {ch['n_screening']} examples, the two best prompt / answer-word pairs "
                         f"compared on {ch['n_final']}" if screen else f"{ch['n_final']} examples")
                out += ["", f"Prompt variants measured on validation macro-F1 ({where}):", "",
                        "| prompt | answer words | calibrated |" + (" screening |" if screen else "")
                        + " validation macro-F1 | |",
                        "|---|---|---|" + ("---|" if screen else "") + "---|---|"]
                out += [f"| {c['prompt']} | {e(c['words'])} | {c['calibrated']} |"
                        + (f" {c['screening']} |" if screen else "")
                        + f" {c['final']} | {'**chosen**' if c['chosen'] else ''} |" for c in ch["rows"]]
            for item in p["entries"]:
                out += ["", f"{e(item['key'])}:", "", _fence(item["text"])]
    if v.get("sweeps"):
        from adaptladder.report.sweep import sweep_markdown

        out += sweep_markdown(v["sweeps"], e)
    if v.get("provenance"):
        out += ["", "## Provenance", "", "| | |", "|---|---|"]
        out += [f"| {e(r['key'])} | {e(r['value'])} |" for r in v["provenance"]]
    return "\n".join(out) + "\n"

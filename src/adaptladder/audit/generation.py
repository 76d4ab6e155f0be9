"""The data audit for a generation (text-to-text) task: :func:`audit_generation`.

Checks, with findings in the same shape as the classification audit (:class:`~adaptladder.audit.report.Finding`,
``AuditReport.to_dict()``: ``findings``, ``stats``, ``family_support``, ``has_errors``, ...):

* size against the requirements for the task kind (``generation_kinds`` in ``data/requirements.yaml``:
  the seeds' figures where they give one: summarisation 1,000 pairs minimum / 5,000-20,000
  recommended, dialogue 500 conversations / 3,000-10,000; adaptladder's stated analogies for
  rewrite and extraction, which the seeds give no figure for);
* input and target length distributions, in tokens when a tokenizer is given (``count_tokens``),
  else in words;
* empty and one-word targets; targets that copy their input (exactly after normalisation, or
  nearly: word-level similarity >= 0.9);
* duplicate (input, target) pairs, and inputs with several different targets;
* train -> validation / test leakage of inputs (the same normalised input on both sides);
* examples that would be truncated at the model's context (``max_ctx`` minus ``reserve`` tokens for
  the prompt and the answer);
* for JSON tasks, targets that do not parse or do not validate against the schema.

For the report: :func:`generation_audit_markdown` and :func:`generation_audit_html` render the
dict :func:`audit_generation` returns (results.json ``audit``) as a Markdown / HTML section; gen-report
calls them for a generation run (``doc["task_type"] == "generation"``).
"""

from __future__ import annotations

import difflib
import html
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from adaptladder.audit.report import AuditReport, Finding, _md, _short
from adaptladder.audit.requirements import RULES_VERSION, load_requirements
from adaptladder.errors import AdaptError
from adaptladder.generation.datasets import length_summary
from adaptladder.generation.task import SPLITS, GenTask
from adaptladder.task import normalize_text

#: used when the requirements table lacks a kind (a user table from before generation existed)
DEFAULT_KIND_REQUIREMENTS: dict[str, dict[str, Any]] = {
    "summarisation": {"minimum": 1000, "recommended": [5000, 20000], "unit": "pairs",
                      "source": "seeds: Summarization, source-summary pairs"},
    "dialogue": {"minimum": 500, "recommended": [3000, 10000], "unit": "conversations",
                 "source": "seeds: Dialogue (chatbot), include diverse scenarios"},
    "rewrite": {"minimum": 1000, "recommended": [5000, 20000], "unit": "pairs",
                "source": "no figure in the seeds; the summarisation figures are used (input-output pairs)"},
    "extraction": {"minimum": 500, "recommended": [2000, 5000], "unit": "pairs",
                   "source": "no figure in the seeds; the text-classification figures are used "
                             "(a fixed output format, like labelling)"},
}
NEAR_COPY_SIMILARITY = 0.9
GEN_FAMILIES = ("prompting", "finetune", "distill")
_FAMILY_WORDS = {"prompting": "prompting (zero-shot, few-shot, knn-few-shot, structured)",
                 "finetune": "fine-tuning (LoRA / QLoRA / full SFT)", "distill": "distillation"}


def kind_requirements(kind: str, reqs: dict[str, Any]) -> dict[str, Any]:
    return dict(DEFAULT_KIND_REQUIREMENTS[kind], **(reqs.get("generation_kinds") or {}).get(kind, {}))


def _ref(task: GenTask, i: int) -> str:
    """``data.csv: row 7`` for a task from files, else the example's position in the task."""
    from adaptladder.generation.loaders import row_label

    if task.source.get("row_files"):
        return row_label(task, i)
    return f"{task.name} example {i}"


def _ex(task: GenTask, i: int, **extra: Any) -> dict[str, Any]:
    d = {"where": _ref(task, i), "split": str(task.split[i]), "text_input": _short(task.inputs[i], 160),
         "text_target": _short(task.targets[i], 160)}
    d.update(extra)
    return d


def _word_similarity(a: str, b: str) -> float:
    wa, wb = a.split(), b.split()
    if not wa and not wb:
        return 1.0
    return difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio()


def audit_generation(task: GenTask, cfg: Any = None, log: Callable[[str], None] | None = None,
                     count_tokens: Callable[[str], int] | None = None, max_ctx: int | None = None, *,
                     reserve: int = 0, run_dir: str | Path | None = None,
                     requirements: str | Path | None = None) -> dict[str, Any] | None:
    """Audit a generation task; returns the report dict (``AuditReport.to_dict()`` shape, ``task_type``
    ``"generation"``), or ``None`` when ``cfg.no_audit``.

    Writes ``run_dir/audit.json`` when ``run_dir`` is given, logs the errors and warnings, and raises
    :class:`AdaptError` on errors (train/test leakage above the table's share, empty targets, targets
    that break the schema) unless ``cfg.force``, as the classification audit does.
    """
    log = log or (lambda s: None)
    if cfg is not None and getattr(cfg, "no_audit", False):
        log("data audit skipped (--no-audit)")
        return None
    t0 = time.perf_counter()
    reqs = load_requirements(requirements)
    acfg = reqs.get("audit", {})
    max_ex = int(acfg.get("max_examples", 5))
    seed = int(getattr(cfg, "seed", 13) if cfg is not None else 13)
    findings: list[Finding] = []
    stats: dict[str, Any] = {}
    n = len(task.inputs)
    split = task.split
    sizes = {p: int((split == p).sum()) for p in SPLITS}

    # ------------------------------------------------------------ size
    spec = kind_requirements(task.kind, reqs)
    lo, hi = spec["recommended"]
    unit = spec.get("unit", "pairs")
    sampled = task.source.get("sampled")
    stats["size"] = {"n": n, **{f"n_{p}": sizes[p] for p in SPLITS}, "kind": task.kind, "requirements": spec,
                     "sampled": sampled}
    of = f" (this run uses a sample of at most {sampled} per split)" if sampled else ""
    if n < spec["minimum"]:
        findings.append(Finding("warning", "size_below_minimum",
                                f"{n:,} {unit}{of} is below the {spec['minimum']:,} a {task.kind} task needs for "
                                f"fine-tuning (recommended {lo:,}-{hi:,}; {spec['source']})", n,
                                advice="prompting rungs need few examples; for fine-tuning collect more pairs, and "
                                       "expect wide intervals until then."))
    elif n < lo:
        findings.append(Finding("info", "size", f"{n:,} {unit}{of}: above the {task.kind} minimum "
                                f"({spec['minimum']:,}), below the recommended {lo:,}-{hi:,} ({spec['source']})", n))
    else:
        findings.append(Finding("info", "size", f"{n:,} {unit}{of}: meets the {task.kind} recommendation "
                                f"({lo:,}-{hi:,}; {spec['source']})", n))

    # ------------------------------------------------------------ lengths (a seeded sample of large sets)
    cap = int(acfg.get("length_sample", 5000))
    idx = np.arange(n) if n <= cap else np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))
    unit_len = "tokens" if count_tokens is not None else "words"
    count = count_tokens or (lambda s: len(s.split()))
    in_len = np.array([count(task.inputs[i]) for i in idx], dtype=np.int64)
    stats["lengths"] = {"unit": unit_len, "sampled": len(idx) if len(idx) < n else None,
                        "input": length_summary([task.inputs[i] for i in idx], count) if n else {},
                        "target": length_summary([task.targets[i] for i in idx], count) if n else {}}
    if n:
        li, lt = stats["lengths"]["input"], stats["lengths"]["target"]
        findings.append(Finding("info", "lengths",
                                f"inputs {li['p50']:.0f} {unit_len} median (p95 {li['p95']:.0f}, max {li['max']:.0f}); "
                                f"targets {lt['p50']:.0f} median (p95 {lt['p95']:.0f}, max {lt['max']:.0f})"
                                + (f", from a sample of {len(idx):,}" if len(idx) < n else ""), len(idx)))

    # ------------------------------------------------------------ truncation at the model's context
    if max_ctx is not None:
        room = max_ctx - reserve
        if count_tokens is None:
            findings.append(Finding("info", "truncation_not_checked",
                                    f"inputs not checked against the {max_ctx:,}-token context: no tokenizer given"))
        else:
            over = idx[in_len > room]
            share = len(over) / max(len(idx), 1)
            est = round(share * n)
            stats["truncation"] = {"max_ctx": max_ctx, "reserve": reserve, "room": room, "share": share,
                                   "count_estimate": est}
            if len(over):
                findings.append(Finding("warning", "truncated_inputs",
                                        f"{share:.1%} of inputs ({est:,}{' estimated' if len(idx) < n else ''}) have "
                                        f"more than the {room:,} tokens the model's {max_ctx:,}-token context leaves "
                                        f"after the prompt and answer ({reserve:,})", est,
                                        [_ex(task, int(i), tokens=int(count(task.inputs[i]))) for i in over[:max_ex]],
                                        advice="shorten or split long inputs, or use a model with a longer context; "
                                               "truncated inputs lose the text the target depends on."))
            else:
                findings.append(Finding("info", "truncated_inputs", f"every input fits the {max_ctx:,}-token context "
                                        f"after the prompt and answer ({reserve:,} tokens)", 0))

    # ------------------------------------------------------------ empty / one-word targets
    empty = [i for i, t in enumerate(task.targets) if not t.strip()]
    if empty:
        findings.append(Finding("error", "empty_targets", f"{len(empty):,} empty target(s)", len(empty),
                                [_ex(task, i) for i in empty[:max_ex]],
                                advice="fill in or drop these rows; an empty reference scores every output 0."))
    distinct = {t.strip() for t in task.targets if t.strip()}
    if len(distinct) == 1 and n > 1:
        findings.append(Finding("error", "constant_target",
                                f"every one of the {n:,} targets is the same text ({next(iter(distinct))[:60]!r})",
                                n, [_ex(task, 0)],
                                advice="a generation task whose answer never changes has nothing to learn or "
                                       "measure: check the target column (is it the right one?)."))
    one = [i for i, t in enumerate(task.targets) if len(t.split()) == 1]
    if one and task.output == "text":
        share = len(one) / max(n, 1)
        sev = "warning" if share > float(acfg.get("short_text_share_warn", 0.05)) else "info"
        findings.append(Finding(sev, "one_word_targets", f"{len(one):,} target(s) ({share:.1%}) are a single word",
                                len(one), [_ex(task, i) for i in one[:max_ex]],
                                advice="check they are real answers, not labels or placeholders; exact match "
                                       "dominates the scores of one-word targets."))

    # ------------------------------------------------------------ targets that copy their input
    key_in = [normalize_text(t) for t in task.inputs]
    key_out = [normalize_text(t) for t in task.targets]
    copies = [i for i in range(n) if key_in[i] == key_out[i]]
    near: list[tuple[int, float]] = []
    for i in idx.tolist():
        if key_in[i] == key_out[i]:
            continue
        a, b = key_in[i], key_out[i]
        la, lb = a.count(" ") + 1, b.count(" ") + 1
        if min(la, lb) / max(la, lb) < NEAR_COPY_SIMILARITY:  # the ratio cannot reach the threshold
            continue
        s = _word_similarity(a, b)
        if s >= NEAR_COPY_SIMILARITY:
            near.append((i, s))
    near_est = round(len(near) * n / max(len(idx), 1))
    stats["copies"] = {"exact": len(copies), "near": near_est, "near_similarity": NEAR_COPY_SIMILARITY}
    if copies or near:
        share = (len(copies) + near_est) / max(n, 1)
        sev = "warning" if share > 0.05 else "info"
        findings.append(Finding(sev, "target_copies_input",
                                f"{len(copies):,} target(s) equal their input after normalisation and about "
                                f"{near_est:,} more are near copies (word similarity >= {NEAR_COPY_SIMILARITY})",
                                len(copies) + near_est,
                                [_ex(task, i) for i in copies[:max_ex]]
                                + [_ex(task, i, similarity=round(s, 3))
                                   for i, s in near[: max(0, max_ex - len(copies))]],
                                advice="a rung that returns its input scores well on these; check they are intended "
                                       "(a rewrite that changes nothing) and not a mistake in the data."))

    # ------------------------------------------------------------ duplicate pairs, several targets per input
    pair_count = Counter(zip(key_in, key_out, strict=True))
    dup_extra = sum(c - 1 for c in pair_count.values() if c > 1)
    stats["duplicates"] = {"duplicate_pairs": dup_extra}
    if dup_extra:
        first: dict[tuple[str, str], int] = {}
        dup_rows = []
        for i, k in enumerate(zip(key_in, key_out, strict=True)):
            if k in first:
                dup_rows.append((i, first[k]))
            else:
                first[k] = i
        share = dup_extra / max(n, 1)
        sev = "warning" if share > float(acfg.get("duplicate_share_warn", 0.02)) else "info"
        findings.append(Finding(sev, "duplicate_pairs", f"{dup_extra:,} duplicate (input, target) pair(s) "
                                f"({share:.1%}) after normalisation", dup_extra,
                                [_ex(task, i, copy_of=_ref(task, j)) for i, j in dup_rows[:max_ex]],
                                advice="drop the copies; they over-weight some pairs in training and in the scores."))
    targets_per_input: dict[str, set[str]] = {}
    for a, b in zip(key_in, key_out, strict=True):
        targets_per_input.setdefault(a, set()).add(b)
    multi = sum(len(v) > 1 for v in targets_per_input.values())
    stats["duplicates"]["inputs_with_several_targets"] = multi
    if multi:
        findings.append(Finding("info", "several_targets_per_input",
                                f"{multi:,} input(s) appear with different targets (one reference each is scored, so "
                                "no rung can match all of them)", multi))

    # ------------------------------------------------------------ train -> validation / test leakage of inputs
    train_keys = {key_in[i] for i in np.flatnonzero(split == "train")}
    stats["leakage"] = {}
    for part, limit, sev_over in (("test", float(acfg.get("max_test_leak_share", 0.01)), "error"),
                                  ("validation", float(acfg.get("max_validation_leak_share", 0.05)), "warning")):
        rows = np.flatnonzero(split == part)
        leaked = [int(i) for i in rows if key_in[i] in train_keys]
        share = len(leaked) / max(len(rows), 1)
        stats["leakage"][part] = {"count": len(leaked), "share": share}
        if leaked:
            sev = sev_over if share > limit else "warning"
            findings.append(Finding(sev, f"{part}_input_leakage",
                                    f"{len(leaked):,} {part} input(s) ({share:.1%}) also appear in train "
                                    f"(limit {limit:.0%})", len(leaked), [_ex(task, i) for i in leaked[:max_ex]],
                                    advice="a rung that memorises training pairs scores well on these for free; "
                                           "let adaptladder split the data (copies of an input stay together) or "
                                           "remove them from the evaluation split."))

    # ------------------------------------------------------------ JSON targets against the schema
    if task.schema is not None:
        from adaptladder.generation.metrics import parse_json, schema_validator

        validator = schema_validator(task.schema)
        bad = []
        for i, t in enumerate(task.targets):
            ok, v = parse_json(t)
            if not ok or not validator.is_valid(v):
                bad.append(i)
        stats["schema"] = {"invalid_targets": len(bad)}
        if bad:
            findings.append(Finding("error", "targets_break_schema", f"{len(bad):,} target(s) are not JSON that "
                                    "validates against the schema", len(bad), [_ex(task, i) for i in bad[:max_ex]],
                                    advice="fix these targets or the schema; scores against them mean nothing."))

    # ------------------------------------------------------------ which families the training split supports
    n_train = sizes["train"]
    ft = reqs.get("fine_tuning", {})
    too_few = int(ft.get("too_few", 50))
    distill_min = int((reqs.get("families", {}).get("distill") or {}).get("min_train", 500))
    family_support = {
        "prompting": {"supported": True, "reason": "zero-shot needs no examples; few-shot uses a handful"},
        "finetune": {"supported": n_train >= too_few,
                     "reason": f"{n_train:,} training pairs; SFT needs at least {too_few}"
                               + (f" (the {task.kind} recommendation is {lo:,}-{hi:,})" if n_train >= too_few else "")},
        "distill": {"supported": n_train >= distill_min,
                    "reason": f"{n_train:,} training pairs; a student needs at least {distill_min} teacher outputs"},
    }
    settings = {"rules_version": RULES_VERSION, "seed": seed, "length_unit": unit_len, "max_ctx": max_ctx,
                "reserve": reserve, "requirements": reqs}
    summary = task.summary()
    report = AuditReport(summary, "generation", f"{task.kind} ({task.output} output)", findings, stats,
                         family_support, settings, {"total": time.perf_counter() - t0})
    doc = report.to_dict()
    doc["kind"] = task.kind
    if run_dir is not None:
        import json

        path = Path(run_dir) / "audit.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False))
        tmp.replace(path)
    for f in report.errors + report.warnings:
        log(f"audit {f.severity} {f.code}: {f.message}")
    log(f"audit: {len(report.errors)} error(s), {len(report.warnings)} warning(s) "
        f"({report.timings['total']:.1f} s)")
    force = bool(getattr(cfg, "force", False)) if cfg is not None else True
    if report.has_errors and not force:
        errs = report.errors
        first_two = "; ".join(f"{f.code}: {f.message}" for f in errs[:2])
        raise AdaptError(f"the data audit found {len(errs)} error(s) ({first_two}{'; ...' if len(errs) > 2 else ''}); "
                         "fix the data or pass --force to run anyway.")
    return doc


# ------------------------------------------------------------------ rendering (for the report)
def _lengths_line(doc: dict[str, Any]) -> str | None:
    ln = (doc.get("stats") or {}).get("lengths") or {}
    if not ln.get("input"):
        return None
    u = ln.get("unit", "words")

    def fmt(d: dict[str, float]) -> str:
        return f"p5 {d['p5']:.0f} / median {d['p50']:.0f} / p95 {d['p95']:.0f} / max {d['max']:.0f}"

    return f"Lengths in {u}: inputs {fmt(ln['input'])}; targets {fmt(ln['target'])}."


def generation_audit_markdown(doc: dict[str, Any], heading: str = "##", max_examples: int = 3) -> str:
    """The generation audit (:func:`audit_generation`'s dict) as a Markdown section for report.md."""
    t = doc.get("task") or {}
    ss = t.get("split_sizes") or {}
    lines = [f"{heading} Data audit (generation)", "",
             f"**{_md(t.get('name', ''))}**: {t.get('n', 0):,} pairs, "
             f"kind *{_md(doc.get('kind', t.get('kind', '')))}*, "
             f"{_md(t.get('output', 'text'))} output (train {ss.get('train', 0):,} / validation "
             f"{ss.get('validation', 0):,} / test {ss.get('test', 0):,}); "
             f"{doc.get('n_errors', 0)} error(s), {doc.get('n_warnings', 0)} warning(s).", ""]
    ll = _lengths_line(doc)
    if ll:
        lines += [ll, ""]
    lines += ["| severity | check | count | finding |", "|---|---|---:|---|"]
    for f in doc.get("findings", []):
        lines.append(f"| {f['severity']} | `{f['code']}` | {int(f.get('count', 0)):,} | {_md(f['message'])} |")
    lines += ["", "Supported ladder families:", ""]
    for fam in GEN_FAMILIES:
        s = (doc.get("family_support") or {}).get(fam)
        if s:
            lines.append(f"- {_FAMILY_WORDS[fam]}: **{'yes' if s['supported'] else 'no'}**: {_md(s['reason'])}")
    shown = [f for f in doc.get("findings", []) if f["severity"] in ("error", "warning") and f.get("examples")]
    if shown:
        lines += ["", f"{heading}# Audit examples", ""]
        for f in shown:
            lines.append(f"**{f['code']}** ({f['severity']})" + (f": {_md(f['advice'])}" if f.get("advice") else ""))
            lines.append("")
            for ex in f["examples"][:max_examples]:
                lines.append("- " + _md(", ".join(f"{k}={_short(str(v), 120)!r}" if isinstance(v, str) else f"{k}={v}"
                                                  for k, v in ex.items())))
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def generation_audit_html(doc: dict[str, Any], level: int = 2, max_examples: int = 3) -> str:
    """The generation audit as an HTML fragment (every data text escaped) for report.html."""
    e = html.escape
    t = doc.get("task") or {}
    ss = t.get("split_sizes") or {}
    h, h2 = f"h{level}", f"h{level + 1}"
    out = [f"<section class=\"audit audit-generation\"><{h}>Data audit (generation)</{h}>",
           f"<p><b>{e(str(t.get('name', '')))}</b>: {t.get('n', 0):,} pairs, "
           f"kind <i>{e(str(doc.get('kind', '')))}</i>, "
           f"{e(str(t.get('output', 'text')))} output (train {ss.get('train', 0):,} / validation "
           f"{ss.get('validation', 0):,} / test {ss.get('test', 0):,}); {doc.get('n_errors', 0)} error(s), "
           f"{doc.get('n_warnings', 0)} warning(s).</p>"]
    ll = _lengths_line(doc)
    if ll:
        out.append(f"<p>{e(ll)}</p>")
    out.append("<table><thead><tr><th>severity</th><th>check</th><th>count</th><th>finding</th></tr></thead><tbody>")
    for f in doc.get("findings", []):
        out.append(f"<tr class=\"sev-{e(f['severity'])}\"><td>{e(f['severity'])}</td>"
                   f"<td><code>{e(f['code'])}</code></td><td style=\"text-align:right\">{int(f.get('count', 0)):,}"
                   f"</td><td>{e(f['message'])}</td></tr>")
    out.append("</tbody></table><ul>")
    for fam in GEN_FAMILIES:
        s = (doc.get("family_support") or {}).get(fam)
        if s:
            yes = "yes" if s["supported"] else "no"
            out.append(f"<li>{e(_FAMILY_WORDS[fam])}: <b>{yes}</b>: {e(s['reason'])}</li>")
    out.append("</ul>")
    shown = [f for f in doc.get("findings", []) if f["severity"] in ("error", "warning") and f.get("examples")]
    if shown:
        out.append(f"<{h2}>Audit examples</{h2}>")
        for f in shown:
            advice = ": " + e(f["advice"]) if f.get("advice") else ""
            out.append(f"<p><b>{e(f['code'])}</b> ({e(f['severity'])}){advice}</p><ul>")
            for ex in f["examples"][:max_examples]:
                out.append("<li>" + e(", ".join(f"{k}={_short(str(v), 120)!r}" if isinstance(v, str) else f"{k}={v}"
                                               for k, v in ex.items())) + "</li>")
            out.append("</ul>")
    out.append("</section>")
    return "\n".join(out)


def render_generation_audit(doc: dict[str, Any], console: Any, max_examples: int = 3) -> None:
    """The generation audit on the terminal (rich): the findings table, examples, supported families."""
    from rich.markup import escape
    from rich.table import Table

    t = doc.get("task") or {}
    table = Table(title=f"Data audit: {escape(str(t.get('name')))} ({t.get('n', 0):,} pairs, generation: "
                        f"{escape(str(doc.get('kind')))}, {escape(str(t.get('output')))} output)")
    for col, just in (("severity", "left"), ("check", "left"), ("count", "right"), ("finding", "left")):
        table.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    style = {"error": "bold red", "warning": "yellow", "info": "dim"}
    for f in doc.get("findings", []):
        table.add_row(f"[{style[f['severity']]}]{f['severity']}[/]", f["code"], f"{int(f.get('count', 0)):,}",
                      escape(f["message"]))
    console.print(table)
    for f in doc.get("findings", []):
        if f["severity"] == "info" or not f.get("examples"):
            continue
        console.print(f"[{style[f['severity']]}]{f['code']}[/]: {escape(f.get('advice', ''))}")
        for ex in f["examples"][:max_examples]:
            console.print("   - " + escape(", ".join(f"{k}={_short(str(v), 80)!r}" if isinstance(v, str) else f"{k}={v}"
                                                    for k, v in ex.items())), soft_wrap=False, overflow="ellipsis")
    fams = ", ".join(_FAMILY_WORDS[f] for f in GEN_FAMILIES if (doc.get("family_support") or {}).get(f, {}).get(
        "supported")) or "none"
    console.print(f"Supported ladder families: [bold]{escape(fams)}[/]")
    colour = "bold red" if doc.get("has_errors") else ("yellow" if doc.get("n_warnings") else "green")
    console.print(f"[{colour}]{doc.get('n_errors', 0)} error(s), {doc.get('n_warnings', 0)} warning(s)[/]")

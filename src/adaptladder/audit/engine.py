"""The audit itself: run every check on a loaded task and assemble the report."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptladder.audit.context import (
    SupportsEncode,
    _Ctx,
    _resolve_task_type,
)
from adaptladder.audit.duplicates import (
    _check_conflicts,
    _check_exact,
    _check_leakage,
    _check_near,
    _embed_groups,
)
from adaptladder.audit.hygiene import _check_hygiene
from adaptladder.audit.labels import _check_label_errors
from adaptladder.audit.report import (
    AuditReport,
    Finding,
    _Plan,
)
from adaptladder.audit.requirements import (
    RULES_VERSION,
    SEVERITIES,
    TASK_TYPES,
    _merge,
    load_requirements,
)
from adaptladder.audit.sizes import (
    _check_balance,
    _check_size,
)
from adaptladder.errors import AdaptError
from adaptladder.task import Task


def run_audit(
    task: Task,
    *,
    encoder: str | SupportsEncode | None = "minilm",
    near_dup_threshold: float = 0.95,
    task_type: str = "auto",
    requirements: str | Path | dict[str, Any] | None = None,
    label_errors: bool = True,
    label_error_model: str = "auto",
    max_test_leak_share: float | None = None,
    seed: int = 13,
    progress: bool = False,
    pre_findings: Sequence[Finding] = (),
    log: Callable[[str], None] | None = None,
    stop_on_errors: bool = False,
    budget_minutes: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> AuditReport:
    """Audit a loaded task; see the module docstring for the checks.

    ``encoder`` is an alias / path for :func:`adaptladder.encode.get_encoder`, any object with an
    ``encode(texts) -> L2-normalised (n, d)`` method, or ``None`` to skip near-duplicate search.
    ``requirements`` is a YAML path or a dict overlaid on the default table.
    ``label_error_model`` is ``auto`` (the better out-of-fold accuracy of the two below),
    ``tfidf`` (TF-IDF + linear model, fast) or ``features`` (embeddings + logistic regression;
    reuses the near-duplicate embeddings).

    Checks that need no embeddings (size, balance, exact duplicates and exact leakage,
    conflicts, hygiene) run first; ``log`` gets a line per check with its time and what it
    found, and progress lines while embedding. With ``stop_on_errors`` (``run`` without
    ``--force``) an error found by those checks ends the audit before any embedding.

    ``budget_minutes`` bounds the audit's wall time (None: no bound). The cheap checks always
    run on every row; the costly stages get shares of what is left (:data:`STAGE_SHARES`): the
    embedding stops at a stratified sample of the texts that fits (near-duplicates and leakage
    are then searched within it), the whole-text confirmation of candidate pairs stops at its
    share, and the label-error search is timed on a probe and run on a stratified sample sized
    to fit. What was sampled is stated in an ``audit_sampled`` finding and ``stats["budget"]``.
    """
    if not 0.5 <= near_dup_threshold <= 1.0:
        raise AdaptError(f"--near-dup-threshold {near_dup_threshold} is outside 0.5-1.0; "
                         "use a cosine similarity such as 0.95.")
    if task_type not in TASK_TYPES:
        raise AdaptError(f"unknown task type {task_type!r}: choose from {', '.join(TASK_TYPES)}.")
    if label_error_model not in ("auto", "tfidf", "features"):
        raise AdaptError(f"unknown label-error model {label_error_model!r}: use auto, tfidf or features.")
    if isinstance(requirements, dict):
        reqs = _merge(load_requirements(None), requirements)
    else:
        reqs = load_requirements(requirements)
    cfg = reqs["audit"]
    if max_test_leak_share is not None:
        cfg["max_test_leak_share"] = float(max_test_leak_share)
    resolved_type, type_reason = _resolve_task_type(task, task_type, reqs)
    if resolved_type not in reqs["task_types"]:
        raise AdaptError(f"task type {resolved_type!r} is not in the requirements table; add it under task_types.")

    if budget_minutes is not None and not budget_minutes > 0:
        raise AdaptError(f"the audit's budget must be a positive number of minutes, got {budget_minutes}.")
    budget_s = None if budget_minutes is None else float(budget_minutes) * 60
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    b0 = clock()

    def share(stage_name: str) -> float | None:
        """This stage's seconds: its share of what is left of the budget (at least its floor)."""
        if budget_s is None:
            return None
        frac, floor = STAGE_SHARES[stage_name]
        return max(frac * (budget_s - (clock() - b0)), floor * budget_s)

    ctx = _Ctx(task, cfg, seed)
    findings: list[Finding] = list(pre_findings)
    stats: dict[str, Any] = {}

    say = log or (lambda msg: None)
    ctx.log = say

    def stage(name: str, fn: Any, *args: Any) -> Any:
        n_before = len(findings)
        from adaptladder import progress

        progress.update(detail=name)  # names the stage in heartbeat lines (no-op outside a progress step)
        t = time.perf_counter()
        out = fn(*args)
        timings[name] = time.perf_counter() - t
        new = findings[n_before:]
        worst = sorted(new, key=lambda f: SEVERITIES.index(f.severity))
        what = "; ".join(f"{f.severity if f.severity != 'info' else ''} {f.message}".strip()
                         for f in worst[:2]) or "done"
        say(f"audit: {name.replace('_', ' ')} ({timings[name]:.1f} s): {_clip(what)}")
        return out

    no_pairs = np.zeros((0, 2), dtype=np.int64)
    family_support = stage("size", _check_size, ctx, reqs, resolved_type, findings, stats)
    stage("balance", _check_balance, ctx, reqs["task_types"][resolved_type], findings, stats)
    stage("exact_duplicates", _check_exact, ctx, findings, stats)
    stage("exact_leakage", _check_leakage, ctx, no_pairs, findings, stats)
    stage("conflicts", _check_conflicts, ctx, findings, stats)
    stage("hygiene", _check_hygiene, ctx, encoder, findings, stats)
    stopped = stop_on_errors and any(f.severity == "error" for f in findings)
    emb = None
    if stopped:
        findings.append(Finding("info", "audit_stopped_early", "the checks without embeddings found errors, so the "
                                "near-duplicate and label-error searches were not run", 0))
        say("audit: errors found before embedding; near-duplicate and label-error searches skipped")
    elif encoder is not None:
        emb = stage("embed", _embed_groups, ctx, encoder, progress, share("embed"), clock)
        pairs = stage("near_duplicates", _check_near, ctx, emb, near_dup_threshold, findings, stats,
                      share("near_duplicates"), clock)
        # leakage again, now with the confirmed near-copies (replaces the exact-only findings)
        findings[:] = [f for f in findings if not f.code.startswith("leakage")]
        stage("leakage", _check_leakage, ctx, pairs, findings, stats)
    else:
        findings.append(Finding("info", "near_duplicates_skipped", "near-duplicate search skipped (no encoder)", 0))
    if label_errors and not stopped:
        stage("label_errors", _check_label_errors, ctx, label_error_model, emb, findings, stats,
              share("label_errors"), clock)
    timings["total"] = time.perf_counter() - t0
    if budget_s is not None:
        _note_budget(ctx, budget_s, findings, stats)

    rank = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: rank[f.severity])  # stable: checks keep their order within a severity
    summary = task.summary()
    summary["source"] = {k: v for k, v in task.source.items() if k not in ("row_ids", "row_refs")}
    settings = {"encoder": encoder if isinstance(encoder, str) or encoder is None else type(encoder).__name__,
                "near_dup_threshold": near_dup_threshold, "label_errors": label_errors,
                "label_error_model": label_error_model, "seed": seed, "requirements": reqs,
                "rules_version": RULES_VERSION, "stopped_early": bool(stopped),
                "budget_minutes": budget_minutes}
    if ctx.embed_stats:
        stats["embedding"] = ctx.embed_stats  # this audit's cache hits / misses (unique texts encoded)
    if encoder is not None and hasattr(encoder, "info"):
        settings["encoder_info"] = encoder.info()
    elif isinstance(encoder, str):
        from adaptladder.encode import get_encoder
        settings["encoder_info"] = get_encoder(encoder).info()
    plan = _Plan(task.fingerprint(), ctx.group, ctx.conflict_groups, ctx.cross_pairs, near_dup_threshold
                 if encoder is not None else None)
    return AuditReport(summary, resolved_type, type_reason, findings, stats, family_support, settings, timings, plan)


#: Share of what is left of the audit's budget each costly stage may use, and its floor (share of the
#: whole budget it gets even when the earlier stages used everything up).
STAGE_SHARES = {"embed": (0.6, 0.1), "near_duplicates": (0.5, 0.05), "label_errors": (1.0, 0.15)}


def _note_budget(ctx: _Ctx, budget_s: float, findings: list[Finding], stats: dict[str, Any]) -> None:
    """What the audit's budget cut, in ``stats["budget"]`` and one finding the reports show."""
    emb = getattr(ctx, "embed_budget", None)
    lab = stats.get("label_errors") or {}
    confirm_stop = getattr(ctx, "confirm_stopped", None)
    cut: list[str] = []
    if emb and emb.get("sampled"):
        cut.append(f"near-duplicates and leakage were searched among a stratified sample of {emb['done']:,} of "
                   f"{emb['total']:,} distinct texts (the embedding of all would not fit)")
    if confirm_stop is not None:
        cand = (stats.get("near_duplicates") or {}).get("candidates_kept", 0)
        cut.append(f"the whole-text check confirmed {confirm_stop:,} of {cand:,} candidate pairs (most similar first)")
    if lab.get("sampled"):
        cut.append(f"label errors were searched in a stratified sample of {lab['rows_checked']:,} of "
                   f"{(lab.get('budget') or {}).get('rows_eligible', lab['rows_checked']):,} rows")
    stats["budget"] = {"budget_minutes": round(budget_s / 60, 2), "embedding": emb,
                       "confirm_stopped_at": confirm_stop, "label_errors_sampled": bool(lab.get("sampled")),
                       "sampled": bool(cut)}
    if cut:
        findings.append(Finding("info", "audit_sampled", f"within the audit's {budget_s / 60:.1f}-minute budget: "
                                + "; ".join(cut), 0,
                                advice="raise --audit-budget-minutes (or run `adaptladder audit` without a budget) "
                                       "to check every row."))


def _clip(s: str, n: int = 160) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"

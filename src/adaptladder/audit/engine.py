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

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
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
        emb = stage("embed", _embed_groups, ctx, encoder, progress)
        pairs = stage("near_duplicates", _check_near, ctx, emb, near_dup_threshold, findings, stats)
        # leakage again, now with the confirmed near-copies (replaces the exact-only findings)
        findings[:] = [f for f in findings if not f.code.startswith("leakage")]
        stage("leakage", _check_leakage, ctx, pairs, findings, stats)
    else:
        findings.append(Finding("info", "near_duplicates_skipped", "near-duplicate search skipped (no encoder)", 0))
    if label_errors and not stopped:
        stage("label_errors", _check_label_errors, ctx, label_error_model, emb, findings, stats)
    timings["total"] = time.perf_counter() - t0

    rank = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: rank[f.severity])  # stable: checks keep their order within a severity
    summary = task.summary()
    summary["source"] = {k: v for k, v in task.source.items() if k not in ("row_ids", "row_refs")}
    settings = {"encoder": encoder if isinstance(encoder, str) or encoder is None else type(encoder).__name__,
                "near_dup_threshold": near_dup_threshold, "label_errors": label_errors,
                "label_error_model": label_error_model, "seed": seed, "requirements": reqs,
                "rules_version": RULES_VERSION, "stopped_early": bool(stopped)}
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


def _clip(s: str, n: int = 160) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"

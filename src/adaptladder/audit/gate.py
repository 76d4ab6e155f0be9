"""The ladder's audit step: the error gate, reuse of a current audit.json, and the run hook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adaptladder.audit.engine import run_audit
from adaptladder.audit.report import AuditReport
from adaptladder.audit.requirements import (
    RULES_VERSION,
    load_requirements,
)
from adaptladder.errors import AdaptError
from adaptladder.task import Task


def enforce_audit(report: AuditReport, force: bool = False) -> None:
    """Stop (raise :class:`AdaptError`) when the audit found errors, unless ``force``.

    The ladder calls this right after the audit; ``--force`` runs anyway.
    """
    if not report.has_errors or force:
        return
    errs = report.errors
    first = "; ".join(f"{f.code}: {f.message}" for f in errs[:2])
    raise AdaptError(f"the data audit found {len(errs)} error(s) ({first}{'; ...' if len(errs) > 2 else ''}); "
                     "fix the data (`adaptladder audit DATA --dedupe OUT_DIR` writes clean splits) "
                     "or pass --force to run anyway.")




def audit_budget_minutes(cfg: Any) -> float | None:
    """The audit's time budget in a run: ``audit_budget_minutes`` when given, else the run's
    ``--budget-minutes`` (a run that budgets its rungs budgets its audit alike), else none."""
    own = getattr(cfg, "audit_budget_minutes", None)
    return own if own is not None else getattr(cfg, "budget_minutes", None)


def is_current(doc: dict[str, Any], task: Task, *, encoder: Any, seed: int) -> bool:
    """True when an audit report (``AuditReport.to_dict()``) was made of this data with these
    settings and today's rules and default requirements, so it can be reused instead of re-run.

    An audit that stopped before embedding (errors, no ``--force``) is never reused: it lacks checks.
    """
    st = doc.get("settings") or {}
    return (st.get("rules_version") == RULES_VERSION and not st.get("stopped_early")
            and st.get("requirements") == load_requirements()
            and st.get("encoder") == encoder and st.get("seed") == seed
            and (doc.get("task") or {}).get("fingerprint") == task.fingerprint())


def audit_for_run(task: Task, cfg: Any, run_dir: str | Path, log: Any = None) -> dict[str, Any] | None:
    """The ladder's audit step: audit, write ``run_dir/audit.json``, log, and stop on errors unless forced.

    ``cfg`` is the ladder's ``RunConfig`` (reads ``no_audit``, ``force``, ``encoder``, ``seed``).
    Returns the report as a dict for results.json (``None`` when skipped); raises
    :class:`AdaptError` when the audit found errors and ``cfg.force`` is false.
    """
    log = log or (lambda s: None)
    if getattr(cfg, "no_audit", False):
        log("data audit skipped (--no-audit)")
        return None
    log("data audit: sizes, balance, duplicates, leakage, label conflicts and errors, hygiene")
    from rich.markup import escape

    force = bool(getattr(cfg, "force", False))
    budget = audit_budget_minutes(cfg)
    if budget is not None:
        log(f"data audit budget: {budget:g} min (costly stages sample to fit; --audit-budget-minutes changes it)")
    report = run_audit(task, encoder=getattr(cfg, "encoder", "minilm"), seed=getattr(cfg, "seed", 13),
                       log=lambda msg: log(escape(msg)), stop_on_errors=not force, budget_minutes=budget)
    report.write_json(Path(run_dir) / "audit.json")
    for f in report.errors + report.warnings:
        colour = "red" if f.severity == "error" else "yellow"
        log(f"audit [{colour}]{f.severity}[/{colour}] {f.code}: {escape(f.message)}")
    log(f"audit: {report.summary_line()} ({report.timings['total']:.1f} s; details in audit.json)")
    if report.has_errors and getattr(cfg, "force", False):
        log(f"[red]continuing despite {len(report.errors)} audit error(s) (--force)[/red]")
    enforce_audit(report, force=bool(getattr(cfg, "force", False)))
    return report.to_dict()

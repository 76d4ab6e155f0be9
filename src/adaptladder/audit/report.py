"""The audit's report: findings, the report object, its JSON / Markdown / terminal forms."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adaptladder.audit.requirements import (
    FAMILY_ORDER,
    FAMILY_WORDS,
    SCHEMA_VERSION,
)


@dataclass
class Finding:
    """One audit result: ``severity`` is error / warning / info; ``examples`` are small dicts."""

    severity: str
    code: str
    message: str
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    advice: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code, "message": self.message, "count": int(self.count),
                "advice": self.advice, "examples": _jsonable(self.examples)}


@dataclass
class _Plan:
    """Row-level facts that :func:`write_clean_splits` needs (not serialised)."""

    fingerprint: str
    group: np.ndarray               # normalised-text group id per row
    conflict_groups: set[int]
    near_pairs: np.ndarray          # (m, 2) group ids of near-duplicate pairs across splits
    threshold: float | None


@dataclass
class AuditReport:
    """The audit of one task: findings, statistics and which ladder families the data supports."""

    task: dict[str, Any]
    task_type: str
    task_type_reason: str
    findings: list[Finding]
    stats: dict[str, Any]
    family_support: dict[str, dict[str, Any]]
    settings: dict[str, Any]
    timings: dict[str, float]
    _plan: _Plan | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditReport:
        """Rebuild a report from ``to_dict()`` output (e.g. results.json["audit"]) to render it again.

        The row-level plan is not serialised, so :func:`write_clean_splits` needs a fresh audit.
        """
        findings = [Finding(f["severity"], f["code"], f["message"], f.get("count", 0), f.get("examples", []),
                            f.get("advice", "")) for f in d.get("findings", [])]
        return cls(d.get("task", {}), d.get("task_type", ""), d.get("task_type_reason", ""), findings,
                   d.get("stats", {}), d.get("family_support", {}), d.get("settings", {}),
                   {k: float(v) for k, v in d.get("timings_s", {}).items()})

    # ---------------------------------------------------------------- views
    @property
    def supported_families(self) -> list[str]:
        """Ladder families (``floor``, ``prompting``, ``features``, ``finetune``, ``distill``) the data supports."""
        return [f for f in FAMILY_ORDER if self.family_support.get(f, {}).get("supported")]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def has_errors(self) -> bool:
        return bool(self.errors)

    def finding(self, code: str) -> Finding | None:
        """The finding with this code, if the audit produced one."""
        return next((f for f in self.findings if f.code == code), None)

    def count(self, code: str) -> int:
        f = self.finding(code)
        return f.count if f else 0

    # ---------------------------------------------------------------- output
    def to_dict(self) -> dict[str, Any]:
        return _jsonable({
            "schema_version": SCHEMA_VERSION,
            "task": self.task,
            "task_type": self.task_type,
            "task_type_reason": self.task_type_reason,
            "has_errors": self.has_errors,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "supported_families": self.supported_families,
            "family_support": self.family_support,
            "findings": [f.to_dict() for f in self.findings],
            "stats": self.stats,
            "settings": self.settings,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        })

    def write_json(self, path: str | Path) -> Path:
        """Write ``audit.json`` atomically (a temp file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False))
        tmp.replace(path)
        return path

    def summary_line(self) -> str:
        fams = ", ".join(FAMILY_WORDS[f] for f in self.supported_families) or "none"
        return (f"{len(self.errors)} error(s), {len(self.warnings)} warning(s); "
                f"the data supports: {fams}.")

    def to_markdown(self, max_examples: int = 3, heading: str = "##") -> str:
        """A Markdown section for the run report."""
        t = self.task
        lines = [f"{heading} Data audit", ""]
        lines.append(f"**{t.get('name')}**: {t.get('n', 0):,} examples, {t.get('n_classes', 0)} classes "
                     f"(train {t.get('split_sizes', {}).get('train', 0):,} / validation "
                     f"{t.get('split_sizes', {}).get('validation', 0):,} / test "
                     f"{t.get('split_sizes', {}).get('test', 0):,}); task type *{self.task_type}* "
                     f"({self.task_type_reason}).")
        lines.append("")
        lines.append(f"Result: {self.summary_line()}")
        if self.has_errors:
            lines.append("")
            lines.append("> **The audit found errors**: `adaptladder run` stops unless `--force` is given. "
                         "`adaptladder audit DATA --dedupe OUT_DIR` writes clean splits.")
        lines += ["", "| severity | check | count | finding |", "|---|---|---:|---|"]
        for f in self.findings:
            lines.append(f"| {f.severity} | `{f.code}` | {f.count:,} | {_md(f.message)} |")
        lines += ["", "Supported ladder families:", ""]
        for fam in FAMILY_ORDER:
            s = self.family_support.get(fam)
            if s:
                mark = "yes" if s["supported"] else "no"
                lines.append(f"- {FAMILY_WORDS[fam]} (`{fam}`): **{mark}**: {_md(s['reason'])}")
        shown = [f for f in self.findings if f.severity in ("error", "warning") and f.examples]
        if shown:
            lines += ["", f"{heading}# Examples", ""]
            for f in shown:
                lines.append(f"**{f.code}** ({f.severity}){': ' + _md(f.advice) if f.advice else ''}")
                lines.append("")
                for ex in f.examples[:max_examples]:
                    lines.append(f"- {_md(_example_line(ex))}")
                lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def render(self, console: Any, max_examples: int = 3) -> None:
        """Print the audit as a rich table (plus examples for errors and warnings)."""
        from rich.markup import escape
        from rich.table import Table

        t = self.task
        title = (f"Data audit: {t.get('name')} ({t.get('n', 0):,} examples, {t.get('n_classes', 0)} classes, "
                 f"task type {self.task_type})")
        table = Table(title=title, show_lines=False)
        table.add_column("severity")
        table.add_column("check")
        table.add_column("count", justify="right")
        table.add_column("finding", overflow="fold")
        style = {"error": "bold red", "warning": "yellow", "info": "dim"}
        for f in self.findings:
            table.add_row(f"[{style[f.severity]}]{f.severity}[/]", f.code, f"{f.count:,}", escape(f.message))
        console.print(table)
        for f in self.findings:
            if f.severity == "info" or not (f.examples or f.advice):
                continue
            console.print(f"[{style[f.severity]}]{f.code}[/]: {escape(f.advice)}" if f.advice
                          else f"[{style[f.severity]}]{f.code}[/]:")
            for ex in f.examples[:max_examples]:
                console.print("   - " + escape(_example_line(ex)), soft_wrap=False, overflow="ellipsis")
        fams = ", ".join(FAMILY_WORDS[f] for f in self.supported_families) or "none"
        console.print(f"Supported ladder families: [bold]{fams}[/]")
        colour = "bold red" if self.has_errors else ("yellow" if self.warnings else "green")
        console.print(f"[{colour}]{self.summary_line()}[/]")


def _md(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _short(text: str, n: int = 120) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _example_line(ex: dict[str, Any]) -> str:
    parts = []
    for k, v in ex.items():
        if isinstance(v, float):
            v = round(v, 3)
        if isinstance(v, str) and k.startswith("text"):
            v = repr(_short(v))
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj

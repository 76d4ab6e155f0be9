"""Data audit: catch the data problems that sink adaptations before the ladder spends compute.

Most failed adaptations fail on the data: too few examples, duplicates that leak the test set
into training (a false score), labels that contradict each other. :func:`run_audit` checks a
loaded :class:`~adaptladder.task.Task` for

* size against an editable requirements table (``data/requirements.yaml``) and which ladder
  families the training split can support (``supported_families``);
* class balance;
* exact duplicates (after case / whitespace / punctuation normalisation) and near-duplicates
  (cosine similarity of cached sentence embeddings, blockwise matrix products);
* train -> validation / test leakage, exact and near;
* conflicting labels on the same normalised text;
* likely label errors (cleanlab on out-of-fold probabilities);
* text hygiene (empty, very short / long, URL-only, symbol noise, encoding garbage).

Every finding has a severity; an *error* stops ``adaptladder run`` unless ``--force``
(:func:`enforce_audit`). :func:`audit_source` audits files *before* loading them strictly, so a
dirty file gets one full report instead of one loading error at a time, and
:func:`write_clean_splits` writes de-duplicated, leak-free splits as new files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import yaml

from adaptladder.errors import AdaptError
from adaptladder.task import (
    _SPLIT_ALIASES,
    DEFAULT_FRACTIONS,
    SPLITS,
    TEXT_CANDIDATES,
    Task,
    _clean_labels,
    _encode_labels,
    _pick_column,
    load_task,
    normalize_text,
    read_table,
    stratified_split,
)

SCHEMA_VERSION = 1
#: bump when a check's logic or severity rule changes: a run never reuses an audit made by other rules
RULES_VERSION = 4
SEVERITIES = ("error", "warning", "info")
TASK_TYPES = ("auto", "text-classification", "sentiment")
FAMILY_ORDER = ("floor", "prompting", "features", "finetune", "distill")
FAMILY_WORDS = {"floor": "classical floor", "prompting": "prompting", "features": "feature extraction",
                "finetune": "fine-tuning", "distill": "distillation"}


class SupportsEncode(Protocol):
    def encode(self, texts: Sequence[str], *, progress: bool = ..., desc: str = ...) -> np.ndarray: ...


# ============================================================================ requirements table
def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@lru_cache(maxsize=8)
def _load_requirements_cached(path: str | None) -> dict[str, Any]:
    base = yaml.safe_load(resources.files("adaptladder.data").joinpath("requirements.yaml").read_text())
    if path:
        p = Path(path)
        if not p.is_file():
            raise AdaptError(f"requirements table {p} not found; fix --requirements or ADAPTLADDER_REQUIREMENTS.")
        try:
            over = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise AdaptError(f"requirements table {p} is not valid YAML ({first}); fix the file.") from e
        if not isinstance(over, dict):
            raise AdaptError(f"requirements table {p} must be a mapping like the default data/requirements.yaml.")
        base = _merge(base, over)
    for tt, spec in base.get("task_types", {}).items():
        for key in ("minimum", "recommended", "min_per_class", "max_imbalance"):
            if key not in spec:
                raise AdaptError(f"requirements table: task type {tt!r} lacks {key!r}; copy it from the default table.")
    return base


def load_requirements(path: str | Path | None = None) -> dict[str, Any]:
    """The default requirements table overlaid with ``path`` (or ``$ADAPTLADDER_REQUIREMENTS``)."""
    path = path or os.environ.get("ADAPTLADDER_REQUIREMENTS") or None
    return json.loads(json.dumps(_load_requirements_cached(str(path) if path else None)))  # a private copy


# ============================================================================ report objects
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


# ============================================================================ text helpers
_WORD = re.compile(r"\w+", re.UNICODE)
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MOJIBAKE = re.compile("\ufffd|Ã[\u0080-\u00bf]|Â[\u0080-\u00bf\u00a0]|â€|ï»¿")
_SPACE = re.compile(r"\s+")
_NOT_ALNUM = re.compile(r"[\W_]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _noise_kind(text: str) -> str | None:
    s = text.strip()
    if not s:
        return "empty"
    if _MOJIBAKE.search(s) or _CONTROL.search(s):
        return "encoding garbage"
    no_urls = _URL.sub(" ", s)
    if no_urls != s and not _WORD.search(no_urls):
        return "URL only"
    visible = len(_SPACE.sub("", s))  # regex counts: a Python loop over every character is slow on long texts
    alnum = len(_NOT_ALNUM.sub("", s))
    if visible >= 4 and alnum / visible < 0.3:
        return "mostly symbols"
    return None


# ============================================================================ row references
def _row_refs(task: Task) -> list[str]:
    """Where each row came from, for examples a user can look up ("train.csv line 14")."""
    src = task.source
    n = len(task.texts)
    if src.get("row_refs") is not None and len(src["row_refs"]) == n:
        return list(src["row_refs"])
    kind = src.get("kind")
    if kind == "file":
        name = Path(src.get("path", "data")).name
        rows = src.get("row_ids")
        ids = list(rows) if rows is not None and len(rows) == n else list(range(n))
        return [f"{name} line {i + 2}" for i in ids]
    if kind == "files":
        files = [("train", src.get("train"))]
        if src.get("validation"):
            files.append(("validation", src.get("validation")))
        files.append(("test", src.get("test")))
        refs: list[str] = []
        i = 0
        for part, fpath in files:
            in_file = {"train", "validation"} if part == "train" and not src.get("validation") else {part}
            line = 2
            while i < n and task.split[i] in in_file:
                refs.append(f"{Path(str(fpath)).name} line {line}")
                line += 1
                i += 1
        if len(refs) == n:
            return refs
    return [f"row {i}" for i in range(n)]


# ============================================================================ tolerant loading
def audit_source(
    data: str | Path | None = None,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    split_col: str | None = None,
    train: str | Path | None = None,
    validation: str | Path | None = None,
    test: str | Path | None = None,
    seed: int = 13,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    name: str | None = None,
    **audit_kwargs: Any,
) -> tuple[Task, AuditReport]:
    """Load the data the way ``run`` would and audit it; on a loading error, audit the raw rows instead.

    ``load_task`` stops at the first broken row (an empty text, a missing label, a class too small
    to split). Here that error becomes one finding and the raw table is read leniently, so the
    report lists *every* problem at once. The split of a leniently-loaded file is only an
    approximation of what ``run`` will use once the file is fixed.
    """
    try:
        task = load_task(data, text_col=text_col, label_col=label_col, split_col=split_col, train=train,
                         validation=validation, test=test, seed=seed, fractions=fractions, name=name)
        pre: list[Finding] = []
    except AdaptError as e:
        task, pre = _load_lenient(e, data, text_col=text_col, label_col=label_col, split_col=split_col, train=train,
                                  validation=validation, test=test, seed=seed, fractions=fractions, name=name)
    report = run_audit(task, pre_findings=pre, seed=seed, **audit_kwargs)
    return task, report


def _load_lenient(
    err: AdaptError,
    data: str | Path | None,
    *,
    text_col: str | None,
    label_col: str | None,
    split_col: str | None,
    train: str | Path | None,
    validation: str | Path | None,
    test: str | Path | None,
    seed: int,
    fractions: tuple[float, float, float],
    name: str | None,
) -> tuple[Task, list[Finding]]:
    """Read the raw files, set broken rows aside (reported), and build a Task of the usable rows."""
    from adaptladder.datasets import BUILTIN
    from adaptladder.task import LABEL_CANDIDATES

    if data is not None and str(data) in BUILTIN and not Path(str(data)).exists():
        raise err
    if (data is None) == (train is None) or (train is not None and test is None):
        raise err  # argument errors: nothing to audit
    files: list[tuple[str | None, Path]] = (
        [(None, Path(str(data)))] if data is not None
        else [("train", Path(str(train)))] + ([("validation", Path(str(validation)))] if validation else [])
        + [("test", Path(str(test)))]
    )
    texts: list[str] = []
    raw_labels: list[Any] = []
    splits: list[str | None] = []
    refs: list[str] = []
    rows: list[int] = []
    empty_ex: list[dict[str, Any]] = []
    nolabel_ex: list[dict[str, Any]] = []
    badsplit_ex: list[dict[str, Any]] = []
    n_empty = n_nolabel = n_badsplit = 0
    for part, path in files:
        df = read_table(path)  # unreadable files cannot be audited: that error stands
        tcol = _pick_column(df, text_col, TEXT_CANDIDATES, "text", path, "--text-col")
        lcol = _pick_column(df, label_col, LABEL_CANDIDATES, "labels", path, "--label-col")
        if tcol == lcol:
            raise err
        if split_col is not None and part is None and split_col not in df.columns:
            raise err
        scol = df[split_col].tolist() if (split_col is not None and part is None) else None
        for i, (t, lab) in enumerate(zip(df[tcol].tolist(), df[lcol].tolist(), strict=True)):
            ref = f"{path.name} line {i + 2}"
            t_ok = not (t is None or (isinstance(t, float) and np.isnan(t))) and bool(str(t).strip())
            lab_ok = not (lab is None or (isinstance(lab, float) and np.isnan(lab))
                          or (isinstance(lab, str) and not lab.strip()) or isinstance(lab, (list, dict)))
            sp = part
            if scol is not None:
                sp = _SPLIT_ALIASES.get(str(scol[i]).strip().lower())
            if not t_ok:
                n_empty += 1
                if len(empty_ex) < 10:
                    empty_ex.append({"where": ref, "label": str(lab), "text": "" if t is None else str(t)})
            if not lab_ok:
                n_nolabel += 1
                if len(nolabel_ex) < 10:
                    nolabel_ex.append({"where": ref, "text": str(t)})
            if scol is not None and sp is None:
                n_badsplit += 1
                if len(badsplit_ex) < 10:
                    badsplit_ex.append({"where": ref, "split_value": str(scol[i])})
            if t_ok and lab_ok and (scol is None or sp is not None):
                texts.append(t if isinstance(t, str) else str(t))
                raw_labels.append(lab)
                splits.append(sp)
                refs.append(ref)
                rows.append(i)
    pre = [Finding("error", "load_refused", f"strict loading (what `run` does) stops with: {err}", 1,
                   advice="this report audits the usable rows read leniently; fix the file and audit again.")]
    if n_empty:
        pre.append(Finding("error", "empty_text", f"{n_empty:,} row(s) have an empty or whitespace-only text "
                           "(left out of the rest of the audit)", n_empty, empty_ex,
                           advice="fill the texts in or drop these rows."))
    if n_nolabel:
        pre.append(Finding("error", "missing_label", f"{n_nolabel:,} row(s) have no label "
                           "(left out of the rest of the audit)", n_nolabel, nolabel_ex,
                           advice="label these rows or drop them."))
    if n_badsplit:
        pre.append(Finding("error", "bad_split_value", f"{n_badsplit:,} row(s) have a split value other than "
                           "train / validation / test (left out)", n_badsplit, badsplit_ex,
                           advice="use train, validation or test in the split column."))
    if not texts:
        raise AdaptError(f"{files[0][1]}: no usable rows (every row lacks a text or a label); nothing to audit.")
    try:
        label_strs = _clean_labels(pd.Series(raw_labels, dtype=object), files[0][1], label_col or "label")
    except AdaptError:
        label_strs = [str(v).strip() for v in raw_labels]
    codes, names = _encode_labels(label_strs)
    if len(names) < 2:
        raise err
    split = _lenient_split(codes, names, splits, seed, fractions)
    source = {"kind": "lenient", "path": str(files[0][1]), "seed": seed, "row_refs": refs, "row_ids": rows,
              "split": "lenient (approximates the split of the fixed file)", "load_error": str(err)}
    task_name = name or (Path(str(data)).stem if data is not None else Path(str(train)).stem)
    return Task(task_name, texts, codes, names, split, source), pre


def _lenient_split(codes: np.ndarray, names: list[str], given: list[str | None], seed: int,
                   fractions: tuple[float, float, float]) -> np.ndarray:
    """A split that never refuses: tiny classes go to train, validation is carved where possible."""
    from sklearn.model_selection import train_test_split

    n = len(codes)
    if all(s is None for s in given):
        split = np.full(n, "train", dtype=object)
        counts = np.bincount(codes, minlength=len(names))
        ok = np.flatnonzero(counts[codes] >= 3)
        if len(ok):
            sub_codes, sub_names = _encode_labels([names[k] for k in codes[ok]])
            try:
                split[ok] = stratified_split(sub_codes, sub_names, seed, fractions)
            except (AdaptError, ValueError):
                rng = np.random.default_rng(seed)
                r = rng.random(len(ok))
                split[ok] = np.where(r < fractions[0], "train", np.where(r < fractions[0] + fractions[1],
                                                                          "validation", "test"))
        return split
    split = np.array([s or "train" for s in given], dtype=object)
    if not (split == "validation").any():
        tr = np.flatnonzero(split == "train")
        counts = np.bincount(codes[tr], minlength=len(names))
        ok = tr[counts[codes[tr]] >= 2]
        if len(ok) >= 4:
            n_val = max(round(0.15 * len(ok)), int((counts >= 2).sum()))
            try:
                _, val = train_test_split(ok, test_size=min(n_val, len(ok) - 1), random_state=seed,
                                          stratify=codes[ok])
            except ValueError:
                _, val = train_test_split(ok, test_size=min(n_val, len(ok) - 1), random_state=seed)
            split[val] = "validation"
    return split


# ============================================================================ the audit
def run_audit(
    task: Task,
    *,
    encoder: str | SupportsEncode | None = "minilm",
    near_dup_threshold: float = 0.95,
    task_type: str = "auto",
    requirements: str | Path | dict[str, Any] | None = None,
    label_errors: bool = True,
    label_error_model: str = "tfidf",
    max_test_leak_share: float | None = None,
    seed: int = 13,
    progress: bool = False,
    pre_findings: Sequence[Finding] = (),
) -> AuditReport:
    """Audit a loaded task; see the module docstring for the checks.

    ``encoder`` is an alias / path for :func:`adaptladder.encode.get_encoder`, any object with an
    ``encode(texts) -> L2-normalised (n, d)`` method, or ``None`` to skip near-duplicate search.
    ``requirements`` is a YAML path or a dict overlaid on the default table.
    ``label_error_model`` is ``tfidf`` (TF-IDF + linear model, fast) or ``features``
    (embeddings + logistic regression; reuses the near-duplicate embeddings).
    """
    if not 0.5 <= near_dup_threshold <= 1.0:
        raise AdaptError(f"--near-dup-threshold {near_dup_threshold} is outside 0.5-1.0; "
                         "use a cosine similarity such as 0.95.")
    if task_type not in TASK_TYPES:
        raise AdaptError(f"unknown task type {task_type!r}: choose from {', '.join(TASK_TYPES)}.")
    if label_error_model not in ("tfidf", "features"):
        raise AdaptError(f"unknown label-error model {label_error_model!r}: use tfidf or features.")
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

    def stage(name: str, fn: Any, *args: Any) -> Any:
        t = time.perf_counter()
        out = fn(*args)
        timings[name] = time.perf_counter() - t
        return out

    family_support = stage("size", _check_size, ctx, reqs, resolved_type, findings, stats)
    stage("balance", _check_balance, ctx, reqs["task_types"][resolved_type], findings, stats)
    stage("exact_duplicates", _check_exact, ctx, findings, stats)
    emb = None
    if encoder is not None:
        emb = stage("embed", _embed_groups, ctx, encoder, progress)
        pairs = stage("near_duplicates", _check_near, ctx, emb, near_dup_threshold, findings, stats)
    else:
        pairs = np.zeros((0, 2), dtype=np.int64)
        findings.append(Finding("info", "near_duplicates_skipped", "near-duplicate search skipped (no encoder)", 0))
    stage("leakage", _check_leakage, ctx, pairs, findings, stats)
    stage("conflicts", _check_conflicts, ctx, findings, stats)
    if label_errors:
        stage("label_errors", _check_label_errors, ctx, label_error_model, emb, findings, stats)
    stage("hygiene", _check_hygiene, ctx, encoder, findings, stats)
    timings["total"] = time.perf_counter() - t0

    rank = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: rank[f.severity])  # stable: checks keep their order within a severity
    summary = task.summary()
    summary["source"] = {k: v for k, v in task.source.items() if k not in ("row_ids", "row_refs")}
    settings = {"encoder": encoder if isinstance(encoder, str) or encoder is None else type(encoder).__name__,
                "near_dup_threshold": near_dup_threshold, "label_errors": label_errors,
                "label_error_model": label_error_model, "seed": seed, "requirements": reqs,
                "rules_version": RULES_VERSION}
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


class _Ctx:
    """Shared per-task arrays: normalised groups, splits, labels, row references."""

    def __init__(self, task: Task, cfg: dict[str, Any], seed: int) -> None:
        self.task = task
        self.cfg = cfg
        self.seed = seed
        self.max_ex = int(cfg.get("max_examples", 5))
        self.y = task.labels
        self.split = task.split
        self.names = task.label_names
        self.refs = _row_refs(task)
        keys = [normalize_text(t) for t in task.texts]
        index: dict[str, int] = {}
        self.group = np.fromiter((index.setdefault(k, len(index)) for k in keys), dtype=np.int64, count=len(keys))
        self.n_groups = len(index)
        self.first_row = np.full(self.n_groups, -1, dtype=np.int64)
        rev = np.arange(len(keys))[::-1]
        self.first_row[self.group[rev]] = rev  # the first row of each group
        self.in_split = {p: np.bincount(self.group[self.split == p], minlength=self.n_groups) > 0 for p in SPLITS}
        self.conflict_groups: set[int] = set()
        self.cross_pairs = np.zeros((0, 2), dtype=np.int64)
        self.pair_sims = np.zeros(0, dtype=np.float32)
        self.near_done = False
        self.embed_stats: dict[str, int] = {}

    def ex(self, i: int, **extra: Any) -> dict[str, Any]:
        d = {"where": self.refs[i], "split": str(self.split[i]), "label": self.names[int(self.y[i])],
             "text": _short(self.task.texts[i], 200)}
        d.update(extra)
        return d


def _resolve_task_type(task: Task, task_type: str, reqs: dict[str, Any]) -> tuple[str, str]:
    if task_type != "auto":
        return task_type, "given"
    words = {w.lower() for w in reqs.get("sentiment_label_words", [])}
    hits = [n for n in task.label_names if str(n).strip().lower() in words]
    if len(task.label_names) <= 5 and len(hits) >= max(2, len(task.label_names) - 1):
        return "sentiment", f"guessed from labels {', '.join(hits)}; pass --task-type to change"
    return "text-classification", "default; pass --task-type sentiment for sentiment tasks"


# ---------------------------------------------------------------------------- 1. size and families
def _check_size(ctx: _Ctx, reqs: dict[str, Any], task_type: str, findings: list[Finding],
                stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = reqs["task_types"][task_type]
    y, names, split = ctx.y, ctx.names, ctx.split
    k = len(names)
    total = np.bincount(y, minlength=k)
    train = np.bincount(y[split == "train"], minlength=k)
    test = np.bincount(y[split == "test"], minlength=k)
    n, n_train = len(y), int((split == "train").sum())
    stats["size"] = {"n": n, "n_train": n_train, "n_validation": int((split == "validation").sum()),
                     "n_test": int((split == "test").sum()),
                     "per_class": {names[i]: int(total[i]) for i in range(k)},
                     "per_class_train": {names[i]: int(train[i]) for i in range(k)},
                     "task_type": task_type, "requirements": spec}
    lo, hi = spec["recommended"]
    if n < spec["minimum"]:
        findings.append(Finding("warning", "size_below_minimum",
                                f"{n:,} labelled examples is below the {spec['minimum']:,} a {task_type} task needs "
                                f"(recommended {lo:,}-{hi:,})", n,
                                advice="label more examples; until then expect noisy scores and wide intervals."))
    elif n < lo:
        findings.append(Finding("info", "size", f"{n:,} labelled examples: above the {task_type} minimum "
                                f"({spec['minimum']:,}), below the recommended {lo:,}-{hi:,}", n))
    else:
        findings.append(Finding("info", "size", f"{n:,} labelled examples: meets the {task_type} recommendation "
                                f"({lo:,}-{hi:,})", n))
    tiny = [i for i in range(k) if total[i] < int(ctx.cfg.get("min_class_examples", 2))]
    if tiny:
        findings.append(Finding("error", "tiny_class", f"{len(tiny)} class(es) have fewer than "
                                f"{ctx.cfg.get('min_class_examples', 2)} examples: "
                                + ", ".join(f"{names[i]!r} ({total[i]})" for i in tiny), len(tiny),
                                [{"label": names[i], "n": int(total[i])} for i in tiny[: ctx.max_ex]],
                                advice="add examples for these classes or drop them; nothing can learn or be "
                                       "measured on one example."))
    no_train = [i for i in range(k) if train[i] == 0 and total[i] > 0]
    if no_train:
        findings.append(Finding("error", "class_missing_from_train",
                                "classes with no training example: " + ", ".join(repr(names[i]) for i in no_train),
                                len(no_train), advice="move examples of these classes into train."))
    no_test = [i for i in range(k) if test[i] == 0]
    if no_test and (split == "test").any():
        findings.append(Finding("warning", "class_missing_from_test",
                                "classes with no test example (their recall cannot be measured): "
                                + ", ".join(repr(names[i]) for i in no_test), len(no_test)))
    small = [i for i in range(k) if total[i] < spec["min_per_class"] and i not in tiny]
    if small:
        order = sorted(small, key=lambda i: total[i])
        findings.append(Finding("warning", "small_classes", f"{len(small)} class(es) have fewer than the "
                                f"{spec['min_per_class']} examples per class a {task_type} task needs: "
                                + ", ".join(f"{names[i]!r} ({total[i]})" for i in order[:6])
                                + (" ..." if len(order) > 6 else ""), len(small),
                                [{"label": names[i], "n": int(total[i]), "n_train": int(train[i])}
                                 for i in order[: ctx.max_ex]],
                                advice="label more examples of these classes first."))
    # fine-tuning rule of thumb on the training split
    ft = reqs["fine_tuning"]
    if n_train < ft["too_few"]:
        verdict = f"too few for fine-tuning (under {ft['too_few']})"
    elif n_train < ft["a_start"]:
        verdict = f"a start for fine-tuning ({ft['too_few']}-{ft['a_start']}); expect unstable results"
    elif n_train < ft["good"][0]:
        verdict = f"enough to try fine-tuning; {ft['good'][0]:,}-{ft['good'][1]:,} usually gives good results"
    else:
        verdict = f"enough for fine-tuning to give good results ({ft['good'][0]:,}+)"
    support: dict[str, dict[str, Any]] = {}
    for fam in FAMILY_ORDER:
        rule = reqs["families"].get(fam)
        if rule is None:
            continue
        min_train, min_pc = int(rule.get("min_train", 0)), int(rule.get("min_per_class", 0))
        short = [names[i] for i in range(k) if train[i] < min_pc]
        ok = n_train >= min_train and not short
        if ok and min_train == 0 and min_pc == 0:
            reason = f"{rule.get('why', '')}; needs no training examples"
        elif ok:
            reason = f"{rule.get('why', '')}; needs {min_train:,}+ training examples and {min_pc}+ per class"
        elif n_train < min_train:
            reason = f"needs {min_train:,}+ training examples, has {n_train:,}"
        else:
            reason = (f"needs {min_pc}+ training examples per class; "
                      + ", ".join(repr(s) for s in short[:4]) + (" ..." if len(short) > 4 else "") + " have fewer")
        support[fam] = {"supported": bool(ok), "reason": reason, "min_train": min_train, "min_per_class": min_pc}
    sup = [FAMILY_WORDS[f] for f in FAMILY_ORDER if support.get(f, {}).get("supported")]
    missing = [FAMILY_WORDS[f] for f in FAMILY_ORDER if f in support and not support[f]["supported"]]
    msg = f"{n_train:,} training examples: {verdict}"
    if missing:
        msg += f"; too few for {', '.join(missing)}: {', '.join(sup) or 'nothing'} only"
    findings.append(Finding("warning" if "finetune" in support and not support["finetune"]["supported"] else "info",
                            "supported_families", msg, len(sup)))
    stats["supported_families"] = [f for f in FAMILY_ORDER if support.get(f, {}).get("supported")]
    stats["fine_tuning_verdict"] = verdict
    return support


# ---------------------------------------------------------------------------- 2. balance
def _check_balance(ctx: _Ctx, spec: dict[str, Any], findings: list[Finding], stats: dict[str, Any]) -> None:
    total = np.bincount(ctx.y, minlength=len(ctx.names))
    present = total[total > 0]
    ratio = float(present.max() / present.min()) if len(present) else float("nan")
    order = np.argsort(total, kind="stable")
    smallest = [{"label": ctx.names[i], "n": int(total[i]), "share": float(total[i] / total.sum())}
                for i in order[:3]]
    stats["balance"] = {"imbalance_ratio": ratio, "smallest": smallest,
                        "largest": {"label": ctx.names[int(order[-1])], "n": int(total[order[-1]])}}
    desc = ", ".join(f"{s['label']!r} {s['n']:,} ({s['share']:.1%})" for s in smallest)
    msg = f"imbalance ratio {ratio:.1f} (largest / smallest class); smallest: {desc}"
    advice = ("compare rungs on macro-F1 (the ladder's default), train with class weights "
              "(class_weight='balanced'), keep splits stratified, and label more of the smallest classes.")
    if ratio > float(spec["max_imbalance"]):
        findings.append(Finding("warning", "class_imbalance", msg + f"; above the {spec['max_imbalance']} "
                                "this task type tolerates", 1, smallest, advice=advice))
    else:
        findings.append(Finding("info", "class_balance", msg, 0, smallest))


# ---------------------------------------------------------------------------- 3. exact duplicates
def _check_exact(ctx: _Ctx, findings: list[Finding], stats: dict[str, Any]) -> None:
    df = pd.DataFrame({"g": ctx.group, "s": ctx.split.astype(str)})
    per = df.groupby(["g", "s"]).size()
    dup = per[per > 1]
    redundant = int((dup - 1).sum())
    n_groups = len(dup)
    by_split = {p: int((dup.xs(p, level="s") - 1).sum()) if p in dup.index.get_level_values("s") else 0
                for p in SPLITS}
    stats["exact_duplicates"] = {"redundant_rows": redundant, "groups": n_groups, "by_split": by_split,
                                 "unique_texts": ctx.n_groups}
    if not redundant:
        findings.append(Finding("info", "exact_duplicates", "no exact duplicates within a split "
                                "(after case / whitespace / punctuation normalisation)", 0))
        return
    top = dup.sort_values(ascending=False).head(ctx.max_ex)
    examples = []
    for (g, s), c in top.items():
        i = int(ctx.first_row[g])
        labels = sorted({ctx.names[int(v)] for v in ctx.y[(ctx.group == g) & (ctx.split == s)]})
        examples.append({"copies": int(c), "split": s, "labels": "/".join(labels), "where": ctx.refs[i],
                         "text": _short(ctx.task.texts[i], 200)})
    share = redundant / max(len(ctx.y), 1)
    sev = "warning" if share > float(ctx.cfg.get("duplicate_share_warn", 0.02)) else "info"
    findings.append(Finding(sev, "exact_duplicates",
                            f"{redundant:,} redundant row(s) ({share:.1%}) in {n_groups:,} group(s) of identical texts "
                            f"within a split (train {by_split['train']:,}, validation {by_split['validation']:,}, "
                            f"test {by_split['test']:,})", redundant, examples,
                            advice="duplicates over-weight some texts in training and in the score; "
                                   "`--dedupe OUT_DIR` keeps one copy."))


# ---------------------------------------------------------------------------- 3b. near duplicates
def _embed_groups(ctx: _Ctx, encoder: str | SupportsEncode, progress: bool) -> np.ndarray:
    """Embeddings of one representative text per normalised group (L2-normalised float32)."""
    if isinstance(encoder, str):
        from adaptladder.encode import get_encoder

        enc: SupportsEncode = get_encoder(encoder)
    else:
        enc = encoder
    reps = [ctx.task.texts[int(i)] for i in ctx.first_row]
    before = dict(getattr(enc, "stats", {}) or {})
    emb = np.asarray(enc.encode(reps, progress=progress, desc="audit: embedding"), dtype=np.float32)
    after = dict(getattr(enc, "stats", {}) or {})
    ctx.embed_stats = {"texts": len(reps), **{k: int(after.get(k, 0) - before.get(k, 0)) for k in ("hits", "misses")
                                              if k in after}}
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def near_duplicate_pairs(emb: np.ndarray, threshold: float, block: int = 1024,
                         max_pairs: int = 2_000_000) -> tuple[np.ndarray, np.ndarray, int]:
    """All pairs ``i < j`` with cosine similarity >= ``threshold``, by blockwise matrix products.

    Returns ``(pairs (m, 2), similarities (m,), total)``; ``total`` keeps counting past
    ``max_pairs`` so a truncated list is visible. Memory stays at ``block x n`` floats.
    """
    n = len(emb)
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    out_s: list[np.ndarray] = []
    total = kept = 0
    for s in range(0, n, block):
        b = min(block, n - s)
        sims = emb[s:s + b] @ emb[s:].T  # (b, n - s): only columns j >= i's block start
        sims[:, :b][np.tri(b, dtype=bool)] = -np.inf  # keep j > i: mask the diagonal block's lower triangle
        r, c = np.nonzero(sims >= threshold)
        total += len(r)
        if kept < max_pairs and len(r):
            take = min(len(r), max_pairs - kept)
            out_i.append(r[:take] + s)
            out_j.append(c[:take] + s)
            out_s.append(sims[r[:take], c[:take]])
            kept += take
    if not out_i:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32), total
    pairs = np.stack([np.concatenate(out_i), np.concatenate(out_j)], axis=1).astype(np.int64)
    return pairs, np.concatenate(out_s).astype(np.float32), total


def _check_near(ctx: _Ctx, emb: np.ndarray, thr: float, findings: list[Finding],
                stats: dict[str, Any]) -> np.ndarray:
    pairs, sims, total = near_duplicate_pairs(emb, thr, max_pairs=int(ctx.cfg.get("max_pairs", 2_000_000)))
    ctx.pair_sims = sims
    ctx.near_done = True
    ins = ctx.in_split
    a, b = pairs[:, 0], pairs[:, 1]
    same = np.zeros(len(pairs), dtype=bool)
    for p in SPLITS:
        same |= ins[p][a] & ins[p][b]
    within = pairs[same]
    rows_involved = 0
    if len(within):
        gs = np.unique(within)
        rows_involved = int(np.isin(ctx.group, gs).sum())
    # labels of the representatives: near-duplicates that disagree are label-noise candidates
    la, lb = ctx.y[ctx.first_row[a]], ctx.y[ctx.first_row[b]]
    disagree = la != lb
    stats["near_duplicates"] = {"threshold": thr, "pairs": int(total), "pairs_kept": len(pairs),
                                "pairs_within_split": int(same.sum()), "rows_within_split": rows_involved,
                                "pairs_with_different_labels": int(disagree.sum()),
                                "truncated": bool(total > len(pairs))}
    order = np.argsort(-sims[same], kind="stable")[: ctx.max_ex]

    def shared_split(g1: int, g2: int) -> str:
        return next(p for p in SPLITS if ins[p][g1] and ins[p][g2])

    examples = [_pair_example(ctx, int(within[o, 0]), int(within[o, 1]), float(sims[same][o]),
                              shared_split(int(within[o, 0]), int(within[o, 1]))) for o in order]
    n_within = int(same.sum())
    if n_within:
        share = rows_involved / max(len(ctx.y), 1)
        sev = "warning" if share > float(ctx.cfg.get("duplicate_share_warn", 0.02)) else "info"
        findings.append(Finding(sev, "near_duplicates",
                                f"{n_within:,} near-duplicate pair(s) (cosine >= {thr}) within a split, "
                                f"involving {rows_involved:,} row(s) ({share:.1%})", n_within, examples,
                                advice="near-copies (templates, re-posts) inflate what the model seems to know; "
                                       "review them, and raise --near-dup-threshold if they are distinct texts."))
    else:
        findings.append(Finding("info", "near_duplicates", f"no near-duplicate pairs (cosine >= {thr}) within a split",
                                0))
    if disagree.any():
        order = np.flatnonzero(disagree)[np.argsort(-sims[disagree], kind="stable")][: ctx.max_ex]
        findings.append(Finding("warning" if disagree.sum() > 0.005 * len(ctx.y) else "info",
                                "near_duplicate_label_disagreement",
                                f"{int(disagree.sum()):,} near-duplicate pair(s) carry different labels",
                                int(disagree.sum()),
                                [_pair_example(ctx, int(pairs[o, 0]), int(pairs[o, 1]), float(sims[o]))
                                 for o in order],
                                advice="near-identical texts with different labels are often labelling mistakes."))
    cross = np.zeros(len(pairs), dtype=bool)
    for p in SPLITS:
        for q in SPLITS:
            if p != q:
                cross |= ins[p][a] & ins[q][b]
    ctx.cross_pairs = pairs[cross]
    return pairs


def _pair_example(ctx: _Ctx, g1: int, g2: int, sim: float, split: str | None = None) -> dict[str, Any]:
    def row(g: int) -> int:  # a row of the group, from ``split`` when given (so the pair shows where it clashes)
        if split is not None:
            hit = np.flatnonzero((ctx.group == g) & (ctx.split == split))
            if len(hit):
                return int(hit[0])
        return int(ctx.first_row[g])

    i, j = row(g1), row(g2)
    return {"similarity": round(sim, 4), "where_a": ctx.refs[i], "split_a": str(ctx.split[i]),
            "label_a": ctx.names[int(ctx.y[i])], "text_a": _short(ctx.task.texts[i], 160),
            "where_b": ctx.refs[j], "split_b": str(ctx.split[j]), "label_b": ctx.names[int(ctx.y[j])],
            "text_b": _short(ctx.task.texts[j], 160)}


# ---------------------------------------------------------------------------- 4. leakage
def _check_leakage(ctx: _Ctx, pairs: np.ndarray, findings: list[Finding], stats: dict[str, Any]) -> None:
    ins = ctx.in_split
    near_partner: dict[str, dict[int, tuple[int, float]]] = {}
    sims = ctx.pair_sims
    leak_stats: dict[str, Any] = {}
    for evaluated, source in (("test", "train"), ("validation", "train"), ("test", "validation")):
        rows = np.flatnonzero(ctx.split == evaluated)
        if not len(rows):
            continue
        exact = ins[source][ctx.group[rows]]
        # near: the group of an evaluated row has a near-duplicate group that occurs in `source`
        partner: dict[int, tuple[int, float]] = {}
        if len(pairs):
            a, b = pairs[:, 0], pairs[:, 1]
            for x, y_ in ((a, b), (b, a)):
                m = ins[evaluated][x] & ins[source][y_] & ~ins[source][x]
                for g, h, s in zip(x[m].tolist(), y_[m].tolist(), sims[m].tolist(), strict=True):
                    if g not in partner or s > partner[g][1]:
                        partner[g] = (h, s)
        near_partner[f"{evaluated}<-{source}"] = partner
        near = np.array([int(g) in partner for g in ctx.group[rows]], dtype=bool) & ~exact
        n_exact, n_near = int(exact.sum()), int(near.sum())
        share = (n_exact + n_near) / len(rows)
        leak_stats[f"{evaluated}_in_{source}"] = {"exact": n_exact, "near": n_near, "rows": len(rows),
                                                  "share": share}
        if not (n_exact or n_near):
            continue
        examples = []
        n_near_ex = min(n_near, ctx.max_ex // 2)
        for i in rows[exact][: ctx.max_ex - n_near_ex]:
            j = int(np.flatnonzero((ctx.group == ctx.group[i]) & (ctx.split == source))[0])
            examples.append(ctx.ex(int(i), kind="exact", matches=ctx.refs[j],
                                   matched_label=ctx.names[int(ctx.y[j])]))
        for i in rows[near][: max(0, ctx.max_ex - len(examples))]:
            h, s = partner[int(ctx.group[i])]
            j = int(np.flatnonzero((ctx.group == h) & (ctx.split == source))[0])
            examples.append(ctx.ex(int(i), kind="near", similarity=round(s, 4), matches=ctx.refs[j],
                                   text_match=_short(ctx.task.texts[j], 160)))
        code = f"leakage_{source}_{evaluated}"
        msg = (f"{n_exact + n_near:,} of {len(rows):,} {evaluated} rows ({share:.1%}) have the same "
               f"({n_exact:,}) or a near-same ({n_near:,}) text in {source}")
        if evaluated == "test" and source == "train":
            # exact copies are memorised outright; near-copies (cosine >= threshold: templated spam,
            # re-posted questions) are often a real property of the stream, so they get more room
            limit = float(ctx.cfg.get("max_test_leak_share", 0.01))
            near_limit = max(float(ctx.cfg.get("max_test_near_leak_share", 0.10)), limit)
            exact_share = n_exact / len(rows)
            if exact_share > limit:
                sev = "error"
                msg += f"; exact copies ({exact_share:.1%}) above the {limit:.0%} allowed"
            elif share > near_limit:
                sev = "error"
                msg += f"; above the {near_limit:.0%} allowed for exact + near copies"
            else:
                sev = "warning"
                msg += (f"; within the {limit:.0%} allowed for exact and the {near_limit:.0%} for exact + near "
                        "copies, but the test score is somewhat optimistic")
            advice = ("the test score would partly measure memorisation: run `adaptladder audit DATA --dedupe OUT_DIR` "
                      "and use the clean splits (or --force to run anyway).")
        elif source == "train":
            limit = float(ctx.cfg.get("max_validation_leak_share", 0.05))
            sev = "warning" if share > limit else "info"
            advice = "validation leakage flatters rung selection and early stopping; --dedupe removes it."
        else:
            sev = "info" if share <= 0.05 else "warning"
            advice = "validation and test share texts; their scores are not independent."
        findings.append(Finding(sev, code, msg, n_exact + n_near, examples, advice=advice))
    if "test_in_train" in leak_stats:
        stats["test_leak_share"] = leak_stats["test_in_train"]["share"]
    stats["leakage"] = leak_stats
    if not any(v["exact"] or v["near"] for v in leak_stats.values()):
        findings.append(Finding("info", "leakage", "no test or validation text (exact"
                                + (" or near" if ctx.near_done else "")
                                + ") appears in train", 0))


# ---------------------------------------------------------------------------- 5. conflicting labels
def _check_conflicts(ctx: _Ctx, findings: list[Finding], stats: dict[str, Any]) -> None:
    df = pd.DataFrame({"g": ctx.group, "y": ctx.y, "s": ctx.split.astype(str)})
    nlab = df.groupby("g")["y"].nunique()
    bad = nlab[nlab > 1].index.to_numpy()
    ctx.conflict_groups = set(bad.tolist())
    if not len(bad):
        stats["conflicts"] = {"groups": 0, "rows": 0, "train_test_groups": 0}
        findings.append(Finding("info", "conflicting_labels", "no text carries two different labels", 0))
        return
    sub = df[df["g"].isin(bad)]
    cross = []
    for g, part in sub.groupby("g"):
        tr = set(part.loc[part["s"] == "train", "y"])
        ev = set(part.loc[part["s"].isin(["test", "validation"]), "y"])
        if tr and ev and tr != ev:
            cross.append(int(g))
    examples = []
    for g in (cross + [int(x) for x in bad if int(x) not in set(cross)])[: ctx.max_ex]:
        part = sub[sub["g"] == g]
        i = int(ctx.first_row[g])
        examples.append({"text": _short(ctx.task.texts[i], 200),
                         "labels": ", ".join(f"{ctx.names[int(y)]}@{s}" for y, s in zip(part["y"], part["s"],
                                                                                         strict=True)),
                         "where": ", ".join(ctx.refs[int(r)] for r in part.index[:4])})
    stats["conflicts"] = {"groups": len(bad), "rows": len(sub), "train_test_groups": len(cross)}
    advice = "decide the right label (or drop the text); `--dedupe` drops conflicting rows."
    if cross:
        # an error when it can move the score; a handful in a large evaluation set is a warning
        n_eval = int(np.isin(ctx.split.astype(str), ["validation", "test"]).sum())
        n_cross_rows = int(sub[sub["g"].isin(cross) & sub["s"].isin(["validation", "test"])].shape[0])
        share = n_cross_rows / max(n_eval, 1)
        limit = float(ctx.cfg.get("max_eval_conflict_share", 0.005))
        findings.append(Finding("error" if share > limit else "warning", "conflicting_labels_train_test",
                                f"{len(cross):,} text(s) are labelled one way in train and another in "
                                f"validation/test ({n_cross_rows:,} evaluation rows, {share:.2%}; "
                                f"{'above' if share > limit else 'within'} the {limit:.1%} allowed): the model "
                                "is scored wrong for learning the training label",
                                len(cross), examples[: ctx.max_ex], advice=advice))
    findings.append(Finding("warning", "conflicting_labels",
                            f"{len(bad):,} text(s) ({len(sub):,} rows) appear with different labels",
                            len(bad), examples, advice=advice))


# ---------------------------------------------------------------------------- 6. likely label errors
def out_of_fold_probs(texts: Sequence[str], y: np.ndarray, *, model: str = "tfidf", emb: np.ndarray | None = None,
                      folds: int = 5, seed: int = 13) -> np.ndarray:
    """Out-of-fold predicted probabilities (n, K) for cleanlab, from a fast cross-validated model.

    ``tfidf``: word TF-IDF (texts cut at 5,000 characters) + an averaged SGD logistic
    regression (a few passes, far faster than lbfgs on 20 classes with the same ranking quality);
    ``features``: precomputed embeddings + logistic regression.
    """
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.model_selection import StratifiedKFold

    k = int(y.max()) + 1
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    if model == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        X = TfidfVectorizer(sublinear_tf=True, min_df=2, max_features=50_000, dtype=np.float32).fit_transform(
            [t[:5000] for t in texts])
        if X.shape[1] == 0:
            X = TfidfVectorizer(sublinear_tf=True, dtype=np.float32).fit_transform(texts)

        def make() -> Any:
            return SGDClassifier(loss="log_loss", alpha=2e-5, max_iter=8, tol=None, average=True,
                                 random_state=seed, n_jobs=2)
    else:
        if emb is None:
            raise AdaptError("the features label-error model needs embeddings; give an encoder.")
        X = emb

        def make() -> Any:
            return LogisticRegression(max_iter=300, C=4.0)
    probs = np.zeros((len(y), k), dtype=np.float64)
    for tr, te in cv.split(np.zeros(len(y)), y):
        clf = make().fit(X[tr], y[tr])
        p = clf.predict_proba(X[te])
        probs[np.ix_(te, clf.classes_)] = p
    probs = np.clip(probs, 1e-6, None)
    return probs / probs.sum(axis=1, keepdims=True)


def _check_label_errors(ctx: _Ctx, model: str, emb: np.ndarray | None, findings: list[Finding],
                        stats: dict[str, Any]) -> None:
    from cleanlab.filter import find_label_issues

    folds = 5 if len(ctx.y) <= 10_000 else 3  # 3 folds halve the training work on large sets
    counts = np.bincount(ctx.y, minlength=len(ctx.names))
    ok_classes = np.flatnonzero(counts >= folds)
    rows = np.flatnonzero(np.isin(ctx.y, ok_classes))
    if len(ok_classes) < 2 or len(rows) < 20:
        findings.append(Finding("info", "label_errors_skipped", "label-error search skipped: it needs at least two "
                                f"classes with {folds}+ examples and 20 rows", 0))
        return
    remap = np.full(len(ctx.names), -1)
    remap[ok_classes] = np.arange(len(ok_classes))
    y = remap[ctx.y[rows]]
    texts = [ctx.task.texts[i] for i in rows]
    row_emb = emb[ctx.group[rows]] if emb is not None else None
    if model == "features" and row_emb is None:
        model = "tfidf"
    probs = out_of_fold_probs(texts, y, model=model, emb=row_emb, folds=folds, seed=ctx.seed)
    issues = find_label_issues(y, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    acc = float((probs.argmax(1) == y).mean())
    n_issue = len(issues)
    share = n_issue / len(rows)
    by_class = np.bincount(y[issues], minlength=len(ok_classes))
    stats["label_errors"] = {"model": model, "folds": folds, "rows_checked": len(rows),
                             "out_of_fold_accuracy": acc, "issues": n_issue, "share": share,
                             "by_given_label": {ctx.names[int(ok_classes[c])]: int(by_class[c])
                                                for c in range(len(ok_classes)) if by_class[c]}}
    examples = []
    for pos in issues[: max(ctx.max_ex, 10)]:
        i = int(rows[pos])
        sug = int(probs[pos].argmax())
        examples.append({"where": ctx.refs[i], "split": str(ctx.split[i]), "given": ctx.names[int(ctx.y[i])],
                         "suggested": ctx.names[int(ok_classes[sug])], "p_given": float(probs[pos, y[pos]]),
                         "p_suggested": float(probs[pos, sug]), "text": _short(ctx.task.texts[i], 200)})
    sev = "warning" if share > float(ctx.cfg.get("label_issue_share_warn", 0.03)) else "info"
    msg = (f"{n_issue:,} of {len(rows):,} rows ({share:.1%}) look mislabelled to cleanlab "
           f"(out-of-fold {model} model, accuracy {acc:.1%})")
    findings.append(Finding(sev, "likely_label_errors", msg, n_issue, examples,
                            advice="review the top-ranked rows (given vs suggested label); on a hard task some "
                                   "flags are just difficult texts, not mistakes."))


# ---------------------------------------------------------------------------- 7. hygiene
@lru_cache(maxsize=4)
def _tokenizer(path: str) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def token_lengths(texts: Sequence[str], encoder: str | Any = "minilm", max_chars: int = 4000) -> tuple[np.ndarray, str]:
    """Token counts with the encoder's own tokenizer (packaged MiniLM's when unknown).

    Texts are cut at ``max_chars`` first (~800+ tokens, beyond every context window we report
    on), so long documents cost no more than that; counts of cut texts are lower bounds.
    Falls back to 1.3 x word count when no tokenizer file is found.
    """
    from adaptladder.models import resolve_encoder

    candidates = []
    for name in ([encoder] if isinstance(encoder, str) else []) + ["minilm"]:
        with contextlib.suppress(AdaptError):
            candidates.append(resolve_encoder(name))
    for c in candidates:
        if (Path(c) / "tokenizer.json").is_file():
            tok = _tokenizer(str(c))
            enc = tok.encode_batch([t[:max_chars] for t in texts])
            return np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(texts)), str(c)
    words = np.fromiter((len(_WORD.findall(t)) for t in texts), dtype=np.int64, count=len(texts))
    return np.ceil(words * 1.3).astype(np.int64) + 2, "estimate (1.3 x words)"


def _check_hygiene(ctx: _Ctx, encoder: Any, findings: list[Finding], stats: dict[str, Any]) -> None:
    texts = ctx.task.texts
    n = len(texts)
    cfg = ctx.cfg
    # empty texts that reached a Task (API users can build one directly)
    empty = [i for i, t in enumerate(texts) if not str(t).strip()]
    if empty and not any(f.code == "empty_text" for f in findings):
        findings.append(Finding("error", "empty_text", f"{len(empty):,} empty or whitespace-only text(s)",
                                len(empty), [ctx.ex(i) for i in empty[: ctx.max_ex]],
                                advice="fill them in or drop the rows."))
    short_k = int(cfg.get("short_text_tokens", 3))
    # word counts only matter below short_k: look at the first 300 characters unless that is not enough
    words = np.fromiter((w if (w := len(_WORD.findall(t[:300]))) >= short_k or len(t) <= 300
                         else len(_WORD.findall(t)) for t in texts), dtype=np.int64, count=n)
    short = np.flatnonzero((words < short_k) & (words > 0))
    share = len(short) / max(n, 1)
    if len(short):
        findings.append(Finding("warning" if share > float(cfg.get("short_text_share_warn", 0.05)) else "info",
                                "short_texts", f"{len(short):,} text(s) ({share:.1%}) have fewer than {short_k} words",
                                len(short), [ctx.ex(int(i)) for i in short[: ctx.max_ex]],
                                advice="very short texts carry little signal; check they are complete."))
    # token lengths: exact up to length_sample texts, else a seeded random sample (long documents are slow)
    cap = int(cfg.get("length_sample", 5000))
    sample = (np.arange(n) if n <= cap else
              np.sort(np.random.default_rng(ctx.seed).choice(n, cap, replace=False)))
    lengths, tok_name = token_lengths([texts[i] for i in sample], encoder if isinstance(encoder, str) else "minilm")
    m = len(sample)
    pct = {f"p{q}": float(np.percentile(lengths, q)) for q in (50, 90, 95, 99)} if m else {}
    windows = [int(w) for w in cfg.get("context_windows", [256, 512])]
    over_share = {str(w): float((lengths > w).mean()) if m else 0.0 for w in windows}
    over = {w: round(v * n) for w, v in over_share.items()}
    estimated = m < n
    stats["lengths"] = {"tokenizer": tok_name, "tokens": {**pct, "max": int(lengths.max()) if m else 0,
                                                          "mean": float(lengths.mean()) if m else 0.0},
                        "over_window": over, "over_window_share": over_share,
                        "sampled": m if estimated else None}
    w0 = windows[0]
    n_long = over[str(w0)]
    long_share = over_share[str(w0)]
    msg = (f"token lengths p50 {pct.get('p50', 0):.0f}, p90 {pct.get('p90', 0):.0f}, p99 {pct.get('p99', 0):.0f}, "
           f"max {stats['lengths']['tokens']['max']:,}" + (" (lower bound: long texts cut)"
                                                             if stats['lengths']['tokens']['max'] > 800 else "")
           + "; " + ", ".join(f"{'~' if estimated else ''}{over[str(w)]:,} ({over_share[str(w)]:.1%}) over {w}"
                              for w in windows)
           + (f" (estimated from a seeded sample of {m:,} texts)" if estimated else ""))
    order = np.argsort(-lengths, kind="stable")[: min(ctx.max_ex, int((lengths > w0).sum()))]
    findings.append(Finding("warning" if long_share > float(cfg.get("long_text_share_warn", 0.10)) else "info",
                            "text_length", msg, n_long,
                            [ctx.ex(int(sample[i]), tokens=int(lengths[i])) for i in order],
                            advice=f"the encoder reads the first {w0} tokens; longer texts are truncated, so put the "
                                   "deciding part first or expect lower scores from encoder rungs."))
    kinds: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        kind = _noise_kind(t)
        if kind and kind != "empty":
            kinds.setdefault(kind, []).append(i)
    total_noise = sum(len(v) for v in kinds.values())
    stats["noise"] = {k: len(v) for k, v in kinds.items()}
    if total_noise:
        share = total_noise / max(n, 1)
        examples = [ctx.ex(i, kind=k) for k, idx in kinds.items() for i in idx[:2]][: ctx.max_ex]
        findings.append(Finding("warning" if share > float(cfg.get("noise_share_warn", 0.01)) or "encoding garbage"
                                in kinds else "info", "noisy_texts",
                                f"{total_noise:,} text(s) look like noise: "
                                + ", ".join(f"{k} {len(v):,}" for k, v in kinds.items()), total_noise, examples,
                                advice="re-save files as UTF-8 (encoding garbage) and drop texts with no words."))


# ============================================================================ gate and dedupe
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


def clean_split_plan(task: Task, report: AuditReport, drop_from: str = "train") -> pd.DataFrame:
    """Which rows :func:`write_clean_splits` drops and why: a frame of (row, split, reason).

    Leaks are resolved by dropping from ``drop_from`` (``train`` keeps the evaluation splits
    intact, so scores stay comparable with the original test set; ``test`` keeps every
    training example). Exact copies within a split keep their first row; texts with
    conflicting labels are dropped everywhere (the right label is unknown).
    """
    plan = report._plan
    if plan is None:
        raise AdaptError("this audit report has no row-level plan (was it read back from JSON?); run the audit again.")
    if plan.fingerprint != task.fingerprint():
        raise AdaptError("the audit report belongs to different data than this task; audit this task first.")
    if drop_from not in ("train", "test"):
        raise AdaptError(f"--drop-from {drop_from!r}: use train (keep test intact) or test (keep all training rows).")
    keep_order = ["test", "validation", "train"] if drop_from == "train" else ["train", "validation", "test"]
    rank = {p: i for i, p in enumerate(keep_order)}  # lower rank wins
    split = task.split
    group = plan.group
    reasons: dict[int, str] = {}
    # conflicting labels: drop every row of the text
    for i in np.flatnonzero(np.isin(group, list(plan.conflict_groups))):
        reasons[int(i)] = "conflicting labels"
    # exact copies: across splits keep the preferred split; within it keep the first row
    best: dict[int, int] = {}
    for i in range(len(group)):
        g = int(group[i])
        if g in plan.conflict_groups:
            continue
        if g not in best or rank[split[i]] < rank[split[best[g]]]:
            best[g] = i
    for i in range(len(group)):
        g = int(group[i])
        if int(i) in reasons or best.get(g) == i:
            continue
        reasons[i] = ("exact duplicate within " + str(split[i])) if split[i] == split[best[g]] else (
            f"exact copy of a {split[best[g]]} text (leak)")
    # near copies across splits: drop the copy in the less preferred split
    present = {p: np.bincount(group[split == p], minlength=group.max() + 1 if len(group) else 0) > 0 for p in SPLITS}
    for g1, g2 in plan.near_pairs.tolist():
        for a, b in ((g1, g2), (g2, g1)):
            for pa in SPLITS:
                if not present[pa][a]:
                    continue
                for pb in SPLITS:
                    if pb != pa and present[pb][b] and rank[pb] < rank[pa]:
                        for i in np.flatnonzero((group == a) & (split == pa)):
                            reasons.setdefault(int(i), f"near copy of a {pb} text (leak)")
    rows = sorted(reasons)
    return pd.DataFrame({"row": rows, "split": [str(split[i]) for i in rows], "reason": [reasons[i] for i in rows]})


def write_clean_splits(task: Task, report: AuditReport, out_dir: str | Path,
                       drop_from: str = "train") -> dict[str, Any]:
    """Write ``train.csv``, ``validation.csv``, ``test.csv`` and ``removed.csv`` to a new folder.

    The user's files are never touched; existing files in ``out_dir`` are never overwritten.
    The clean files load back with ``--train/--validation/--test`` (columns ``text``, ``label``).
    """
    out = Path(out_dir)
    names = ["train.csv", "validation.csv", "test.csv", "removed.csv"]
    clash = [n for n in names if (out / n).exists()]
    if out.exists() and not out.is_dir():
        raise AdaptError(f"{out} exists and is not a folder; pass a new folder to --dedupe.")
    if clash:
        raise AdaptError(f"{out} already holds {', '.join(clash)}; pass a new or empty folder to --dedupe "
                         "(nothing is overwritten).")
    src_paths = {str(Path(p).resolve()) for k, p in task.source.items() if k in ("path", "train", "validation", "test")
                 and isinstance(p, str)}
    plan = clean_split_plan(task, report, drop_from)
    dropped = set(plan["row"].tolist())
    out.mkdir(parents=True, exist_ok=True)
    for n in names:
        if str((out / n).resolve()) in src_paths:
            raise AdaptError(f"{out / n} is one of the input files; pass a different folder to --dedupe.")
    refs = _row_refs(task)
    counts: dict[str, int] = {}
    for part in SPLITS:
        idx = [i for i in task.indices(part) if int(i) not in dropped]
        df = pd.DataFrame({"text": [task.texts[i] for i in idx], "label": [task.label_names[task.labels[i]]
                                                                             for i in idx]})
        df.to_csv(out / f"{part}.csv", index=False)
        counts[part] = len(idx)
    removed = plan.assign(where=[refs[i] for i in plan["row"]],
                          label=[task.label_names[task.labels[i]] for i in plan["row"]],
                          text=[task.texts[i] for i in plan["row"]])
    removed.to_csv(out / "removed.csv", index=False)
    return {"out_dir": str(out), "kept": counts, "removed": len(plan),
            "removed_by_reason": plan["reason"].value_counts().to_dict() if len(plan) else {},
            "files": {n: str(out / n) for n in names}}


def is_current(doc: dict[str, Any], task: Task, *, encoder: Any, seed: int) -> bool:
    """True when an audit report (``AuditReport.to_dict()``) was made of this data with these
    settings and today's rules and default requirements, so it can be reused instead of re-run."""
    st = doc.get("settings") or {}
    return (st.get("rules_version") == RULES_VERSION and st.get("requirements") == load_requirements()
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
    report = run_audit(task, encoder=getattr(cfg, "encoder", "minilm"), seed=getattr(cfg, "seed", 13))
    report.write_json(Path(run_dir) / "audit.json")
    for f in report.errors + report.warnings:
        colour = "red" if f.severity == "error" else "yellow"
        log(f"audit [{colour}]{f.severity}[/{colour}] {f.code}: {f.message}")
    log(f"audit: {report.summary_line()} ({report.timings['total']:.1f} s; details in audit.json)")
    if report.has_errors and getattr(cfg, "force", False):
        log(f"[red]continuing despite {len(report.errors)} audit error(s) (--force)[/red]")
    enforce_audit(report, force=bool(getattr(cfg, "force", False)))
    return report.to_dict()

"""Tolerant loading: audit the raw rows of a file that strict loading refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptladder.audit.engine import run_audit
from adaptladder.audit.report import (
    AuditReport,
    Finding,
)
from adaptladder.errors import AdaptError
from adaptladder.task import (
    DEFAULT_FRACTIONS,
    SPLIT_ALIASES,
    TEXT_CANDIDATES,
    Task,
    clean_labels,
    encode_labels,
    load_task,
    pick_column,
    read_table,
    stratified_split,
)


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
        tcol = pick_column(df, text_col, TEXT_CANDIDATES, "text", path, "--text-col")
        lcol = pick_column(df, label_col, LABEL_CANDIDATES, "labels", path, "--label-col")
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
                sp = SPLIT_ALIASES.get(str(scol[i]).strip().lower())
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
        label_strs = clean_labels(pd.Series(raw_labels, dtype=object), files[0][1], label_col or "label")
    except AdaptError:
        label_strs = [str(v).strip() for v in raw_labels]
    codes, names = encode_labels(label_strs)
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
            sub_codes, sub_names = encode_labels([names[k] for k in codes[ok]])
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

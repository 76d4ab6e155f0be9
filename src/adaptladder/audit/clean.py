"""Clean splits: which rows to drop (duplicates, leaks, conflicts) and writing them as new files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptladder.audit.report import AuditReport
from adaptladder.audit.text import _row_refs
from adaptladder.errors import AdaptError
from adaptladder.task import (
    SPLITS,
    Task,
)


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

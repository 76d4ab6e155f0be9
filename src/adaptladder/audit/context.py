"""Per-task arrays the checks share (normalised groups, splits, labels, row references)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from adaptladder.audit.report import _short
from adaptladder.audit.text import _row_refs
from adaptladder.task import (
    SPLITS,
    Task,
    normalize_text,
)


class SupportsEncode(Protocol):
    def encode(self, texts: Sequence[str], *, progress: bool = ..., desc: str = ...) -> np.ndarray: ...



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
        self.pair_text_sims = np.zeros(0, dtype=np.float32)  # whole-text similarity of the confirmed pairs
        self.near_done = False
        self.log: Any = lambda msg: None  # progress lines (set by run_audit)
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

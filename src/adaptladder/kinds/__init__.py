"""Task kinds: the kind of a task is decided once and recorded; everything later asks :func:`kind_of`.

The kind is decided when the task is detected (:func:`adaptladder.kinds.detect.detect_kind`:
``--task``, a built-in set's kind, a schema, or the target column's values) and recorded as
``task_type`` in ``task.json`` and in the ``task`` block of ``results.json``. Every later consumer
(winner, report, export, serve, track, the commands) asks :func:`kind_of` instead of testing fields
itself. Run directories written before ``task_type`` existed are read here, in one place: a
generation run's task summary said ``"task": "generation"``; a classification run's said nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: the task kinds, as recorded in ``task_type``
CLASSIFICATION = "classification"
GENERATION = "generation"
KINDS: tuple[str, ...] = (CLASSIFICATION, GENERATION)

#: the classification metrics (``--metric``); the first is the default
CLASSIFICATION_METRICS: tuple[str, ...] = ("macro_f1", "accuracy")

#: the splits of every task kind
SPLITS: tuple[str, ...] = ("train", "validation", "test")

__all__ = ["CLASSIFICATION", "CLASSIFICATION_METRICS", "GENERATION", "KINDS", "SPLITS", "kind_of", "task_type_record"]


def task_type_record(kind: str) -> dict[str, str]:
    """The field a task summary carries so that readers need not infer the kind."""
    return {"task_type": kind}


def _from_task_summary(summary: Any) -> str | None:
    if not isinstance(summary, dict):
        return None
    recorded = summary.get("task_type")
    if recorded in KINDS:
        return str(recorded)
    if summary.get("task") == GENERATION:  # before task_type: generation summaries said so, and only they
        return GENERATION
    return None


def kind_of(source: Any) -> str:
    """The task kind (``classification`` or ``generation``) of a run directory, a ``results.json`` or
    ``task.json`` document, a task summary, or a loaded task.

    A run directory is untrusted input: an unreadable or malformed ``task.json`` / ``results.json``
    reads as classification (the kind every run had before generation existed); the reader that then
    opens the run names the file that is wrong.
    """
    if isinstance(source, (str, Path)):
        return _kind_of_dir(Path(source))
    if isinstance(source, dict):
        # a results.json document: its task block; a task.json document / summary: itself
        found = _from_task_summary(source.get("task")) or _from_task_summary(source)
        return found or CLASSIFICATION
    if getattr(source, "is_generation", False) is True:  # a loaded GenTask
        return GENERATION
    summary = getattr(source, "summary", None)
    if callable(summary):
        return kind_of(summary())
    return CLASSIFICATION


def _kind_of_dir(run_dir: Path) -> str:
    for name in ("task.json", "results.json"):
        try:
            doc = json.loads((run_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(doc, dict):
            found = _from_task_summary(doc.get("task")) if name == "results.json" else _from_task_summary(doc)
            if found is not None:
                return found
    return CLASSIFICATION

"""Deciding the kind before the data is read (the configuration) or from the data (the target column):
the doors to each kind's own detection. Kept apart from :mod:`adaptladder.kinds` (constants and
:func:`~adaptladder.kinds.kind_of`), which the lowest modules import, so that importing the kinds'
vocabulary never reaches a kind's loader.
"""

from __future__ import annotations

from typing import Any

from adaptladder.kinds import CLASSIFICATION_METRICS, GENERATION

__all__ = ["config_kind", "detect_kind", "metrics_of"]


def metrics_of(kind: str) -> tuple[str, ...]:
    """The metrics ``--metric`` takes for a task of ``kind``."""
    if kind == GENERATION:
        from adaptladder.generation.task import GENERATION_METRICS

        return tuple(GENERATION_METRICS)
    return CLASSIFICATION_METRICS


def config_kind(cfg: Any) -> str | None:
    """The kind when the configuration alone says so (``--task``, a built-in set, a schema), else None."""
    from adaptladder.generation.loaders import config_task_type

    return config_task_type(cfg)


def detect_kind(cfg: Any, log: Any = None) -> str:
    """The kind of the run's data, decided once (the configuration, else the target column's values)."""
    from adaptladder.generation.loaders import detect_task

    return detect_task(cfg, log)

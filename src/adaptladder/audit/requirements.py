"""The requirements table (``data/requirements.yaml``) and the audit's constants."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from adaptladder.errors import AdaptError
from adaptladder.packaged import deep_merge, load_table

SCHEMA_VERSION = 1
#: bump when a check's logic or severity rule changes: a run never reuses an audit made by other rules
RULES_VERSION = 5
SEVERITIES = ("error", "warning", "info")
TASK_TYPES = ("auto", "text-classification", "sentiment")
FAMILY_ORDER = ("floor", "prompting", "features", "finetune", "distill")
FAMILY_WORDS = {"floor": "classical floor", "prompting": "prompting", "features": "feature extraction",
                "finetune": "fine-tuning", "distill": "distillation"}



_merge = deep_merge  # the audit's name for it (engine.py merges a requirements dict given in code)


@lru_cache(maxsize=8)
def _load_requirements_cached(path: str | None) -> dict[str, Any]:
    base = load_table("requirements.yaml", path, what="requirements table",
                      fix="fix --requirements or ADAPTLADDER_REQUIREMENTS")
    for tt, spec in base.get("task_types", {}).items():
        for key in ("minimum", "recommended", "min_per_class", "max_imbalance"):
            if key not in spec:
                raise AdaptError(f"requirements table: task type {tt!r} lacks {key!r}; copy it from the default table.")
    return base


def load_requirements(path: str | Path | None = None) -> dict[str, Any]:
    """The default requirements table overlaid with ``path`` (or ``$ADAPTLADDER_REQUIREMENTS``)."""
    path = path or os.environ.get("ADAPTLADDER_REQUIREMENTS") or None
    return json.loads(json.dumps(_load_requirements_cached(str(path) if path else None)))  # a private copy

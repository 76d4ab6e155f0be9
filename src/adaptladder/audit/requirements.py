"""The requirements table (``data/requirements.yaml``) and the audit's constants."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from adaptladder.errors import AdaptError

SCHEMA_VERSION = 1
#: bump when a check's logic or severity rule changes: a run never reuses an audit made by other rules
RULES_VERSION = 5
SEVERITIES = ("error", "warning", "info")
TASK_TYPES = ("auto", "text-classification", "sentiment")
FAMILY_ORDER = ("floor", "prompting", "features", "finetune", "distill")
FAMILY_WORDS = {"floor": "classical floor", "prompting": "prompting", "features": "feature extraction",
                "finetune": "fine-tuning", "distill": "distillation"}



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

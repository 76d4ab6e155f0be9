"""Packaged YAML tables (``adaptladder/data/*.yaml``) overlaid by the user's own file: one loader, one rule.

The merge rule is **deep** for every table (prices, requirements, model presets, GPUs): a mapping
in the user's file is merged key by key into the packaged mapping at every depth, and any other
value (a number, a string, a list) replaces the packaged one. So an override file holds only what
it changes, e.g. ``api_per_million_tokens: {gpt-4o-mini: {input: 0.1}}`` keeps that model's other
prices and every other model.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from adaptladder.errors import AdaptError


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: mappings key by key at every depth, other values replace."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def packaged_yaml(name: str) -> dict[str, Any]:
    """The packaged table ``adaptladder/data/<name>`` as a fresh dict."""
    return yaml.safe_load(resources.files("adaptladder.data").joinpath(name).read_text(encoding="utf-8")) or {}


def load_table(name: str, override: str | Path | None, *, what: str, fix: str) -> dict[str, Any]:
    """The packaged table ``name`` deep-merged with the user's YAML file ``override`` (when given).

    ``what`` names the table in errors (``"price table"``); ``fix`` says where the path came from
    (``"fix ADAPTLADDER_PRICES"``). A missing, unreadable or non-mapping file is a one-line error.
    """
    base = packaged_yaml(name)
    if not override:
        return base
    p = Path(override)
    if not p.is_file():
        raise AdaptError(f"{what} {p} does not exist; {fix} (a YAML file like data/{name}).")
    try:
        over = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AdaptError(f"{what} {p} is not valid YAML ({first}); fix the file.") from e
    if not isinstance(over, dict):
        raise AdaptError(f"{what} {p} must be a mapping like the default data/{name}.")
    return deep_merge(base, over)

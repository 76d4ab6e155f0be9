"""The editable price table: $/hour of compute and per-token API prices.

Defaults live in ``data/prices.yaml``; ``ADAPTLADDER_PRICES=/path/to.yaml`` (or
:func:`load_prices` with a path) overlays the user's own figures.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from adaptladder.errors import AdaptError
from adaptladder.packaged import load_table


@lru_cache(maxsize=8)
def load_prices(path: str | None = None) -> dict[str, Any]:
    """The default table overlaid (deep merge, see :mod:`adaptladder.packaged`) with ``path`` or
    ``$ADAPTLADDER_PRICES`` when given."""
    return load_table("prices.yaml", path or os.environ.get("ADAPTLADDER_PRICES"), what="price table",
                      fix="fix ADAPTLADDER_PRICES or the config's prices: entry")


def compute_per_hour(device: str | None = None, path: str | None = None) -> float:
    """USD per hour for a compute entry (default: the table's ``local_device``)."""
    prices = load_prices(path)
    device = device or prices["local_device"]
    table = prices["compute_per_hour_usd"]
    if device not in table:
        raise AdaptError(f"no $/hour price for {device!r} in the price table; add it under compute_per_hour_usd.")
    return float(table[device])


def local_cost_per_1k(seconds_per_prediction: float, device: str | None = None, path: str | None = None) -> float:
    """USD per 1,000 predictions for a local model from its measured compute time."""
    return seconds_per_prediction * 1000 / 3600 * compute_per_hour(device, path)


def api_price(model: str, path: str | None = None) -> dict[str, float] | None:
    """USD per 1M tokens ``{input, output[, training]}`` for an API model, or None when unknown."""
    table = load_prices(path)["api_per_million_tokens"]
    if model in table:
        return {k: float(v) for k, v in table[model].items()}
    # dated snapshots such as gpt-4o-mini-2024-07-18 price like their family
    for name in sorted(table, key=len, reverse=True):
        if model.startswith(name):
            return {k: float(v) for k, v in table[name].items()}
    return None

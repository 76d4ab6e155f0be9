"""The generation rungs: the ``generation`` entries of the one rung registry
(:data:`adaptladder.rungs.REGISTRY`), with the lookup functions other code already calls.

Names match the classification rungs where the idea is the same (``zero-shot``, ``few-shot``,
``knn-few-shot``, ``distill``), so ``--rungs`` reads the same for both kinds of task.
"""

from __future__ import annotations

from typing import Any

from adaptladder.generation.rungs.base import GenRung, GenSpec, load_gen_rung
from adaptladder.rungs import GEN_RUNGS, get_rung_class, rungs_in_cost_order

__all__ = ["GEN_RUNGS", "GenRung", "GenSpec", "check_gen_settings", "declared_gen_settings", "describe_gen_rungs",
           "gen_rungs_in_cost_order", "get_gen_rung_class", "load_gen_rung", "make_gen_rung"]


def get_gen_rung_class(name: str) -> type[GenRung]:
    return get_rung_class(name, "generation")


def declared_gen_settings(cls: type[GenRung]) -> dict[str, Any]:
    """A generation rung's declared settings and their defaults (its ``Settings`` dataclass)."""
    return cls.Settings.defaults()


def describe_gen_rungs(names: list[str] | None = None) -> list[dict[str, Any]]:
    """The ``adaptladder rungs --kind generation`` rows (see :func:`adaptladder.commands.rungs.describe_rungs`)."""
    from adaptladder.commands.rungs import describe_rungs

    return describe_rungs(names, ["generation"])


def check_gen_settings(name: str, params: dict[str, Any]) -> None:
    """An unknown or invalid setting of a generation rung is one line, before any data is read."""
    from adaptladder.rungs.settings import resolve_params

    resolve_params(name, None, params, kind="generation")


def make_gen_rung(name: str, **params: Any) -> GenRung:
    return get_gen_rung_class(name)(**params)


def gen_rungs_in_cost_order(names: list[str] | None = None) -> list[str]:
    return rungs_in_cost_order(names, "generation")

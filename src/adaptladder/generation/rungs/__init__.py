"""The generation rung registry: name -> ``module:Class``, imported lazily, in cost order.

Names match the classification rungs where the idea is the same (``zero-shot``, ``few-shot``,
``knn-few-shot``, ``distill``), so ``--rungs`` reads the same for both kinds of task.
"""

from __future__ import annotations

from typing import Any

from adaptladder.errors import AdaptError
from adaptladder.generation.rungs.base import GenRung, GenSpec, load_gen_rung

GEN_RUNGS: dict[str, str] = {
    "lead": "adaptladder.generation.rungs.floors:LeadGen",
    "nearest-target": "adaptladder.generation.rungs.floors:NearestTargetGen",
    "zero-shot": "adaptladder.generation.rungs.prompting:ZeroShotGen",
    "few-shot": "adaptladder.generation.rungs.prompting:FewShotGen",
    "knn-few-shot": "adaptladder.generation.rungs.prompting:KnnFewShotGen",
    "structured": "adaptladder.generation.rungs.prompting:StructuredGen",
    "lora-sft": "adaptladder.generation.rungs.sft:LoraSFT",
    "qlora-sft": "adaptladder.generation.rungs.sft:QloraSFT",
    "full-sft": "adaptladder.generation.rungs.sft:FullSFT",
    "distill": "adaptladder.generation.rungs.sft:DistillSFT",
}

__all__ = ["GEN_RUNGS", "GenRung", "GenSpec", "gen_rungs_in_cost_order", "get_gen_rung_class", "load_gen_rung",
           "make_gen_rung"]


def get_gen_rung_class(name: str) -> type[GenRung]:
    from adaptladder.rungs import import_object

    if name not in GEN_RUNGS:
        raise AdaptError(f"unknown generation rung {name!r}: choose from {', '.join(GEN_RUNGS)}.")
    return import_object(GEN_RUNGS[name])


def declared_gen_settings(cls: type[GenRung]) -> dict[str, Any] | None:
    """A generation rung's settings and defaults: its ``DEFAULTS`` (or its module's), None when unknown."""
    import sys

    d = getattr(cls, "DEFAULTS", None)
    if not isinstance(d, dict):
        d = getattr(sys.modules.get(cls.__module__), "DEFAULTS", None)
    return dict(d) if isinstance(d, dict) else None


def describe_gen_rungs(names: list[str] | None = None) -> list[dict[str, Any]]:
    """name, cost rank, family, description and settings (name, type of the default, default) of each
    generation rung, in cost order (the listing of ``adaptladder rungs --kind generation``)."""
    out = []
    for name in gen_rungs_in_cost_order(names):
        cls = get_gen_rung_class(name)
        settings = declared_gen_settings(cls) or {}
        out.append({"name": name, "kind": "generation", "cost_rank": cls.cost_rank, "family": cls.family,
                    "description": cls.description,
                    "settings": [{"name": k, "type": "any" if v is None else type(v).__name__, "default": v,
                                  "help": ""} for k, v in settings.items()]})
    return out


def check_gen_settings(name: str, params: dict[str, Any]) -> None:
    """An unknown setting for a generation rung is one line, before any data is read."""
    settings = declared_gen_settings(get_gen_rung_class(name))
    if settings is None:
        return
    unknown = sorted(set(params) - set(settings) - {"budget_minutes"})
    if unknown:
        raise AdaptError(f"unknown setting(s) {', '.join(unknown)} for the {name} generation rung: use "
                         f"{', '.join(k for k in settings if k != 'n_examples')} (see `adaptladder rungs --kind "
                         "generation`).")


def make_gen_rung(name: str, **params: Any) -> GenRung:
    return get_gen_rung_class(name)(**params)


def gen_rungs_in_cost_order(names: list[str] | None = None) -> list[str]:
    names = list(GEN_RUNGS) if names is None else names
    return sorted(names, key=lambda n: get_gen_rung_class(n).cost_rank)

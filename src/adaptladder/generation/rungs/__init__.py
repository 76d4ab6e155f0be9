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


def make_gen_rung(name: str, **params: Any) -> GenRung:
    return get_gen_rung_class(name)(**params)


def gen_rungs_in_cost_order(names: list[str] | None = None) -> list[str]:
    names = list(GEN_RUNGS) if names is None else names
    return sorted(names, key=lambda n: get_gen_rung_class(n).cost_rank)

"""The rung registry: registry name -> ``module:Class``, imported lazily.

Heavy libraries (torch, transformers) are imported only when a rung that needs them runs,
so the CLI starts fast. Adding a rung means adding one line here and one module.
"""

from __future__ import annotations

import importlib
from typing import Any

from adaptladder.errors import AdaptError
from adaptladder.rungs.base import Rung, load_rung

RUNGS: dict[str, str] = {
    "majority": "adaptladder.rungs.classical:MajorityRung",
    "tfidf": "adaptladder.rungs.classical:TfidfRung",
    "zero-shot": "adaptladder.rungs.prompting:ZeroShotRung",
    "few-shot": "adaptladder.rungs.prompting:FewShotRung",
    "knn-few-shot": "adaptladder.rungs.prompting:KnnFewShotRung",
    "features": "adaptladder.rungs.features:FeaturesRung",
    "setfit": "adaptladder.rungs.setfit:SetFitRung",
    "prompt-tuning": "adaptladder.rungs.finetune:PromptTuningRung",
    "lora": "adaptladder.rungs.finetune:LoraRung",
    "qlora": "adaptladder.rungs.finetune:QloraRung",
    "full-ft": "adaptladder.rungs.finetune:FullFinetuneRung",
    "distill": "adaptladder.rungs.distill:DistillRung",
}

__all__ = ["RUNGS", "Rung", "get_rung_class", "import_object", "load_rung", "make_rung", "rungs_in_cost_order"]


def import_object(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def get_rung_class(name: str) -> type[Rung]:
    if name not in RUNGS:
        raise AdaptError(f"unknown rung {name!r}: choose from {', '.join(RUNGS)}.")
    return import_object(RUNGS[name])


def make_rung(name: str, **params: Any) -> Rung:
    return get_rung_class(name)(**params)


def rungs_in_cost_order(names: list[str] | None = None) -> list[str]:
    """The given (default: all) rung names sorted by their declared adaptation cost."""
    names = list(RUNGS) if names is None else names
    return sorted(names, key=lambda n: get_rung_class(n).cost_rank)

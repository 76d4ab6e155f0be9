"""The rung registry: one table keyed by (kind, name) -> ``module:Class``, imported lazily.

``zero-shot`` for labels and ``zero-shot`` for text are two entries of one table
(``REGISTRY[("classification", "zero-shot")]`` and ``REGISTRY[("generation", "zero-shot")]``).
The per-kind tables ``RUNGS`` (classification) and ``GEN_RUNGS`` (generation, re-exported by
:mod:`adaptladder.generation.rungs`) are the table's storage, so code and tests that read or patch
them by name keep working. Heavy libraries (torch, transformers) are imported only when a rung that
needs them runs, so the CLI starts fast. Adding a rung means adding one line here and one module.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
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

#: the generation rungs; names match the classification rungs where the idea is the same
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

#: the per-kind tables, by task kind (the kinds' names as recorded in ``task_type``)
TABLES: dict[str, dict[str, str]] = {"classification": RUNGS, "generation": GEN_RUNGS}
KINDS: tuple[str, ...] = tuple(TABLES)


class Registry(Mapping[tuple[str, str], str]):
    """Every rung of every kind, keyed by ``(kind, name)`` (a live view of :data:`TABLES`)."""

    def __getitem__(self, key: tuple[str, str]) -> str:
        kind, name = key
        return TABLES[kind][name]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((kind, name) for kind, table in TABLES.items() for name in table)

    def __len__(self) -> int:
        return sum(len(t) for t in TABLES.values())


REGISTRY = Registry()

__all__ = ["GEN_RUNGS", "KINDS", "REGISTRY", "RUNGS", "Rung", "get_rung_class", "import_object", "load_rung",
           "make_rung", "rung_table", "rungs_in_cost_order"]


def import_object(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def rung_table(kind: str) -> dict[str, str]:
    """The rungs of one task kind, name -> ``module:Class``."""
    if kind not in TABLES:
        raise AdaptError(f"unknown task kind {kind!r}: choose from {', '.join(TABLES)}.")
    return TABLES[kind]


def get_rung_class(name: str, kind: str = "classification") -> type[Any]:
    """The class of rung ``name`` for task ``kind``; an unknown name is a one-line error."""
    table = rung_table(kind)
    if name not in table:
        what = "rung" if kind == "classification" else f"{kind} rung"
        raise AdaptError(f"unknown {what} {name!r}: choose from {', '.join(table)}.")
    return import_object(table[name])


def make_rung(name: str, kind: str = "classification", **params: Any) -> Any:
    return get_rung_class(name, kind)(**params)


def rungs_in_cost_order(names: list[str] | None = None, kind: str = "classification") -> list[str]:
    """The given (default: all) rung names of ``kind`` sorted by their declared adaptation cost."""
    names = list(rung_table(kind)) if names is None else names
    return sorted(names, key=lambda n: get_rung_class(n, kind).cost_rank)

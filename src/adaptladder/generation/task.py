"""A generation (text-to-text) task: input -> target pairs with a train / validation / test split.

The counterpart of :class:`adaptladder.task.Task` for generation. ``kind`` is the task kind
(``summarisation`` | ``rewrite`` | ``dialogue`` | ``extraction``; see ``metrics.TASK_KINDS``), which
sets the audit's size requirements and the default primary metric. ``output`` is ``json`` when
the targets are JSON checked against ``schema``, else ``text``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaptladder.errors import AdaptError
from adaptladder.generation.metrics import JSON_METRICS, PRIMARY_METRIC, TASK_KINDS, TEXT_METRICS, parse_json

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
#: every metric name a generation run may use as its primary metric (``--metric``)
GENERATION_METRICS = (*TEXT_METRICS, "embedding_sim", *JSON_METRICS)


def default_metric(kind: str, output: str = "text") -> str:
    """The primary metric of a task kind (``field_f1`` for any JSON task)."""
    if output == "json":
        return "field_f1"
    return PRIMARY_METRIC.get(kind, "rouge_l")


@dataclass
class GenTask:
    """``inputs[i]`` -> ``targets[i]`` (JSON text when ``schema`` is set), ``split[i]`` in SPLITS."""

    name: str
    inputs: list[str]
    targets: list[str]
    split: np.ndarray
    kind: str = "rewrite"
    instruction: str = ""
    schema: dict[str, Any] | None = None
    source: dict[str, Any] = field(default_factory=dict)

    #: lets code that sees either task type branch without importing this module
    is_generation = True

    def __post_init__(self) -> None:
        self.split = np.asarray(self.split, dtype=object)
        if not (len(self.inputs) == len(self.targets) == len(self.split)):
            raise AdaptError("inputs, targets and split must have the same length.")
        if self.kind not in TASK_KINDS:
            raise AdaptError(f"unknown generation task kind {self.kind!r}: use one of {', '.join(TASK_KINDS)}.")

    # ---------------------------------------------------------------- access
    @property
    def output(self) -> str:
        return "json" if self.schema is not None else "text"

    @property
    def default_metric(self) -> str:
        return default_metric(self.kind, self.output)

    def indices(self, part: str) -> np.ndarray:
        if part not in SPLITS:
            raise AdaptError(f"unknown split {part!r}: use one of {', '.join(SPLITS)}.")
        return np.flatnonzero(self.split == part)

    def part(self, part: str) -> tuple[list[str], list[str]]:
        """Inputs and targets of one split."""
        idx = self.indices(part)
        return [self.inputs[i] for i in idx], [self.targets[i] for i in idx]

    def pairs(self, part: str) -> list[tuple[str, str]]:
        return list(zip(*self.part(part), strict=True))

    def refs(self, targets: list[str]) -> list[Any]:
        """References as the metrics take them: parsed JSON for a JSON task, else the text."""
        if self.output != "json":
            return list(targets)
        out = []
        for t in targets:
            ok, v = parse_json(t)
            out.append(v if ok else t)
        return out

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.kind, self.instruction, self.schema], sort_keys=True).encode())
        for x, y, s in zip(self.inputs, self.targets, self.split.tolist(), strict=True):
            h.update(x.encode("utf-8", "surrogatepass") + b"\x00" + y.encode("utf-8", "surrogatepass")
                     + b"\x00" + s.encode() + b"\x01")
        return h.hexdigest()[:16]

    def sample(self, max_per_split: dict[str, int] | int, seed: int = 0) -> GenTask:
        """A seeded random subsample with at most ``max_per_split`` rows per split."""
        if isinstance(max_per_split, int):
            max_per_split = {p: max_per_split for p in SPLITS}
        rng = np.random.default_rng(seed)
        keep = []
        for part in SPLITS:
            idx = self.indices(part)
            cap = max_per_split.get(part)
            keep.append(idx if cap is None or len(idx) <= cap else rng.choice(idx, cap, replace=False))
        sel = np.sort(np.concatenate(keep))
        src = dict(self.source, sampled=max_per_split, sample_seed=seed)
        if src.get("row_ids") is not None:
            src["row_ids"] = [src["row_ids"][i] for i in sel]
        return GenTask(self.name, [self.inputs[i] for i in sel], [self.targets[i] for i in sel], self.split[sel],
                       self.kind, self.instruction, self.schema, src)

    def split_frame(self) -> Any:
        import pandas as pd

        rows = self.source.get("row_ids")
        return pd.DataFrame({"row": rows if rows is not None else np.arange(len(self.inputs)), "split": self.split})

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": "generation",
            "task_type": "generation",  # the kind, decided once (adaptladder.kinds.kind_of reads it)
            "kind": self.kind,
            "output": self.output,
            "n": len(self.inputs),
            "split_sizes": {p: int((self.split == p).sum()) for p in SPLITS},
            "instruction": self.instruction,
            "schema": self.schema,
            "default_metric": self.default_metric,
            "fingerprint": self.fingerprint(),
            "source": {k: v for k, v in self.source.items() if k != "row_ids"},
        }


def random_split(n: int, seed: int = 13, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
                 groups: np.ndarray | None = None) -> np.ndarray:
    """Seeded train / validation / test per row; rows of one group (e.g. the same normalised
    input) land in the same split, so a repeated input cannot leak from train into test."""
    if n < 3:
        raise AdaptError(f"{n} pair(s) cannot be split into train, validation and test: give at least 3 "
                         "(and far more for anything but prompting).")
    groups = np.arange(n) if groups is None else np.asarray(groups)
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    u = len(uniq)
    n_val = max(1, round(u * fractions[1]))
    n_test = max(1, round(u * fractions[2]))
    if n_val + n_test >= u:
        n_val, n_test = 1, 1
    where = {g: ("validation" if k < n_val else "test" if k < n_val + n_test else "train")
             for k, g in enumerate(uniq.tolist())}
    return np.array([where[g] for g in groups.tolist()], dtype=object)


def load_generation_task(name: str, seed: int = 13,
                         fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> GenTask:
    """A built-in generation data set (``generation.datasets``) as a split :class:`GenTask`."""
    from adaptladder.generation.datasets import load_generation_builtin
    from adaptladder.task import duplicate_groups

    data = load_generation_builtin(name)
    split = random_split(len(data.inputs), seed, fractions, groups=duplicate_groups(data.inputs))
    return GenTask(data.name, list(data.inputs), list(data.targets), split, data.kind, data.instruction,
                   data.schema, {"builtin": name, "origin": data.source, "notes": data.notes})

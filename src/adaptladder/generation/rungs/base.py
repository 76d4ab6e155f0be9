"""The contract of a generation rung (the counterpart of :class:`adaptladder.rungs.base.Rung`).

A generation rung is fitted on (input, target) pairs and generates one output text per input:

    rung = make_gen_rung("few-shot", lm="smollm2", k=3)
    rung.fit(train_inputs, train_targets, spec=GenSpec.of(task), val_inputs=..., val_targets=...)
    out = rung.generate(inputs)          # list[str], one per input, in order
    rung.save(dir); rung2 = load_gen_rung(dir); rung2.generate(inputs) == out  (greedy: identical)

``GenSpec`` carries what every rung needs to know about the task besides the pairs: the
instruction for prompting rungs, the kind, the JSON Schema of an extraction task, and the
decoding budget. ``last_usage`` after ``generate`` holds the tokens generated and seconds
spent (for tokens/s), and ``prompts_used()`` the exact prompts (for the report).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from adaptladder.artifacts import RUNG_FILE  # re-exported: callers import it from here
from adaptladder.errors import AdaptError
from adaptladder.rungs.base import RungBase


@dataclass
class GenSpec:
    """What a generation rung knows about its task besides the pairs."""

    kind: str = "rewrite"  # metrics.TASK_KINDS
    instruction: str = ""
    schema: dict[str, Any] | None = None
    max_new_tokens: int | None = None  # None: from the training targets' length percentile
    seed: int = 13
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> str:
        return "json" if self.schema is not None else "text"

    @classmethod
    def of(cls, task: Any, seed: int = 13, **extra: Any) -> GenSpec:
        return cls(task.kind, task.instruction, task.schema, seed=seed, extra=extra)

    def record(self) -> dict[str, Any]:
        return asdict(self)


class GenRung(RungBase, ABC):
    """Base class of every generation rung (see the module docstring for the contract); the declared
    ``Settings``, ``get_params`` / ``set_params`` / ``clone`` come from the one base,
    :class:`adaptladder.rungs.base.RungBase`. ``family``: prompting | structured | finetune | distill."""

    #: only for tasks with a JSON Schema (the ``structured`` rung)
    needs_schema: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.spec_: GenSpec | None = None
        self.last_usage: dict[str, Any] = {}

    @abstractmethod
    def fit(self, inputs: Sequence[str], targets: Sequence[str], *, spec: GenSpec,
            val_inputs: Sequence[str] | None = None, val_targets: Sequence[str] | None = None) -> GenRung:
        """Learn from the training pairs (prompting rungs: pick shots, set the decoding budget)."""

    @abstractmethod
    def generate(self, inputs: Sequence[str]) -> list[str]:
        """One output per input, in order; sets ``last_usage`` (new_tokens, prompt_tokens, seconds)."""

    def prompts_used(self, inputs: Sequence[str]) -> list[str]:
        """The exact prompts the rung would send for ``inputs`` (empty for rungs without prompts)."""
        return []

    def shorten_prompts(self, why: str) -> int | None:
        """Make each generation cheaper (a prompting rung halves its prompt window) when the ladder's
        timing probe finds the fitted rung too slow for a minimal evaluation in its budget (``why``).
        Returns the new prompt length in tokens, or ``None`` when this rung cannot (the default)."""
        return None

    @classmethod
    def unavailable_reason(cls, params: dict[str, Any], spec: GenSpec | None = None) -> str | None:
        """Why this rung cannot run here (e.g. needs CUDA, needs a schema), or None."""
        if cls.needs_schema and spec is not None and spec.schema is None:
            return "needs a JSON Schema (--schema): this task has none"
        return None

    @classmethod
    def skip_details(cls, params: dict[str, Any], spec: GenSpec | None = None) -> dict[str, Any]:
        """Figures recorded with a skip (e.g. the estimator's memory/time/cost for qlora-sft)."""
        return {}

    def extra_info(self) -> dict[str, Any]:
        """Rung-specific facts for the report (decoding settings, training history, ...)."""
        return {}

    # ------------------------------------------------------------------ persistence
    def _save(self, path: Path) -> None:  # subclasses write their files (safetensors / JSON, never pickle)
        return None

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> GenRung:
        rung = cls(**meta.get("params", {}))
        rung.spec_ = GenSpec(**meta["spec"]) if meta.get("spec") else None
        return rung

    def save(self, path: str | Path) -> Path:
        if self.spec_ is None:
            raise AdaptError(f"the {self.name} rung is not fitted yet: call fit() before saving.")
        from adaptladder.artifacts import file_hashes

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._save(path)
        meta = {"name": self.name, "task": "generation", "params": self.params_record(), "spec": self.spec_.record(),
                "files": file_hashes(path, exclude=(RUNG_FILE, RUNG_FILE + ".tmp"))}
        tmp = path / (RUNG_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2, default=str))
        tmp.replace(path / RUNG_FILE)
        return path

    def params_record(self) -> dict[str, Any]:
        """The parameters as written to ``rung.json`` (a rung whose parameters can carry data, e.g.
        distill's ``unlabelled_inputs``, keeps a summary there instead)."""
        return self.params

    def _check_fitted(self) -> None:
        if self.spec_ is None:
            raise AdaptError(f"the {self.name} rung is not fitted yet: call fit() before generating.")


def load_gen_rung(path: str | Path, *, run_root: str | Path | None = None) -> GenRung:
    """Load a saved generation rung safely: class from the registry, no pickle, hashes checked (and, read
    from a run directory ``run_root``, its manifest and the person's endpoint policy)."""
    from adaptladder.artifacts import read_rung_meta
    from adaptladder.generation.rungs import GEN_RUNGS, get_gen_rung_class

    meta = read_rung_meta(path, GEN_RUNGS, unknown="{file} names no known generation rung; the saved rung is damaged: "
                                                  "re-run it with --fresh.",
                          run_root=Path(run_root) if run_root is not None else None)
    return get_gen_rung_class(meta["name"])._load(Path(path), meta)

"""Cheap floors for generation, climbed first so that every other rung's lift is visible (issue #29).

* ``lead`` -- the first N words of the input, N chosen on validation (the classic summarisation /
  headline floor: "the first 8 words of the article" scored 0.203 ROUGE-L on a headline set where an
  untrained LoRA rung scored 0.185).
* ``nearest-target`` -- the target of the most similar training input (TF-IDF cosine over word 1-2
  grams): the floor for tasks whose answers repeat (replies, templated rewrites, extraction).

Both fit in seconds on a CPU and save as JSON only (no pickle): ``lead`` its N, ``nearest-target``
its training pairs (the model *is* the pairs; the TF-IDF index is rebuilt from them on load).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from adaptladder.errors import AdaptError
from adaptladder.generation.rungs.base import GenRung, GenSpec
from adaptladder.rungs.settings import RungSettings, positive_int, setting

STATE_FILE = "floor.json"
#: candidates for lead's N besides the training targets' word-length quantiles
LEAD_GRID = (5, 8, 10, 15, 20, 30, 40, 60, 80)


def _metric(spec: GenSpec) -> str:
    """The run's primary metric, or the kind's default when it needs an encoder (embedding_sim)."""
    from adaptladder.generation.metrics import PRIMARY_METRIC, TEXT_METRICS

    default = "field_f1" if spec.schema is not None else PRIMARY_METRIC.get(spec.kind, "chrf")
    m = spec.extra.get("metric")
    if m and (spec.schema is not None or m in TEXT_METRICS):
        return str(m)
    return default


def _scores(preds: list[str], refs: list[str], spec: GenSpec, metric: str) -> float:
    from adaptladder.generation.metrics import parse_json, per_example_scores

    kind = "json" if spec.schema is not None else "text"
    ref_values: list[Any] = [parse_json(r)[1] for r in refs] if kind == "json" else list(refs)
    per, _ = per_example_scores(preds, ref_values, kind=kind, schema=spec.schema,
                                metrics=None if kind == "json" else [metric])
    if metric not in per:
        raise AdaptError(f"metric {metric!r} is not scored for this task; pass --metric with one of {', '.join(per)}.")
    return float(np.mean(per[metric])) if len(per[metric]) else 0.0


@dataclass
class LeadSettings(RungSettings):
    n_words: int | None = setting(None, help="words of the input kept; unset: chosen on validation")

    def check(self) -> None:
        positive_int(self, "n_words", allow_none=True)


@dataclass
class NearestTargetSettings(RungSettings):
    run_values: ClassVar[dict[str, str]] = {"seed": "seed"}

    max_pairs: int = setting(50_000, help="training pairs kept in the index (a seeded sample beyond)")
    seed: int | None = setting(None, help="seed of that sample; unset: the run's --seed")

    def check(self) -> None:
        positive_int(self, "max_pairs")


class _Floor(GenRung):
    family: ClassVar[str] = "floor"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.info_: dict[str, Any] = {}

    def p(self, key: str) -> Any:
        return getattr(self.settings, key)

    def generate(self, inputs: Sequence[str]) -> list[str]:
        self._check_fitted()
        t0 = time.perf_counter()
        out = self._outputs(list(inputs))
        self.last_usage = {"new_tokens": 0, "prompt_tokens": 0, "seconds": time.perf_counter() - t0,
                           "requests": len(out)}
        return out

    def _outputs(self, inputs: list[str]) -> list[str]:
        raise NotImplementedError

    def extra_info(self) -> dict[str, Any]:
        return dict(self.info_)

    def _save(self, path: Path) -> None:
        self._check_fitted()
        (path / STATE_FILE).write_text(json.dumps(self._state(), ensure_ascii=False))

    def _state(self) -> dict[str, Any]:
        return {"info": self.info_}

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> _Floor:
        rung = cls(**meta.get("params", {}))
        rung.spec_ = GenSpec(**meta["spec"]) if meta.get("spec") else None
        try:
            state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise AdaptError(f"{path / STATE_FILE} is missing or not JSON; the saved rung is damaged: "
                             "re-run it.") from e
        rung.info_ = state.get("info") or {}
        rung._restore(state, path)
        return rung

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        pass


class LeadGen(_Floor):
    """The first N words of the input, N chosen on validation."""

    name = "lead"
    cost_rank = 1
    description = "the first N words of the input (N chosen on validation): the summarisation / headline floor"
    Settings = LeadSettings

    @classmethod
    def unavailable_reason(cls, params: dict[str, Any], spec: GenSpec | None = None) -> str | None:
        if spec is not None and spec.schema is not None:
            return "a JSON task: the input's first words are not JSON (nearest-target is this task's floor)"
        return None

    def fit(self, inputs: Sequence[str], targets: Sequence[str], *, spec: GenSpec,
            val_inputs: Sequence[str] | None = None, val_targets: Sequence[str] | None = None) -> LeadGen:
        if len(inputs) != len(targets) or not len(inputs):
            raise AdaptError("lead needs training pairs (one target per input).")
        reason = self.unavailable_reason(self.params, spec)
        if reason:
            raise AdaptError(f"the lead rung cannot run: {reason}.")
        self.spec_ = spec
        fixed = self.p("n_words")
        if fixed is not None:
            if isinstance(fixed, bool) or not isinstance(fixed, int) or fixed < 1:
                raise AdaptError(f"lead n_words={fixed!r} is not valid: give an integer >= 1 (or leave it unset).")
            self.n_ = int(fixed)
            self.info_ = {"n_words": self.n_, "source": "set"}
            return self
        lengths = np.array([len(t.split()) for t in targets])
        grid = sorted({*LEAD_GRID, *(int(max(1, q)) for q in np.percentile(lengths, [25, 50, 75, 90]))})
        xs, ys = (list(val_inputs or []), list(val_targets or []))
        source = "validation"
        if not xs:  # no validation pairs: choose on (a sample of) the training pairs
            rows = np.random.default_rng(spec.seed).permutation(len(inputs))[:200]
            xs, ys, source = [inputs[i] for i in rows], [targets[i] for i in rows], "training pairs (no validation)"
        metric = _metric(spec)
        scores = {n: _scores([" ".join(x.split()[:n]) for x in xs], ys, spec, metric) for n in grid}
        self.n_ = max(grid, key=lambda n: (scores[n], -n))  # ties: the shorter lead
        self.info_ = {"n_words": self.n_, "source": source, "metric": metric,
                      "grid": {str(n): round(s, 4) for n, s in scores.items()}}
        return self

    def _outputs(self, inputs: list[str]) -> list[str]:
        return [" ".join(x.split()[:self.n_]) for x in inputs]

    def _state(self) -> dict[str, Any]:
        return {"n_words": self.n_, "info": self.info_}

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        n = state.get("n_words")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise AdaptError(f"{path / STATE_FILE}: n_words {n!r} is not a positive integer; the rung is damaged.")
        self.n_ = n

    def prompts_used(self, inputs: Sequence[str]) -> list[str]:
        return [f"(no prompt: the first {self.n_} words of the input)" for _ in inputs]


class NearestTargetGen(_Floor):
    """The target of the most similar training input (TF-IDF cosine, word 1-2 grams)."""

    name = "nearest-target"
    cost_rank = 2
    description = "the target of the most similar training input (TF-IDF cosine): the floor for repeated answers"
    Settings = NearestTargetSettings

    def fit(self, inputs: Sequence[str], targets: Sequence[str], *, spec: GenSpec,
            val_inputs: Sequence[str] | None = None, val_targets: Sequence[str] | None = None) -> NearestTargetGen:
        if len(inputs) != len(targets) or not len(inputs):
            raise AdaptError("nearest-target needs training pairs (one target per input).")
        cap = self.p("max_pairs")
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise AdaptError(f"nearest-target max_pairs={cap!r} is not valid: give an integer >= 1.")
        self.spec_ = spec
        rows = np.arange(len(inputs))
        if len(rows) > cap:  # a seeded sample keeps the index (and the saved rung) bounded
            seed = self.p("seed") if self.p("seed") is not None else spec.seed
            rows = np.sort(np.random.default_rng(int(seed)).choice(rows, cap, replace=False))
        self.inputs_ = [str(inputs[i]) for i in rows]
        self.targets_ = [str(targets[i]) for i in rows]
        self._index()
        self.info_ = {"pairs": len(self.inputs_), "of": len(inputs), "similarity": "TF-IDF cosine, word 1-2 grams"}
        return self

    def _index(self) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vec_ = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        try:
            self.X_ = self.vec_.fit_transform(self.inputs_)
        except ValueError:  # no word at all (inputs of symbols): every query gets the first target
            self.vec_, self.X_ = None, None

    def _outputs(self, inputs: list[str]) -> list[str]:
        if self.vec_ is None or not inputs:
            return [self.targets_[0] for _ in inputs]
        out: list[str] = []
        for s in range(0, len(inputs), 1024):
            q = self.vec_.transform(inputs[s:s + 1024])
            sims = (q @ self.X_.T).toarray()
            out += [self.targets_[int(i)] for i in sims.argmax(axis=1)]
        return out

    def _state(self) -> dict[str, Any]:
        return {"inputs": self.inputs_, "targets": self.targets_, "info": self.info_}

    def _restore(self, state: dict[str, Any], path: Path) -> None:
        xs, ys = state.get("inputs"), state.get("targets")
        if not (isinstance(xs, list) and isinstance(ys, list) and xs and len(xs) == len(ys)
                and all(isinstance(v, str) for v in xs + ys)):
            raise AdaptError(f"{path / STATE_FILE} does not hold its training pairs; the saved rung is damaged.")
        self.inputs_, self.targets_ = xs, ys
        self._index()

    def prompts_used(self, inputs: Sequence[str]) -> list[str]:
        return ["(no prompt: the target of the most similar training input)" for _ in inputs]

"""Fine-tuning and distillation generation rungs: ``lora-sft``, ``qlora-sft``, ``full-sft``, ``distill``.

All four train the causal LM on (prompt, target) pairs with :func:`adaptladder.generation.sft.train_sft`:
the prompt is the zero-shot prompt of the prompting rungs (``Generator.build_prompt(input,
instruction)``: chat template + the task instruction), so the model learns the task in the
instruction format it is asked in; the loss covers the target and stop tokens only. Training
stops at the wall-clock budget (``budget_minutes``, else the run's ``--budget-minutes`` passed as
``spec.extra["budget_minutes"]``, else 10), after ``max_epochs``, or early: every ``eval_every``
steps the model generates greedily for a seeded validation subset (at most ``val_size`` pairs,
fewer when one check would take more than ``eval_share`` of the budget: the subset is sized by
timing the first check, see :func:`~adaptladder.generation.sft.train_sft`; ``val_check_pairs`` in
the training info) scored with the task's primary metric (``spec.extra["metric"]``, else the task
kind's default), and ``patience`` evaluations without improvement end training, as does a budget
that can no longer hold a step and a check; the best weights are kept (step 0, the untouched
model, counts, so a run that never improves keeps the base behaviour).

* ``lora-sft``: PEFT LoRA adapters (``r``, ``alpha``, ``dropout``, ``target_modules``) saved as
  ``adapter/adapter_model.safetensors`` and loaded back onto the base LM (``lm``).
* ``full-sft``: every weight trains (lower default ``lr``); the whole model is saved as
  safetensors with its config and tokenizer under ``model/``.
* ``qlora-sft``: LoRA over a 4-bit NF4 base (bitsandbytes), CUDA only; without CUDA it is skipped
  ("needs CUDA") with the estimator's (:mod:`adaptladder.estimate`) memory/time/cost figures for the
  task's training pairs and token lengths (``spec.extra["training_shape"]``, set by the ladder).
* ``distill``: a teacher generation rung (``teacher``, default ``few-shot``) is fitted on a seeded
  *labelled subset* of the training pairs (``labelled`` pairs, default 32) and generates outputs
  for *unlabelled inputs*: the ``unlabelled_inputs`` parameter when given, else the training
  inputs outside the labelled subset (their gold targets are never used), at most
  ``max_unlabelled`` of them and within ``teacher_budget_share`` of the budget (``rung.json`` keeps
  only the count and SHA-256 of given ``unlabelled_inputs``, not the texts). A LoRA student
  (``student_lm``, default the same LM) is trained on those (input, teacher output) pairs with
  the zero-shot prompt, so it answers without the teacher's shots (shorter prompts, faster).
  Empty teacher outputs (and, for JSON tasks, outputs that do not parse) are dropped. The
  validation pairs (gold) only drive early stopping and the teacher/student table in
  ``extra_info()`` (scored on the seeded validation pairs the teacher generates within
  ``eval_share`` of the budget and the student's checks also use; ``scored_pairs``).

Generation is greedy, batched with the KV cache (:class:`adaptladder.generation.decode.Generator`),
with ``max_new_tokens`` from the training targets' 95th-percentile length unless the spec sets it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from adaptladder.errors import AdaptError, BudgetExceeded
from adaptladder.generation.rungs.base import GenRung, GenSpec
from adaptladder.models import DEFAULT_LM
from adaptladder.rungs.settings import LoraFields, SettingError, positive_int, positive_number, setting

log = logging.getLogger(__name__)

INFO_FILE = "sft.json"


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch is a hard dependency
        return False


def _metric_for(spec: GenSpec) -> str:
    from adaptladder.generation.task import GENERATION_METRICS, default_metric

    metric = spec.extra.get("metric") or default_metric(spec.kind, spec.output)
    if metric not in GENERATION_METRICS:
        raise AdaptError(f"unknown generation metric {metric!r}: use one of {', '.join(GENERATION_METRICS)}.")
    return str(metric)


def scorer(spec: GenSpec, metric: str | None = None) -> Any:
    """``score(preds, refs) -> mean`` of the task's primary metric (JSON metrics parse the references)."""
    from adaptladder.generation.metrics import JSON_METRICS, per_example_scores

    metric = metric or _metric_for(spec)
    kind = "json" if metric in JSON_METRICS else "text"
    encode = None
    if metric == "embedding_sim":
        from adaptladder.encode import get_encoder

        encode = get_encoder().encode

    def score(preds: list[str], refs: list[str]) -> float:
        per, _ = per_example_scores(preds, refs, kind=kind, schema=spec.schema, encode=encode, metrics=[metric])
        return float(np.mean(per[metric])) if len(preds) else float("nan")

    return score


def _subset(n: int, k: int, seed: int) -> list[int]:
    """A seeded sample of at most ``k`` of ``range(n)`` (sorted)."""
    if n <= k:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, k, replace=False).tolist())


def _spread(values: Sequence[int]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"mean": round(float(a.mean()), 1), "p95": round(float(np.percentile(a, 95)), 1), "max": int(a.max())}


def training_shape(lm: Any, inputs: Sequence[str], targets: Sequence[str], instruction: str, *,
                   max_length: int) -> dict[str, Any]:
    """The pairs and token lengths the SFT rungs train on: each example is the zero-shot prompt
    (:func:`~adaptladder.generation.decode.render_prompt`, as ``Generator.build_prompt``) + the
    target + a stop token, cut to ``max_length`` (as :func:`~adaptladder.generation.sft.build_example`).
    Only the LM's tokenizer is loaded. Never raises: a tokenizer problem leaves the pair count and an
    ``error``."""
    out: dict[str, Any] = {"pairs": len(inputs), "max_length": int(max_length)}
    if not inputs:
        return out
    try:
        from transformers import AutoTokenizer

        from adaptladder.generation.decode import render_prompt
        from adaptladder.models import resolve_lm

        tok = AutoTokenizer.from_pretrained(resolve_lm(str(lm)))
        chat = bool(getattr(tok, "chat_template", None))  # HFBackend.encode: BOS only on a plain prompt
        prompt = [len(tok(render_prompt(tok, x, instruction), add_special_tokens=not chat)["input_ids"])
                  for x in inputs]
        target = [len(tok(str(y), add_special_tokens=False)["input_ids"]) + 1 for y in targets]
    except Exception as e:  # the shape feeds an estimate for a skip; the skip must stand
        return {**out, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    seq = [min(int(max_length), p + t) for p, t in zip(prompt, target, strict=True)]
    return {**out, "prompt_tokens": _spread(prompt), "target_tokens": _spread(target), "example_tokens": _spread(seq),
            "cut_to_max_length": int(sum(p + t > max_length for p, t in zip(prompt, target, strict=True)))}


@dataclass
class LoraSFTSettings(LoraFields):
    """Settings of the SFT rungs: the LoRA fields shared with the classification ``lora`` rung
    (:class:`~adaptladder.rungs.settings.LoraFields`) plus the training loop's."""

    run_values: ClassVar[dict[str, str]] = {"lm": "lm", "seed": "seed", "budget_minutes": "budget_minutes"}

    lm: str = setting(DEFAULT_LM, help="the causal LM trained: packaged alias, local folder or HF id (the run's "
                                       "--lm)")
    dropout: float = setting(0.05, help="dropout on the LoRA path, in [0, 1)")
    lr: float | None = setting(None, help="peak learning rate; unset: the method's default (1e-3 LoRA, 2e-5 full)")
    batch_size: int = setting(8, help="training pairs per step")
    max_epochs: int = setting(3, help="passes over the training pairs (early stopping may end sooner)")
    max_steps: int | None = setting(None, help="cap of the optimiser steps; unset: no cap")
    budget_minutes: float | None = setting(None, help="wall-time cap of the training; unset: the run's "
                                                      "--budget-minutes, else 10")
    eval_every: int = setting(25, help="steps between validation checks (greedy generation, primary metric)")
    patience: int = setting(3, help="checks without a better validation score before stopping")
    max_length: int = setting(512, help="tokens per training example (prompt + target), longer ones are cut")
    seed: int | None = setting(None, help="seed of the batches, the subsets and dropout; unset: the run's --seed")
    val_size: int = setting(32, help="validation pairs at most in a check (fewer when a check would take more "
                                     "than eval_share of the budget)")
    gen_batch_size: int = setting(8, help="prompts per generation batch")
    eval_share: float = setting(0.2, help="share of the budget the validation checks may take, in (0, 1]")
    threads: int | Literal["auto"] = setting("auto", help="torch CPU threads: auto or an integer")
    precision: Literal["auto", "fp32", "bf16"] = setting("auto", help="training and generation precision: auto "
                                                                      "(bf16 autocast where native), fp32, bf16")
    n_examples: int | None = setting(None, help="qlora-sft without CUDA: training examples the skip's estimate "
                                                "assumes when the task's are not known")

    def check(self) -> None:
        super().check()
        positive_int(self, "batch_size", "max_epochs", "eval_every", "patience", "max_length", "val_size",
                     "gen_batch_size")
        positive_int(self, "max_steps", "n_examples", allow_none=True)
        positive_number(self, "lr", "budget_minutes", allow_none=True)
        for key in ("lr", "budget_minutes"):
            v = getattr(self, key)
            if v is not None and not math.isfinite(v):
                raise SettingError(key, v, "a positive finite number")
        if not 0 < self.eval_share <= 1:
            raise SettingError("eval_share", self.eval_share, "a number in (0, 1]")
        if self.threads != "auto":
            positive_int(self, "threads")


@dataclass
class DistillSFTSettings(LoraSFTSettings):
    """The SFT settings plus the teacher's."""

    teacher: str = setting("few-shot", help="the generation rung that labels the unlabelled inputs")
    teacher_params: dict[str, Any] | None = setting(None, help="the teacher's settings (its lm defaults to lm)")
    student_lm: str | None = setting(None, help="the student's causal LM; unset: lm")
    labelled: int = setting(32, help="training pairs the teacher is fitted on (a seeded subset)")
    unlabelled_inputs: list[Any] | dict[str, Any] | None = setting(
        None, help="inputs for the teacher to label; unset: the training inputs outside the labelled subset")
    max_unlabelled: int | None = setting(200, help="unlabelled inputs the teacher labels at most")
    teacher_budget_share: float = setting(0.4, help="share of the budget the teacher's labelling may take, in "
                                                    "(0, 1)")

    def check(self) -> None:
        super().check()
        positive_int(self, "labelled")
        positive_int(self, "max_unlabelled", allow_none=True)
        if not 0 < self.teacher_budget_share < 1:
            raise SettingError("teacher_budget_share", self.teacher_budget_share, "a number in (0, 1)")


#: The fewest training pairs the seeds call a start for fine-tuning a generation task ("50-100 examples").
MIN_SEEN_PAIRS = 50


def training_verdict(res: Any, n_train: int, method: str, p: dict[str, Any]) -> dict[str, Any]:
    """What the record must say about how much training happened (issue #29): a best step of 0 means the
    saved weights are the base model's; less than one epoch (or fewer than :data:`MIN_SEEN_PAIRS` pairs
    seen) is under-trained, with what one epoch would take here (at the measured rate) and on a GPU (the
    estimator), so a decision never reads it as evidence against fine-tuning."""
    tp = (res.val_check or {}).get("throughput") or {}
    seen = int(tp.get("examples_seen") or 0)
    epochs = float(tp.get("epochs") or 0.0)
    out: dict[str, Any] = {"examples_seen": seen, "epochs": round(epochs, 4)}
    if res.best_step == 0:
        out["base_model_outputs"] = True
        out["base_model_note"] = ("no step improved on validation: these are the base model's outputs "
                                  f"({res.steps} step(s) trained, none kept)")
    if epochs < 1.0 or seen < min(MIN_SEEN_PAIRS, n_train):
        per = (tp.get("training_seconds") or 0.0) / seen if seen else None
        fair: dict[str, Any] = {"epoch_pairs": n_train}
        if per:
            fair["epoch_minutes_here"] = round(per * n_train / 60, 1)
        try:
            from adaptladder.estimate import rung_estimate

            est = rung_estimate(p.get("lm") or "smollm2", "lora" if method != "full" else "full", examples=n_train,
                                epochs=1.0, seq_len=int(p.get("max_length") or 512),
                                batch=int(p.get("batch_size") or 8), head="lm")
            comp = est.get("compute") or {}
            if comp.get("hours") is not None:
                fair.update(gpu=comp.get("gpu"), epoch_minutes_gpu=round(float(comp["hours"]) * 60, 2),
                            epoch_cost_usd_gpu=None if comp.get("cost_usd") is None
                            else float(f"{float(comp['cost_usd']):.3g}"))
        except Exception:  # an estimate is a courtesy; the verdict stands without it
            pass
        here = f"~{fair['epoch_minutes_here']:g} min here" if "epoch_minutes_here" in fair else "unmeasured here"
        gpu = (f" or ~{fair['epoch_minutes_gpu']:g} min / ${fair['epoch_cost_usd_gpu']} on {fair['gpu']}"
               if fair.get("epoch_minutes_gpu") is not None and fair.get("epoch_cost_usd_gpu") is not None else "")
        out["under_trained"] = True
        out["fair_run"] = fair
        out["under_trained_note"] = (f"saw {seen} training pair(s), {epochs:.0%} of an epoch of {n_train}: "
                                     f"under-trained, no evidence against fine-tuning; one epoch needs {here}{gpu}")
    return out


class LoraSFT(GenRung):
    """Supervised fine-tuning with PEFT LoRA adapters on the causal LM."""

    name = "lora-sft"
    family = "finetune"
    cost_rank = 60
    description = "LoRA SFT: adapters on the causal LM trained on (prompt, target) pairs, loss on the target only"
    method: ClassVar[str] = "lora"
    # a priori for CPU budgets of ~100 steps (the classification LoRA rung measured 1e-3 as barely
    # moving in ~80 steps and 3e-3 as best; generation is the more fragile, so the lower one)
    default_lr: ClassVar[float] = 1e-3
    Settings = LoraSFTSettings

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.gen_: Any = None
        self.model_: Any = None
        self.info_: dict[str, Any] = {}
        self.decoding_: dict[str, Any] = {}

    # -------------------------------------------------------------- settings
    def run_settings(self, spec: GenSpec | None = None) -> dict[str, Any]:
        """Every setting's value (validated when the rung was made), the derived ones filled in: budget
        and seed fall back to the run's (via ``spec``), ``lr`` to the method's default."""
        p = self.settings.values()
        extra = spec.extra if spec is not None else {}
        if p["budget_minutes"] is None:
            p["budget_minutes"] = float(extra.get("budget_minutes") or 10.0)
        if p["seed"] is None:
            p["seed"] = int(spec.seed) if spec is not None else 13
        if p["lr"] is None:
            p["lr"] = self.default_lr
        return p

    def _sft_config(self, p: dict[str, Any], max_new_tokens: int, budget_minutes: float,
                    reserve_generations: float = 0.0) -> Any:
        from adaptladder.generation.sft import SFTConfig

        return SFTConfig(r=p["r"], alpha=p["alpha"], dropout=float(p["dropout"]), target_modules=p["target_modules"],
                         lr=float(p["lr"]), batch_size=p["batch_size"], max_epochs=p["max_epochs"],
                         max_steps=p["max_steps"], budget_minutes=float(budget_minutes), eval_every=p["eval_every"],
                         patience=p["patience"], max_length=p["max_length"], max_new_tokens=int(max_new_tokens),
                         seed=int(p["seed"]), eval_share=float(p["eval_share"]),
                         reserve_generations=float(reserve_generations), precision=str(p["precision"]))

    def _generator(self, lm: Any, p: dict[str, Any]) -> Any:
        from adaptladder.generation.decode import Generator

        return Generator(lm, batch_size=p["gen_batch_size"], threads=p["threads"])

    def _student_lm(self, p: dict[str, Any]) -> Any:
        return p["lm"]

    # -------------------------------------------------------------- fit
    def fit(self, inputs: Sequence[str], targets: Sequence[str], *, spec: GenSpec,
            val_inputs: Sequence[str] | None = None, val_targets: Sequence[str] | None = None) -> LoraSFT:
        reason = self.unavailable_reason(self.params, spec)
        if reason:
            raise AdaptError(f"the {self.name} rung cannot run here: {reason}.")
        p = self.run_settings(spec)
        inputs, targets = list(inputs), list(targets)
        if len(inputs) != len(targets):
            raise AdaptError(f"{len(inputs)} inputs for {len(targets)} targets: they must pair up one to one.")
        if not inputs:
            raise AdaptError(f"the {self.name} rung needs at least one training pair.")
        t0 = time.perf_counter()
        train, val, val_note = self._split_val(inputs, targets, val_inputs, val_targets, p)
        self._fit_pairs(train, val, spec, p, t0, extra={"validation": val_note})
        return self

    def _split_val(self, inputs: list[str], targets: list[str], val_inputs: Sequence[str] | None,
                   val_targets: Sequence[str] | None, p: dict[str, Any]
                   ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], str]:
        """Training pairs and the seeded validation subset used for early stopping."""
        if val_inputs is not None and val_targets is not None and len(val_inputs):
            vi, vt = list(val_inputs), list(val_targets)
            if len(vi) != len(vt):
                raise AdaptError(f"{len(vi)} validation inputs for {len(vt)} targets: they must pair up one to one.")
            keep = _subset(len(vi), p["val_size"], p["seed"])
            return (list(zip(inputs, targets, strict=True)), [(vi[i], vt[i]) for i in keep],
                    f"{len(keep)} of {len(vi)} validation pairs (seeded)")
        if len(inputs) < 2:
            raise AdaptError(f"the {self.name} rung needs validation pairs (or at least 2 training pairs to hold "
                             "some out) for early stopping.")
        n_val = min(p["val_size"], max(1, len(inputs) // 10))
        held = set(_subset(len(inputs), n_val, p["seed"]))
        train = [(x, y) for i, (x, y) in enumerate(zip(inputs, targets, strict=True)) if i not in held]
        val = [(inputs[i], targets[i]) for i in sorted(held)]
        return train, val, f"{len(val)} training pairs held out (no validation pairs given)"

    def _fit_pairs(self, train: list[tuple[str, str]], val: list[tuple[str, str]], spec: GenSpec,
                   p: dict[str, Any], t0: float, *, extra: dict[str, Any] | None = None,
                   reserve_s: float = 0.0) -> Any:
        from adaptladder.generation.decode import max_new_tokens_for
        from adaptladder.generation.sft import train_sft

        metric = _metric_for(spec)
        gen = self._generator(self._student_lm(p), p)
        budget = float(p["budget_minutes"]) - (time.perf_counter() - t0 + reserve_s) / 60
        if budget <= 0:
            # a budget problem, not bad input: the ladder records the rung as skipped and climbs on
            raise BudgetExceeded(f"over budget: the {self.name} rung's budget ({p['budget_minutes']} min) was spent "
                                 "before training started (e.g. by the teacher's labelling): raise --budget-minutes "
                                 f"(or --set {self.name}.budget_minutes=...)")
        mnt = spec.max_new_tokens or max_new_tokens_for([y for _, y in train], gen.count_tokens)
        # the ladder's evaluation after fit (spec.extra, set when the rung has a budget): kept out of training
        cfg = self._sft_config(p, mnt, budget, (spec.extra or {}).get("eval_reserve_generations", 0.0))
        res = train_sft(gen, train, val, spec.instruction, scorer(spec, metric), config=cfg, method=self.method,
                        log=lambda m: log.info("%s: %s", self.name, m))
        self.gen_, self.model_ = gen, res.model
        self.spec_ = replace(spec, max_new_tokens=int(mnt), seed=int(p["seed"]))
        model, _ = gen._load()
        n_train = sum(int(x.numel()) for x in res.model.parameters() if x.requires_grad)
        n_all = sum(int(x.numel()) for x in model.parameters())
        self.info_ = {
            "method": self.method, "metric": metric, "train_pairs": len(train), "val_pairs": len(val),
            "val_check_pairs": res.val_check.get("pairs"), "val_check": res.val_check,
            "throughput": res.val_check.get("throughput"),
            "best_val_score": res.best_score, "best_step": res.best_step, "steps": res.steps,
            "stopped": res.stopped, "seconds": round(time.perf_counter() - t0, 2),
            "train_seconds": round(res.seconds, 2), "budget_minutes": p["budget_minutes"],
            "trainable_params": n_train, "total_params": n_all, "device": getattr(gen.backend, "device", "cpu"),
            "history": res.history,
            "config": {k: v for k, v in res.config.items() if k not in ("budget_minutes",)},
            **(extra or {})}
        self.info_.update(training_verdict(res, len(train), self.method, p))
        self.decoding_ = self._decoding(gen)
        return res

    def _decoding(self, gen: Any) -> dict[str, Any]:
        return {"decoding": "greedy", "max_new_tokens": int(self.spec_.max_new_tokens), "batch_size": gen.batch_size,
                "constrained": None, "chat_template": bool(getattr(gen.tokenizer, "chat_template", None)),
                "prompt": "zero-shot (instruction + input)"}

    # -------------------------------------------------------------- generate
    def prompts_used(self, inputs: Sequence[str]) -> list[str]:
        self._check_fitted()
        return [self.gen_.build_prompt(x, self.spec_.instruction) for x in inputs]

    def generate(self, inputs: Sequence[str]) -> list[str]:
        self._check_fitted()
        if self.gen_ is None:
            raise AdaptError(f"the {self.name} rung has no model loaded: fit it or load it with load_gen_rung.")
        out = self.gen_.generate(self.prompts_used(inputs), max_new_tokens=int(self.spec_.max_new_tokens))
        self.last_usage = {"new_tokens": int(sum(out.new_tokens)), "prompt_tokens": int(sum(out.prompt_tokens)),
                           "seconds": out.seconds, "n": len(out.texts), "truncated": int(sum(out.truncated)),
                           "new_tokens_per_example": list(out.new_tokens)}
        self.decoding_ = {**out.settings, "prompt": "zero-shot (instruction + input)"}
        return out.texts

    def extra_info(self) -> dict[str, Any]:
        return {"training": self.info_, "decoding": self.decoding_}

    # -------------------------------------------------------------- persistence
    def _save(self, path: Path) -> None:
        if self.model_ is None:
            raise AdaptError(f"the {self.name} rung holds no trained model to save.")
        self._save_weights(path)
        (path / INFO_FILE).write_text(json.dumps({"training": self.info_, "decoding": self.decoding_}, indent=1,
                                                 default=str))

    def _save_weights(self, path: Path) -> None:
        self.model_.save_pretrained(str(path / "adapter"), safe_serialization=True)

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> GenRung:
        rung = super()._load(path, meta)
        assert isinstance(rung, LoraSFT)
        p = rung.run_settings(rung.spec_)
        rung._load_weights(path, p)
        info_file = path / INFO_FILE
        if info_file.is_file():
            info = json.loads(info_file.read_text(encoding="utf-8"))
            rung.info_, rung.decoding_ = info.get("training", {}), info.get("decoding", {})
        return rung

    def _load_weights(self, path: Path, p: dict[str, Any]) -> None:
        from adaptladder.generation.sft import load_lora_adapters

        self.gen_ = self._generator(self._student_lm(p), p)
        self.model_ = load_lora_adapters(self.gen_, path / "adapter")


class FullSFT(LoraSFT):
    """Supervised fine-tuning of every weight of the causal LM."""

    name = "full-sft"
    cost_rank = 70
    description = "Full SFT: every weight of the causal LM trained on (prompt, target) pairs, loss on the target only"
    method = "full"
    default_lr = 2e-5

    def _save_weights(self, path: Path) -> None:
        out = path / "model"
        self.model_.save_pretrained(str(out), safe_serialization=True)
        self.gen_.tokenizer.save_pretrained(str(out))

    def _load_weights(self, path: Path, p: dict[str, Any]) -> None:
        if not (path / "model" / "config.json").is_file():
            raise AdaptError(f"{path / 'model'} holds no saved model (config.json is missing): re-run full-sft "
                             "with --fresh.")
        self.gen_ = self._generator(str(path / "model"), p)
        self.model_, _ = self.gen_._load()


class QloraSFT(LoraSFT):
    """LoRA over a 4-bit NF4 base (bitsandbytes): CUDA only; without CUDA skipped with an estimate."""

    name = "qlora-sft"
    cost_rank = 65
    description = "QLoRA SFT: LoRA adapters over a 4-bit (NF4) base LM; needs CUDA + bitsandbytes"
    method = "qlora"

    @classmethod
    def training_shape(cls, params: dict[str, Any], inputs: Sequence[str], targets: Sequence[str],
                       instruction: str) -> dict[str, Any]:
        """The training pairs and their token lengths (:func:`training_shape`), for the estimate of a
        skip; the ladder puts it in ``spec.extra["training_shape"]``."""
        d = cls.Settings.defaults()
        seq = params.get("max_length") or d["max_length"]
        return training_shape(params.get("lm") or d["lm"], inputs, targets, instruction,
                              max_length=int(seq))

    @classmethod
    def unavailable_reason(cls, params: dict[str, Any], spec: GenSpec | None = None) -> str | None:
        if not cuda_available():
            est = cls.skip_details(params, spec).get("estimate")
            if isinstance(est, dict) and est.get("gpu_memory_gb") is not None and est.get("train_hours") is not None:
                usd = est.get("train_cost_usd")
                cost = "" if usd is None else f", ${usd:.3f}"
                return (f"needs CUDA (est. {est['gpu_memory_gb']:.2f} GB GPU, {est['train_hours'] * 60:.1f} min"
                        f"{cost} on {est.get('device_assumed', 'a GPU')} for {est['data']} x "
                        f"{est['epochs']} epochs; 4-bit QLoRA runs on bitsandbytes CUDA kernels)")
            return "needs CUDA (4-bit QLoRA runs on bitsandbytes CUDA kernels; this machine has no CUDA GPU)"
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            return "needs bitsandbytes (pip install bitsandbytes on the CUDA machine)"
        return None

    @classmethod
    def skip_details(cls, params: dict[str, Any], spec: GenSpec | None = None) -> dict[str, Any]:
        """The GPU memory / time / cost the rung would need; never raises (a skip must not crash a run).

        With ``spec.extra["training_shape"]`` (the task's training pairs and token lengths, see
        :meth:`training_shape`) the estimate is for that many examples, memory at the longest example
        and time at their mean length; without it, ``n_examples`` (else an assumed 1,000) at
        ``max_length`` tokens each, and ``data`` says so."""
        d = cls.Settings.defaults()
        try:
            lm = params.get("lm") or d["lm"]
            max_len = int(params.get("max_length") or d["max_length"])
            batch = int(params.get("batch_size") or d["batch_size"])
            epochs = params.get("max_epochs") or d["max_epochs"]
            r = int(params.get("r") or d["r"])
            shape = (spec.extra.get("training_shape") if spec is not None else None) or {}
            lengths = shape.get("example_tokens") if not shape.get("error") else None
            if shape.get("pairs") and lengths:
                examples, seq, per_example = int(shape["pairs"]), max(1, int(lengths["max"])), lengths["mean"]
                data = (f"the task's {examples} training pairs (prompt + target {per_example:.0f} tokens mean, "
                        f"{seq} max)")
            elif shape.get("pairs"):
                examples, seq, per_example = int(shape["pairs"]), max_len, None
                data = f"the task's {examples} training pairs at max_length {seq} tokens (lengths not counted)"
            else:
                examples, seq, per_example = int(params.get("n_examples") or 1000), max_len, None
                data = (f"{examples} examples at max_length {seq} tokens "
                        f"({'given as n_examples' if params.get('n_examples') else 'assumed: training size unknown'})")
            from adaptladder.estimate import rung_estimate

            est = rung_estimate(lm, "qlora", examples=examples, epochs=float(epochs), seq_len=seq, batch=batch,
                                lora_r=r, lora_targets=("q", "v"), head="lm",
                                tokens_per_example=None if per_example is None else max(1, round(per_example)))
            if "error" in est:
                return {"estimate": None, "estimate_error": est["error"]}
            comp = est["compute"]
            return {"estimate": {
                "estimator": "adaptladder.estimate (see docs/estimator.md)",
                "model": est["model"], "method": "qlora", "seq_len": seq, "batch": batch, "examples": examples,
                "tokens_per_example": per_example if per_example is not None else seq, "data": data,
                "epochs": epochs, "lora_r": r, "params": est["params"]["total"],
                "trainable_params": est["params"]["trainable"], "gpu_memory_gb": round(est["peak_bytes"] / 1e9, 3),
                "peak_gib": est["peak_gib"], "train_hours": float(f"{float(comp['hours']):.4g}"),
                "device_assumed": comp["gpu"],
                "train_cost_usd": None if comp["cost_usd"] is None else float(f"{float(comp['cost_usd']):.4g}"),
                "smallest_gpu": est["smallest_gpu"]}}
        except Exception as e:  # a skipped rung must not crash: say why there is no estimate
            return {"estimate": None, "estimate_error": f"{type(e).__name__}: {e}"}

    def _generator(self, lm: Any, p: dict[str, Any]) -> Any:
        """The base LM loaded in 4-bit NF4 on the GPU (bf16 compute), wrapped in a Generator."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

        from adaptladder.generation.decode import Generator
        from adaptladder.models import resolve_lm

        path = resolve_lm(lm) if isinstance(lm, str) else lm
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
        try:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, quantization_config=q, device_map={"": 0})
        except OSError as e:
            raise AdaptError(f"could not load language model {lm!r} in 4-bit ({str(e).splitlines()[0]}).") from e
        return Generator((model, tok), batch_size=p["gen_batch_size"], threads=p["threads"], device="cuda")

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> GenRung:
        if not cuda_available():
            raise AdaptError(f"{path} holds a QLoRA adapter on a 4-bit base, which needs CUDA to load.")
        return super()._load(path, meta)


class DistillSFT(LoraSFT):
    """A teacher rung labels unlabelled inputs; a LoRA student is trained on its outputs."""

    name = "distill"
    family = "distill"
    cost_rank = 80
    description = ("Distillation: a teacher rung (default few-shot) labels extra inputs; a LoRA student learns "
                   "from its outputs and answers with the zero-shot prompt")
    Settings = DistillSFTSettings

    def _student_lm(self, p: dict[str, Any]) -> Any:
        return p["student_lm"] or p["lm"]

    def params_record(self) -> dict[str, Any]:
        """``unlabelled_inputs`` as their count and SHA-256 in ``rung.json``: the saved metadata does
        not grow with (or copy) the data; loading and generating need only the student's adapters."""
        given = self.params.get("unlabelled_inputs")
        if given is None or isinstance(given, dict):
            return self.params
        texts = [str(x) for x in given]
        digest = hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode("utf-8")).hexdigest()
        return {**self.params, "unlabelled_inputs": {"count": len(texts), "sha256": digest}}

    def _teacher(self, p: dict[str, Any]) -> GenRung:
        from adaptladder.generation.rungs import GEN_RUNGS, get_gen_rung_class, make_gen_rung

        name = p["teacher"]
        if name not in GEN_RUNGS or name == self.name:
            raise AdaptError(f"unknown distill teacher {name!r}: use another generation rung, e.g. few-shot.")
        tp = dict(p["teacher_params"] or {})
        try:
            if "lm" in get_gen_rung_class(name).Settings.defaults():
                tp.setdefault("lm", p["lm"])
            return make_gen_rung(name, **tp)
        except (ImportError, AttributeError) as e:
            raise AdaptError(f"the distill teacher {name!r} is not available in this build ({e}); pass "
                             "teacher=<another generation rung>.") from e

    def fit(self, inputs: Sequence[str], targets: Sequence[str], *, spec: GenSpec,
            val_inputs: Sequence[str] | None = None, val_targets: Sequence[str] | None = None) -> DistillSFT:
        from adaptladder.generation.metrics import parse_json

        p = self.run_settings(spec)
        share = p["teacher_budget_share"]
        inputs, targets = list(inputs), list(targets)
        if len(inputs) != len(targets) or not inputs:
            raise AdaptError("distill needs training pairs (inputs and targets of the same, non-zero length).")
        t0 = time.perf_counter()
        train, val, val_note = self._split_val(inputs, targets, val_inputs, val_targets, p)
        # the teacher's labelled subset; the rest of train are the student's unlabelled inputs
        lab = _subset(len(train), p["labelled"], p["seed"])
        labelled = [train[i] for i in lab]
        if isinstance(p["unlabelled_inputs"], dict):
            raise AdaptError("this distill rung was loaded from disk, where only the count and hash of its "
                             "unlabelled_inputs are kept: pass unlabelled_inputs again to fit it.")
        if p["unlabelled_inputs"] is not None:
            pool = [str(x) for x in p["unlabelled_inputs"]]
            source = f"{len(pool)} unlabelled_inputs given"
        else:
            chosen = set(lab)
            pool = [x for i, (x, _) in enumerate(train) if i not in chosen]
            source = "training inputs outside the teacher's labelled subset (their targets unused)"
            if not pool:
                pool = [x for x, _ in train]
                source = "all training inputs (no training pairs outside the labelled subset)"
        pool = [pool[i] for i in _subset(len(pool), int(p["max_unlabelled"] or len(pool)), p["seed"] + 1)]
        if not pool:
            raise AdaptError("distill has no unlabelled inputs for the teacher: give unlabelled_inputs or more "
                             "training pairs.")
        teacher = self._teacher(p)
        teacher.fit([x for x, _ in labelled], [y for _, y in labelled], spec=spec,
                    val_inputs=[x for x, _ in val], val_targets=[y for _, y in val])
        # teacher outputs in chunks, within its share of the budget
        t_budget = float(p["budget_minutes"]) * 60 * float(share)
        outs: list[tuple[str, str]] = []
        t_gen, t_tokens, labelled_n = 0.0, 0, 0
        chunk = max(8, 2 * int(p["gen_batch_size"]))
        for s in range(0, len(pool), chunk):
            part = pool[s:s + chunk]
            got = teacher.generate(part)
            t_gen += float(teacher.last_usage.get("seconds", 0.0))
            t_tokens += int(teacher.last_usage.get("new_tokens", 0))
            labelled_n += len(part)
            outs += list(zip(part, got, strict=True))
            if time.perf_counter() - t0 > t_budget:
                break
        keep = [(x, y) for x, y in outs if y.strip() and (spec.output != "json" or parse_json(y)[0])]
        if not keep:
            raise AdaptError(f"the distill teacher {p['teacher']!r} gave no usable output for {len(outs)} inputs "
                             "(all empty or unparsable): pick a stronger teacher.")
        from adaptladder.generation.sft import check_order, timed_prefix

        score = scorer(spec)
        val_x, val_y = [x for x, _ in val], [y for _, y in val]
        # the teacher/student table on a prefix of the validation checks' seeded order that the teacher
        # generates within eval_share of the budget (the student's checks use a prefix of the same order)
        order = check_order(len(val), int(p["seed"]))
        t_usage = {"seconds": 0.0, "new_tokens": 0, "prompt_tokens": 0}
        t_rows, t_val, t_spent = timed_prefix(order, partial(self._generate_rows, teacher, val_x, t_usage),
                                              float(p["budget_minutes"]) * 60 * float(p["eval_share"]),
                                              int(p["gen_batch_size"]))
        teacher_prompt = (teacher.prompts_used(val_x[:1]) or [None])[0]
        del teacher
        # the student's table generation (zero-shot prompts: no slower than the teacher's) is reserved
        res = self._fit_pairs(keep, val, spec, p, t0, reserve_s=t_spent, extra={
            "validation": val_note,
            "distill": {"source": source, "teacher": p["teacher"], "labelled_pairs": len(labelled),
                        "unlabelled_offered": len(pool), "teacher_labelled": labelled_n,
                        "teacher_outputs_kept": len(keep), "teacher_seconds": round(t_gen, 2),
                        "teacher_tokens_per_s": round(t_tokens / t_gen, 2) if t_gen > 0 else None}})
        common = order[:min(len(t_rows), int(res.val_check.get("pairs") or len(t_rows)))]
        refs = [val_y[i] for i in common]
        s_val = self.generate([val_x[i] for i in common])
        teacher_row = self._speed_row(f"{p['teacher']} (teacher)", score(t_val[:len(common)], refs), t_usage,
                                      len(t_rows))
        student_row = self._speed_row("lora student", score(s_val, refs), self.last_usage, len(common))
        student_row["best_val_score_in_training"] = res.best_score
        for row, usage, n in ((teacher_row, t_usage, len(t_rows)), (student_row, self.last_usage, len(common))):
            row["prompt_tokens_mean"] = round(usage.get("prompt_tokens", 0) / max(1, n), 1)
            row["scored_pairs"] = len(common)
        self.info_["distill"]["table"] = [teacher_row, student_row]
        self.info_["distill"]["teacher_prompt_example"] = teacher_prompt
        self.info_["seconds"] = round(time.perf_counter() - t0, 2)
        return self

    @staticmethod
    def _generate_rows(rung: GenRung, inputs: list[str], usage: dict[str, float], rows: list[int]) -> list[str]:
        """``rung``'s outputs for ``inputs[rows]``, adding its usage (seconds, tokens) to ``usage``."""
        got = rung.generate([inputs[i] for i in rows])
        for k in usage:
            usage[k] += rung.last_usage.get(k) or 0
        return got

    @staticmethod
    def _speed_row(who: str, val_score: float, usage: dict[str, Any], n: int) -> dict[str, Any]:
        n = max(1, int(n))
        sec = float(usage.get("seconds") or 0.0)
        toks = int(usage.get("new_tokens") or 0)
        return {"model": who, "val_score": round(float(val_score), 4), "n": n,
                "tokens_per_s": round(toks / sec, 2) if sec > 0 else None,
                "latency_ms_per_example_batched": round(1000 * sec / n, 1), "seconds": round(sec, 2)}

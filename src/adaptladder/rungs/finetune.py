"""Fine-tuning rungs: prompt tuning, LoRA, QLoRA (CUDA only) and full fine-tuning.

All four train a sequence-classification model (default: the packaged all-MiniLM-L6-v2
encoder with a fresh classification head) with one compact torch loop, written here rather
than taken from ``transformers.Trainer`` because the ladder needs things Trainer makes awkward
on a shared 2-core CPU: a wall-clock budget that ends training cleanly and keeps the best
weights *in memory*, a learning-rate schedule that shrinks to the steps the budget affords,
peak-memory sampling, tokens/s that count real (not padded) tokens, and no accelerate /
output-dir machinery for a 20-line job.

What a user can rely on:

* early stopping on validation macro-F1 (``patience`` evaluations without improvement);
  the best weights seen are restored before ``fit`` returns;
* ``budget_minutes`` caps wall time per rung (training + its evaluations);
* class-weighted cross-entropy when the training labels are imbalanced;
* ``max_length`` from the data (a percentile of the training token lengths, capped by the
  model's limit) instead of a fixed 512, and length-bucketed batches with dynamic padding;
* seeded, deterministic training (same seed and thread count -> same weights) whenever the
  budget does not bind; a binding budget makes the step count (and the learning-rate schedule,
  which shrinks to the steps the budget affords) depend on the machine's speed, and
  ``extra_info`` says so (``stopped_by``, ``schedule_steps``);
* artefacts: PEFT adapters as safetensors (``save_pretrained``) or the full model in
  Hugging Face format, plus the tokenizer; ``load_rung`` gives identical predictions.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from adaptladder import models
from adaptladder.errors import AdaptError
from adaptladder.measure import PeakMemory
from adaptladder.rungs.base import Rung, check_inputs
from adaptladder.rungs.settings import (
    LoraFields,
    RungSettings,
    SettingError,
    positive_int,
    positive_number,
    setting,
)

META_FILE = "finetune.json"

#: LoRA target modules per architecture (attention query and value projections, as in the
#: LoRA paper); anything else falls back to PEFT's own per-architecture table.
LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "camembert": ["query", "value"],
    "electra": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "mpnet": ["q", "v"],
    "deberta-v2": ["query_proj", "value_proj"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "gemma2": ["q_proj", "v_proj"],
    "gemma3_text": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"],
    "gpt2": ["c_attn"],
}

@dataclass
class FinetuneSettings(RungSettings):
    """Settings shared by the fine-tuning rungs (prompt tuning, LoRA, QLoRA, full fine-tuning)."""

    run_values: ClassVar[dict[str, str]] = {"encoder": "encoder", "seed": "seed", "budget_minutes": "budget_minutes"}

    model: str | None = setting(None, help="backbone: packaged alias, Hugging Face id or local checkpoint folder; "
                                          "unset: the run's --encoder (minilm)")
    encoder: str | None = setting(None, help="the run's --encoder, the backbone when model is unset")
    max_epochs: int = setting(3, help="passes over the training split (early stopping may end sooner)")
    batch_size: int = setting(16, help="training examples per step")
    lr: float | None = setting(None, help="peak learning rate; unset: the method's default")
    warmup_ratio: float = setting(0.06, help="share of the steps with a linear learning-rate warm-up, in [0, 1)")
    weight_decay: float = setting(0.01, help="AdamW weight decay (not on biases and norms)")
    patience: int = setting(3, help="evaluations without a better validation macro-F1 before stopping")
    eval_every: int | Literal["auto"] = setting("auto", help="steps between validation evaluations; auto: about "
                                                             "four per epoch")
    budget_minutes: float = setting(10.0, help="wall-time cap of the training (the run's --budget-minutes); the "
                                               "best weights so far are kept")
    class_weight: Literal["auto", "balanced", "none"] | None = setting(
        "auto", help="class-weighted loss: auto (when the largest class is >= 2x the smallest), balanced, none")
    max_length: int | Literal["auto"] = setting("auto", help="tokens per text; auto: length_percentile of the "
                                                             "training token lengths, capped by the model")
    length_percentile: float = setting(95, help="percentile of training token lengths for max_length=auto "
                                                "(50-100)")
    max_eval: int = setting(1000, help="validation examples used for early stopping (stratified sample)")
    seed: int = setting(0, help="seed of the head, the batches and dropout (the run's --seed)")
    precision: Literal["auto", "fp32", "bf16"] = setting("auto", help="bf16 autocast (fp32 master weights) or "
                                                                      "fp32; auto: bf16 where the CPU/GPU computes "
                                                                      "it natively")
    progress: bool = setting(True, help="show a progress bar while training")
    threads: int | Literal["auto"] = setting("auto", help="torch CPU threads: auto or an integer")

    def check(self) -> None:
        positive_int(self, "max_epochs", "batch_size", "patience", "max_eval")
        positive_number(self, "lr", allow_none=True)
        positive_number(self, "budget_minutes")
        if not 0 <= self.warmup_ratio < 1:
            raise SettingError("warmup_ratio", self.warmup_ratio, "a number in [0, 1)")
        if self.weight_decay < 0:
            raise SettingError("weight_decay", self.weight_decay, "a number >= 0")
        if self.eval_every != "auto":
            positive_int(self, "eval_every")
        if self.max_length != "auto" and self.max_length < 4:
            raise SettingError("max_length", self.max_length, "'auto' or an integer >= 4 (tokens)")
        if not 50 <= self.length_percentile <= 100:
            raise SettingError("length_percentile", self.length_percentile, "a number between 50 and 100")
        if self.model is not None and not self.model:
            raise SettingError("model", self.model, "a packaged alias (minilm), a Hugging Face id or a local "
                                                    "checkpoint folder")
        if self.threads != "auto":
            positive_int(self, "threads")


@dataclass
class LoraSettings(LoraFields, FinetuneSettings):
    """The fine-tuning settings plus the LoRA fields every kind of task shares (:class:`LoraFields`)."""


@dataclass
class QloraSettings(LoraSettings):
    model: str | None = setting(models.DEFAULT_LM, help="base model quantised to 4 bits (a causal LM alias, "
                                                        "Hugging Face id or folder)")
    r: int = setting(16, help="LoRA rank")
    alpha: float = setting(32, help="LoRA scaling alpha (the update is scaled by alpha / r)")
    target_modules: list[str] | Literal["all-linear"] | None = setting(
        "all-linear", help="modules that get adapters: a list of names, 'all-linear', or unset (PEFT's table)")


@dataclass
class PromptTuningSettings(FinetuneSettings):
    num_virtual_tokens: int = setting(20, help="learned soft-prompt tokens (1-256)")
    prompt_init: Literal["random", "vocab"] = setting("random", help="initial prompt embeddings: random, or "
                                                                     "vocab (sampled from the vocabulary)")

    def check(self) -> None:
        super().check()
        positive_int(self, "num_virtual_tokens")
        if self.num_virtual_tokens > 256:
            raise SettingError("num_virtual_tokens", self.num_virtual_tokens, "an integer in 1..256")


# ---------------------------------------------------------------------------- helpers
def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def choose_max_length(lengths: Sequence[int], percentile: float, model_max: int) -> tuple[int, str]:
    """A percentile of the training token lengths, rounded up to a multiple of 8, capped by the model."""
    if not lengths:
        return min(128, model_max), "no training texts; default 128"
    p = float(np.percentile(np.asarray(lengths), percentile))
    chosen = int(min(model_max, max(8, math.ceil(p / 8) * 8)))
    longest = int(max(lengths))
    truncated = float(np.mean(np.asarray(lengths) > chosen))
    reason = (f"p{percentile:g} of {len(lengths)} training token lengths is {p:.0f} (max {longest}); "
              f"rounded up to a multiple of 8 and capped by the model limit {model_max}: {chosen} "
              f"({truncated:.1%} of training texts truncated)")
    return chosen, reason


def length_buckets(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                   pool: int = 50) -> list[np.ndarray]:
    """Shuffled batches of similar length: shuffle, sort within pools of ``pool`` batches, shuffle batches.

    Padding then costs little (batches are padded to their own longest text) while the order
    stays random enough for SGD.
    """
    order = rng.permutation(len(lengths))
    batches: list[np.ndarray] = []
    step = batch_size * pool
    for i in range(0, len(order), step):
        chunk = order[i:i + step]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)  # type: ignore[arg-type]
    return batches


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> tuple[np.ndarray | None, str]:
    """Inverse-frequency ("balanced") weights; ``auto`` turns them on when the largest class is >= 2x the smallest."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    present = counts[counts > 0]
    ratio = float(present.max() / present.min()) if len(present) else 1.0
    if mode == "none" or (mode == "auto" and ratio < 2.0):
        return None, f"none (largest/smallest class = {ratio:.1f})"
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return w, f"balanced (largest/smallest class = {ratio:.1f})"


def stratified_holdout(y: np.ndarray, frac: float, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held out) with about ``frac`` of each class held out (at most ``cap`` in all)."""
    rng = np.random.default_rng(seed)
    n_hold = min(cap, max(1, round(len(y) * frac)))
    hold: list[int] = []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        m = round(n_hold * len(idx) / len(y))
        if len(idx) > 1 and m > 0:
            hold.extend(rng.choice(idx, size=min(m, len(idx) - 1), replace=False).tolist())
    held = np.sort(np.asarray(hold, dtype=int))
    keep = np.setdiff1d(np.arange(len(y)), held)
    return keep, held


def stratified_cap(y: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """At most ``cap`` indices, class proportions kept (validation used for early stopping only)."""
    if len(y) <= cap:
        return np.arange(len(y))
    _, held = stratified_holdout(y, cap / len(y), cap, seed)
    return held


def _cuda_peak_mb() -> float:
    """Peak GPU memory held by tensors since the last reset (torch's caching allocator), in MiB."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch is a hard dependency
        return False


@dataclass
class TrainingStart:
    """What :func:`start_training` set up: the trainable tensors, AdamW over them, the budget clock."""

    params: list[Any]
    opt: Any
    budget_s: float
    clock: Callable[[], float]
    t0: float

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()


def start_training(model: Any, *, lr: float, weight_decay: float, budget_minutes: float, who: str,
                   decay_vectors: bool = False, clock: Callable[[], float] = time.perf_counter) -> TrainingStart:
    """The setup both fine-tuning loops share (this module's classification loop and the generation SFT
    loop, :func:`adaptladder.generation.sft.train_sft`): ``model``'s trainable tensors (an error naming
    ``who`` when there are none), AdamW over them with ``weight_decay`` on matrices and none on vectors
    (biases, norms) unless ``decay_vectors``, and the wall-clock budget started now on ``clock``."""
    import torch

    named = [(n, t) for n, t in model.named_parameters() if t.requires_grad]
    if not named:
        raise AdaptError(f"{who} has no trainable parameters for this model.")
    if decay_vectors:
        groups = [{"params": [t for _, t in named], "weight_decay": weight_decay}]
    else:
        groups = [{"params": [t for _, t in named if t.ndim >= 2], "weight_decay": weight_decay},
                  {"params": [t for _, t in named if t.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr)
    return TrainingStart([t for _, t in named], opt, float(budget_minutes) * 60, clock, clock())


def resolve_model(name: str) -> str:
    """Packaged alias -> local folder; anything else (HF id, path) unchanged."""
    if name in models.ENCODER_ALIASES:
        return models.resolve_encoder(name)
    if name == getattr(models, "DEFAULT_LM", "smollm2") or name in getattr(models, "LM_ALIASES", {}):
        resolve_lm = getattr(models, "resolve_lm", None)
        if resolve_lm is None:
            raise AdaptError(f"the {name!r} alias needs adaptladder.models.resolve_lm, which this build lacks; "
                             "pass a local Hugging Face checkpoint folder as model= instead.")
        return str(resolve_lm(name))
    return name


# ---------------------------------------------------------------------------- the rung
class FinetuneRung(Rung):
    """Shared machinery; subclasses say which parameters train (``_prepare``)."""

    family: ClassVar[str] = "finetune"
    #: the training loop calls ``self.on_validation(record)`` (when set) after each validation evaluation
    #: (a sweep on Ray Tune reports it, so ASHA can stop weak trials early)
    validation_hook: ClassVar[bool] = True
    method: ClassVar[str] = ""
    default_lr: ClassVar[float] = 5e-5
    uses_peft: ClassVar[bool] = True

    Settings: ClassVar[type[RungSettings]] = FinetuneSettings

    # -------------------------------------------------------------- parameters
    def _p(self) -> dict[str, Any]:
        """The settings as a dict, with the backbone and learning rate resolved."""
        p = self.settings.values()
        encoder = p.pop("encoder")
        if p["model"] is None:  # the run's encoder is the backbone unless model= says otherwise
            if self.method == "qlora":
                p["model"] = models.DEFAULT_LM
            else:
                p["model"] = encoder if encoder is not None else models.DEFAULT_ENCODER
        if p["lr"] is None:
            p["lr"] = self.default_lr
        return p

    # -------------------------------------------------------------- model loading
    @staticmethod
    def _is_decoder(config: Any) -> bool:
        archs = getattr(config, "architectures", None) or []
        return any(a.endswith("ForCausalLM") for a in archs) or config.model_type in {
            "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "gpt2"}

    def _load_tokenizer(self, source: str, decoder: bool) -> Any:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(source)
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise AdaptError(f"the tokenizer of {source} has neither a pad nor an eos token; "
                                 "use a model whose tokenizer defines one.")
            tok.pad_token = tok.eos_token
        # Left padding for decoders: their classifier reads the last position, and a prompt-tuned
        # model gets only embeddings (no ids to find the last real token with).
        tok.padding_side = "left" if decoder else "right"
        return tok

    def _load_base(self, source: str, n_labels: int, seed: int, quantize: bool = False) -> tuple[Any, list[str]]:
        """A sequence classifier over ``source`` and the names of weights the checkpoint lacked."""
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification

        try:
            config = AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as e:
            raise AdaptError(f"cannot load model {source!r}: {str(e).splitlines()[0]} "
                             "(pass a packaged alias such as minilm or a local checkpoint folder).") from e
        kwargs: dict[str, Any] = {"num_labels": n_labels}
        if quantize:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16)
            kwargs["device_map"] = {"": 0}
        torch.manual_seed(seed)  # freshly initialised weights (the head) are the same on every load
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                source, output_loading_info=True, **kwargs)
        except (OSError, ValueError, KeyError) as e:
            raise AdaptError(f"cannot load {source!r} as a sequence classifier: {str(e).splitlines()[0]}") from e
        missing = [k for k in info.get("missing_keys", []) if k.split(".")[0] not in ("classifier", "score")]
        del config
        return model, sorted({k.rsplit(".", 1)[0] for k in missing})

    def _prepare(self, model: Any, p: dict[str, Any], decoder: bool, missing: list[str]) -> Any:
        """Wrap / freeze ``model`` for this method; returns the model to train."""
        raise NotImplementedError

    def _model_max(self, tok: Any, model: Any, p: dict[str, Any]) -> int:
        cfg = model.config
        limits = [512]  # a CPU-sane ceiling; longer needs a GPU anyway
        mp = getattr(cfg, "max_position_embeddings", None)
        if isinstance(mp, int) and mp > 0:
            # BERT-style models reserve 2 positions in RoBERTa; stay safely below
            limits.append(mp - (2 if cfg.model_type in ("roberta", "xlm-roberta", "camembert") else 0))
        tm = getattr(tok, "model_max_length", None)
        if isinstance(tm, int) and 0 < tm < 10**6:
            limits.append(tm)
        return min(limits) - self._extra_positions(p)

    def _extra_positions(self, p: dict[str, Any]) -> int:
        return 0

    # -------------------------------------------------------------- fit
    def fit(self, texts: Sequence[str], y: np.ndarray, *, label_names: Sequence[str],
            val_texts: Sequence[str] | None = None, val_y: np.ndarray | None = None) -> FinetuneRung:

        p = self._p()
        reason = self.unavailable_reason(self.params)
        if reason:
            from adaptladder.errors import NeedsCuda

            raise NeedsCuda(f"the {self.name} rung {reason}")
        texts, y = check_inputs(texts, y)
        assert y is not None
        if len(texts) < 2:
            raise AdaptError(f"the {self.name} rung needs at least 2 training texts, got {len(texts)}.")
        n_classes = len(label_names)
        if n_classes < 2 or y.min() < 0 or y.max() >= n_classes:
            raise AdaptError(f"labels must be codes 0..{n_classes - 1} for {n_classes} label names "
                             "(a classifier needs at least 2 classes).")
        val_source = "given"
        if val_texts is None or val_y is None or len(val_texts) == 0:
            keep, held = stratified_holdout(y, 0.1, p["max_eval"], p["seed"])
            if len(held) and len(keep) >= 2:
                val_texts, val_y = [texts[i] for i in held], y[held]
                texts, y = [texts[i] for i in keep], y[keep]
                val_source = f"held out from train ({len(held)} texts, stratified)"
            else:
                val_texts, val_y, val_source = None, None, "none (training runs max_epochs)"
        else:
            val_texts, val_y = check_inputs(val_texts, val_y)
            assert val_y is not None
            sel = stratified_cap(val_y, p["max_eval"], p["seed"])
            if len(sel) < len(val_y):
                val_source = f"given, stratified sample of {len(sel)} of {len(val_y)}"
            val_texts, val_y = [val_texts[i] for i in sel], val_y[sel]

        self.source_ = resolve_model(p["model"])
        device = "cuda" if cuda_available() else "cpu"
        if device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        with _deterministic(), _torch_threads(p["threads"]) as threads_used, PeakMemory() as mem:
            t_load = time.perf_counter()
            model, missing = self._load_base(self.source_, n_classes, p["seed"], quantize=self.method == "qlora")
            decoder = self._is_decoder(model.config)
            tok = self._load_tokenizer(self.source_, decoder)
            if model.config.pad_token_id is None:
                model.config.pad_token_id = tok.pad_token_id
            model = self._prepare(model, p, decoder, missing)
            if self.method != "qlora":
                model.to(device)
            load_seconds = time.perf_counter() - t_load

            lengths = [len(ids) for ids in tok(texts, add_special_tokens=True, truncation=False)["input_ids"]]
            model_max = self._model_max(tok, model, p)
            if p["max_length"] == "auto":
                max_length, ml_reason = choose_max_length(lengths, p["length_percentile"], model_max)
            else:
                max_length = min(int(p["max_length"]), model_max)
                ml_reason = f"set by the user ({p['max_length']}), capped by the model limit {model_max}"
            self.tokenizer_, self.model_, self.max_length_ = tok, model, max_length
            self.label_names_ = list(label_names)
            self.decoder_, self.device_ = decoder, device
            weights, weight_desc = class_weights(y, n_classes, p["class_weight"] or "none")
            stats = self._train(p, texts, y, val_texts, val_y, weights, device)
        n_total = sum(t.numel() for t in model.parameters())
        n_train = self.trainable_params_
        self.info_ = {
            "method": self.method, "model": p["model"], "model_source": self.source_, "device": device,
            "architecture": model.config.model_type, "decoder": decoder,
            "trainable_params": n_train, "total_params": n_total,
            "trainable_pct": round(100.0 * n_train / max(n_total, 1), 4),
            "max_length": max_length, "max_length_reason": ml_reason,
            "class_weights": None if weights is None else [round(float(w), 4) for w in weights],
            "class_weighting": weight_desc, "validation": val_source,
            "lr": p["lr"], "batch_size": p["batch_size"], "max_epochs": p["max_epochs"],
            "patience": p["patience"], "budget_minutes": p["budget_minutes"],
            "precision": dict(zip(("used", "reason"), _precision_used(p, device), strict=True)),
            "seed": p["seed"], "load_seconds": round(load_seconds, 2),
            "peak_rss_mb": round(mem.peak_mb, 1), "rss_before_fit_mb": round(mem.start_mb, 1),
            "torch_threads": threads_used,
            **({"peak_gpu_mb": round(_cuda_peak_mb(), 1)} if device == "cuda" else {}),
            **stats, **self._method_info(p),
        }
        return self

    def _method_info(self, p: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _batch(self, texts: list[str], idx: np.ndarray | Sequence[int], device: str) -> dict[str, Any]:
        enc = self.tokenizer_([texts[i] for i in idx], truncation=True, max_length=self.max_length_,
                              padding="longest", return_tensors="pt")
        return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def _autocast(self, p: dict[str, Any], device: str) -> contextlib.AbstractContextManager[Any]:
        import torch

        from adaptladder.precision import training_precision

        used, _ = training_precision(str(p["precision"]), device)
        if used == "bf16":
            return torch.autocast(device_type=str(device).split(":")[0], dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _train(self, p: dict[str, Any], texts: list[str], y: np.ndarray, val_texts: list[str] | None,
               val_y: np.ndarray | None, weights: np.ndarray | None, device: str) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        model = self.model_
        torch.manual_seed(p["seed"])
        rng = np.random.default_rng(p["seed"])
        tok_lens = np.asarray([min(n, self.max_length_) for n in
                               (len(i) for i in self.tokenizer_(texts, truncation=True,
                                                                max_length=self.max_length_)["input_ids"])])
        bs = p["batch_size"]
        steps_per_epoch = math.ceil(len(texts) / bs)
        planned = steps_per_epoch * p["max_epochs"]
        eval_every = (max(10, min(250, steps_per_epoch // 3)) if p["eval_every"] == "auto"
                      else int(p["eval_every"]))
        run = start_training(model, lr=p["lr"], weight_decay=p["weight_decay"], budget_minutes=p["budget_minutes"],
                             who=f"the {self.name} rung")
        params, opt = run.params, run.opt
        self.trainable_params_ = sum(t.numel() for t in params)
        # linear warmup / decay over ``total`` steps; ``total`` shrinks to what the budget affords
        sched_state = {"total": planned}

        def lr_lambda(step: int) -> float:
            total = sched_state["total"]
            w = max(1, int(p["warmup_ratio"] * total))
            if step < w:
                return (step + 1) / w
            return max(0.0, (total - step) / max(1, total - w))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        wt = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=device)
        budget = run.budget_s
        history: list[dict[str, Any]] = []
        best = {"f1": -1.0, "step": 0, "state": None}
        stopped_by = "max_epochs"
        step = 0
        seen_examples = seen_tokens = padded_tokens = 0
        train_seconds = eval_seconds = 0.0
        bad_evals = 0
        running_loss: list[float] = []

        def evaluate() -> None:
            nonlocal eval_seconds, bad_evals
            if val_texts is None or val_y is None:
                return
            te = time.perf_counter()
            f1 = macro_f1(val_y, self._predict_proba_raw(val_texts, p).argmax(1), len(self.label_names_))
            model.train()
            eval_seconds += time.perf_counter() - te
            loss = float(np.mean(running_loss)) if running_loss else None
            history.append({"step": step, "epoch": round(step / steps_per_epoch, 3),
                            "loss": None if loss is None else round(loss, 5), "val_macro_f1": round(f1, 5),
                            "elapsed_s": round(run.elapsed(), 2)})
            hook = getattr(self, "on_validation", None)
            if hook is not None:
                hook(history[-1])
            running_loss.clear()
            if f1 > best["f1"] + 1e-9:
                best.update(f1=f1, step=step, state=self._snapshot())
                bad_evals = 0
            else:
                bad_evals += 1
            # shrink the LR schedule to the steps the budget still affords (never grow past the plan)
            elapsed = run.elapsed()
            rate = elapsed / max(step, 1)
            affordable = step + int(max(0.0, budget - elapsed) / rate * 0.95)
            sched_state["total"] = max(step + 1, min(planned, affordable))

        model.train()
        with _progress(p["progress"], f"{self.name}", planned) as bar:
            done = False
            for _epoch in range(p["max_epochs"]):
                for idx in length_buckets(tok_lens, bs, rng):
                    ts = time.perf_counter()
                    batch = self._batch(texts, idx, device)
                    labels = torch.as_tensor(y[idx], dtype=torch.long, device=device)
                    with self._autocast(p, device):
                        logits = model(**batch).logits
                    loss = F.cross_entropy(logits.float(), labels, weight=wt)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    step += 1
                    train_seconds += time.perf_counter() - ts
                    seen_examples += len(idx)
                    seen_tokens += int(batch["attention_mask"].sum())
                    padded_tokens += int(batch["attention_mask"].numel())
                    running_loss.append(float(loss.detach()))
                    if step == 5:  # first guess of the affordable steps; refined after each evaluation
                        rate = run.elapsed() / step
                        sched_state["total"] = max(step + 1, min(planned, int(budget / rate * 0.9)))
                    if step % eval_every == 0:
                        evaluate()
                    bar(step, running_loss[-1] if running_loss else float(loss.detach()),
                        history[-1]["val_macro_f1"] if history else None)
                    if val_texts is not None and bad_evals >= p["patience"]:
                        stopped_by, done = "early_stop", True
                        break
                    if run.left() <= 0:
                        stopped_by, done = "budget", True
                        break
                if done:
                    break
            if not history or history[-1]["step"] != step:
                evaluate()
        if best["state"] is not None:
            self._restore(best["state"])
        model.eval()
        total_s = run.elapsed()
        return {
            "stopped_by": stopped_by, "steps": step, "planned_steps": planned,
            "schedule_steps": sched_state["total"],
            "steps_per_epoch": steps_per_epoch, "epochs_run": round(step / steps_per_epoch, 3),
            "eval_every": eval_every, "best_step": best["step"] if best["state"] is not None else step,
            "best_val_macro_f1": None if best["state"] is None else round(best["f1"], 5),
            "train_seconds": round(train_seconds, 2), "eval_seconds": round(eval_seconds, 2),
            "fit_loop_seconds": round(total_s, 2),
            "seconds_per_step": round(train_seconds / max(step, 1), 4),
            "train_examples_per_s": round(seen_examples / max(train_seconds, 1e-9), 2),
            "train_tokens_per_s": round(seen_tokens / max(train_seconds, 1e-9), 1),
            "padded_tokens_per_s": round(padded_tokens / max(train_seconds, 1e-9), 1),
            "padding_overhead": round(padded_tokens / max(seen_tokens, 1) - 1, 4),
            "history": history,
        }

    def _snapshot(self) -> dict[str, Any]:
        """A CPU copy of the trainable weights (all weights for full fine-tuning)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model_.named_parameters() if v.requires_grad}

    def _restore(self, state: dict[str, Any]) -> None:
        import torch

        named = dict(self.model_.named_parameters())
        with torch.no_grad():
            for k, v in state.items():
                named[k].copy_(v.to(named[k].device))

    # -------------------------------------------------------------- predict
    def _predict_proba_raw(self, texts: list[str], p: dict[str, Any] | None = None,
                           batch_size: int = 64) -> np.ndarray:
        import torch

        p = p or self._p()
        model = self.model_
        model.eval()
        if not texts:
            return np.zeros((0, len(self.label_names_)))
        lens = np.asarray([len(t) for t in texts])
        order = np.argsort(-lens, kind="stable")  # similar lengths together: less padding
        out = np.zeros((len(texts), len(self.label_names_)), dtype=np.float64)
        with torch.inference_mode(), self._autocast(p, self.device_), _torch_threads(p.get("threads", "auto")):
            for i in range(0, len(order), batch_size):
                idx = order[i:i + batch_size]
                logits = model(**self._batch(texts, idx, self.device_)).logits.float()
                out[idx] = torch.softmax(logits, dim=-1).cpu().numpy()
        return out / out.sum(axis=1, keepdims=True)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        texts, _ = check_inputs(texts)
        return self._predict_proba_raw(texts)

    def extra_info(self) -> dict[str, Any]:
        return dict(getattr(self, "info_", {}))

    # -------------------------------------------------------------- save / load
    def _save(self, path: Path) -> None:
        self._check_fitted()
        self.tokenizer_.save_pretrained(path / "tokenizer")
        if self.uses_peft:
            self.model_.save_pretrained(path / "adapter")
        else:
            self.model_.save_pretrained(path / "model")
        meta = {"method": self.method, "model_source": self.source_, "max_length": self.max_length_,
                "decoder": self.decoder_, "n_labels": len(self.label_names_), "info": self.info_}
        (path / META_FILE).write_text(json.dumps(meta, indent=2, default=str))

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> FinetuneRung:
        from transformers import AutoTokenizer

        fmeta = json.loads((path / META_FILE).read_text())
        self = cls(**meta["params"])
        p = self._p()
        self.label_names_ = list(meta["label_names"])
        self.max_length_ = int(fmeta["max_length"])
        self.decoder_ = bool(fmeta["decoder"])
        self.info_ = fmeta.get("info", {})
        self.tokenizer_ = AutoTokenizer.from_pretrained(path / "tokenizer")
        self.device_ = "cuda" if cuda_available() else "cpu"
        if cls.method == "qlora" and self.device_ != "cuda":
            from adaptladder.errors import NeedsCuda

            raise NeedsCuda(f"{path} holds a QLoRA adapter on a 4-bit base, which needs CUDA to load.")
        if self.uses_peft:
            from peft import PeftModel

            # the base comes from the saved setting (an alias, a hub id, or a path the trust policy
            # allowed), never from a path recorded in the model folder (a run directory chooses no files)
            self.source_ = resolve_model(p["model"])
            base, _ = self._load_base(self.source_, len(self.label_names_), p["seed"],
                                      quantize=cls.method == "qlora")
            if base.config.pad_token_id is None:
                base.config.pad_token_id = self.tokenizer_.pad_token_id
            self.model_ = PeftModel.from_pretrained(base, path / "adapter")
        else:
            from transformers import AutoModelForSequenceClassification

            self.source_ = str(path / "model")
            self.model_ = AutoModelForSequenceClassification.from_pretrained(path / "model")
        if cls.method != "qlora":
            self.model_.to(self.device_)
        self.model_.eval()
        return self


def _quiet_peft(model: Any, cfg: Any) -> Any:
    """``get_peft_model`` without transformers' deprecation chatter (PEFT calls a renamed property)."""
    import warnings

    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, cfg)


def _precision_used(p: dict[str, Any], device: str) -> tuple[str, str]:
    from adaptladder.precision import training_precision

    return training_precision(str(p["precision"]), device)


@contextlib.contextmanager
def _torch_threads(setting: Any) -> Iterator[int]:
    """Torch CPU threads for this block, from the one policy (:func:`adaptladder.threads.compute`).

    Measured on the shared 2-core machine at load average ~23 (benchmarks/bench_finetune.py
    --threads-probe, BENCHMARKS.md): one MiniLM training step took ~5.5 s wall / 0.3 s CPU
    with 1 thread and 23-37 s wall / 2.3-3.3 s CPU with 2, because OpenMP threads spin-wait
    for siblings that are descheduled: ``auto`` gives up the cores other processes hold.
    """
    from adaptladder import threads as thread_policy

    with thread_policy.compute(setting) as n:
        yield n


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic torch kernels while fitting; the previous setting is restored afterwards."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_before)


@contextlib.contextmanager
def _progress(enabled: bool, label: str, total: int) -> Iterator[Any]:
    """Progress (a bar on a terminal, heartbeat lines elsewhere) showing step, loss and the last
    validation macro-F1."""
    if not enabled:
        yield lambda *a: None
        return
    from adaptladder import progress

    with progress.step(label, total):

        def update(step: int, loss: float, f1: float | None) -> None:
            progress.update(done=step, detail=f"loss {loss:.4f}, val F1 " + ("-" if f1 is None else f"{f1:.4f}"))

        yield update


# ---------------------------------------------------------------------------- methods
class FullFinetuneRung(FinetuneRung):
    """Every weight of the encoder and a new head train (the most expensive, highest-ceiling rung)."""

    name = "full-ft"
    cost_rank = 80
    method = "full-ft"
    description = "full fine-tuning of the encoder + classification head (all weights train)"
    default_lr = 5e-5
    uses_peft = False

    def _prepare(self, model: Any, p: dict[str, Any], decoder: bool, missing: list[str]) -> Any:
        for t in model.parameters():
            t.requires_grad_(True)
        return model

    def _snapshot(self) -> dict[str, Any]:
        # buffers too (e.g. position ids), so the restored model is exactly the best one
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model_.state_dict().items()}

    def _restore(self, state: dict[str, Any]) -> None:
        self.model_.load_state_dict(state)


class LoraRung(FinetuneRung):
    """Low-rank adapters on the attention projections; the head trains fully (PEFT modules_to_save)."""

    name = "lora"
    cost_rank = 70
    method = "lora"
    description = "LoRA adapters (PEFT) on the attention projections + a trainable classification head"
    default_lr = 3e-3  # trec6 validation macro-F1, 3 epochs: 1e-3 0.876, 3e-3 0.908 (1e-3 barely moves in ~80 steps)
    Settings = LoraSettings

    def _targets(self, model: Any, p: dict[str, Any]) -> Any:
        if p["target_modules"] is not None:
            return p["target_modules"]
        return LORA_TARGETS.get(model.config.model_type)  # None: PEFT's own table

    def _prepare(self, model: Any, p: dict[str, Any], decoder: bool, missing: list[str]) -> Any:
        from peft import LoraConfig, TaskType

        targets = self._targets(model, p)
        cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=p["r"], lora_alpha=p["alpha"], lora_dropout=p["dropout"],
                         target_modules=targets, modules_to_save=list(missing) or None)
        try:
            peft_model = _quiet_peft(model, cfg)
        except ValueError as e:
            raise AdaptError(f"LoRA cannot find target modules in {model.config.model_type} "
                             f"({str(e).splitlines()[0]}); pass target_modules=[...] naming its attention "
                             "projections.") from e
        self.targets_ = list(targets) if isinstance(targets, list) else targets
        return peft_model

    def _method_info(self, p: dict[str, Any]) -> dict[str, Any]:
        tm = getattr(self, "targets_", None)
        if tm is None:
            tm = sorted(self.model_.peft_config["default"].target_modules or [])
        return {"lora": {"r": p["r"], "alpha": p["alpha"], "dropout": p["dropout"],
                         "target_modules": sorted(tm) if isinstance(tm, (list, set)) else tm}}


class QloraRung(LoraRung):
    """LoRA over a 4-bit NF4 base (bitsandbytes): CUDA only; on a CPU it is skipped with an estimate."""

    name = "qlora"
    cost_rank = 75
    method = "qlora"
    description = "QLoRA: LoRA adapters over a 4-bit (NF4) quantised base model; needs CUDA + bitsandbytes"
    default_lr = 2e-4
    Settings = QloraSettings

    @classmethod
    def unavailable_reason(cls, params: dict[str, Any]) -> str | None:
        if not cuda_available():
            est = cls.skip_details(params).get("estimate")
            if isinstance(est, dict) and est.get("gpu_memory_gb") is not None and est.get("train_hours") is not None:
                usd = est.get("train_cost_usd")
                cost = "" if usd is None else f", ${usd:.3f}"
                return (f"needs CUDA (est. {est['gpu_memory_gb']:.1f} GB GPU, {est['train_hours'] * 60:.1f} min"
                        f"{cost} on {est.get('device_assumed', 'a GPU')} for {est.get('examples', '?')} examples x "
                        f"{est.get('epochs', '?')} epochs; 4-bit QLoRA runs on bitsandbytes CUDA kernels)")
            return "needs CUDA (4-bit QLoRA runs on bitsandbytes CUDA kernels; this machine has no CUDA GPU)"
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            return "needs bitsandbytes (pip install bitsandbytes on the CUDA machine)"
        return None

    @classmethod
    def skip_details(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The GPU memory / time / cost the rung would need; never raises (a skip must not crash a run)."""
        d = {f["name"]: f["default"] for f in cls.Settings.describe()}
        model = params.get("model") or d["model"]
        seq = params.get("max_length")
        seq = seq if isinstance(seq, int) else 128
        batch = params.get("batch_size", d["batch_size"])
        epochs = params.get("max_epochs", d["max_epochs"])
        examples = int(params.get("n_examples") or 10_000)
        r = params.get("r", d["r"])
        try:
            from adaptladder.estimate import rung_estimate

            est = rung_estimate(model, "qlora", examples=examples, epochs=float(epochs), seq_len=seq, batch=batch,
                                lora_r=int(r), lora_targets="all-linear", head="classifier", num_labels=2)
            if "error" in est:
                return {"estimate": None, "estimate_error": est["error"]}
            comp = est["compute"]
            return {"estimate": {
                "estimator": "adaptladder.estimate (see docs/estimator.md)",
                "model": est["model"], "method": "qlora", "seq_len": seq, "batch": batch,
                "examples": examples, "epochs": epochs, "lora_r": r,
                "params": est["params"]["total"], "trainable_params": est["params"]["trainable"],
                "gpu_memory_gb": round(est["peak_bytes"] / 1e9, 2), "peak_gib": est["peak_gib"],
                "train_hours": round(float(comp["hours"]), 4), "device_assumed": comp["gpu"],
                "train_cost_usd": None if comp["cost_usd"] is None else round(float(comp["cost_usd"]), 4),
                "smallest_gpu": est["smallest_gpu"]}}
        except Exception as e:  # a skipped rung must not crash: say why there is no estimate
            return {"estimate": None, "estimate_error": f"{type(e).__name__}: {e}"}

    def _prepare(self, model: Any, p: dict[str, Any], decoder: bool, missing: list[str]) -> Any:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        return super()._prepare(model, p, decoder, missing)


class PromptTuningRung(FinetuneRung):
    """Soft prompt tuning: only ``num_virtual_tokens`` prompt embeddings and the head train."""

    name = "prompt-tuning"
    cost_rank = 60
    method = "prompt-tuning"
    description = "prompt tuning (PEFT): learned soft-prompt embeddings + a trainable classification head"
    default_lr = 3e-2
    Settings = PromptTuningSettings
    #: architectures whose forward accepts ``inputs_embeds`` with PEFT's prepended prompt
    SUPPORTED: ClassVar[set[str]] = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert",
                                     "mpnet", "deberta-v2", "llama", "mistral", "qwen2", "qwen3", "gemma",
                                     "gemma2", "gemma3_text", "phi3"}

    def _extra_positions(self, p: dict[str, Any]) -> int:
        return int(p["num_virtual_tokens"])

    def _prepare(self, model: Any, p: dict[str, Any], decoder: bool, missing: list[str]) -> Any:
        from peft import PromptTuningConfig, PromptTuningInit, TaskType

        mt = model.config.model_type
        if mt not in self.SUPPORTED:
            raise AdaptError(f"prompt tuning is not supported for {mt!r} models here (PEFT prepends prompt "
                             f"embeddings, which needs an encoder or decoder that takes inputs_embeds: "
                             f"{', '.join(sorted(self.SUPPORTED))}); use the lora rung instead.")
        init = PromptTuningInit.SAMPLE_VOCAB if p["prompt_init"] == "vocab" else PromptTuningInit.RANDOM
        cfg = PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=p["num_virtual_tokens"],
                                 prompt_tuning_init=init)
        if missing:
            cfg.modules_to_save = list(missing)
        return _quiet_peft(model, cfg)

    def _method_info(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"prompt_tuning": {"num_virtual_tokens": p["num_virtual_tokens"], "init": p["prompt_init"]}}

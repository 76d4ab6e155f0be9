"""SetFit: contrastive fine-tuning of the sentence encoder on pairs, then a logistic-regression head.

The SetFit library (Tunstall et al. 2022) draws pairs of training texts (same label: similarity
1, different labels: 0), fine-tunes the sentence encoder with a cosine-similarity loss so that
same-label texts embed close together, then fits a logistic regression on the new embeddings.
It is known to do well with few labels per class, at a cost between a frozen encoder
(``features``) and fine-tuning a classifier (``prompt-tuning``, ``lora``).

What a user can rely on here:

* the run's ``--encoder`` (default: the packaged all-MiniLM-L6-v2) is the body; no model hub;
* the validation split is never trained on (SetFit's trainer would add an ``eval_dataset`` to the
  contrastive pairs; it gets none);
* ``budget_minutes`` ends the contrastive phase cleanly (a trainer callback), and ``max_pairs``
  caps the pairs drawn, so the wall time is bounded on a CPU;
* artefacts without pickle: the fine-tuned body in sentence-transformers format (safetensors)
  and the head's coefficients in ``head.safetensors`` + ``setfit.json``; ``load_rung`` gives
  identical predictions.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from adaptladder.errors import AdaptError
from adaptladder.models import DEFAULT_ENCODER
from adaptladder.rungs.base import Rung, check_inputs
from adaptladder.rungs.settings import RungSettings, SettingError, positive_int, positive_number, setting

META_FILE = "setfit.json"
HEAD_FILE = "head.safetensors"
BODY_DIR = "body"


@dataclass
class SetFitSettings(RungSettings):
    run_values: ClassVar[dict[str, str]] = {"encoder": "encoder", "seed": "seed", "budget_minutes": "budget_minutes"}

    encoder: str = setting(DEFAULT_ENCODER, help="sentence encoder fine-tuned as the body: packaged alias (minilm), "
                                                 "Hugging Face id or local folder (the run's --encoder)")
    num_iterations: int = setting(20, help="pairs drawn per training text and kind (same / different label), as in "
                                           "the SetFit paper")
    max_pairs: int = setting(2000, help="cap on the contrastive pairs (bounds the CPU time)")
    batch_size: int = setting(16, help="pairs per contrastive training step")
    num_epochs: int = setting(1, help="passes over the pairs")
    body_lr: float = setting(2e-5, help="learning rate of the encoder in the contrastive phase")
    max_length: int = setting(128, help="tokens per text the encoder reads (longer texts are truncated)")
    head_c: float = setting(1.0, help="inverse regularisation of the logistic-regression head")
    budget_minutes: float = setting(10.0, help="wall-time cap of the contrastive phase (the run's --budget-minutes); "
                                               "training stops cleanly when it is reached")
    seed: int = setting(0, help="seed of the pair sampling, the training order and the head (the run's --seed)")
    threads: int | str = setting("auto", help="torch CPU threads: auto or an integer")
    progress: bool = setting(False, help="show the trainer's progress bar")

    def check(self) -> None:
        positive_int(self, "num_iterations", "max_pairs", "batch_size", "num_epochs")
        positive_int(self, "max_length", minimum=8)
        positive_number(self, "body_lr", "head_c", "budget_minutes")
        if self.threads != "auto":
            positive_int(self, "threads")
        if not self.encoder:
            raise SettingError("encoder", self.encoder, "an encoder alias, Hugging Face id or local folder")


class SetFitRung(Rung):
    """SetFit: contrastive fine-tuning of the sentence encoder on pairs, then a logistic-regression head."""

    name = "setfit"
    family = "finetune"
    cost_rank = 55
    description = "SetFit: contrastive fine-tuning of the sentence encoder on text pairs + logistic-regression head"
    Settings = SetFitSettings
    settings: SetFitSettings

    @classmethod
    def unavailable_reason(cls, params: dict[str, Any]) -> str | None:
        import importlib.util

        if importlib.util.find_spec("setfit") is None:  # without importing it (slow)
            return "needs the setfit package (pip install setfit)"
        return None

    # ------------------------------------------------------------------ fit
    def fit(self, texts: Sequence[str], y: np.ndarray, *, label_names: Sequence[str],
            val_texts: Sequence[str] | None = None, val_y: np.ndarray | None = None) -> SetFitRung:
        texts, y = check_inputs(texts, y)
        assert y is not None
        reason = self.unavailable_reason(self.params)
        if reason:
            raise AdaptError(f"the setfit rung cannot run: {reason}.")
        if len(np.unique(y)) < 2:
            raise AdaptError("the setfit rung needs at least two classes in the training split.")
        self.label_names_ = list(label_names)
        p = self.settings
        from adaptladder.rungs.finetune import _torch_threads

        with _torch_threads(p.threads) as n_threads, _quiet():
            self._train(texts, y, n_threads)
        return self

    def _train(self, texts: list[str], y: np.ndarray, n_threads: int) -> None:
        import torch
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments
        from sklearn.linear_model import LogisticRegression
        from transformers import TrainerCallback

        from adaptladder.rungs.finetune import resolve_model

        p = self.settings
        budget_s = float(p.budget_minutes) * 60
        t0 = time.perf_counter()
        self.source_ = resolve_model(p.encoder)
        body = _load_body(self.source_, p.max_length)
        head = LogisticRegression(C=p.head_c, max_iter=2000, random_state=p.seed)
        model = SetFitModel(model_body=body, model_head=head)
        stats: dict[str, Any] = {"steps": 0, "stopped_by": "completed"}

        class Budget(TrainerCallback):  # type: ignore[misc]
            """Stop the contrastive phase when the budget is used (the pairs seen so far count)."""

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
                stats["steps"] = int(state.global_step)
                if time.perf_counter() - t0 >= budget_s:
                    stats["stopped_by"] = "budget"
                    control.should_training_stop = True
                return control

        max_steps = max(1, p.max_pairs // p.batch_size)
        with tempfile.TemporaryDirectory(prefix="adaptladder-setfit-") as tmp:
            args = TrainingArguments(
                output_dir=tmp, batch_size=(p.batch_size, 32), num_epochs=(p.num_epochs, 1), max_steps=max_steps,
                num_iterations=p.num_iterations, body_learning_rate=(p.body_lr, p.body_lr), seed=p.seed,
                max_length=p.max_length, show_progress_bar=bool(p.progress), report_to="none", save_strategy="no",
                logging_strategy="no", eval_strategy="no", logging_dir=tmp)
            data = Dataset.from_dict({"text": list(texts), "label": [int(v) for v in y]})
            trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[Budget()])
            if not p.progress:  # no loss dicts printed on stdout, no bars
                from transformers.trainer_callback import PrinterCallback, ProgressCallback

                for cb in (PrinterCallback, ProgressCallback):
                    trainer.st_trainer.remove_callback(cb)
            t1 = time.perf_counter()
            trainer.train_embeddings(list(texts), [int(v) for v in y], args=args)
            contrastive_s = time.perf_counter() - t1
            t2 = time.perf_counter()
            trainer.train_classifier(list(texts), [int(v) for v in y], args=args)
            head_s = time.perf_counter() - t2
        self.body_ = model.model_body.to("cpu")
        self.body_.eval()
        self.head_ = model.model_head
        self.info_ = {
            "encoder": p.encoder, "encoder_source": self.source_, "contrastive_steps": stats["steps"],
            "planned_steps": max_steps, "pairs_seen": stats["steps"] * p.batch_size,
            "stopped_by": stats["stopped_by"], "contrastive_seconds": round(contrastive_s, 2),
            "head_fit_seconds": round(head_s, 2), "threads": n_threads, "budget_minutes": p.budget_minutes,
            "loss": "CosineSimilarityLoss (SetFit default)", "head": f"logistic regression (C={p.head_c:g})",
            "library": f"setfit {_version('setfit')}", "torch_threads_at_fit": torch.get_num_threads(),
        }

    # ------------------------------------------------------------------ predict
    def _embed(self, texts: list[str]) -> np.ndarray:
        from adaptladder.rungs.finetune import _torch_threads

        with _torch_threads(self.settings.threads), _quiet():
            return np.asarray(self.body_.encode(texts, batch_size=64, convert_to_numpy=True,
                                                normalize_embeddings=False, show_progress_bar=False))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        texts, _ = check_inputs(texts)
        if not texts:
            return np.zeros((0, len(self.label_names_)))
        from adaptladder.rungs.classical import _full_proba

        proba = self.head_.predict_proba(self._embed(texts))
        return _full_proba(proba, self.head_.classes_, len(self.label_names_))

    def extra_info(self) -> dict[str, Any]:
        return dict(getattr(self, "info_", {}))

    # ------------------------------------------------------------------ save / load (no pickle)
    def _save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        self._check_fitted()
        self.body_.save(str(path / BODY_DIR))
        h = self.head_
        save_file({"coef": np.ascontiguousarray(h.coef_),  # dtype kept (float32 embeddings -> float32 head)
                   "intercept": np.ascontiguousarray(h.intercept_),
                   "classes": np.asarray(h.classes_, dtype=np.int64)}, str(path / HEAD_FILE))
        meta = {"head": "logistic_regression", "head_params": {"C": float(h.C), "max_iter": int(h.max_iter)},
                "max_length": self.settings.max_length, "info": self.info_}
        tmp = path / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2, default=str))
        tmp.replace(path / META_FILE)

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> SetFitRung:
        from safetensors.numpy import load_file
        from sklearn.linear_model import LogisticRegression

        for need in (path / BODY_DIR, path / HEAD_FILE, path / META_FILE):
            if not need.exists():
                raise AdaptError(f"{need} is missing: the saved setfit rung in {path} is incomplete; re-run the rung.")
        rung = cls(**meta["params"])
        smeta = json.loads((path / META_FILE).read_text())
        arrays = load_file(str(path / HEAD_FILE))
        head = LogisticRegression(**smeta["head_params"])
        head.coef_, head.intercept_, head.classes_ = arrays["coef"], arrays["intercept"], arrays["classes"]
        head.n_features_in_ = int(arrays["coef"].shape[1])
        with _quiet():
            rung.body_ = _load_body(str(path / BODY_DIR), int(smeta["max_length"]))
        rung.body_.eval()
        rung.head_ = head
        rung.source_ = str(path / BODY_DIR)
        rung.info_ = smeta.get("info", {})
        rung.label_names_ = list(meta["label_names"])
        return rung


def _load_body(source: str, max_length: int) -> Any:
    """A sentence-transformers model from a local folder (an encoder checkpoint gets mean pooling)."""
    from sentence_transformers import SentenceTransformer

    if not Path(source).exists():
        raise AdaptError(f"encoder {source!r} is neither a packaged alias nor a local folder; the setfit rung needs "
                         "a local model (no model hub at run time).")
    try:
        body = SentenceTransformer(source, device="cpu", local_files_only=True)
    except Exception as e:
        raise AdaptError(f"cannot load the encoder {source} for setfit ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}).") from e
    body.max_seq_length = max_length
    return body


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:  # pragma: no cover
        return "?"


class _quiet:
    """Silence library warnings and info logs (model cards, deprecations) while training / loading."""

    def __enter__(self) -> _quiet:
        import logging
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")
        self._levels: dict[str, int] = {}
        try:
            from datasets.utils import logging as ds_logging

            self._bars = ds_logging.is_progress_bar_enabled()
            ds_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover
            self._bars = None
        for name in ("setfit", "sentence_transformers", "transformers", "datasets"):
            lg = logging.getLogger(name)
            self._levels[name] = lg.level
            lg.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc: object) -> None:
        import logging

        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        if self._bars:
            from datasets.utils import logging as ds_logging

            ds_logging.enable_progress_bar()
        self._w.__exit__(*exc)

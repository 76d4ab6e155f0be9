"""Feature extraction: a frozen sentence encoder + a small classical head chosen on validation.

No backbone training: the encoder embeds every text once (cached on disk), and the head
(logistic regression, an MLP or gradient boosting) is picked by validation macro-F1. This is
the recipe that often beats hopeful fine-tuning on small data sets, at CPU cost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from adaptladder.artifacts import dump_sklearn, dumps_json, load_encoder_source, load_sklearn, save_encoder_source
from adaptladder.encode import PRECISIONS, get_encoder
from adaptladder.errors import AdaptError
from adaptladder.measure import fast_macro_f1
from adaptladder.models import DEFAULT_ENCODER
from adaptladder.rungs.base import Rung, check_inputs
from adaptladder.rungs.classical import _full_proba
from adaptladder.rungs.settings import RungSettings, SettingError, positive_int, setting

HEADS = ("logreg", "mlp", "gbdt")
HEAD_FILE = "head.skops"
STATE_FILE = "state.json"


def make_head(kind: str, seed: int, n_classes: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    if kind == "logreg":
        return LogisticRegression(C=4.0, max_iter=3000, class_weight="balanced", random_state=seed)
    if kind == "mlp":
        return MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, early_stopping=True, validation_fraction=0.1,
                             max_iter=200, n_iter_no_change=8, random_state=seed)
    if kind == "gbdt":
        # no class_weight: scikit-learn 1.9 bins sample-weighted data with one weighted percentile per bin
        # edge and feature (254 x 384 calls), 188 s instead of 1.8 s on 300 MiniLM embeddings (BENCHMARKS.md)
        return HistGradientBoostingClassifier(max_iter=150 if n_classes <= 6 else 60, learning_rate=0.1,
                                              early_stopping=True, validation_fraction=0.1, n_iter_no_change=8,
                                              random_state=seed)
    raise AdaptError(f"unknown head {kind!r} for the features rung: choose from {', '.join(HEADS)}.")


@dataclass
class FeaturesSettings(RungSettings):
    run_values: ClassVar[dict[str, str]] = {"encoder": "encoder", "seed": "seed"}

    encoder: str = setting(DEFAULT_ENCODER, help="sentence encoder: packaged alias (minilm), Hugging Face id or "
                                                 "local folder (the run's --encoder)")
    precision: str = setting("auto", help="encoder precision: auto (fastest that keeps the head's validation "
                                          "score), " + ", ".join(p for p in PRECISIONS if p != "auto"))
    heads: list[str] = setting(factory=lambda: list(HEADS), help="heads to try; the best on validation macro-F1 "
                                                                 "is kept (" + ", ".join(HEADS) + ")")
    max_length: int = setting(256, help="tokens per text the encoder reads (longer texts are truncated)")
    seed: int = setting(0, help="random state of the heads (the run's --seed)")

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise SettingError("precision", self.precision, "one of " + ", ".join(PRECISIONS))
        if not self.heads or any(h not in HEADS for h in self.heads):
            raise SettingError("heads", self.heads, "a non-empty list from " + ", ".join(HEADS))
        positive_int(self, "max_length", minimum=8)


class FeaturesRung(Rung):
    """Frozen encoder (default: the packaged all-MiniLM-L6-v2) + head chosen on validation."""

    name = "features"
    family = "features"
    cost_rank = 50
    description = "frozen sentence encoder + classical head (feature extraction)"
    Settings = FeaturesSettings
    settings: FeaturesSettings

    def _settings_changed(self) -> None:
        self._enc = None

    def _encoder(self) -> Any:
        if getattr(self, "_enc", None) is None:
            p = self.settings
            # a loaded rung pins the precision it was fitted with, so predictions are identical
            precision = getattr(self, "precision_used_", None) or p.precision
            # a loaded rung whose encoder travelled with it reads that copy (``encoder/``)
            source = getattr(self, "_encoder_dir", None) or p.encoder
            self._enc = get_encoder(source, precision=precision, max_length=p.max_length)
        return self._enc

    def fit(self, texts: Sequence[str], y: np.ndarray, *, label_names: Sequence[str],
            val_texts: Sequence[str] | None = None, val_y: np.ndarray | None = None) -> FeaturesRung:
        texts, y = check_inputs(texts, y)
        self.label_names_ = list(label_names)
        k = len(label_names)
        enc = self._encoder()
        clock = getattr(self, "clock", None) or time.perf_counter  # a fake clock in tests
        t0 = clock()
        # precision="auto": pick the fastest precision whose embeddings keep the head's validation
        # score (checked on a sample of this task's own texts); the record goes into the report
        self.precision_check_ = enc.calibrate(texts, y, val_texts, val_y) if enc.precision == "auto" else None
        budget = getattr(self, "time_budget_s", None)
        self.encode_budget_: dict[str, Any] | None = None
        n_left = 0
        if budget is None:
            X = enc.encode(texts, progress=True, desc="encoding train")
            Xv = (enc.encode(list(val_texts), progress=True, desc="encoding validation")
                  if val_texts is not None else None)
        else:
            X, y, Xv, val_y, n_left = self._encode_within(enc, texts, y, val_texts, val_y, budget,
                                                          clock() - t0)
        self.encode_seconds_ = clock() - t0
        self.precision_used_ = enc.precision_used_
        self.encoder_info_ = enc.info()
        heads = list(self.settings.heads) if (Xv is not None and val_y is not None) else list(self.settings.heads)[:1]
        self.head_scores_: dict[str, float] = {}
        self.head_fit_seconds_: dict[str, float] = {}
        best = None
        self.heads_skipped_: list[str] = []
        for i, kind in enumerate(heads):
            if i and budget is not None and clock() - t0 > self.FIT_BUDGET_SHARE * budget:
                self.heads_skipped_ = heads[i:]  # the fit's share of the budget is used up
                break
            t1 = time.perf_counter()
            head = make_head(kind, self.settings.seed, k).fit(X, y)
            self.head_fit_seconds_[kind] = time.perf_counter() - t1
            if Xv is None or val_y is None:
                best = (0.0, kind, head)
                break
            f1 = fast_macro_f1(np.asarray(val_y), head.predict(Xv), k)
            self.head_scores_[kind] = f1
            if best is None or f1 > best[0]:
                best = (f1, kind, head)
        assert best is not None
        _, self.head_kind_, self.head_ = best
        # what a refit with the head pinned costs (cross-validation's folds): the head's fit, plus
        # encoding the texts a budget left out (the fold refits read train + validation in full)
        rate = self.encode_seconds_ / max(len(X) + (len(Xv) if Xv is not None else 0), 1)
        self.refit_seconds_ = self.head_fit_seconds_[self.head_kind_] + rate * n_left
        return self

    #: Share of the rung's time budget (``time_budget_s``, set by the ladder) the fit's encoding may use.
    FIT_BUDGET_SHARE = 0.5
    #: The fewest training / validation texts a budget may leave (per class: 5 training texts).
    MIN_TRAIN, MIN_VAL = 100, 50

    def _encode_within(self, enc: Any, texts: list[str], y: np.ndarray, val_texts: Sequence[str] | None,
                       val_y: np.ndarray | None, budget: float, spent: float) -> tuple[Any, ...]:
        """Encode train (then validation) in a label-stratified order until :attr:`FIT_BUDGET_SHARE` of
        the budget is used: a stratified subsample of each when all would not fit (recorded in
        ``encode_budget_``). Returns the embeddings and labels kept and how many texts were left out."""
        from adaptladder import progress
        from adaptladder.budget import run_within, stratified_order

        clock = getattr(self, "clock", None) or time.perf_counter
        allowed = max(self.FIT_BUDGET_SHARE * budget - spent, 0.1 * budget)
        k = len(self.label_names_)
        n_tr, n_va = len(texts), len(val_texts) if val_texts is not None else 0
        t0 = clock()
        rec: dict[str, Any] = {"budget_seconds": round(budget, 1), "share": self.FIT_BUDGET_SHARE,
                               "seconds_allowed": round(allowed, 1)}

        def encoder_of(pool: list[str]) -> Any:
            return lambda pos: enc.encode([pool[int(i)] for i in pos])

        with progress.step("features: encoding train", total=n_tr):
            tr = run_within(encoder_of(texts), stratified_order(y, self.settings.seed),
                            seconds=allowed * n_tr / max(n_tr + n_va, 1), chunk=128, first_chunk=32,
                            min_n=min(n_tr, max(self.MIN_TRAIN, 5 * k)), clock=clock,
                            on_chunk=lambda d: progress.update(done=d))
        X = np.concatenate(tr.outputs) if tr.outputs else np.zeros((0, enc.dim), dtype=np.float32)
        y = np.asarray(y)[tr.done]
        rec["train"] = tr.record()
        Xv = None
        left = n_tr - len(tr.done)
        if val_texts is not None and val_y is not None:
            vt = list(val_texts)
            with progress.step("features: encoding validation", total=n_va):
                va = run_within(encoder_of(vt), stratified_order(val_y, self.settings.seed),
                                seconds=max(allowed - (clock() - t0), 0.0), chunk=128, first_chunk=32,
                                min_n=min(n_va, self.MIN_VAL), clock=clock, on_chunk=lambda d: progress.update(done=d))
            Xv = np.concatenate(va.outputs) if va.outputs else np.zeros((0, enc.dim), dtype=np.float32)
            val_y = np.asarray(val_y)[va.done]
            rec["validation"] = va.record()
            left += n_va - len(va.done)
        elif val_texts is not None:
            Xv = enc.encode(list(val_texts))
        rec["sampled"] = bool(left)
        self.encode_budget_ = rec
        if left:
            import logging

            logging.getLogger(__name__).info("features: encoded a stratified %d of %d training and %s validation "
                                             "texts to fit the budget", len(tr.done), n_tr,
                                             rec.get("validation", {}).get("done", n_va))
        return X, y, Xv, val_y, left

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        texts, _ = check_inputs(texts)
        X = self._encoder().encode(texts)
        return _full_proba(self.head_.predict_proba(X), self.head_.classes_, len(self.label_names_))

    def _save(self, path: Path) -> None:
        # skops for the head (no pickle), JSON for the rest, and the encoder either by packaged
        # alias + content hashes or copied into ``encoder/`` (see :func:`save_encoder_source`)
        dump_sklearn(self.head_, path / HEAD_FILE)
        source = save_encoder_source(self, path)
        state = {"head_kind": self.head_kind_, "head_scores": self.head_scores_,
                 "precision_used": self.precision_used_, "encoder_info": self.encoder_info_,
                 "precision_check": getattr(self, "precision_check_", None), "encoder_source": source}
        (path / STATE_FILE).write_text(dumps_json(state))

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> FeaturesRung:
        rung = cls(**meta["params"])
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        rung.head_ = load_sklearn(path / HEAD_FILE)
        rung.head_kind_, rung.head_scores_ = state["head_kind"], state["head_scores"]
        rung.precision_used_, rung.encoder_info_ = state["precision_used"], state["encoder_info"]
        rung.precision_check_ = state.get("precision_check")
        rung.encoder_source_ = state.get("encoder_source") or {}
        rung._encoder_dir = load_encoder_source(rung.encoder_source_, path)
        rung.label_names_ = meta["label_names"]
        return rung

    def n_model_classes(self) -> int | None:
        classes = getattr(self.head_, "classes_", None)
        return None if classes is None else len(classes)

    def extra_info(self) -> dict[str, Any]:
        return {
            "head": self.head_kind_,
            "validation_macro_f1_by_head": self.head_scores_,
            "head_fit_seconds": getattr(self, "head_fit_seconds_", {}),
            "encode_seconds": getattr(self, "encode_seconds_", None),
            "encoder": self.encoder_info_,
            "precision_check": getattr(self, "precision_check_", None),
            **({"heads_not_tried_budget": self.heads_skipped_} if getattr(self, "heads_skipped_", None) else {}),
            **({"encoding_sampled_by_budget": self.encode_budget_}
               if (getattr(self, "encode_budget_", None) or {}).get("sampled") else {}),
        }

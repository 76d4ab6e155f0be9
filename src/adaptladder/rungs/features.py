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
        return HistGradientBoostingClassifier(max_iter=150 if n_classes <= 6 else 60, learning_rate=0.1,
                                              early_stopping=True, validation_fraction=0.1, n_iter_no_change=8,
                                              class_weight="balanced", random_state=seed)
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
        t0 = time.perf_counter()
        # precision="auto": pick the fastest precision whose embeddings keep the head's validation
        # score (checked on a sample of this task's own texts); the record goes into the report
        self.precision_check_ = enc.calibrate(texts, y, val_texts, val_y) if enc.precision == "auto" else None
        X = enc.encode(texts, progress=True, desc="encoding train")
        Xv = enc.encode(list(val_texts), progress=True, desc="encoding validation") if val_texts is not None else None
        self.encode_seconds_ = time.perf_counter() - t0
        self.precision_used_ = enc.precision_used_
        self.encoder_info_ = enc.info()
        heads = list(self.settings.heads) if (Xv is not None and val_y is not None) else list(self.settings.heads)[:1]
        self.head_scores_: dict[str, float] = {}
        self.head_fit_seconds_: dict[str, float] = {}
        best = None
        for kind in heads:
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
        return self

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

    def extra_info(self) -> dict[str, Any]:
        return {
            "head": self.head_kind_,
            "validation_macro_f1_by_head": self.head_scores_,
            "head_fit_seconds": getattr(self, "head_fit_seconds_", {}),
            "encode_seconds": getattr(self, "encode_seconds_", None),
            "encoder": self.encoder_info_,
            "precision_check": getattr(self, "precision_check_", None),
        }

"""Cross-validated estimates for cheap rungs: tighter evidence for the decision where it costs little.

A validation split of 15% is small: macro-F1 over rare classes on a few hundred examples cannot
tell two rungs apart. For rungs whose fit is cheap (the floors, the head of ``features`` on cached
embeddings, and any rung whose fit took less than ``cv_max_fit_seconds``) the decision estimate is
a stratified, seeded k-fold cross-validation over train + validation instead: every example of
train + validation is predicted once by a model that did not see it (out-of-fold), and the pooled
predictions are scored like any split, so comparisons with other rungs stay paired per example
(a validation-only rung is compared on the validation examples both have).

Hyperparameters the rung chose on the validation split (tfidf's C, features' head and encoder
precision) are pinned for the fold refits; the folds do not search again. (Choosing among a
handful of settings on validation leaves a small optimism on the validation examples, smaller than
the single validation estimate has, which is scored on the very examples it chose on.) Slow rungs
(prompting, fine-tuning, anything with an ``eval_cap``) keep the single validation split.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from adaptladder.measure import score

#: Rungs cross-validated whatever their fit time: refitting them is cheap by construction
#: (the floors, and features' head on embeddings the encoder cache already holds).
CHEAP_RUNGS = ("majority", "tfidf", "features")


def cv_eligible(cls: type, fit_seconds: float, folds: int, max_fit_seconds: float | None) -> bool:
    """Whether a rung gets a cross-validated estimate."""
    if folds < 2:
        return False
    if cls.name in CHEAP_RUNGS:
        return True
    if getattr(cls, "eval_cap", None) or getattr(cls, "family", "") in ("prompting", "distill"):
        return False  # slow to predict (language model), or trained from another rung's outputs
    return max_fit_seconds is not None and fit_seconds < max_fit_seconds


def pinned_params(rung: Any) -> dict[str, Any]:
    """The hyperparameters a fitted rung chose on validation, to hold fixed in the fold refits."""
    out: dict[str, Any] = {}
    names = set(rung.get_params()) if hasattr(rung, "get_params") else set(rung.params)  # every setting
    if getattr(rung, "C_", None) is not None and "C" in names:
        out["C"] = rung.C_
    if getattr(rung, "head_kind_", None) is not None and "heads" in names:
        out["heads"] = [rung.head_kind_]
        if getattr(rung, "precision_used_", None) and "precision" in names:
            out["precision"] = rung.precision_used_
    return out


def cross_validate(cls: type, params: dict[str, Any], fitted: Any, texts: list[str], labels: np.ndarray,
                   indices: np.ndarray, label_names: list[str], *, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Out-of-fold predictions of ``cls`` over the rows ``indices`` (train + validation), scored.

    Returns a part like ``score`` gives for a split, plus ``indices`` / ``predictions`` / ``labels``
    (for paired comparisons), ``folds``, ``pinned`` and ``seconds``.
    """
    from sklearn.model_selection import StratifiedKFold

    indices = np.asarray(indices, dtype=np.int64)
    y = np.asarray(labels, dtype=np.int64)[indices]
    k_classes = len(label_names)
    counts = np.bincount(y, minlength=k_classes)
    folds = int(min(folds, max(2, counts[counts > 0].max())))
    pinned = pinned_params(fitted)
    fold_params = dict(params, **pinned)
    proba = np.zeros((len(indices), k_classes))
    t0 = time.perf_counter()
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "the least populated class has fewer members than n_splits"
        warnings.simplefilter("ignore", UserWarning)
        splits = list(splitter.split(np.zeros(len(y)), y))
    for tr, te in splits:
        rung = cls(**fold_params)
        rung.fit([texts[i] for i in indices[tr]], y[tr], label_names=label_names)
        proba[te] = np.asarray(rung.predict_proba([texts[i] for i in indices[te]]))
    part = score(y, proba, label_names, seed=seed)
    part.update(predictions=[int(p) for p in proba.argmax(axis=1)], indices=[int(i) for i in indices],
                labels=[int(v) for v in y], folds=folds, pinned=pinned, seconds=time.perf_counter() - t0)
    return part

"""Cross-validated estimates for cheap rungs: tighter evidence for the decision where it costs little.

A validation split of 15% is small: macro-F1 over rare classes on a few hundred examples cannot
tell two rungs apart. For rungs whose fit is cheap (the floors, the head of ``features`` on cached
embeddings, and any rung whose fit took less than ``cv_max_fit_seconds``) the decision estimate is
a stratified, seeded k-fold cross-validation over train + validation instead: every example of
train + validation is predicted once by a model that did not see it (out-of-fold), and the pooled
predictions are scored like any split, so comparisons with other rungs stay paired per example
(a validation-only rung is compared on the validation examples both have).

Two things keep the folds from being kinder than the deployed model's situation:

* each fold's model trains on no more rows than the deployed model did (``max_train``: the
  training split's size; a fold's training part is a stratified, seeded subsample of that size
  when it is larger, as it is under ``--sample``, which caps validation at the size of train), so
  the estimate is for a model of the deployed model's training size, not a 1.6x larger one;
* texts equal after normalisation (``task.normalize_text``) fall in the same fold
  (stratified group k-fold), so a duplicate cannot be trained on and predicted in one fold.

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
                   indices: np.ndarray, label_names: list[str], *, folds: int = 5, seed: int = 0,
                   max_train: int | None = None) -> dict[str, Any]:
    """Out-of-fold predictions of ``cls`` over the rows ``indices`` (train + validation), scored.

    ``max_train``: the most rows a fold's model trains on (the deployed model's training size).
    Returns a part like ``score`` gives for a split, plus ``indices`` / ``predictions`` / ``labels``
    (for paired comparisons), ``folds``, ``pinned``, ``fold_train_rows`` and ``seconds``.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    from adaptladder.task import duplicate_groups, stratified_subset

    indices = np.asarray(indices, dtype=np.int64)
    y = np.asarray(labels, dtype=np.int64)[indices]
    k_classes = len(label_names)
    counts = np.bincount(y, minlength=k_classes)
    folds = int(min(folds, max(2, counts[counts > 0].max())))
    pinned = pinned_params(fitted)
    fold_params = dict(params, **pinned)
    proba = np.zeros((len(indices), k_classes))
    t0 = time.perf_counter()
    groups = duplicate_groups([texts[i] for i in indices])
    folds = int(min(folds, len(np.unique(groups))))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "the least populated class has fewer members than n_splits"
        warnings.simplefilter("ignore", UserWarning)
        splits = list(splitter.split(np.zeros(len(y)), y, groups))
    fold_rows = []
    for fold, (tr_all, te) in enumerate(splits):
        tr = tr_all
        if max_train is not None and len(tr_all) > max_train:
            tr = tr_all[stratified_subset(y[tr_all], max_train, seed + fold)]
        fold_rows.append(len(tr))
        rung = cls(**fold_params)
        rung.fit([texts[i] for i in indices[tr]], y[tr], label_names=label_names)
        proba[te] = np.asarray(rung.predict_proba([texts[i] for i in indices[te]]))
    part = score(y, proba, label_names, seed=seed)
    part.update(predictions=[int(p) for p in proba.argmax(axis=1)], indices=[int(i) for i in indices],
                labels=[int(v) for v in y], folds=folds, pinned=pinned, fold_train_rows=fold_rows,
                grouped_duplicates=int(len(y) - len(np.unique(groups))), seconds=time.perf_counter() - t0)
    return part

"""The floors: the majority class (chance) and TF-IDF + logistic regression (classical).

Every other rung is judged against these; if a language model cannot beat TF-IDF, the
report says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from adaptladder.artifacts import dump_sklearn, load_sklearn
from adaptladder.errors import AdaptError
from adaptladder.measure import fast_macro_f1
from adaptladder.rungs.base import Rung, check_inputs
from adaptladder.rungs.settings import RungSettings, SettingError, positive_int, positive_number, setting


@dataclass
class MajoritySettings(RungSettings):
    """The majority rung takes no settings."""


@dataclass
class TfidfSettings(RungSettings):
    run_values: ClassVar[dict[str, str]] = {"seed": "seed"}

    ngram_max: int = setting(2, help="longest word n-gram (1: words only, 2: words and word pairs)")
    C: float | None = setting(None, help="inverse regularisation of the logistic regression; unset: chosen on "
                                        "validation macro-F1 from 1, 4, 16")
    class_weight: Literal["balanced"] | None = setting("balanced", help="'balanced' (inverse class frequency) or "
                                                                        "None (every example counts the same)")
    max_features: int | None = setting(200_000, help="vocabulary cap (most frequent n-grams); None: no cap")
    seed: int = setting(0, help="random state of the logistic regression (the run's --seed)")

    def check(self) -> None:
        positive_int(self, "ngram_max")
        if self.ngram_max > 5:
            raise SettingError("ngram_max", self.ngram_max, "an integer from 1 to 5")
        positive_number(self, "C", allow_none=True)
        positive_int(self, "max_features", allow_none=True)


class MajorityRung(Rung):
    """Always predicts the most frequent training class: the chance floor."""

    name = "majority"
    family = "floor"
    cost_rank = 0
    description = "most frequent class (chance floor)"
    Settings = MajoritySettings

    def fit(self, texts: Sequence[str], y: np.ndarray, *, label_names: Sequence[str],
            val_texts: Sequence[str] | None = None, val_y: np.ndarray | None = None) -> MajorityRung:
        texts, y = check_inputs(texts, y)
        self.label_names_ = list(label_names)
        counts = np.bincount(y, minlength=len(label_names))
        self.prior_ = counts / counts.sum()
        self.majority_ = int(counts.argmax())
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        texts, _ = check_inputs(texts)
        out = np.zeros((len(texts), len(self.label_names_)))
        out[:, self.majority_] = 1.0
        return out

    def _save(self, path: Path) -> None:
        np.save(path / "prior.npy", self.prior_)

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> MajorityRung:
        rung = cls(**meta["params"])
        rung.label_names_ = meta["label_names"]
        prior = np.load(path / "prior.npy", allow_pickle=False)
        if prior.ndim != 1 or not len(prior) or not np.isfinite(prior).all() or (prior < 0).any():
            raise AdaptError(f"{path / 'prior.npy'} is not a vector of class shares; the saved rung is damaged: "
                             "re-run it with --fresh.")
        rung.prior_ = prior
        rung.majority_ = int(rung.prior_.argmax())
        return rung

    def n_model_classes(self) -> int | None:
        return len(self.prior_)

    def extra_info(self) -> dict[str, Any]:
        return {"majority_label": self.label_names_[self.majority_], "majority_share": float(self.prior_.max())}


MODEL_FILE = "model.skops"
STATE_FILE = "state.json"
#: the TF-IDF vocabulary, terms in column order (JSON: skops writes a dict entry by entry, in time
#: that grows with the square of its size: 50,000 n-grams took 116 s, news20's ~200,000 over 45 min)
VOCAB_FILE = "vocabulary.json"


class TfidfRung(Rung):
    """TF-IDF word 1-2-grams + logistic regression; C chosen on validation macro-F1."""

    name = "tfidf"
    family = "floor"
    cost_rank = 10
    description = "TF-IDF word n-grams + logistic regression (classical floor)"
    Settings = TfidfSettings
    settings: TfidfSettings

    def _pipeline(self, C: float, analyzer: str = "word") -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        p = self.settings
        if analyzer == "char":  # texts without word tokens (emoji, symbols): character 1-3-grams instead
            vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=1,
                                  max_features=p.max_features, lowercase=True)
        else:
            vec = TfidfVectorizer(ngram_range=(1, p.ngram_max), sublinear_tf=True, min_df=1,
                                  max_features=p.max_features, strip_accents="unicode")
        return make_pipeline(
            vec,
            LogisticRegression(C=C, max_iter=2000, class_weight=p.class_weight, random_state=p.seed),
        )

    #: The C grid, in the order it is tried: the middle first, so a budget cut keeps the usual choice.
    C_GRID = (4.0, 1.0, 16.0)
    #: Share of the rung's time budget (``time_budget_s``, set by the ladder) the C grid may use.
    FIT_BUDGET_SHARE = 0.4

    def fit(self, texts: Sequence[str], y: np.ndarray, *, label_names: Sequence[str],
            val_texts: Sequence[str] | None = None, val_y: np.ndarray | None = None) -> TfidfRung:
        """Vectorise once, fit the logistic regression for each C of the grid, keep the best on
        validation macro-F1. With a time budget the first C's fit is the timing probe: further grid
        points are tried only while their estimate fits :attr:`FIT_BUDGET_SHARE` of the budget
        (``selection_budget_`` records what was cut)."""
        import time

        from sklearn.base import clone
        from sklearn.pipeline import Pipeline

        clock = getattr(self, "clock", None) or time.perf_counter
        texts, y = check_inputs(texts, y)
        self.label_names_ = list(label_names)
        k = len(label_names)
        grid = [self.settings.C] if self.settings.C is not None else list(self.C_GRID)
        self.selection_: dict[str, float] = {}
        self.selection_budget_: dict[str, Any] | None = None
        self.analyzer_ = "word" if _has_word_tokens(texts) else "char"
        t0 = clock()
        template = self._pipeline(grid[0], self.analyzer_)
        vec = template.steps[0][1].fit(texts)
        # the n-grams max_features pruned (millions on long texts with bigrams): introspection only, and
        # serialising them made saving news20's model take 45+ minutes (scikit-learn: safe to delete)
        if hasattr(vec, "stop_words_"):
            del vec.stop_words_
        X = vec.transform(texts)
        Xv = vec.transform(list(val_texts)) if (len(grid) > 1 and val_texts is not None and val_y is not None) else None
        vec_seconds = clock() - t0
        budget = getattr(self, "time_budget_s", None)
        allowed = None if budget is None else self.FIT_BUDGET_SHARE * budget
        best = None
        lr_seconds: list[float] = []
        for i, C in enumerate(grid):
            if i and allowed is not None:
                spent = clock() - t0
                est = max(lr_seconds)
                if spent + est > allowed:
                    self.selection_budget_ = {
                        "budget_seconds": round(budget, 1), "grid_share": self.FIT_BUDGET_SHARE,
                        "tried": [f"C={c:g}" for c in grid[:i]], "not_tried": [f"C={c:g}" for c in grid[i:]],
                        "seconds_per_C": round(est, 2), "vectorise_seconds": round(vec_seconds, 2),
                        "why": f"each C takes ~{est:.0f} s; {len(grid) - i} more would pass {allowed:.0f} s "
                               f"({self.FIT_BUDGET_SHARE:.0%} of the {budget:.0f} s budget)"}
                    break
            t1 = clock()
            lr = clone(template.steps[1][1]).set_params(C=C).fit(X, y)
            lr_seconds.append(clock() - t1)
            pipe = Pipeline([template.steps[0], (template.steps[1][0], lr)])
            if Xv is None:
                best = (0.0, C, pipe)
                break
            f1 = fast_macro_f1(np.asarray(val_y), lr.predict(Xv), k)
            self.selection_[f"C={C:g}"] = f1
            if best is None or f1 > best[0] or (f1 == best[0] and best[1] > C):  # ties: the smaller C
                best = (f1, C, pipe)
        assert best is not None
        _, self.C_, self.pipeline_ = best
        # what a refit with C pinned costs (cross-validation's folds): vectorise + one logistic regression
        self.refit_seconds_ = vec_seconds + (max(lr_seconds) if lr_seconds else 0.0)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        texts, _ = check_inputs(texts)
        proba = self.pipeline_.predict_proba(texts)
        return _full_proba(proba, self.pipeline_.classes_, len(self.label_names_))

    def _save(self, path: Path) -> None:
        # skops, not pickle: loading it back trusts only scikit-learn's own types; the vocabulary
        # goes to its own JSON file (see VOCAB_FILE), the rest of the pipeline through skops
        vec = self.pipeline_.steps[0][1]
        vocab = vec.vocabulary_
        terms = [""] * len(vocab)
        for term, col in vocab.items():
            terms[col] = term
        (path / VOCAB_FILE).write_text(json.dumps(terms), encoding="utf-8")
        vec.vocabulary_ = {}
        try:
            dump_sklearn(self.pipeline_, path / MODEL_FILE)
        finally:
            vec.vocabulary_ = vocab
        (path / STATE_FILE).write_text(json.dumps({"C": self.C_, "selection": self.selection_,
                                                   "selection_budget": getattr(self, "selection_budget_", None)},
                                                  indent=2))

    def n_model_classes(self) -> int | None:
        return len(self.pipeline_.steps[-1][1].classes_)

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> TfidfRung:
        rung = cls(**meta["params"])
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        rung.pipeline_ = load_sklearn(path / MODEL_FILE)
        vocab_file = path / VOCAB_FILE
        if vocab_file.is_file():  # models saved before the vocabulary moved out keep it inside the skops file
            try:
                terms = json.loads(vocab_file.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise AdaptError(f"{vocab_file} is not valid JSON; the saved rung is damaged: re-run it with "
                                 "--fresh.") from e
            vec = rung.pipeline_.steps[0][1]
            n_cols = len(getattr(vec, "idf_", terms))
            if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms) or len(terms) != n_cols:
                raise AdaptError(f"{vocab_file} does not match the model's {n_cols} TF-IDF columns; the saved rung "
                                 "is damaged: re-run it with --fresh.")
            vec.vocabulary_ = {t: i for i, t in enumerate(terms)}
        rung.C_, rung.selection_ = state["C"], state["selection"]
        rung.selection_budget_ = state.get("selection_budget")
        rung.label_names_ = meta["label_names"]
        return rung

    def extra_info(self) -> dict[str, Any]:
        vec = self.pipeline_.steps[0][1]
        vocab = len(vec.vocabulary_)
        info = {"C": self.C_, "validation_macro_f1_by_C": self.selection_, "vocabulary_size": vocab}
        if getattr(self, "selection_budget_", None):
            info["C_grid_cut_by_budget"] = self.selection_budget_
        if vec.analyzer == "char":
            info["analyzer"] = "char 1-3-grams (the training texts have no word tokens, e.g. only emoji or symbols)"
        return info


def _has_word_tokens(texts: Sequence[str]) -> bool:
    """Would the default word tokenizer find any vocabulary (a word of 2+ characters) in ``texts``?"""
    import re

    pattern = re.compile(r"(?u)\b\w\w+\b")
    return any(pattern.search(t) for t in texts)


def _full_proba(proba: np.ndarray, classes: np.ndarray, k: int) -> np.ndarray:
    """Expand a classifier's columns to all ``k`` label codes (a class absent from train gets 0)."""
    if proba.shape[1] == k and np.array_equal(classes, np.arange(k)):
        return proba
    out = np.zeros((proba.shape[0], k))
    out[:, np.asarray(classes, dtype=int)] = proba
    return out

"""The contract every rung of the ladder follows (scikit-learn style).

A rung is one adaptation strategy (a classical floor, a prompt, a frozen encoder + head, a
fine-tuned model, ...). ``__init__`` only stores parameters, checked against the rung's declared
settings (``Settings``, a dataclass: see :mod:`adaptladder.rungs.settings`); ``get_params`` /
``set_params`` follow scikit-learn, so ``sklearn.base.clone(rung)`` works; ``fit`` learns and
returns self; learned state ends in ``_``; ``classes_`` holds the label names in column order;
``predict_proba`` returns an ``(n, n_classes)`` array whose columns follow ``classes_`` (the
integer label codes ``0..K-1``); ``predict`` returns the labels themselves (``predict_codes`` the
codes). ``save(dir)`` writes everything needed to predict again, and ``load_rung(dir)`` brings it
back with identical predictions. The shared conformance test in
``tests/test_rung_conformance.py`` checks all of it, for every registered rung.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from adaptladder.artifacts import RUNG_FILE  # re-exported: callers import it from here
from adaptladder.errors import AdaptError
from adaptladder.rungs.settings import RungSettings


class RungBase:
    """What every rung of every task kind shares: declared settings and scikit-learn's parameter contract.

    Class attributes a subclass sets:

    * ``name``: the registry name used on the command line (``"tfidf"``).
    * ``family``: e.g. ``floor`` | ``prompting`` | ``features`` | ``finetune`` | ``distill``.
    * ``cost_rank``: adaptation cost order; the ladder climbs from low to high.
    * ``description``: one line for listings and reports.
    * ``Settings``: the declared settings (type, default, help, checks) of the rung family.

    :class:`Rung` (classification: ``predict`` / ``predict_proba``) and
    :class:`adaptladder.generation.rungs.base.GenRung` (generation: ``generate``) build on it.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    cost_rank: ClassVar[int] = 0
    description: ClassVar[str] = ""
    #: The declared settings (type, default, help, checks) of this rung family.
    Settings: ClassVar[type[RungSettings]] = RungSettings

    def __init__(self, **params: Any) -> None:
        # validated (one line naming the rung and setting); values kept as given (sklearn's clone
        # checks identity), strings converted to the declared type
        self.settings = self.Settings.build(self.name, params)
        #: the settings given explicitly (saved in rung.json; the declared defaults fill the rest)
        self.params: dict[str, Any] = {k: getattr(self.settings, k) for k in params}

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every setting's value, defaults included (scikit-learn's contract; ``deep`` changes nothing:
        a rung holds no sub-estimators as parameters)."""
        return self.settings.values()

    def set_params(self, **params: Any) -> Any:
        """Change settings (validated like ``__init__``); returns self. Refit to take effect."""
        if not params:
            return self
        self.settings = self.Settings.build(self.name, {**self.params, **params})
        self.params = {k: getattr(self.settings, k) for k in {**self.params, **params}}
        self._settings_changed()
        return self

    def clone(self) -> Any:
        """A new, unfitted rung with the same explicitly given settings (``sklearn.base.clone`` agrees)."""
        return type(self)(**self.params)

    def _settings_changed(self) -> None:
        """Hook: drop state derived from the settings (e.g. a built backend)."""
        return None

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({shown})"


class Rung(RungBase, ABC):
    """Base class of every classification rung (see the module docstring for the contract)."""

    #: Evaluate on at most this many validation / test examples (a stratified, seeded sample,
    #: stated in the report) when predicting is slow, e.g. prompting a language model on a CPU.
    eval_cap: ClassVar[int | None] = None
    #: Share of a time budget the fit keeps to (1.0: it may use all of it, e.g. fine-tuning trains to
    #: it); the ladder leaves the rest (at least ``EVAL_FLOOR_SHARE``) to the evaluation.
    FIT_BUDGET_SHARE: ClassVar[float] = 1.0

    # ------------------------------------------------------------------ contract
    @abstractmethod
    def fit(
        self,
        texts: Sequence[str],
        y: np.ndarray,
        *,
        label_names: Sequence[str],
        val_texts: Sequence[str] | None = None,
        val_y: np.ndarray | None = None,
    ) -> Rung:
        """Learn from the training split.

        ``val_texts`` / ``val_y`` may be used for model selection or early stopping only,
        never the test split.
        """

    @abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, shape ``(len(texts), n_classes)``, rows summing to 1."""

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """The predicted labels (elements of ``classes_``), as scikit-learn classifiers return them."""
        codes = self.predict_codes(texts)  # first: an unfitted rung says so in one line
        return self.classes_[codes]

    def predict_codes(self, texts: Sequence[str]) -> np.ndarray:
        """The predicted integer label codes (column indices of ``predict_proba``)."""
        return np.asarray(self.predict_proba(texts)).argmax(axis=1)

    @property
    def classes_(self) -> np.ndarray:
        """The label names, in the order of ``predict_proba``'s columns (set by ``fit``)."""
        if not hasattr(self, "label_names_"):
            raise AttributeError(f"the {self.name} rung is not fitted yet: it has no classes_.")
        return np.asarray(list(self.label_names_))

    @abstractmethod
    def _save(self, path: Path) -> None:
        """Write the fitted state (not ``rung.json``) into the existing directory ``path``."""

    @classmethod
    @abstractmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> Rung:
        """Rebuild a fitted rung from ``path``; ``meta`` is the content of ``rung.json``."""

    # ------------------------------------------------------------------ optional hooks
    @classmethod
    def unavailable_reason(cls, params: dict[str, Any]) -> str | None:
        """Why this rung cannot run here (e.g. ``"needs CUDA"``), or None when it can.

        The ladder reports such a rung as *skipped* with this reason (and whatever
        :meth:`skip_details` adds) instead of failing the run.
        """
        return None

    def n_model_classes(self) -> int | None:
        """The number of classes the fitted model itself predicts (a head's ``classes_``, a prior's
        length), checked against ``rung.json``'s label names on load; ``None`` where the label names
        are all the model has (prompting)."""
        return None

    def shorten_prompts(self, why: str) -> int | None:
        """Make each prediction cheaper (a prompting rung halves its prompt window) when the ladder's
        timing probe finds the fitted rung too slow for a minimal evaluation in its budget (``why``).
        Returns the new prompt length in tokens, or ``None`` when this rung cannot (the default)."""
        return None

    @classmethod
    def skip_details(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Extra facts reported for a skipped rung (e.g. the estimated GPU memory / cost)."""
        return {}

    def extra_info(self) -> dict[str, Any]:
        """Rung-specific, JSON-serialisable measurements and artefacts for the report.

        Examples: trainable parameters, tokens per request, the prompt template used,
        the head chosen on validation, epochs run. Called after ``fit`` and after the
        ladder's predictions, so it may report usage accumulated while predicting.
        A rung priced per token (an API model) reports ``cost_per_1k_usd`` here; otherwise
        the ladder prices it from measured latency and the price table's $/hour.
        """
        return {}

    # ------------------------------------------------------------------ helpers
    def save(self, path: str | Path) -> Path:
        """Save into directory ``path`` (created; existing files in it are replaced)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._save(path)
        from adaptladder.artifacts import file_hashes

        # the class is found by ``name`` in the registry on load (never imported from a string in
        # this file); ``files`` are the content hashes checked before anything is read back
        meta = {
            "name": self.name,
            "params": _jsonable(self.params),
            "label_names": list(getattr(self, "label_names_", [])),
            "files": file_hashes(path, exclude=(RUNG_FILE, RUNG_FILE + ".tmp")),
        }
        tmp = path / (RUNG_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(path / RUNG_FILE)
        return path

    def _check_fitted(self) -> None:
        if not hasattr(self, "label_names_"):
            raise AdaptError(f"the {self.name} rung is not fitted yet: call fit() before predicting.")


def load_rung(path: str | Path, *, run_root: str | Path | None = None) -> Rung:
    """Load any saved rung from its directory, safely.

    The class comes from the registry by the rung's ``name`` (a ``"class"`` string in
    ``rung.json`` is ignored, never imported); pickle files are refused; every file must match
    the content hash recorded when it was written. Nothing in the directory can run code.
    """
    from adaptladder.artifacts import read_rung_meta
    from adaptladder.rungs import RUNGS, get_rung_class

    meta = read_rung_meta(path, RUNGS, required=("name", "params", "label_names"),
                          run_root=Path(run_root) if run_root is not None else None)
    rung = get_rung_class(meta["name"])._load(Path(path), meta)
    check_label_shape(rung, meta, Path(path) / "rung.json")
    return rung


def check_label_shape(rung: Rung, meta: dict[str, Any], meta_file: Path) -> None:
    """The label names in ``rung.json`` against the fitted model's own number of classes, where the
    model has one (a head's ``classes_`` or output size): an edited name list is one line, not a
    silent extra column."""
    names = meta.get("label_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise AdaptError(f"{meta_file}: label_names must be a list of distinct strings; the saved rung is damaged.")
    n = rung.n_model_classes()
    if n is not None and n != len(names):
        raise AdaptError(f"{meta_file} names {len(names)} labels but the saved model predicts {n} classes; the "
                         "saved rung was edited or damaged: re-run the ladder for it.")


def check_inputs(texts: Sequence[str], y: np.ndarray | None = None) -> tuple[list[str], np.ndarray | None]:
    """Shared validation for ``fit`` / ``predict`` inputs."""
    if isinstance(texts, str):
        raise AdaptError("texts must be a list of strings, not one string: wrap it in a list.")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise AdaptError(f"text #{i} is {type(t).__name__}, not a string: convert the text column to strings.")
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(texts):
            raise AdaptError(f"got {len(texts)} texts but labels of shape {y.shape}: pass one label per text.")
        if not np.issubdtype(y.dtype, np.integer):
            raise AdaptError("labels must be integer codes 0..K-1 (a Task provides them).")
    return texts, y


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj

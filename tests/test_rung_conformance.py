"""The shared conformance test every rung must pass (like scikit-learn's check_estimator).

fit/predict shapes, probabilities that sum to one, determinism under a seed, save -> load ->
identical predictions, and clear errors on misuse. Rungs that need large models are built
here on tiny random-weight models so the whole check runs in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from adaptladder.errors import AdaptError
from adaptladder.rungs import load_rung, make_rung
from adaptladder.rungs.base import Rung

# name -> factory(tiny_encoder_dir) building an unfitted rung that runs fast
CASES: dict[str, Callable[[str], Rung]] = {
    "majority": lambda enc: make_rung("majority"),
    "tfidf": lambda enc: make_rung("tfidf", seed=0),
    "features": lambda enc: make_rung("features", encoder=enc, precision="fp32", heads=["logreg", "mlp"], seed=0),
}


def _fit(rung: Rung, toy: tuple[list[str], np.ndarray, list[str]]) -> Rung:
    texts, y, names = toy
    return rung.fit(texts[::2] + texts[1::4], np.concatenate([y[::2], y[1::4]]), label_names=names,
                    val_texts=texts[1::2], val_y=y[1::2])


@pytest.mark.parametrize("name", list(CASES))
def test_conformance(name: str, toy_texts: tuple[list[str], np.ndarray, list[str]], tiny_encoder_dir: str,
                     tmp_path: Path) -> None:
    texts, _, names = toy_texts
    rung = CASES[name](tiny_encoder_dir)
    assert rung.name == name and rung.family and isinstance(rung.cost_rank, int)

    with pytest.raises(AdaptError):
        rung.predict(["not fitted yet"])

    assert _fit(rung, toy_texts) is rung
    proba = rung.predict_proba(texts)
    assert proba.shape == (len(texts), len(names))
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert (rung.predict(texts) == proba.argmax(axis=1)).all()
    with pytest.raises(AdaptError):
        rung.predict_proba("a single string")

    again = _fit(CASES[name](tiny_encoder_dir), toy_texts)
    assert np.allclose(again.predict_proba(texts), proba), "same seed, same data: same model"

    rung.save(tmp_path / "model")
    loaded = load_rung(tmp_path / "model")
    assert type(loaded) is type(rung)
    assert np.array_equal(loaded.predict_proba(texts), proba), "save -> load must give identical predictions"
    assert loaded.label_names_ == list(names)
    assert isinstance(rung.extra_info(), dict)


def test_load_rung_on_a_non_rung_dir(tmp_path: Path) -> None:
    with pytest.raises(AdaptError, match=r"rung\.json"):
        load_rung(tmp_path)


def test_fit_rejects_mismatched_labels(toy_texts: tuple[list[str], np.ndarray, list[str]]) -> None:
    texts, y, names = toy_texts
    with pytest.raises(AdaptError, match="one label per text"):
        make_rung("tfidf").fit(texts, y[:-1], label_names=names)


def test_unknown_rung_name() -> None:
    with pytest.raises(AdaptError, match="unknown rung"):
        make_rung("telepathy")


def test_features_embedding_cache_is_hit_on_second_fit(toy_texts: tuple[list[str], np.ndarray, list[str]],
                                                       tiny_encoder_dir: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import adaptladder.encode as enc

    monkeypatch.setenv("ADAPTLADDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(enc, "_SHARED", {})
    texts, y, names = toy_texts
    first = make_rung("features", encoder=tiny_encoder_dir, precision="fp32", heads=["logreg"])
    first.fit(texts, y, label_names=names)
    e1 = first._encoder()
    assert e1.stats["misses"] == len(texts) and e1.stats["hits"] == 0
    monkeypatch.setattr(enc, "_SHARED", {})  # a new process: nothing in memory, only the disk cache
    second = make_rung("features", encoder=tiny_encoder_dir, precision="fp32", heads=["logreg"])
    second.fit(texts, y, label_names=names)
    e2 = second._encoder()
    assert e2 is not e1
    assert e2.stats["hits"] == len(texts) and e2.stats["misses"] == 0
    assert np.allclose(first.predict_proba(texts), second.predict_proba(texts))

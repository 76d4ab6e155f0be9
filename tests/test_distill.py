"""The distill rung: teacher labels -> student, on a small sample of a built-in data set.

Unit tests use tiny TF-IDF rungs defined here (fast, no packaged model); the slow test runs the
real tfidf -> features pair from the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaptladder.artifacts import dump_sklearn, load_sklearn
from adaptladder.errors import AdaptError
from adaptladder.rungs import RUNGS, get_rung_class, load_rung, make_rung
from adaptladder.rungs.base import Rung, check_inputs
from adaptladder.rungs.distill import DistillRung, read_unlabelled
from adaptladder.rungs.settings import RungSettings, setting
from adaptladder.task import load_builtin


@dataclass
class TinySettings(RungSettings):
    analyzer: str = setting("word", help="word or char_wb")
    alpha: float = setting(0.1, help="naive Bayes smoothing")


class TinyTfidfRung(Rung):
    """TF-IDF + naive Bayes (instant to fit); ``analyzer="char_wb"`` makes a different (teacher) model."""

    name = "tiny-tfidf"
    family = "floor"
    cost_rank = 10
    Settings = TinySettings

    def fit(self, texts, y, *, label_names, val_texts=None, val_y=None):  # type: ignore[override]
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.naive_bayes import MultinomialNB

        texts, y = check_inputs(texts, y)
        analyzer = self.params.get("analyzer", "word")
        self.vec_ = TfidfVectorizer(analyzer=analyzer, ngram_range=(2, 4) if analyzer == "char_wb" else (1, 2),
                                    max_features=2000)
        x = self.vec_.fit_transform(texts)
        self.clf_ = MultinomialNB(alpha=float(self.params.get("alpha", 0.1)))
        self.clf_.fit(x, y)
        self.label_names_ = list(label_names)
        self.fit_calls_ = getattr(self, "fit_calls_", 0) + 1
        return self

    def predict_proba(self, texts):  # type: ignore[override]
        self._check_fitted()
        texts, _ = check_inputs(texts)
        p = self.clf_.predict_proba(self.vec_.transform(texts))
        out = np.zeros((len(texts), len(self.label_names_)))
        out[:, self.clf_.classes_] = p  # classes absent from training get probability 0
        return out

    def _save(self, path: Path) -> None:
        dump_sklearn(self.vec_, path / "vec.skops")  # no pickle: load_rung refuses pickle files
        dump_sklearn(self.clf_, path / "clf.skops")

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> TinyTfidfRung:
        rung = cls(**meta["params"])
        rung.vec_, rung.clf_ = load_sklearn(path / "vec.skops"), load_sklearn(path / "clf.skops")
        rung.label_names_ = meta["label_names"]
        return rung


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(RUNGS, "tiny-tfidf", f"{__name__}:TinyTfidfRung")
    return "tiny-tfidf"


@pytest.fixture(scope="module")
def trec() -> Any:
    return load_builtin("trec6").sample({"train": 400, "validation": 120, "test": 50}, seed=0)


def _fit(trec: Any, **params: Any) -> DistillRung:
    tx, ty = trec.part("train")
    vx, vy = trec.part("validation")
    base = {"teacher": "tiny-tfidf", "teacher_params": {"analyzer": "char_wb"}, "student": "tiny-tfidf",
            "progress": False, "latency_probe": 16}
    rung = make_rung("distill", **{**base, **params})
    assert isinstance(rung, DistillRung)
    return rung.fit(tx, ty, label_names=trec.label_names, val_texts=vx, val_y=vy)


def test_registered_with_cost_rank_and_family() -> None:
    cls = get_rung_class("distill")
    assert (cls.cost_rank, cls.family) == (90, "distill")


def test_teacher_labels_reach_the_student_and_are_reported(trec: Any, tiny: str) -> None:
    rung = _fit(trec, gold_labels=80)
    info = rung.extra_info()
    lab = info["labelling"]
    # 320 training texts had their labels hidden; the teacher labelled all of them (cap 1000)
    assert lab["used_for_student"] > 250
    assert lab["kept"] == lab["labelled"] == lab["pool_size"]
    assert info["student"]["trained_on"] == {"gold": 80, "teacher": lab["used_for_student"]}
    assert 0.0 < lab["accuracy_of_used_labels"]["accuracy"] <= 1.0
    assert lab["throughput_per_s"] > 0
    for who in ("teacher", "student", "gold_only_student"):
        v = info[who]["validation"]
        assert v["n"] == 120 and 0 <= v["macro_f1"] <= 1
    for who in ("teacher", "student"):
        assert info[who]["latency_ms_p50"] > 0 and info[who]["batch_ms_per_example"] > 0
        assert info[who]["cost_per_1k_usd"] > 0 and "hour" in info[who]["cost_basis"]
    assert "speedup" in info["bought"] and "macro_f1_gain_from_teacher_labels" in info["bought"]
    assert "cost_per_1k_usd" not in info  # a local student: the ladder prices it from its own timing
    assert sum(lab["teacher_label_counts"].values()) == lab["used_for_student"]
    # predictions are the student's
    tx, _ = trec.part("test")
    assert np.allclose(rung.predict_proba(tx), rung.student_.predict_proba(tx))


def test_gold_labels_win_over_teacher_labels(trec: Any, tiny: str) -> None:
    rung = _fit(trec)  # default pool: the training texts, all with gold labels
    lab = rung.extra_info()["labelling"]
    assert lab["used_for_student"] == 0
    assert lab["gold_wins"] == lab["pool_size"] > 0
    assert lab["agreement_with_gold"]["n"] == lab["pool_size"]
    assert rung.extra_info()["gold_only_student"] is None  # it would be the student itself
    assert any("gold labels only" in n for n in rung.extra_info()["notes"])


def test_min_confidence_filters_teacher_labels(trec: Any, tiny: str) -> None:
    loose = _fit(trec, gold_labels=80, min_confidence=0.0).extra_info()["labelling"]
    strict = _fit(trec, gold_labels=80, min_confidence=0.5).extra_info()["labelling"]
    nobody = _fit(trec, gold_labels=80, min_confidence=1.01).extra_info()["labelling"]
    assert nobody["kept"] == 0 and nobody["used_for_student"] == 0
    assert 0 < strict["kept"] < loose["kept"]


def test_max_unlabelled_caps_the_pool_and_prefers_texts_without_gold(trec: Any, tiny: str) -> None:
    lab = _fit(trec, gold_labels=80, max_unlabelled=50).extra_info()["labelling"]
    assert lab["pool_size"] == 50 and lab["used_for_student"] == 50 and lab["gold_wins"] == 0
    assert "capped" in lab["pool"]


def test_unlabelled_file(trec: Any, tiny: str, tmp_path: Path) -> None:
    tx, _ = trec.part("train")
    extra = ["How far is the moon from Earth ?", "Who invented the telephone ?", "What does NASA stand for ?"]
    f = tmp_path / "extra.txt"
    f.write_text("\n".join([*extra, "", tx[0]]) + "\n", encoding="utf-8")
    assert read_unlabelled(f) == [*extra, tx[0]]
    rung = _fit(trec, unlabelled=str(f))
    lab = rung.extra_info()["labelling"]
    assert lab["pool_size"] == 4 and lab["used_for_student"] == 3 and lab["gold_wins"] == 1
    assert str(f) in lab["pool"]


def test_save_load_identical_predictions_without_the_teacher(trec: Any, tiny: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    rung = _fit(trec, gold_labels=80)
    tx, _ = trec.part("test")
    rung.save(tmp_path / "m")
    assert (tmp_path / "m" / "student" / "rung.json").is_file()
    assert not any("teacher" in p.name for p in (tmp_path / "m").rglob("*"))
    loaded = load_rung(tmp_path / "m")
    assert isinstance(loaded, DistillRung)
    assert np.array_equal(loaded.predict_proba(tx), rung.predict_proba(tx))
    assert loaded.extra_info()["labelling"] == rung.extra_info()["labelling"]
    assert loaded.label_names_ == trec.label_names


def test_teacher_path_uses_a_saved_rung_as_is(trec: Any, tiny: str, tmp_path: Path) -> None:
    tx, ty = trec.part("train")
    teacher = make_rung("tiny-tfidf", analyzer="char_wb").fit(tx, ty, label_names=trec.label_names)
    teacher.save(tmp_path / "teacher")
    rung = _fit(trec, teacher="no-such-rung", teacher_path=str(tmp_path / "teacher"), gold_labels=80)
    info = rung.extra_info()["teacher"]
    assert info["from"].startswith("loaded from") and info["fit_seconds"] == 0.0
    assert any("may have seen all training labels" in n for n in rung.extra_info()["notes"])
    # a teacher for other labels is refused in one sentence
    other = make_rung("tiny-tfidf").fit(["alpha beta", "gamma delta", "eps zeta"], np.array([0, 1, 1]),
                                        label_names=["x", "y"])
    other.save(tmp_path / "other")
    with pytest.raises(AdaptError, match="predicts labels"):
        _fit(trec, teacher_path=str(tmp_path / "other"))


def test_bad_parameters_are_one_line_errors(trec: Any, tiny: str) -> None:
    with pytest.raises(AdaptError, match="unknown setting teachr for the distill rung"):
        make_rung("distill", teachr="tfidf")
    assert "not available" in (DistillRung.unavailable_reason({"teacher": "no-such-rung"}) or "")
    assert "distill" in (DistillRung.unavailable_reason({"teacher": "tiny-tfidf", "student": "distill"}) or "")
    assert DistillRung.unavailable_reason({"teacher": "tiny-tfidf", "student": "tiny-tfidf"}) is None
    with pytest.raises(AdaptError, match="not available"):
        _fit(trec, teacher="no-such-rung")
    with pytest.raises(AdaptError, match="gold_labels"):
        _fit(trec, gold_labels="lots")
    with pytest.raises(AdaptError, match="fewer than"):
        _fit(trec, gold_labels=3)
    with pytest.raises(AdaptError, match="student_params"):
        _fit(trec, student_params="{not json")
    with pytest.raises(AdaptError, match="not found"):
        _fit(trec, unlabelled="/no/such/file.txt")


def test_gold_labels_fraction(trec: Any, tiny: str) -> None:
    rung = _fit(trec, gold_labels=0.25, baseline=False)
    info = rung.extra_info()
    assert info["student"]["trained_on"]["gold"] == 100
    assert info["gold_only_student"] is None


@pytest.mark.slow
def test_tfidf_teacher_features_student(trec: Any) -> None:
    """The registry's real rungs: TF-IDF teacher -> frozen-MiniLM student (needs the packaged MiniLM)."""
    try:
        get_rung_class("tfidf")
        get_rung_class("features")
    except (AdaptError, ImportError):
        pytest.skip("the tfidf / features rungs are not in this build yet")
    rung = _fit(trec, teacher="tfidf", teacher_params={}, student="features", student_params={"heads": ["logreg"]},
                gold_labels=100)
    info = rung.extra_info()
    assert info["student"]["trained_on"]["teacher"] > 250
    assert info["student"]["validation"]["macro_f1"] > 0.3
    assert info["labelling"]["accuracy_of_used_labels"]["accuracy"] > 0.3


def test_params_from_run_reuses_a_finished_teacher(tmp_path: Path) -> None:
    finished = {"few-shot": tmp_path / "rungs" / "few-shot" / "model"}
    got = DistillRung.params_from_run({"teacher": "few-shot"}, finished)
    assert got["teacher_path"] == str(finished["few-shot"])
    # not when the teacher differs, has its own params, or may only see part of the gold labels
    assert "teacher_path" not in DistillRung.params_from_run({"teacher": "tfidf"}, finished)
    assert "teacher_path" not in DistillRung.params_from_run(
        {"teacher": "few-shot", "teacher_params": {"k": 2}}, finished)
    assert "teacher_path" not in DistillRung.params_from_run({"teacher": "few-shot", "gold_labels": 100}, finished)

"""Time budgets for the audit, tfidf's C grid, features' training encoding and cross-validation.

Every decision is driven by fake clocks (time advances only when the fake work "runs"), so the
tests check what a budget cuts, never how long anything took.
"""

from __future__ import annotations

import numpy as np
import pytest

from adaptladder.audit import labels as audit_labels
from adaptladder.audit import run_audit
from adaptladder.audit.gate import audit_budget_minutes
from adaptladder.budget import run_within, spread_by_length, stratified_order
from adaptladder.commands.run import parse_sample
from adaptladder.config import RunConfig
from adaptladder.errors import AdaptError
from adaptladder.ladder import cv_folds_within
from adaptladder.rungs import make_rung
from adaptladder.task import Task
from fakes import TrigramEncoder, clean_task


class FakeClock:
    def __init__(self, step: float = 0.0) -> None:
        self.t = 0.0
        self.step = step  # seconds each reading advances (0: only work advances it)

    def __call__(self) -> float:
        now = self.t
        self.t += self.step
        return now


class SlowEncoder(TrigramEncoder):
    """The trigram encoder, costing ``per_text`` fake seconds per text."""

    def __init__(self, clock: FakeClock, per_text: float) -> None:
        super().__init__(dim=512)
        self.clock, self.per_text, self.encoded = clock, per_text, 0

    def encode(self, texts, *, progress: bool = False, desc: str = "") -> np.ndarray:
        self.clock.t += self.per_text * len(texts)
        self.encoded += len(texts)
        return super().encode(texts)


# ----------------------------------------------------------------------------- the shared tools
def test_stratified_order_prefixes_keep_class_shares() -> None:
    y = np.array([0] * 600 + [1] * 300 + [2] * 100)
    order = stratified_order(y, seed=3)
    assert sorted(order.tolist()) == list(range(len(y)))
    for m in (50, 200, 500):
        counts = np.bincount(y[order[:m]], minlength=3)
        assert np.all(np.abs(counts - m * np.array([0.6, 0.3, 0.1])) <= 1.5), (m, counts)
    assert np.array_equal(order, stratified_order(y, seed=3))
    assert not np.array_equal(order, stratified_order(y, seed=4))


def test_spread_by_length_picks_the_length_quantiles() -> None:
    rng = np.random.default_rng(0)
    lengths = np.where(rng.random(1000) < 0.9, 20, 400) + rng.integers(0, 5, 1000)
    pick = spread_by_length(lengths, 10)
    assert len(set(pick.tolist())) == 10
    assert np.mean(lengths[pick]) == pytest.approx(np.mean(lengths), rel=0.1)
    assert sorted(lengths[pick]) == list(lengths[pick])  # shortest first
    assert spread_by_length([5, 1], 4).tolist() == [1, 0] and spread_by_length([], 3).tolist() == []


def test_run_within_stops_before_a_chunk_that_would_not_fit() -> None:
    clock = FakeClock()

    def work(pos: np.ndarray) -> int:
        clock.t += 0.5 * len(pos)  # 0.5 s per row
        return len(pos)

    done = run_within(work, np.arange(1000), seconds=100, chunk=64, first_chunk=16, clock=clock)
    assert len(done.done) == 200 and done.sampled and done.seconds <= 100
    assert "time budget" in done.stopped
    assert sum(done.outputs) == 200
    full = run_within(work, np.arange(100), seconds=None, chunk=64, clock=clock)
    assert len(full.done) == 100 and not full.sampled and full.stopped is None
    floor = run_within(work, np.arange(1000), seconds=1, chunk=10, min_n=50, clock=clock)
    assert len(floor.done) == 50  # the floor is done whatever the budget, then it stops


# ----------------------------------------------------------------------------- the audit
def test_audit_budget_samples_the_embedding_and_says_so() -> None:
    task = clean_task(n_per_class=400)  # 1,200 texts
    clock = FakeClock()
    enc = SlowEncoder(clock, per_text=0.1)  # 120 s to embed all; the embed stage gets 60% of 60 s
    r = run_audit(task, encoder=enc, near_dup_threshold=0.8, budget_minutes=1, clock=clock)
    emb = r.stats["budget"]["embedding"]
    assert emb["sampled"] and emb["done"] == enc.encoded == 360 and emb["total"] == 1200
    # the features model would see only the embedded rows: the label-error search uses tfidf on every row
    lab = r.stats["label_errors"]
    assert lab["model"] == "tfidf" and lab["rows_checked"] == 1200 and not lab["sampled"]
    note = next(f for f in r.findings if f.code == "audit_sampled")
    assert "360 of 1,200 distinct texts" in note.message and "label errors" not in note.message
    assert r.settings["budget_minutes"] == 1
    # without a budget: every text, no note
    full = run_audit(task, encoder=TrigramEncoder(dim=512), near_dup_threshold=0.8)
    assert not any(f.code == "audit_sampled" for f in full.findings)
    assert full.stats["label_errors"]["rows_checked"] == 1200 and not full.stats["label_errors"]["sampled"]


def test_audit_budget_sizes_the_label_error_search_from_a_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    task = clean_task(n_per_class=400)
    clock = FakeClock()
    real = audit_labels.out_of_fold_probs
    sizes: list[int] = []

    def slow_oof(texts, y, **kw):
        clock.t += 0.05 * len(texts)  # 0.05 s per row per model
        sizes.append(len(texts))
        return real(texts, y, **kw)

    monkeypatch.setattr(audit_labels, "out_of_fold_probs", slow_oof)
    r = run_audit(task, encoder=None, budget_minutes=1, clock=clock)
    lab = r.stats["label_errors"]
    # probe: 400 rows in 20 s -> 40 s left affords 800 of the 1,200 rows
    assert sizes == [audit_labels.PROBE_ROWS, 800]
    assert lab["sampled"] and lab["rows_checked"] == 800
    assert lab["budget"]["probe_rows"] == 400 and lab["budget"]["rows_eligible"] == 1200
    assert "sample of 800 of 1,200 rows" in next(f for f in r.findings if f.code == "likely_label_errors").message
    assert any(f.code == "audit_sampled" for f in r.findings)


def test_audit_budget_in_a_run_defaults_to_the_run_budget() -> None:
    assert audit_budget_minutes(RunConfig(data="x")) is None
    assert audit_budget_minutes(RunConfig(data="x", budget_minutes=5)) == 5
    assert audit_budget_minutes(RunConfig(data="x", budget_minutes=5, audit_budget_minutes=2)) == 2
    with pytest.raises(AdaptError, match="audit-budget-minutes"):
        RunConfig(data="x", audit_budget_minutes=0).validate()
    with pytest.raises(AdaptError, match="positive"):
        run_audit(clean_task(), encoder=None, budget_minutes=-1)


# ----------------------------------------------------------------------------- per-split --sample
def test_sample_per_split() -> None:
    assert parse_sample("500") == 500
    assert parse_sample("train=2000, val=1000,test=1000") == {"train": 2000, "validation": 1000, "test": 1000}
    for bad in ("lots", "train=x", "dev2=5"):
        with pytest.raises(AdaptError, match="--sample"):
            parse_sample(bad)
    RunConfig(data="x", sample={"train": 20, "test": 10}).validate()
    with pytest.raises(AdaptError, match="too small"):
        RunConfig(data="x", sample={"train": 5}).validate()
    with pytest.raises(AdaptError, match="sample"):
        RunConfig(data="x", sample={"everything": 5}).validate()
    task = clean_task(n_per_class=40)
    small = task.sample({"train": 30, "test": 9}, seed=0)
    sizes = small.summary()["split_sizes"]
    assert sizes == {"train": 30, "validation": int((task.split == "validation").sum()), "test": 9}


# ----------------------------------------------------------------------------- tfidf's C grid
def _toy(n_per_class: int = 30) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    vocab = [[f"w{c}_{i}" for i in range(20)] for c in range(3)]
    texts, y = [], []
    for c in range(3):
        for _ in range(n_per_class):
            texts.append(" ".join(rng.choice(vocab[c], 6)))
            y.append(c)
    y_arr = np.array(y)
    return texts, y_arr, texts[::3], y_arr[::3]


def test_tfidf_grid_is_cut_to_the_budget() -> None:
    texts, y, vt, vy = _toy()
    rung = make_rung("tfidf")
    rung.clock = FakeClock(step=10.0)  # every reading: +10 s (vectorise 10 s, each C 10 s)
    rung.time_budget_s = 100.0  # the grid may use 40 s: vectorise + the first C, not a second
    rung.fit(texts, y, label_names=["a", "b", "c"], val_texts=vt, val_y=vy)
    assert list(rung.selection_) == ["C=4"] and rung.C_ == 4.0
    info = rung.extra_info()["C_grid_cut_by_budget"]
    assert info["not_tried"] == ["C=1", "C=16"] and info["tried"] == ["C=4"]
    roomy = make_rung("tfidf")
    roomy.clock = FakeClock(step=10.0)
    roomy.time_budget_s = 1000.0
    roomy.fit(texts, y, label_names=["a", "b", "c"], val_texts=vt, val_y=vy)
    assert sorted(roomy.selection_) == ["C=1", "C=16", "C=4"] and "C_grid_cut_by_budget" not in roomy.extra_info()
    free = make_rung("tfidf").fit(texts, y, label_names=["a", "b", "c"], val_texts=vt, val_y=vy)
    assert len(free.selection_) == 3 and free.refit_seconds_ >= 0
    # the pruned n-grams are not kept (saving them took 45+ min on news20)
    capped = make_rung("tfidf", max_features=10).fit(texts, y, label_names=["a", "b", "c"])
    assert not hasattr(capped.pipeline_.steps[0][1], "stop_words_")
    assert len(capped.pipeline_.steps[0][1].vocabulary_) == 10


def test_cross_validation_folds_fit_what_is_left() -> None:
    assert cv_folds_within(5, per_fold_s=10, left_s=None) == 5
    assert cv_folds_within(5, per_fold_s=10, left_s=100) == 5
    assert cv_folds_within(5, per_fold_s=10, left_s=30) == 4  # 4 refits on 3/4 of the rows: 30 s
    assert cv_folds_within(5, per_fold_s=10, left_s=5) == 0


# ----------------------------------------------------------------------------- features' training encoding
def test_features_encodes_a_stratified_training_sample_within_the_budget(tiny_encoder_dir: str) -> None:
    texts, y, vt, vy = _toy(n_per_class=200)  # 600 training texts, 200 validation
    clock = FakeClock()
    rung = make_rung("features", encoder=tiny_encoder_dir, precision="fp32", heads=["logreg", "mlp"])
    enc = rung._encoder()
    real = enc.encode

    def slow(batch, **kw):
        clock.t += 0.2 * len(batch)
        return real(batch, **kw)

    enc.encode = slow
    rung.clock = clock
    rung.time_budget_s = 100.0  # the encoding may use 50 s: train 600/800 of it (187 texts at 0.2 s)
    rung.fit(texts, y, label_names=["a", "b", "c"], val_texts=vt, val_y=vy)
    rec = rung.extra_info()["encoding_sampled_by_budget"]
    assert rec["train"]["done"] == 187 and rec["train"]["total"] == 600 and rec["train"]["sampled"]
    assert rung.MIN_VAL <= rec["validation"]["done"] <= 64  # validation: the ~12.5 s left (the floor is 50)
    assert rung.refit_seconds_ > 0.2 * (600 - 187)  # cross-validation would encode the rest
    counts = np.bincount(np.asarray(rung.head_.classes_), minlength=3)
    assert counts.tolist() == [1, 1, 1]
    assert rung.predict_proba(vt[:5]).shape == (5, 3)


def test_task_sample_dict_accepts_missing_splits() -> None:
    t = Task("t", ["a b"] * 20 + ["c d"] * 20, np.array([0, 1] * 20), ["x", "y"],
             np.array(["train"] * 30 + ["test"] * 10, dtype=object), {})
    assert t.sample({"train": 10}, seed=0).summary()["split_sizes"] == {"train": 10, "validation": 0, "test": 10}


def test_an_evaluation_slowed_4x_after_the_probe_ends_within_its_allowance() -> None:
    """The probe measures 1 s per text; then every text costs 4 s (the machine got busy): the evaluation
    stops each split at its share of the allowance with a random sample, instead of running 4x over."""
    from adaptladder.ladder import eval_deadline, evaluate_rung, plan_evaluation

    task = clean_task(n_per_class=60)  # 27 validation + 27 test texts
    clock = FakeClock()
    rung = make_rung("majority")
    tr_x, tr_y = task.part("train")
    rung.fit(tr_x, tr_y, label_names=task.label_names)
    real = rung.predict_proba
    calls = {"n": 0}

    def slow(texts):
        calls["n"] += 1
        clock.t += (1.0 if calls["n"] == 1 else 4.0) * len(texts)
        return real(texts)

    rung.predict_proba = slow
    budget = 150.0  # the probe says the whole evaluation fits: ~(27 + 27 + speed) s at 1 s each
    plan = plan_evaluation(rung, task, 0, budget_s=budget, clock=clock)
    assert plan.caps == {"validation": None, "test": None} and plan.estimate_s <= budget
    start = clock.t - plan.probe_seconds
    logs: list[str] = []
    out = evaluate_rung(rung, task, 0, plan, deadline=eval_deadline(plan, clock.t), clock=clock, log=logs.append)
    assert clock.t - start <= plan.allowance_s * 1.1, clock.t - start
    for part in ("validation", "test"):
        rec = out[part]
        assert rec["indices"] == sorted(rec["indices"]) and 1 <= rec["n"] < 27
        assert rec["stopped_early"] == {"planned": 27, "done": rec["n"],
                                        "reason": "time allowance of the rung's budget reached"}
        assert rec["sampled"] and len(rec["predictions"]) == rec["n"] == len(rec["labels"])
    assert sum("stopped at its share of the budget" in m for m in logs) == 2
    # without a deadline the same evaluation runs whole, nearly twice its allowance
    clock.t, calls["n"] = 0.0, 1
    whole = evaluate_rung(rung, task, 0, plan, clock=clock)
    assert whole["test"]["n"] == 27 and clock.t > 1.5 * budget

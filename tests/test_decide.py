"""The decision rule on synthetic per-example predictions where the right decision is known."""

from __future__ import annotations

import numpy as np
import pytest

from adaptladder.compare import holm
from adaptladder.decide import bar_check, decision_comparisons, meets_bar, recommend
from adaptladder.ladder import RunConfig
from adaptladder.measure import score

N = 2000
Y = np.random.default_rng(0).integers(0, 2, N)


def preds(acc: float, seed: int, y: np.ndarray = Y) -> np.ndarray:
    r = np.random.default_rng(seed)
    return np.where(r.random(len(y)) < acc, y, 1 - y)


def rung(name: str, pred: np.ndarray, *, y: np.ndarray = Y, idx: np.ndarray | None = None, part: str = "validation",
         cost: float = 1e-4, latency: float = 1.0) -> dict:
    idx = np.arange(len(y)) if idx is None else idx
    s = score(y[idx], np.eye(2)[pred[idx]], ["a", "b"], seed=0)
    s.update(indices=idx.tolist(), predictions=pred[idx].tolist(), labels=y[idx].tolist())
    r = {"name": name, "status": "done", "validation": s, "test": s, "cost_per_1k_usd": cost,
         "predict": {"latency_ms_p50": latency}}
    if part == "cv":
        r["cv"] = dict(s, folds=5)
    return r


def cfg(**kw: object) -> RunConfig:
    return RunConfig(metric="accuracy", **kw)


def test_clear_winner_is_recommended() -> None:
    cheap = rung("cheap", preds(0.70, 1))
    strong = rung("strong", preds(0.90, 2), cost=1e-2, latency=20)
    rec = recommend([cheap, strong], cfg(bar=0.85))
    assert rec["rung"] == "strong" and rec["bar_met"] is True
    assert meets_bar(cheap, cfg(bar=0.85)) is False
    assert any("cheap missed the bar" not in r for r in rec["reasons"])  # 0.15 below: significant, not near


def test_tie_within_margin_recommends_the_cheaper() -> None:
    base = preds(0.95, 3)
    flip = np.flatnonzero(base == Y)[:2]  # two more errors: 0.001 below the costlier rung
    cheap_pred = base.copy()
    cheap_pred[flip] = 1 - cheap_pred[flip]
    cheap = rung("cheap", cheap_pred, cost=1e-5, latency=0.5)
    costly = rung("costly", base, cost=9e-4, latency=8.5)
    bar = round(float((base == Y).mean()), 4)  # costly exactly clears; cheap is 0.001 short, within 0.005
    rec = recommend([cheap, costly], cfg(bar=bar))
    assert rec["rung"] == "cheap", rec["reasons"]
    assert "within the margin" in rec["reasons"][0]
    assert any("no evidence of a difference at n=2000" in r and "17x faster and 90x cheaper" in r
               for r in rec["reasons"]), rec["reasons"]
    # with no margin the same evidence picks the costlier rung, and says the cheap one was a near-miss
    rec0 = recommend([cheap, costly], cfg(bar=bar, margin=0.0))
    assert rec0["rung"] == "costly"
    near = [r for r in rec0["reasons"] if r.startswith("cheap missed the bar by 0.0010 (not significant")]
    assert near and "17x faster and 90x cheaper than costly" in near[0]


def test_costlier_significantly_better_overrides_the_bar() -> None:
    cheap = rung("cheap", preds(0.86, 4), cost=1e-5, latency=0.5)
    costly = rung("costly", preds(0.95, 5), cost=1e-3, latency=5)
    rec = recommend([cheap, costly], cfg(bar=0.80))  # both meet the bar (only with --all does costly run)
    assert rec["rung"] == "costly"
    said = [r for r in rec["reasons"] if r.startswith("cheap meets the bar, but costly is significantly better by")]
    assert said and "100x the cost per prediction" in said[0] and "10x the latency" in said[0]


def test_near_miss_is_said_out_loud() -> None:
    cheap = rung("cheap", preds(0.93, 6), cost=1e-5, latency=0.5)
    costly = rung("costly", preds(0.97, 7), cost=1e-3, latency=5)
    v = (np.asarray(cheap["validation"]["predictions"]) == Y).mean()
    c = cfg(bar=round(float(v) + 0.008, 3))  # 0.008 short: beyond the margin, inside the CI
    ck = bar_check(cheap, c)
    assert not ck["ok"] and not ck["significant_miss"]
    rec = recommend([cheap, costly], c)
    assert rec["rung"] == "costly"
    assert any(r.startswith("cheap missed the bar by 0.00") and "(not significant" in r and
               "10x faster and 100x cheaper than costly" in r for r in rec["reasons"]), rec["reasons"]


def test_absence_of_evidence_is_not_read_as_equivalence() -> None:
    """Small n, big gap: 'no evidence at n=...' plus the detectable difference, never 'equal'."""
    y = Y[:60]
    cheap = rung("cheap", preds(0.70, 8, y), y=y)
    costly = rung("costly", preds(0.80, 9, y), y=y)
    rec = recommend([cheap, costly], cfg())
    txt = " ".join(rec["reasons"])
    if rec["rung"] == "cheap":
        assert "no evidence of a difference at n=60" in txt and "would usually go undetected" in txt
    assert "equivalent" not in txt and "not significantly different" not in txt


def test_cv_rung_pairs_with_a_validation_rung_on_the_shared_examples() -> None:
    val = np.arange(1500, 2000)
    cv_rung = rung("cheap", preds(0.9, 10), part="cv")  # out-of-fold over all 2000 (train + validation)
    cv_rung["validation"] = rung("x", preds(0.9, 10), idx=val)["validation"]
    slow = rung("slow", preds(0.9, 11), idx=val)
    (cmp,) = decision_comparisons([cv_rung, slow], "accuracy")
    assert cmp["n_common"] == 500 and cmp["part"] == "cv/validation" and cmp["n_a"] == 2000
    rec = recommend([cv_rung, slow], cfg(bar=0.5))
    assert rec["estimates"]["cheap"]["part"] == "cv" and rec["estimates"]["cheap"]["n"] == 2000
    assert rec["estimates"]["slow"]["part"] == "validation" and rec["estimates"]["slow"]["n"] == 500


def test_holm_adjusts_step_down() -> None:
    cmps = [{"p_value": p, "metric": "accuracy", "diff": 0.1, "a": "x", "b": "y"} for p in (0.01, 0.04, 0.03)]
    holm(cmps)
    assert [c["p_holm"] for c in cmps] == pytest.approx([0.03, 0.06, 0.06])
    assert [c["significant"] for c in cmps] == [True, False, False] and cmps[0]["holm_m"] == 3


def test_no_finished_rung() -> None:
    rec = recommend([{"name": "lora", "status": "failed", "reason": "boom"}], cfg(bar=0.9))
    assert rec["rung"] is None and "boom" in rec["reasons"][0]


def test_many_class_ci_contains_its_point_estimate() -> None:
    """#14.7: 500 classes, most with one validation example: the interval must contain the estimate."""
    rng = np.random.default_rng(0)
    k = 500
    y = np.concatenate([np.arange(k), rng.integers(0, 20, 300)])
    pred = np.where(rng.random(len(y)) < 0.2, y, rng.integers(0, k, len(y)))
    s = score(y, np.eye(k)[pred], [str(i) for i in range(k)], seed=0)
    lo, hi = s["macro_f1_ci"]
    assert lo <= s["macro_f1"] <= hi, (s["macro_f1"], lo, hi)
    assert hi - lo > 0.005  # a real interval, not a point
    lo, hi = s["accuracy_ci"]
    assert lo <= s["accuracy"] <= hi


def test_cross_validate_pools_out_of_fold_predictions() -> None:
    from adaptladder.crossval import cross_validate, pinned_params
    from adaptladder.rungs.classical import TfidfRung

    rng = np.random.default_rng(0)
    words = [["win", "cash", "prize", "free"], ["lunch", "park", "kids", "home"]]
    y = np.arange(80) % 2
    texts = [" ".join(rng.choice(words[c], 4)) for c in y]
    fitted = TfidfRung(seed=0).fit(texts[:60], y[:60], label_names=["a", "b"], val_texts=texts[60:], val_y=y[60:])
    assert set(pinned_params(fitted)) == {"C"}
    idx = np.arange(10, 80)  # rows 0-9 play the test split: never predicted by the CV
    part = cross_validate(TfidfRung, {"seed": 0}, fitted, texts, y, idx, ["a", "b"], folds=5, seed=3)
    assert part["indices"] == idx.tolist() and part["n"] == 70 and part["folds"] == 5
    assert part["labels"] == y[idx].tolist() and part["macro_f1"] > 0.9
    assert part["pinned"] == {"C": fitted.C_}


def test_cross_validation_groups_duplicates_and_trains_folds_at_the_deployed_size() -> None:
    """Folds never train on more rows than the deployed model (train's size), and a text repeated
    (after normalisation) is never trained on and predicted in the same fold."""
    from adaptladder.crossval import cross_validate
    from adaptladder.rungs.classical import TfidfRung

    rng = np.random.default_rng(1)
    words = [["win", "cash", "prize", "free"], ["lunch", "park", "kids", "home"]]
    y = np.arange(60) % 2
    texts = [" ".join(rng.choice(words[c], 4)) + f" n{i}" for i, c in enumerate(y)]
    texts[41], texts[43] = texts[1].upper(), texts[3] + " !"  # normalised duplicates of rows 1 and 3
    y[41], y[43] = y[1], y[3]
    seen: list[tuple[set[str], set[str]]] = []

    class Spy(TfidfRung):
        def fit(self, tr_texts, tr_y, **kw):  # type: ignore[override]
            seen.append((set(tr_texts), set()))
            return super().fit(tr_texts, tr_y, **kw)

        def predict_proba(self, te_texts):  # type: ignore[override]
            seen[-1][1].update(te_texts)
            return super().predict_proba(te_texts)

    fitted = TfidfRung(seed=0, C=1.0).fit(texts[:20], y[:20], label_names=["a", "b"])
    part = cross_validate(Spy, {"seed": 0, "C": 1.0}, fitted, texts, y, np.arange(60), ["a", "b"], folds=4,
                          seed=0, max_train=20)
    assert part["fold_train_rows"] == [20] * 4 and part["n"] == 60 and part["grouped_duplicates"] == 2
    norm = {t: " ".join(t.lower().replace("!", "").split()) for t in texts}
    for trained, predicted in seen:
        assert not {norm[t] for t in trained} & {norm[t] for t in predicted}


def test_end_to_end_run_records_the_decision(tmp_path) -> None:
    import json

    import pandas as pd

    import adaptladder

    rng = np.random.default_rng(1)
    words = [["win", "cash", "prize", "free", "claim"], ["lunch", "park", "kids", "home", "game"]]
    rows = [{"text": " ".join(rng.choice(words[i % 2], 5)) + f" #{i}", "label": "spam" if i % 2 else "ham"}
            for i in range(160)]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    res = adaptladder.run(data=str(tmp_path / "d.csv"), rungs=["majority", "tfidf"], out=str(tmp_path / "r"),
                          bar=0.9, no_audit=True)
    tf = res.result("tfidf")
    n_fit = res.task.summary()["split_sizes"]["train"] + res.task.summary()["split_sizes"]["validation"]
    assert tf["cv"]["n"] == n_fit and res.recommendation["estimates"]["tfidf"]["part"] == "cv"
    assert res.recommendation["rung"] == "tfidf" and res.stopped_at == "tfidf"
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    (cmp,) = doc["comparisons"]["decision"]
    assert cmp["part"] == "cv" and cmp["n_common"] == n_fit and cmp["holm_m"] == 1
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Pairwise comparisons that decided" in md and "Holm correction across the 1 tests" in md
    assert f"cross-validated, n={n_fit}" in md and "Rule: the cheapest rung that meets the bar 0.90" in md

"""Progress off a terminal (heartbeat lines) and rung budgets (timing probe, sampled evaluation, skip).

Time is faked throughout: no assertion depends on how fast this machine is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaptladder import progress
from adaptladder.rungs.classical import MajorityRung
from adaptladder.rungs.settings import RungSettings, setting


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _hb(clock: FakeClock, lines: list[str], interval: float = 30.0) -> progress.Heartbeat:
    return progress.Heartbeat(lines.append, interval=interval, mode="lines", clock=clock, thread=False)


def test_heartbeat_line_every_interval_with_done_total_elapsed_and_eta() -> None:
    clock, lines = FakeClock(), []
    hb = _hb(clock, lines)
    with progress.use_reporter(hb), progress.step("zero-shot: evaluate", 100):
        assert not hb.tick()  # nothing before the interval
        clock.t += 29
        assert not hb.tick()
        progress.update(done=25)
        clock.t += 1  # 30 s: 25 done -> 75 left at 1.2 s each = 90 s
        assert hb.tick()
        assert lines[-1] == "progress: zero-shot: evaluate 25/100 | elapsed 30s | ETA 1m30s"
        clock.t += 10
        assert not hb.tick()  # the next one only after another interval
        clock.t += 20
        progress.update(advance=25)  # 50 done in 60 s
        assert hb.tick()
        assert "50/100" in lines[-1] and "elapsed 1m00s" in lines[-1] and "ETA 1m00s" in lines[-1]
        clock.t += 60  # a silent stretch (one long call) still gets its line from the ticker
        assert hb.tick()
    assert len(lines) == 4 and lines[-1] == "progress: zero-shot: evaluate: finished in 2m00s"


def test_nested_steps_and_an_upfront_estimate() -> None:
    clock, lines = FakeClock(), []
    hb = _hb(clock, lines, interval=20)
    with progress.use_reporter(hb), progress.step("few-shot: fit", eta_s=300):
        clock.t += 20
        hb.tick()
        assert lines[-1] == "progress: few-shot: fit | elapsed 20s | ETA 4m40s"  # from the estimate
        with progress.task("few-shot: scoring", 10) as advance:
            advance(5)
            clock.t += 20
            hb.tick()
        # the inner rate (10 s left) is below what remains of the outer estimate (4m20s)
        assert lines[-1] == "progress: few-shot: fit > few-shot: scoring 5/10 | elapsed 40s | ETA 4m20s"
        clock.t += 300
        hb.tick()
        assert lines[-1].endswith("ETA 0s")  # an estimate overrun says 0, never negative
    assert progress.fmt_seconds(None) == "?" and progress.fmt_seconds(3725) == "1h02m"


def test_update_without_an_open_step_is_a_no_op() -> None:
    progress.update(advance=3, detail="x")  # must not raise


def test_ticker_thread_emits_lines_without_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real background ticker (short interval) writes lines while the work makes no calls."""
    import threading

    lines: list[str] = []
    hb = progress.Heartbeat(lines.append, interval=0.5, mode="lines")
    got = threading.Event()
    hb.log = lambda m: (lines.append(m), got.set())
    with progress.use_reporter(hb), progress.step("features: fit"):
        assert got.wait(30)  # generous: only that a line comes, not when
    assert lines[0].startswith("progress: features: fit | elapsed")


def test_third_party_progress_bars_silenced(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers  # noqa: F401  (imported so its switch is flipped)
    from transformers.utils import logging as hf_logging

    monkeypatch.setattr(hf_logging, "_tqdm_active", True)
    assert hf_logging.is_progress_bar_enabled()
    progress.quiet_third_party()
    assert not hf_logging.is_progress_bar_enabled()


# ---------------------------------------------------------------------------- budgets
@dataclass
class SlowSettings(RungSettings):
    per_ex: float = setting(2.0, help="seconds per prediction")


class SlowRung(MajorityRung):
    """A majority rung whose predictions cost ``per_ex`` seconds each on a fake clock."""

    name = "slow"
    eval_cap = 300
    Settings = SlowSettings

    def __init__(self, clock: FakeClock | None = None, per_ex: float = 2.0, **params: Any) -> None:
        super().__init__(per_ex=per_ex, **params)
        self.clock, self.per_ex = clock, per_ex

    def predict_proba(self, texts: Any) -> np.ndarray:
        if self.clock is not None:
            self.clock.t += self.per_ex * len(texts)
        else:
            import time

            time.sleep(self.per_ex * len(texts))
        return super().predict_proba(texts)


@pytest.fixture
def big_task(tmp_path: Path) -> Any:
    import pandas as pd

    from adaptladder.task import load_task

    rows = [{"text": f"text number {i}", "label": ["a", "b", "c"][i % 3]} for i in range(3000)]
    path = tmp_path / "big.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return load_task(str(path))


def _fitted(task: Any, clock: FakeClock, per_ex: float) -> SlowRung:
    rung = SlowRung(clock, per_ex)
    tr, y = task.part("train")
    return rung.fit(tr, y, label_names=task.label_names)


def test_no_budget_keeps_the_eval_cap_and_gives_an_eta(big_task: Any) -> None:
    from adaptladder.ladder import plan_evaluation

    clock = FakeClock()
    plan = plan_evaluation(_fitted(big_task, clock, 2.0), big_task, 0, clock=clock)
    n_val = len(big_task.indices("validation"))
    assert n_val > 300 and plan.caps == {"validation": 300, "test": 300}
    assert plan.seconds_per_example == pytest.approx(2.0)
    assert plan.estimate_s == pytest.approx(2.0 * (300 + 300 + 64 + 20 + 3))


def test_budget_that_fits_evaluates_the_full_splits(big_task: Any) -> None:
    from adaptladder.ladder import plan_evaluation

    clock = FakeClock()
    plan = plan_evaluation(_fitted(big_task, clock, 0.001), big_task, 0, clock=clock, budget_s=300)
    assert plan.caps == {"validation": None, "test": None}  # the budget replaces the eval cap
    assert plan.estimate_s <= plan.allowance_s


def test_budget_too_small_for_the_full_splits_samples_to_fit(big_task: Any) -> None:
    from adaptladder.ladder import evaluate_rung, plan_evaluation

    clock = FakeClock()
    rung = _fitted(big_task, clock, 1.0)
    plan = plan_evaluation(rung, big_task, 0, clock=clock, budget_s=600, spent_s=100)
    assert plan.allowance_s == 500
    assert 30 <= plan.caps["validation"] < len(big_task.indices("validation"))
    assert plan.caps["test"] is not None and plan.estimate_s <= plan.allowance_s
    start = clock.t
    res = evaluate_rung(rung, big_task, 0, plan)
    assert clock.t - start <= plan.allowance_s  # the fake clock says the evaluation kept to the budget
    for part in ("validation", "test"):
        assert res[part]["sampled"] and res[part]["n"] == plan.caps[part]
        counts = np.bincount(res[part]["labels"], minlength=3)
        assert counts.min() >= counts.max() - 1  # stratified: every class, in proportion


def test_budget_too_small_for_a_minimal_sample_raises_with_the_estimate(big_task: Any) -> None:
    from adaptladder.ladder import BudgetExceeded, plan_evaluation

    clock = FakeClock()
    with pytest.raises(BudgetExceeded, match=r"timing probe measured 5\.00 s per example.*min budget"):
        plan_evaluation(_fitted(big_task, clock, 5.0), big_task, 0, clock=clock, budget_s=60)


class LengthSlowRung(SlowRung):
    """Predictions cost ``per_ex`` seconds per 100 characters (long texts cost more)."""

    def predict_proba(self, texts: Any) -> np.ndarray:
        assert self.clock is not None
        self.clock.t += self.per_ex * sum(len(t) for t in texts) / 100
        return MajorityRung.predict_proba(self, texts)


def test_the_timing_probe_spreads_over_the_text_lengths(tmp_path: Path) -> None:
    """One text in ten is 20x longer: a random probe of 8 misses them all 43% of the time and
    measures a third of the real cost. The probe is spread over the length quantiles: its rate is
    close to the split's mean (one bin in 8 covers the long tenth: a small overestimate, never under)."""
    import pandas as pd

    from adaptladder.ladder import plan_evaluation
    from adaptladder.task import load_task

    rows = [{"text": ("word " * (400 if i % 10 == 0 else 20)) + str(i), "label": ["a", "b"][i % 2]}
            for i in range(2000)]
    pd.DataFrame(rows).to_csv(tmp_path / "skew.csv", index=False)
    task = load_task(str(tmp_path / "skew.csv"))
    clock = FakeClock()
    rung = LengthSlowRung(clock, 0.1)
    rung.fit(*task.part("train"), label_names=task.label_names)
    plan = plan_evaluation(rung, task, 0, clock=clock, budget_s=60)
    test = [task.texts[int(i)] for i in task.indices("test")]
    mean = 0.1 * float(np.mean([len(t) for t in test])) / 100
    assert 0.95 * mean <= plan.seconds_per_example <= 1.3 * mean


def test_a_prompting_rung_keeps_its_evaluation_share_when_its_fit_ran_over(big_task: Any) -> None:
    """A rung whose fit keeps to FIT_BUDGET_SHARE of the budget (prompting) gets the rest for its
    evaluation even when the fit overran (others: EVAL_FLOOR_SHARE)."""
    from adaptladder.ladder import EVAL_FLOOR_SHARE, plan_evaluation

    clock = FakeClock()
    rung = _fitted(big_task, clock, 0.5)
    plan = plan_evaluation(rung, big_task, 0, clock=clock, budget_s=300, spent_s=290)
    assert plan.allowance_s == pytest.approx(EVAL_FLOOR_SHARE * 300)
    rung.FIT_BUDGET_SHARE = 0.5
    plan = plan_evaluation(rung, big_task, 0, clock=clock, budget_s=300, spent_s=290)
    assert plan.allowance_s == pytest.approx(150) and plan.estimate_s <= 150
    assert plan.caps["validation"] is not None and plan.caps["validation"] >= 30


class ShortenableRung(SlowRung):
    """A prompting-like rung: halving its prompt halves its cost, down to 3 halvings."""

    halvings = 0

    def shorten_prompts(self, why: str) -> int | None:
        self.why = why
        if self.halvings == 3:
            return None
        self.halvings += 1
        self.per_ex /= 2
        return 2048 >> self.halvings


def test_a_rung_too_slow_for_its_evaluation_is_shortened_before_it_is_skipped(big_task: Any) -> None:
    from adaptladder.ladder import BudgetExceeded, _plan_or_shorten

    clock = FakeClock()
    lines: list[str] = []
    rung = ShortenableRung(clock, 5.0)
    rung.fit(*big_task.part("train"), label_names=big_task.label_names)
    # 5 s per example: a minimal evaluation (~76 examples) needs 380 s of the 300 left; at 2.5 s it fits
    plan = _plan_or_shorten(rung, "slow", big_task, 0, 300.0, clock.t, lines.append, clock)
    assert rung.per_ex == 2.5 and plan.seconds_per_example == pytest.approx(2.5) and plan.estimate_s <= 300
    assert "timing probe measured 5.00 s" in rung.why and "shortened to 1024 tokens" in lines[0]
    slow = ShortenableRung(clock, 50.0)  # still too slow at its shortest: skipped with the estimate
    slow.fit(*big_task.part("train"), label_names=big_task.label_names)
    with pytest.raises(BudgetExceeded, match="over budget"):
        _plan_or_shorten(slow, "slow", big_task, 0, 300.0, clock.t, lines.append, clock)
    assert slow.halvings == 3 and slow.per_ex == 50.0 / 8


def test_ladder_skips_a_rung_over_its_budget_and_says_why(toy_csv: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import adaptladder
    from adaptladder import rungs

    monkeypatch.setitem(rungs.RUNGS, "slow", f"{__name__}:SlowRung")
    lines: list[str] = []
    # 0.05 s per example (a real sleep), a 0.001-minute budget: even the probe overruns it
    res = adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["majority", "slow"], out=str(tmp_path / "r"),
                          rung_params={"slow": {"per_ex": 0.05, "budget_minutes": 0.001}}, log=lines.append)
    slow = res.result("slow")
    assert slow["status"] == "skipped" and "over budget" in slow["reason"] and "timing probe" in slow["reason"]
    assert res.result("majority")["status"] == "done"
    assert res.result("majority")["evaluation_plan"]["reason"] == "full splits"
    assert any("evaluation ETA" in m for m in lines)


def test_bad_budget_is_a_one_line_error(toy_csv: Path, tmp_path: Path) -> None:
    import adaptladder
    from adaptladder.errors import AdaptError

    with pytest.raises(AdaptError, match="budget_minutes for majority must be positive"):
        adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["majority"], out=str(tmp_path / "r"),
                        rung_params={"majority": {"budget_minutes": -1}})

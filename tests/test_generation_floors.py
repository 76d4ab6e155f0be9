"""The generation floors (issue #29): lead (first N words, N chosen on validation) and nearest-target
(the target of the most similar training input), climbed first and saved as JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptladder.errors import AdaptError
from adaptladder.generation.rungs import GEN_RUNGS, GenSpec, gen_rungs_in_cost_order, load_gen_rung, make_gen_rung

ARTICLES = [f"council {w} approves budget for {i} new schools after long debate in the town hall on monday"
            for i, w in enumerate(["quietly", "finally", "narrowly", "again", "unanimously", "swiftly"] * 4)]
HEADLINES = [" ".join(a.split()[:5]) for a in ARTICLES]  # a house style: the first five words


def test_floors_are_climbed_before_every_other_rung() -> None:
    order = gen_rungs_in_cost_order(list(GEN_RUNGS))
    assert order[:2] == ["lead", "nearest-target"] and order[2] == "zero-shot"
    assert {make_gen_rung(n).family for n in order[:2]} == {"floor"}


def test_lead_chooses_n_on_validation_and_reloads(tmp_path: Path) -> None:
    spec = GenSpec("summarisation", "Write a headline.", extra={"metric": "rouge_l"})
    r = make_gen_rung("lead").fit(ARTICLES[:16], HEADLINES[:16], spec=spec, val_inputs=ARTICLES[16:],
                                  val_targets=HEADLINES[16:])
    info = r.extra_info()
    assert info["n_words"] == 5 and info["source"] == "validation" and info["grid"]["5"] == 1.0
    assert r.generate(["one two three four five six seven"]) == ["one two three four five"]
    r.save(tmp_path / "m")
    r2 = load_gen_rung(tmp_path / "m")
    assert r2.generate(ARTICLES[:3]) == r.generate(ARTICLES[:3]) and r2.extra_info() == info
    fixed = make_gen_rung("lead", n_words=2).fit(ARTICLES, HEADLINES, spec=spec)
    assert fixed.generate(["a b c"]) == ["a b"]
    with pytest.raises(AdaptError, match="n_words=0"):
        make_gen_rung("lead", n_words=0).fit(ARTICLES, HEADLINES, spec=spec)
    with pytest.raises(AdaptError, match="unknown setting"):
        make_gen_rung("lead", foo=1)


def test_lead_is_not_a_floor_for_json_tasks() -> None:
    spec = GenSpec("extraction", "Extract.", {"type": "object"})
    assert "JSON task" in make_gen_rung("lead").unavailable_reason({}, spec)


def test_nearest_target_answers_with_the_nearest_training_target(tmp_path: Path) -> None:
    xs = ["refund my order please", "where is my parcel", "cancel my subscription now", "change my password"]
    ys = ["REFUND", "TRACKING", "CANCEL", "PASSWORD"]
    r = make_gen_rung("nearest-target").fit(xs, ys, spec=GenSpec("dialogue", "Reply."))
    assert r.generate(["please refund the order", "my parcel is where?", "password change"]) == [
        "REFUND", "TRACKING", "PASSWORD"]
    r.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "floor.json").read_text())["targets"] == ys  # JSON, no pickle
    assert load_gen_rung(tmp_path / "m").generate(["cancel it now"]) == ["CANCEL"]
    capped = make_gen_rung("nearest-target", max_pairs=2).fit(xs, ys, spec=GenSpec("dialogue", "Reply."))
    assert capped.extra_info()["pairs"] == 2 and capped.extra_info()["of"] == 4


@pytest.mark.parametrize("name", ["sms-abbreviations", "us-cities-json", "movie-replies", "grimm-summaries"])
def test_floors_run_on_every_built_in_generation_set(name: str, tmp_path: Path) -> None:
    import adaptladder

    res = adaptladder.run(data=name, rungs=["lead", "nearest-target"], no_audit=True, sample=40,
                          out=str(tmp_path / "r"), run_all=True)
    by = {r["name"]: r for r in res.results}
    assert by["nearest-target"]["status"] == "done"
    if name == "us-cities-json":
        assert by["lead"]["status"] == "skipped" and "JSON task" in by["lead"]["reason"]
    else:
        assert by["lead"]["status"] == "done" and by["lead"]["extra"]["n_words"] >= 1
    report = (tmp_path / "r" / "report.md").read_text()
    assert "nearest-target" in report

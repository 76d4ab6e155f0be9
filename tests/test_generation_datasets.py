"""Built-in generation data sets: sizes, content checks, determinism, schema validity."""

from __future__ import annotations

import json

import pytest

from adaptladder.errors import AdaptError
from adaptladder.generation.datasets import (
    GENERATION_BUILTINS,
    _city_sentence,
    length_summary,
    load_generation_builtin,
)
from adaptladder.generation.metrics import TASK_KINDS, json_scores


@pytest.mark.parametrize(("name", "n", "kind"), [
    ("movie-replies", 63745, "dialogue"),
    ("grimm-summaries", 54, "summarisation"),
    ("us-cities-json", 11606, "extraction"),
    ("sms-abbreviations", 1027, "rewrite"),
])
def test_builtin_sizes_and_kinds(name, n, kind):
    d = load_generation_builtin(name)
    assert len(d) == len(d.targets) == n
    assert d.kind == kind == GENERATION_BUILTINS[name].kind and kind in TASK_KINDS
    assert d.instruction and d.source
    assert all(x.strip() for x in d.inputs) and all(t.strip() for t in d.targets)


def test_grimm_pairs_line_up():
    d = load_generation_builtin("grimm-summaries")
    i = d.extra["titles"].index("The Elves and the Shoemaker")
    assert "shoemaker" in d.inputs[i].lower() and "elves" in d.targets[i].lower()
    assert '""' not in d.inputs[i]  # Orange's CSV quoting is undone
    assert length_summary(d.inputs)["p50"] > 500 > length_summary(d.targets)["max"]


def test_sms_abbreviations_pairs():
    d = load_generation_builtin("sms-abbreviations")
    pairs = dict(zip(d.inputs, d.targets, strict=True))
    assert pairs["LMK"] == "let me know" and pairs["2NITE"] == "tonight"
    assert pairs["LOL"] == "laughing out loud"  # "Laughing Out Loud | Lots Of Love": the first meaning
    assert pairs["AFAIK"] == "as far as I know"  # lower case, the pronoun kept
    assert len({x.casefold() for x in d.inputs}) == len(d)  # no abbreviation twice
    assert not any("|" in t or "<" in t for t in d.targets)


def test_cities_json_targets_valid_and_deterministic():
    d = load_generation_builtin("us-cities-json")
    per, per_field = json_scores(d.targets[:1500], d.targets[:1500], d.schema)
    assert per["schema_valid"].mean() == 1.0 and per["field_f1"].mean() == 1.0
    assert set(per_field) == {"city", "state", "population", "elevation_m", "timezone"}
    again = load_generation_builtin("us-cities-json")
    assert again.inputs == d.inputs and again.targets == d.targets
    assert len(set(d.extra["template"])) == 6
    # every target field can be read off (or derived from) its input sentence
    for x, t in list(zip(d.inputs, d.targets, strict=True))[:500]:
        rec = json.loads(t)
        assert rec["city"] in x and rec["timezone"] in x and f"{rec['population']:,}" in x
        assert (rec["elevation_m"] is None) == (" m" not in x.replace(" metres", " m"))


def test_city_sentence_without_elevation_has_no_elevation():
    r = {"city": "Agoura", "state": "California", "code": "CA", "population": 20537, "elev": None,
         "tz": "America/Los_Angeles", "lat": 34.14, "lon": -118.74}
    for t in range(6):
        s = _city_sentence(t, r)
        assert "Agoura" in s and "20,537" in s and " m" not in s.replace(" metres", " m")
    assert "118.74°W" in _city_sentence(0, r)


def test_unknown_builtin_is_a_one_line_error():
    with pytest.raises(AdaptError, match="unknown built-in generation data set 'nope'"):
        load_generation_builtin("nope")

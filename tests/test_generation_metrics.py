"""Generation metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from adaptladder.errors import AdaptError
from adaptladder.generation import metrics as M


def test_squad_normalisation_and_exact_match():
    assert M.normalize_answer("The  Cat, sat!") == "cat sat"
    assert M.exact_match("The cat.", "cat") == 1.0
    assert M.exact_match("a dog", "cat") == 0.0


def test_token_f1_hand_computed():
    # normalised: "cat sat on mat" vs "cat sat on hat": 3 common of 4 and 4 -> P = R = 3/4
    assert M.token_f1("the cat sat on the mat", "a cat sat on a hat") == pytest.approx(0.75)
    # repeated tokens count as a bag: pred "cat cat" vs ref "cat": P = 1/2, R = 1 -> 2/3
    assert M.token_f1("cat cat", "cat") == pytest.approx(2 / 3)
    assert M.token_f1("", "") == 1.0
    assert M.token_f1("", "cat") == 0.0
    assert M.token_f1("dog", "cat") == 0.0


def test_rouge_l_hand_computed():
    # LCS of "the cat sat on the mat" / "the cat is on the mat" = "the cat on the mat" (5 of 6)
    assert M.rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS 2 ("a c"), pred 3 tokens, ref 2 -> P = 2/3, R = 1 -> F = 0.8
    assert M.rouge_l("a b c", "a c") == pytest.approx(0.8)
    assert M.rouge_l("", "") == 1.0


def test_chrf_hand_computed():
    # character 1-grams: 2/3 match, 2-grams 1/2, 3-grams 0; higher orders absent -> P = R = 7/18
    assert M.chrf("abc", "abd") == pytest.approx(7 / 18)
    assert M.chrf("the cat", "the cat") == pytest.approx(1.0)
    assert M.chrf("", "") == 1.0


def test_embedding_similarity_with_a_given_encoder():
    vecs = {"a": [1.0, 0.0], "b": [0.0, 2.0], "c": [1.0, 1.0], "z": [0.0, 0.0]}

    def enc(texts):
        return np.array([vecs[t] for t in texts])

    got = M.embedding_similarity(["a", "a", "c", "z"], ["a", "b", "a", "a"], enc)
    assert got == pytest.approx([1.0, 0.0, 1 / np.sqrt(2), 0.0])


def test_parse_json_variants():
    assert M.parse_json('```json\n{"a": 1}\n```') == (True, {"a": 1})
    assert M.parse_json('Here you go: {"a": [1, 2]} hope it helps') == (True, {"a": [1, 2]})
    assert M.parse_json("no json here") == (False, None)
    assert M.parse_json('{"a": ') == (False, None)


def test_field_f1_hand_computed():
    pred = {"name": "Ann", "age": 30, "tags": ["x", "y"]}
    ref = {"name": "ann ", "age": 31, "tags": ["y", "z"]}
    # leaves: name (match after case/space normalisation), age (no), tags[] x/y vs y/z (one) -> 2 of 4 and 4
    assert M.field_f1(pred, ref) == pytest.approx(0.5)
    assert M.field_f1({"n": 3}, {"n": 3.0}) == 1.0
    assert M.field_f1({}, {}) == 1.0
    # pred has one extra leaf: P = 1/2, R = 1 -> 2/3
    assert M.field_f1({"a": 1, "b": 2}, {"a": 1}) == pytest.approx(2 / 3)


def test_json_scores_and_per_field():
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    refs = ['{"name": "Ann", "age": 30}', '{"name": "Bob", "age": 40}', '{"name": "Cy", "age": 5}',
            '{"name": "Di", "age": 7}']
    preds = ['{"name": "ann", "age": 30}',  # valid, exact (normalised)
             '{"name": "Bob", "age": "40"}',  # parses, schema-invalid (string age), name right
             "not json",  # no parse
             '{"name": "Di"}']  # parses, missing required field
    per, per_field = M.json_scores(preds, refs, schema)
    assert per["json_parse"].tolist() == [1, 1, 0, 1]
    assert per["schema_valid"].tolist() == [1, 0, 0, 0]
    assert per["json_exact_match"].tolist() == [1, 0, 0, 0]
    # row 2: leaves name=bob ok, age "40" vs 40.0 differ -> 1/2; row 4: P = 1, R = 1/2 -> 2/3
    assert per["field_f1"] == pytest.approx([1.0, 0.5, 0.0, 2 / 3])
    assert per_field["name"].tolist() == [1, 1, 0, 1]
    assert per_field["age"].tolist() == [1, 0, 0, 0]


def test_bad_schema_and_bad_reference_are_one_line_errors():
    with pytest.raises(AdaptError, match="does not parse"):
        M.schema_validator("{not json")
    with pytest.raises(AdaptError, match="not a valid JSON Schema"):
        M.schema_validator({"type": 12})
    with pytest.raises(AdaptError, match="reference 1 is not valid JSON"):
        M.json_scores(["{}", "{}"], ["{}", "oops"])


def test_summarise_and_paired_compare():
    s = M.summarise(np.full(10, 0.25))
    assert s["mean"] == 0.25 and s["ci"] == [0.25, 0.25] and s["n"] == 10
    rng = np.random.default_rng(1)
    x = rng.random(200)
    s = M.summarise(x, n_boot=2000)
    assert s["ci"][0] < x.mean() < s["ci"][1]
    # standard error of a mean of U(0,1) over 200 examples ~ 0.0204: CI width ~ 3.92 * 0.0204
    assert s["ci"][1] - s["ci"][0] == pytest.approx(3.92 * x.std() / np.sqrt(200), rel=0.15)
    c = M.paired_compare(x + 0.1, x)
    assert c["diff"] == pytest.approx(0.1) and c["ci"] == pytest.approx([0.1, 0.1])
    assert c["excludes_zero"] and c["p_value"] == 0.0
    c = M.paired_compare(x, x)
    assert c["diff"] == 0.0 and not c["excludes_zero"] and c["p_value"] == 1.0
    # pairing matters: a shift of 0.02 is small next to the CI of either mean, yet clear when paired
    c = M.paired_compare(x + 0.02, x)
    assert c["excludes_zero"]
    with pytest.raises(AdaptError):
        M.paired_compare([1, 2], [1])


def test_score_generations_text_and_json():
    out = M.score_generations(["the cat", "a dog"], ["cat", "dog!"], n_boot=200)
    assert out["metrics"]["exact_match"]["mean"] == 1.0
    assert set(out["metrics"]) == set(M.TEXT_METRICS)
    assert len(out["per_example"]["chrf"]) == 2
    js = M.score_generations(['{"a": 1}'], ['{"a": 1}'], kind="json", n_boot=50)
    assert js["metrics"]["field_f1"]["mean"] == 1.0 and js["per_field_exact_match"]["a"]["mean"] == 1.0
    with pytest.raises(AdaptError, match="pair up"):
        M.score_generations(["a"], ["a", "b"])
    with pytest.raises(AdaptError, match="unknown metric"):
        M.score_generations(["a"], ["a"], metrics=["bleu"])

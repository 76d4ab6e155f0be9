"""The generation prompting rungs (zero-shot, few-shot, knn-few-shot, structured) on a tiny random-weight
Llama saved to disk (``tiny_causal_lm_dir``), and their openai path against a fake transport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaptladder.errors import AdaptError
from adaptladder.generation.metrics import schema_validator
from adaptladder.generation.rungs import GenSpec, load_gen_rung, make_gen_rung
from adaptladder.generation.rungs.prompting import KnnFewShotGen
from fakes import BagEncoder

TRAIN_X = ["win a free prize now", "see you at lunch tomorrow", "the kids loved the park",
           "meeting moved to friday", "free cash click here", "did you feed the cat",
           "running late be there soon", "happy birthday to your mom"]
TRAIN_Y = ["you won!", "see you then", "they did", "ok friday", "no thanks", "yes I did", "no rush", "thank you"]
VAL_X = ["claim your free reward today", "call me when you get home"]
TEST_X = ["free entry to win a car", "are we still on for the game", "thanks for dinner last night"]

SCHEMA = {"type": "object",
          "properties": {"who": {"type": "string"}, "n": {"type": "integer", "minimum": 0},
                         "ok": {"type": "boolean"}, "tone": {"type": "string", "enum": ["warm", "cold"]}},
          "required": ["who", "n", "ok", "tone"], "additionalProperties": False}
JSON_Y = [json.dumps({"who": w, "n": i, "ok": i % 2 == 0, "tone": "warm" if i % 3 else "cold"})
          for i, w in enumerate(["ann", "bob", "cy", "dee", "eve", "fay", "gus", "hal"])]

TEXT_SPEC = GenSpec("dialogue", "Reply to the message.")
JSON_SPEC = GenSpec("extraction", "Extract JSON.", SCHEMA)


@pytest.fixture
def bag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(KnnFewShotGen, "_encoder", lambda self: BagEncoder())


def _fit(name: str, lm: str, spec: GenSpec = TEXT_SPEC, targets: list[str] = TRAIN_Y, **kw: Any) -> Any:
    params = {"lm": lm, "threads": 1, "batch_size": 2, **kw}
    return make_gen_rung(name, **params).fit(TRAIN_X, targets, spec=spec, val_inputs=VAL_X,
                                             val_targets=targets[:2])


@pytest.mark.parametrize("name", ["zero-shot", "few-shot", "knn-few-shot"])
def test_rungs_fit_generate_and_reload_identically(name: str, tiny_causal_lm_dir: str, tmp_path: Path,
                                                   bag: None) -> None:
    r = _fit(name, tiny_causal_lm_dir, max_new_tokens=6)
    out = r.generate(TEST_X)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    u = r.last_usage
    assert u["seconds"] > 0 and u["prompt_tokens"] > 0 and u["new_tokens"] == sum(u["new_tokens_per_example"])
    assert all(n <= 6 for n in u["new_tokens_per_example"])
    prompts = r.prompts_used(TEST_X)
    assert len(prompts) == 3
    assert all("Reply to the message." in p and x in p for p, x in zip(prompts, TEST_X, strict=True))
    k = 0 if name == "zero-shot" else 3
    assert all(p.count("<|im_start|>assistant") == k + 1 for p in prompts)
    info = r.extra_info()
    assert info["decoding"]["decoding"] == "greedy" and info["decoding"]["max_new_tokens"] == 6
    pt = info["prompt_tokens"]  # the shared instruction (+ shots) run once per call
    assert pt["served"] >= sum(r.backend.count_tokens(p) for p in prompts) and pt["computed"] < pt["served"]
    assert info["decoding"]["chat_template"] is True and info["k"] == k
    r.save(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.safetensors"))  # no weights: the LM is referenced by path
    r2 = load_gen_rung(tmp_path / "m")
    assert type(r2) is type(r) and r2.prompts_used(TEST_X) == prompts and r2.generate(TEST_X) == out


def test_batched_equals_one_at_a_time(tiny_causal_lm_dir: str) -> None:
    r = _fit("few-shot", tiny_causal_lm_dir, max_new_tokens=8)
    batched = r.generate(TEST_X)
    r.params["batch_size"] = 1
    assert r.generate(TEST_X) == batched


def test_max_new_tokens_from_target_percentile(tiny_causal_lm_dir: str) -> None:
    from adaptladder.generation.decode import max_new_tokens_for

    r = _fit("zero-shot", tiny_causal_lm_dir)
    assert r.max_new_tokens_ == max_new_tokens_for(TRAIN_Y, r.count_tokens)
    long_y = ["word " * 400] * len(TRAIN_X)
    r = _fit("zero-shot", tiny_causal_lm_dir, targets=long_y, max_new_tokens_cap=40)
    assert r.max_new_tokens_ == 40
    assert "95th percentile" in r.extra_info()["max_new_tokens_source"]


def test_few_shot_is_seeded_and_shortest_pick(tiny_causal_lm_dir: str) -> None:
    a = _fit("few-shot", tiny_causal_lm_dir, seed=1, max_new_tokens=4)
    b = _fit("few-shot", tiny_causal_lm_dir, seed=1, max_new_tokens=4)
    c = _fit("few-shot", tiny_causal_lm_dir, seed=2, max_new_tokens=4)
    assert a.shot_rows_ == b.shot_rows_ and len(set(a.shot_rows_)) == 3
    assert a.shot_rows_ != c.shot_rows_
    assert a.shots_ == [(TRAIN_X[i], TRAIN_Y[i]) for i in a.shot_rows_]
    s = _fit("few-shot", tiny_causal_lm_dir, shot_pick="shortest", max_new_tokens=4)
    lens = [len(TRAIN_X[i]) + len(TRAIN_Y[i]) for i in range(len(TRAIN_X))]
    assert sorted(s.shot_rows_) == sorted(np.argsort(lens, kind="stable")[:3].tolist())


def test_knn_picks_the_nearest_pairs_nearest_last(tiny_causal_lm_dir: str, bag: None) -> None:
    r = _fit("knn-few-shot", tiny_causal_lm_dir, k=2, max_new_tokens=4)
    enc = BagEncoder()
    queries = ["free prize cash now", "the cat and the kids"]
    sims = enc.encode(queries) @ enc.encode(TRAIN_X).T
    for q, rows in zip(range(2), r.neighbours(queries), strict=True):
        best = np.argsort(-sims[q], kind="stable")[:2]
        assert set(rows) == set(best.tolist()) and rows[-1] == int(best[0])  # nearest placed last
    # a query identical to a pool input never gets itself as an example
    assert 0 not in r.neighbours([TRAIN_X[0]])[0]
    p = r.prompts_used(["free prize cash now"])[0]
    assert p.index(TRAIN_X[int(np.argsort(-sims[0])[1])]) < p.index(TRAIN_X[int(np.argmax(sims[0]))])


def test_knn_uses_the_cached_sentence_encoder(tiny_causal_lm_dir: str, tiny_encoder_dir: str) -> None:
    r = _fit("knn-few-shot", tiny_causal_lm_dir, encoder=tiny_encoder_dir, k=2, max_new_tokens=4)
    from adaptladder.encode import get_encoder

    assert np.allclose(r.pool_emb_, get_encoder(tiny_encoder_dir).encode(TRAIN_X), atol=1e-5)
    assert all(len(rows) == 2 for rows in r.neighbours(TEST_X))


def test_prompt_fits_context_by_cutting_shots_then_the_query(tiny_causal_lm_dir: str) -> None:
    long_x = [x + " " + "the kids loved the park " * 60 for x in TRAIN_X]
    r = make_gen_rung("few-shot", lm=tiny_causal_lm_dir, threads=1, k=3, shot_tokens=40, max_context=300,
                      max_new_tokens=20).fit(long_x, TRAIN_Y, spec=TEXT_SPEC)
    assert all(r.count_tokens(x) <= 40 for x, _ in r.shots_)
    prompts = r.prompts_used([long_x[0][:60], long_x[1] * 3])
    assert all(r.count_tokens(p) + 1 + 20 <= 300 for p in prompts)
    assert r.extra_info()["prompt_fitting"]["queries"] == 0  # counts what generate sent, not previews
    out = r.generate([long_x[0][:60], long_x[1] * 3])  # the second exceeds the context unfitted
    assert len(out) == 2
    fit = r.extra_info()["prompt_fitting"]
    assert fit["queries"] == 2 and fit["queries_truncated"] == 1 and fit["shots_dropped"] >= 3
    with pytest.raises(AdaptError, match="no room for the input"):
        make_gen_rung("zero-shot", lm=tiny_causal_lm_dir, threads=1, max_context=40, max_new_tokens=35).fit(
            TRAIN_X, TRAIN_Y, spec=TEXT_SPEC).prompts_used(["hello there"])


def test_prompt_fitting_survives_save_and_load(tiny_causal_lm_dir: str, tmp_path: Path) -> None:
    """A loaded rung reports the prompt fitting it was saved with (not zeros) and generates the same."""
    long_x = [x + " " + "the kids loved the park " * 60 for x in TRAIN_X]
    r = make_gen_rung("few-shot", lm=tiny_causal_lm_dir, threads=1, k=3, shot_tokens=40, max_context=300,
                      max_new_tokens=20).fit(long_x, TRAIN_Y, spec=TEXT_SPEC)
    queries = [long_x[0][:60], long_x[1] * 3]
    out = r.generate(queries)
    fit = r.extra_info()["prompt_fitting"]
    assert fit["queries"] == 2 and fit["queries_truncated"] == 1 and fit["shots_dropped"] >= 3
    r.save(tmp_path / "m")
    r2 = load_gen_rung(tmp_path / "m")
    assert r2.extra_info()["prompt_fitting"] == fit
    assert r2.extra_info()["k"] == 3 and r2.extra_info()["shot_tokens"] == 40 and r2.shots_ == r.shots_
    assert r2.prompts_used(queries) == r.prompts_used(queries) and r2.generate(queries) == out
    # generating again counts on from the restored figures, as the fitted rung does
    assert r.generate(queries) == out
    assert r2.extra_info()["prompt_fitting"] == r.extra_info()["prompt_fitting"]


@pytest.mark.parametrize("seed", [0, 1])
def test_structured_always_schema_valid_and_reports_unconstrained(tiny_causal_lm_dir: str, tmp_path: Path,
                                                                  seed: int) -> None:
    r = _fit("structured", tiny_causal_lm_dir, spec=JSON_SPEC, targets=JSON_Y, seed=seed, max_new_tokens=12)
    out = r.generate(TEST_X + VAL_X)
    v = schema_validator(SCHEMA)
    assert all(v.is_valid(json.loads(t)) for t in out), out
    info = r.extra_info()
    assert info["decoding"]["constrained"] == "xgrammar" and info["constraint"]["library"] == "xgrammar"
    assert info["constraint"]["version"] == "0.2.9"
    u = info["unconstrained"]
    assert u["n"] == 2 and 0.0 <= u["schema_valid"] <= 1.0 and info["unconstrained_schema_valid"] == u["schema_valid"]
    # random weights unconstrained: not schema-valid JSON (the constrained rate is 1.0 beside it)
    assert u["schema_valid"] < 1.0
    # the same prompt as few-shot (same seed, same shots)
    fs = _fit("few-shot", tiny_causal_lm_dir, spec=JSON_SPEC, targets=JSON_Y, seed=seed, max_new_tokens=12)
    assert fs.prompts_used(TEST_X) == r.prompts_used(TEST_X)
    r.save(tmp_path / "s")
    r2 = load_gen_rung(tmp_path / "s")
    assert r2.generate(TEST_X + VAL_X) == out and r2.extra_info()["unconstrained"] == u


def test_structured_needs_a_schema_and_bad_params(tiny_causal_lm_dir: str) -> None:
    from adaptladder.generation.rungs.prompting import StructuredGen

    assert "JSON Schema" in StructuredGen.unavailable_reason({}, TEXT_SPEC)
    assert StructuredGen.unavailable_reason({}, JSON_SPEC) is None
    with pytest.raises(AdaptError, match="needs a JSON Schema"):
        _fit("structured", tiny_causal_lm_dir)
    with pytest.raises(AdaptError, match="unknown setting"):
        make_gen_rung("few-shot", shots=3)
    with pytest.raises(AdaptError, match="batch_size=0"):
        make_gen_rung("few-shot", batch_size=0)
    with pytest.raises(AdaptError, match="backend"):
        make_gen_rung("few-shot", backend="vllm")
    with pytest.raises(AdaptError, match="zero-shot uses no examples"):
        _fit("zero-shot", tiny_causal_lm_dir, k=2)
    with pytest.raises(AdaptError, match="not fitted"):
        make_gen_rung("few-shot").generate(["x"])


def test_cost_ranks_and_registry() -> None:
    from adaptladder.generation.rungs import get_gen_rung_class

    assert [get_gen_rung_class(n).cost_rank for n in ("zero-shot", "few-shot", "knn-few-shot", "structured")] == \
        [10, 20, 30, 35]
    assert get_gen_rung_class("structured").needs_schema


# ---------------------------------------------------------------------------------- openai (fake transport)
class _FakeServer:
    """An httpx MockTransport answering chat completions: echo of the last user turn, or JSON."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0

    def __call__(self, request: Any) -> Any:
        import httpx

        body = json.loads(request.content)
        self.requests.append({"url": str(request.url), "auth": request.headers.get("authorization"), "body": body})
        if self.fail_next:
            self.fail_next -= 1
            return httpx.Response(503, text="busy")
        if "response_format" in body:
            content = json.dumps({"who": "ann", "n": 1, "ok": True, "tone": "warm"})
        else:
            content = "reply to: " + body["messages"][-1]["content"].rsplit("\n\n", 1)[-1]
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": content},
                                                      "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": 40, "completion_tokens": 5}})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> _FakeServer:
    import httpx

    from adaptladder.backends.openai import OpenAIBackend

    server = _FakeServer()
    monkeypatch.setenv("FAKE_KEY", "sk-fake-secret")
    monkeypatch.setattr(OpenAIBackend, "_http", lambda self: httpx.Client(transport=httpx.MockTransport(server)))
    return server


@pytest.mark.parametrize("name", ["zero-shot", "few-shot", "knn-few-shot"])
def test_openai_generation(name: str, fake: _FakeServer, tmp_path: Path, bag: None) -> None:
    r = make_gen_rung(name, backend="openai", lm="gpt-4o-mini", base_url="http://fake/v1", api_key_env="FAKE_KEY")
    r.fit(TRAIN_X, TRAIN_Y, spec=TEXT_SPEC)
    out = r.generate(TEST_X)
    assert out == [f"reply to: {x}" for x in TEST_X]
    req = fake.requests[-1]
    assert req["url"] == "http://fake/v1/chat/completions" and req["auth"] == "Bearer sk-fake-secret"
    body = req["body"]
    assert body["temperature"] == 0 and body["max_tokens"] == r.max_new_tokens_ and "response_format" not in body
    k = 0 if name == "zero-shot" else 3
    assert len(body["messages"]) == 2 * k + 1 and body["messages"][0]["role"] == "user"
    assert r.last_usage["prompt_tokens"] == 120 and r.last_usage["new_tokens"] == 15
    sent = [q["body"]["messages"] for q in fake.requests[-3:]]
    assert all(json.loads(p) in sent for p in r.prompts_used(TEST_X))  # the exact messages sent
    info = r.extra_info()
    assert info["cost_per_1k_usd"] == pytest.approx((40 * 0.15 + 5 * 0.60) / 1e6 * 1000, rel=1e-6)
    r.save(tmp_path / "o")
    dump = json.dumps(info) + "".join(p.read_text() for p in (tmp_path / "o").iterdir() if p.suffix == ".json")
    assert "sk-fake-secret" not in dump
    assert load_gen_rung(tmp_path / "o").generate(TEST_X) == out


def test_openai_structured_sends_json_schema_and_retries(fake: _FakeServer) -> None:
    r = make_gen_rung("structured", backend="openai", lm="gpt-4o-mini", base_url="http://fake/v1",
                      api_key_env="FAKE_KEY", unconstrained_check=1)
    r.fit(TRAIN_X, JSON_Y, spec=JSON_SPEC, val_inputs=VAL_X, val_targets=JSON_Y[:2])
    assert "response_format" not in fake.requests[-1]["body"]  # the unconstrained check at fit
    assert r.extra_info()["unconstrained"]["schema_valid"] == 0.0  # the fake echoes text unconstrained
    fake.fail_next = 1
    out = r.generate(TEST_X[:1])
    assert json.loads(out[0])["who"] == "ann"
    rf = fake.requests[-1]["body"]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == SCHEMA and rf["json_schema"]["strict"]
    assert r.backend.retries == 1
    assert r.extra_info()["decoding"]["constrained"] == "response_format json_schema"


def test_unconstrained_check_stays_within_a_quarter_of_the_budget(fake: _FakeServer) -> None:
    r = make_gen_rung("structured", backend="openai", lm="gpt-4o-mini", base_url="http://fake/v1",
                      api_key_env="FAKE_KEY", batch_size=2, budget_minutes=1e-9)
    r.fit(TRAIN_X, JSON_Y, spec=JSON_SPEC, val_inputs=TEST_X + VAL_X, val_targets=JSON_Y[:5])
    u = r.extra_info()["unconstrained"]
    assert u["n"] == 2 and u["stopped_by_budget"] and len(u["validation_rows"]) == 2  # the first batch only
    r = make_gen_rung("structured", backend="openai", lm="gpt-4o-mini", base_url="http://fake/v1",
                      api_key_env="FAKE_KEY", batch_size=2)
    r.fit(TRAIN_X, JSON_Y, spec=JSON_SPEC, val_inputs=TEST_X + VAL_X, val_targets=JSON_Y[:5])
    assert r.extra_info()["unconstrained"]["n"] == 5 and not r.extra_info()["unconstrained"]["stopped_by_budget"]


def test_shorten_prompts_halves_the_window_down_to_a_floor(tiny_causal_lm_dir: str, tmp_path: Path) -> None:
    long_x = [" ".join(["the quick brown fox jumps over the lazy dog"] * 60) + f" {i}" for i in range(4)]
    r = make_gen_rung("few-shot", lm=tiny_causal_lm_dir, threads=1, batch_size=2, max_new_tokens=4,
                      shot_tokens=400).fit(long_x * 2, TRAIN_Y, spec=TEXT_SPEC)
    full = r.context_window()
    before = max(r.count_tokens(p) for p in r.prompts_used(long_x))
    windows = []
    while (w := r.shorten_prompts("too slow")) is not None:
        windows.append(w)
        assert max(r.count_tokens(p) for p in r.prompts_used(long_x)) <= w
    assert windows and windows[0] == max(full // 2, r.MIN_PROMPT_WINDOW) and windows[-1] >= r.MIN_PROMPT_WINDOW
    assert max(r.count_tokens(p) for p in r.prompts_used(long_x)) < before
    info = r.extra_info()
    assert info["prompt_window_tokens"] == windows[-1] and "too slow" in info["prompt_window_reason"]
    out = r.generate(long_x[:2])
    r.save(tmp_path / "m")
    r2 = load_gen_rung(tmp_path / "m")
    assert r2.context_window() == windows[-1] and r2.generate(long_x[:2]) == out

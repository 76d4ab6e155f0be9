"""The encoding engine and Encoder: bucketing keeps order, engine == sentence-transformers,
precision forcing, the recorded auto choice, the disk cache, and odd input.

Unit tests run on the tiny random BERT of conftest (milliseconds); the ones marked slow load
the packaged all-MiniLM-L6-v2 (84 MB, a few seconds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import adaptladder.encode as enc_mod
from adaptladder.encode import Encoder, get_encoder
from adaptladder.encode_engine import Engine, cpu_has_native_bf16, make_batches, plan_batches, tokenize
from adaptladder.errors import AdaptError

TEXTS = ["a", "the quick brown fox jumps over the lazy dog " * 3, "hello world", "", "why?",
         "short one", "a somewhat longer sentence that has quite a few more tokens than the others do",
         "numbers 1 2 3 4 5 6 7 8 9 10", "emoji 🙂 and accents: café naïve", "hello world"]


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADAPTLADDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(enc_mod, "_SHARED", {})
    return tmp_path / "cache"


def _st(path: str) -> Any:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = 64
    return st


# ------------------------------------------------------------------ batching
def test_plan_batches_covers_every_row_once_within_budget() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=500)
    batches = plan_batches(lengths, token_budget=1024, max_batch=64, min_batch=4, min_fill=0.8)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(500))
    for b in batches:
        longest = lengths[b].max()
        assert len(b) <= 64
        assert len(b) == 1 or len(b) * longest <= 1024
        assert lengths[b[0]] == longest  # longest first: the batch pads to its own longest text
    # similar lengths together: the padding overhead is far below padding everything to the global max
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded < 1.3 * lengths.sum() < 500 * lengths.max()


def test_plan_batches_handles_empty_and_single() -> None:
    assert plan_batches([]) == []
    assert [b.tolist() for b in plan_batches([7])] == [[0]]


def test_order_restored_and_padding_ignored(tiny_encoder_dir: str) -> None:
    """Each text encoded alone (no padding at all) equals the bucketed, reordered batch result."""
    eng = Engine(_st(tiny_encoder_dir), 64, token_budget=64, max_batch=4)
    rng = np.random.default_rng(1)
    texts = [TEXTS[i] for i in rng.permutation(len(TEXTS))]
    batched = eng.encode(texts, "fp32")
    alone = np.stack([eng.encode([t], "fp32")[0] for t in texts])
    assert len(eng.batches(texts)) > 2  # several buckets were really used
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_make_batches_pads_with_pad_id_and_masks() -> None:
    ids = [[101, 5, 102], [101, 102], [101, 7, 8, 9, 102]]
    (b,) = make_batches(ids, pad_id=0, token_budget=100)
    assert b.input_ids.shape == (3, 5)
    assert b.attention_mask.sum(1).tolist() == [len(ids[i]) for i in b.index]
    assert (b.input_ids[b.attention_mask == 0] == 0).all()


# ------------------------------------------------------------------ fidelity
def test_fp32_engine_equals_sentence_transformers_tiny(tiny_encoder_dir: str) -> None:
    st = _st(tiny_encoder_dir)
    ref = st.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    got = Engine(st, 64).encode(TEXTS, "fp32")
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_truncation_at_max_length(tiny_encoder_dir: str) -> None:
    st = _st(tiny_encoder_dir)
    eng = Engine(st, 16)
    ids = tokenize(eng.tokenizer, ["word " * 100], 16)
    assert len(ids[0]) == 16
    st.max_seq_length = 16
    np.testing.assert_allclose(eng.encode(["word " * 100]), st.encode(["word " * 100], normalize_embeddings=True),
                               atol=1e-5)


def test_unknown_pipeline_falls_back_to_sentence_transformers(tiny_encoder_dir: str) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    tr = Transformer(tiny_encoder_dir, max_seq_length=64)
    st = SentenceTransformer(modules=[tr, Pooling(32), Dense(32, 8)], device="cpu")
    eng = Engine(st, 64)
    assert not eng.fast_path and "Dense" in eng.fallback_reason
    assert eng.available()["bf16"] and eng.available()["int8"]
    ref = st.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(eng.encode(TEXTS), ref, atol=1e-6)


# ------------------------------------------------------------------ Encoder API
def test_precision_forcing(tiny_encoder_dir: str, fresh_cache: Path) -> None:
    ref = Encoder(tiny_encoder_dir, precision="fp32", max_length=64).encode(TEXTS)
    for p in ("fp32", "bf16", "int8"):
        e = Encoder(tiny_encoder_dir, precision=p, max_length=64)
        x = e.encode(TEXTS)
        assert e.precision_used_ == p and f"|{p}|" in e.model_key
        assert x.shape == (len(TEXTS), 32) and x.dtype == np.float32
        assert np.mean(np.sum(x * ref, axis=1)) > 0.95  # a random tiny model: loose, but not garbage
        rec = e.calibrate(TEXTS)
        assert rec["forced"] and rec["chosen"] == p and e.precision_used_ == p
    assert Encoder(tiny_encoder_dir, precision="int8", max_length=64).engine().backend_name("int8") == \
        "torch-dynamic-int8"  # no packaged ONNX for a non-MiniLM model


def test_unknown_precision_is_one_clear_error() -> None:
    with pytest.raises(AdaptError, match="unknown encoder precision 'fp8'"):
        Encoder("minilm", precision="fp8")


def test_auto_choice_recorded_and_deterministic(tiny_encoder_dir: str, fresh_cache: Path) -> None:
    texts = [f"{t} {i}" for i, t in enumerate(TEXTS * 6)]
    y = np.arange(len(texts)) % 2
    e1 = Encoder(tiny_encoder_dir, max_length=64)
    r1 = e1.calibrate(texts, y, texts[:20], y[:20])
    assert r1["requested"] == "auto" and r1["chosen"] in ("int8", "bf16", "fp32")
    assert e1.precision_used_ == r1["chosen"] and f"|{r1['chosen']}|" in e1.model_key
    assert r1["sample"]["head_check"] == "validation" and r1["fp32_macro_f1"] is not None
    for c in r1["candidates"]:
        assert 0 < c["mean_cosine"] <= 1.0 + 1e-6 and isinstance(c["passed"], bool)
    if r1["chosen"] != "fp32":
        assert r1["candidates"][-1]["precision"] == r1["chosen"] and r1["candidates"][-1]["passed"]
    assert e1.info()["calibration"] is r1
    # same data in another order, in a fresh process (no memory): the same sample, figures and choice
    monkey_order = list(reversed(texts))
    e2 = Encoder(tiny_encoder_dir, max_length=64)
    r2 = e2.calibrate(monkey_order, y[::-1], texts[:20], y[:20])
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert strip(r2) == strip(r1)


def test_auto_falls_back_to_fp32_when_nothing_passes(tiny_encoder_dir: str, fresh_cache: Path) -> None:
    e = Encoder(tiny_encoder_dir, max_length=64)
    rec = e.calibrate(TEXTS, min_cosine=1.01)
    assert rec["chosen"] == "fp32" and e.precision_used_ == "fp32"
    assert rec["candidates"] and not any(c["passed"] for c in rec["candidates"])


def test_auto_calibrates_on_first_encode(tiny_encoder_dir: str, fresh_cache: Path) -> None:
    e = Encoder(tiny_encoder_dir, max_length=64)
    assert e.calibration_ is None
    x = e.encode(TEXTS)
    assert e.calibration_ is not None and e.calibration_["f1_tolerance"] is None
    assert x.shape == (len(TEXTS), 32)


def test_cache_hit_on_second_call_and_new_process(tiny_encoder_dir: str, fresh_cache: Path) -> None:
    e = Encoder(tiny_encoder_dir, precision="fp32", max_length=64)
    first = e.encode(TEXTS)
    uniq = len(set(TEXTS))
    assert e.stats == {"hits": 0, "misses": uniq}  # a duplicate inside one call is encoded once
    second = e.encode(TEXTS)
    assert e.stats == {"hits": len(TEXTS), "misses": uniq}
    np.testing.assert_array_equal(first, second)
    again = Encoder(tiny_encoder_dir, precision="fp32", max_length=64)
    np.testing.assert_array_equal(again.encode(TEXTS), first)
    assert again.stats == {"hits": len(TEXTS), "misses": 0}
    # another precision or max length is another key: no false hits
    other = Encoder(tiny_encoder_dir, precision="bf16", max_length=64)
    other.encode(TEXTS)
    assert other.stats == {"hits": 0, "misses": uniq}


def test_cache_disabled_encodes_even_cached_texts(tiny_encoder_dir: str, fresh_cache: Path) -> None:
    """Latency is timed under cache_disabled(): it must time the model, never a cache read."""
    e = Encoder(tiny_encoder_dir, precision="fp32", max_length=64)
    first = e.encode(TEXTS)
    before = dict(e.stats)
    with enc_mod.cache_disabled():
        timed = e.encode(TEXTS)
    assert e.stats["hits"] == before["hits"] and e.stats["misses"] == before["misses"] + len(TEXTS)
    np.testing.assert_allclose(timed, first, atol=1e-6)
    e.encode(TEXTS)
    assert e.stats["hits"] == before["hits"] + len(TEXTS)  # the cache is back afterwards


def test_empty_input(tiny_encoder_dir: str, fresh_cache: Path) -> None:
    e = Encoder(tiny_encoder_dir, max_length=64)
    out = e.encode([])
    assert out.shape == (0, 32) and out.dtype == np.float32
    assert e.dim == 32


def test_get_encoder_is_shared(tiny_encoder_dir: str, fresh_cache: Path) -> None:
    assert get_encoder(tiny_encoder_dir, "fp32", 64) is get_encoder(tiny_encoder_dir, "fp32", 64)
    assert get_encoder(tiny_encoder_dir, "fp32", 64) is not get_encoder(tiny_encoder_dir, "auto", 64)


def test_features_rung_records_the_precision_check(toy_texts: tuple[list[str], np.ndarray, list[str]],
                                                   tiny_encoder_dir: str, fresh_cache: Path, tmp_path: Path) -> None:
    from adaptladder.rungs import make_rung
    from adaptladder.rungs.base import load_rung

    texts, y, names = toy_texts
    rung = make_rung("features", encoder=tiny_encoder_dir, precision="auto", heads=["logreg"], max_length=64)
    rung.fit(texts, y, label_names=names, val_texts=texts, val_y=y)
    check = rung.extra_info()["precision_check"]
    assert check["requested"] == "auto" and check["chosen"] == rung.precision_used_
    assert check["sample"]["head_check"] == "validation"
    rung.save(tmp_path / "m")
    back = load_rung(tmp_path / "m")
    assert back.extra_info()["precision_check"] == check
    np.testing.assert_allclose(back.predict_proba(texts), rung.predict_proba(texts), atol=1e-6)


# ------------------------------------------------------------------ the packaged MiniLM
@pytest.mark.slow
def test_packaged_minilm_engine_matches_sentence_transformers(fresh_cache: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from adaptladder.models import resolve_encoder

    st = SentenceTransformer(resolve_encoder("minilm"), device="cpu")
    ref = st.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    e = Encoder("minilm", precision="fp32")
    np.testing.assert_allclose(e.encode(TEXTS), ref, atol=2e-5)
    cos = {}
    for p in ("int8", "bf16") if cpu_has_native_bf16() else ("int8",):
        x = Encoder("minilm", precision=p).encode(TEXTS)
        cos[p] = float(np.mean(np.sum(x * ref, axis=1)))
        assert cos[p] >= 0.99, cos
    assert Encoder("minilm", precision="int8").engine().backend_name("int8") == "onnxruntime-int8"
    auto = Encoder("minilm")
    rec = auto.calibrate(TEXTS * 3)
    assert rec["chosen"] == ("bf16" if cpu_has_native_bf16() else "int8")
    assert rec["candidates"][0]["mean_cosine"] >= 0.99

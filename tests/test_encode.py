"""The Encoder: backends equal sentence-transformers, the ONNX export (cached, atomic, with a
recorded fp32 fallback), precision forcing, the recorded auto choice, the disk cache, odd input.

Unit tests run on the tiny random BERT of conftest (milliseconds to a few seconds: the ONNX
export of a 2-layer model); the ones marked slow load the packaged all-MiniLM-L6-v2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import adaptladder.encode as enc_mod
from adaptladder.encode import BACKENDS, Encoder, cpu_has_native_bf16, get_encoder
from adaptladder.errors import AdaptError

TEXTS = ["a", "the quick brown fox jumps over the lazy dog " * 3, "hello world", "", "why?",
         "short one", "a somewhat longer sentence that has quite a few more tokens than the others do",
         "numbers 1 2 3 4 5 6 7 8 9 10", "emoji 🙂 and accents: café naïve", "hello world"]


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADAPTLADDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(enc_mod, "_SHARED", {})
    return tmp_path / "cache"


def _st(path: str, max_length: int = 64, modules: list[Any] | None = None) -> Any:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(path, device="cpu") if modules is None else SentenceTransformer(modules=modules,
                                                                                             device="cpu")
    st.max_seq_length = max_length
    return st


def _onnx_graphs(cache: Path) -> list[Path]:
    return sorted((cache / "onnx").rglob("*")) if (cache / "onnx").exists() else []


# ------------------------------------------------------------------ backends == sentence-transformers
def test_onnx_backend_equals_sentence_transformers(tiny_encoder_dir: str, fresh_cache: Path) -> None:
    """The exported graph + ST's tokenisation and pooling give ST's vectors, in input order, across
    several chunks and batches, with truncation at max_length."""
    texts = [f"{t} {i}" for i, t in enumerate(TEXTS * 5)] + ["word " * 100]
    ref = _st(tiny_encoder_dir, 16).encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    e = Encoder(tiny_encoder_dir, precision="onnx-fp32", max_length=16, batch_size=2)  # chunks of 16 texts
    got = e.encode(texts)
    assert e.precision_used_ == "onnx-fp32" and e.backend_name == "onnxruntime-fp32" and e.fallback_ is None
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    graphs = _onnx_graphs(fresh_cache)
    assert [p.name for p in graphs if p.is_file()] == ["model.onnx"]  # no temporary file left behind


def test_fp32_backend_equals_sentence_transformers(tiny_encoder_dir: str, fresh_cache: Path) -> None:
    ref = _st(tiny_encoder_dir).encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    got = Encoder(tiny_encoder_dir, precision="fp32", max_length=64, batch_size=3).encode(TEXTS)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_onnx_runs_the_modules_after_the_transformer(tiny_encoder_dir: str, tmp_path: Path,
                                                     fresh_cache: Path) -> None:
    """A pipeline with a Dense layer after pooling: the graph replaces only the transformer."""
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    st = _st("", 64, [Transformer(tiny_encoder_dir, max_seq_length=64), Pooling(32),
                      Dense(32, 8)])
    st.save(str(tmp_path / "dense-model"))
    ref = _st(str(tmp_path / "dense-model")).encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    e = Encoder(str(tmp_path / "dense-model"), precision="onnx-fp32", max_length=64)
    got = e.encode(TEXTS)
    assert got.shape == (len(TEXTS), 8) and e.precision_used_ == "onnx-fp32"
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_export_is_cached_per_model(tiny_encoder_dir: str, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Encoder(tiny_encoder_dir, precision="onnx-fp32", max_length=64).encode(TEXTS[:3])
    (graph,) = [p for p in _onnx_graphs(fresh_cache) if p.is_file()]
    stamp = graph.stat().st_mtime_ns

    def no_second_export(*a: Any, **k: Any) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(enc_mod, "export_onnx", no_second_export)
    again = Encoder(tiny_encoder_dir, precision="onnx-fp32", max_length=32)  # another length: the same graph
    again.encode(TEXTS[3:6])
    assert again.precision_used_ == "onnx-fp32" and graph.stat().st_mtime_ns == stamp


def test_failed_export_falls_back_to_fp32_with_the_reason(tiny_encoder_dir: str, fresh_cache: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def broken(*a: Any, **k: Any) -> None:
        Path(a[2]).write_bytes(b"half a graph")  # what a crash mid-write leaves
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(torch.onnx, "export", broken)
    # auto's candidates depend on the CPU (bf16 comes first where it is native): pin a CPU
    # without native bf16, so auto reaches the ONNX candidate whose export fails
    monkeypatch.setattr(enc_mod, "cpu_has_native_bf16", lambda: False)
    ref = Encoder(tiny_encoder_dir, precision="fp32", max_length=64).encode(TEXTS)
    e = Encoder(tiny_encoder_dir, precision="onnx-fp32", max_length=64)
    got = e.encode(TEXTS)
    np.testing.assert_array_equal(got, ref)  # fp32's vectors, under fp32's cache key
    assert e.precision_used_ == "fp32" and e.model_key.split("|")[1] == BACKENDS["fp32"]
    assert e.info()["fallback"] == {"requested": "onnx-fp32", "used": "fp32", "reason": "exporter exploded"}
    assert e.calibrate(TEXTS)["fallback"]["reason"] == "exporter exploded"
    assert not [p for p in _onnx_graphs(fresh_cache) if p.is_file()]  # the half-written file was removed
    # auto skips it, says why, and uses fp32
    a = Encoder(tiny_encoder_dir, max_length=64)
    rec = a.calibrate(TEXTS)
    assert rec["chosen"] == "fp32" and rec["unavailable"]["onnx-fp32"] == "exporter exploded"


def test_missing_onnxruntime_falls_back_to_fp32(tiny_encoder_dir: str, fresh_cache: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    e = Encoder(tiny_encoder_dir, precision="onnx-fp32", max_length=64)
    x = e.encode(TEXTS)
    assert x.shape == (len(TEXTS), 32) and e.precision_used_ == "fp32"
    assert e.info()["fallback"]["reason"] == "onnxruntime is not installed"


def test_wrong_model_is_one_clear_error_not_a_fallback(fresh_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(AdaptError, match="could not load encoder"):
        Encoder(str(tmp_path / "no-such-model"), precision="onnx-fp32").encode(["x"])


# ------------------------------------------------------------------ Encoder API
def test_precision_forcing(tiny_encoder_dir: str, fresh_cache: Path) -> None:
    ref = Encoder(tiny_encoder_dir, precision="fp32", max_length=64).encode(TEXTS)
    for p in ("fp32", "onnx-fp32", "bf16"):
        e = Encoder(tiny_encoder_dir, precision=p, max_length=64)
        x = e.encode(TEXTS)
        assert e.precision_used_ == p and e.model_key == f"{tiny_encoder_dir}|{BACKENDS[p]}|64"
        assert x.shape == (len(TEXTS), 32) and x.dtype == np.float32
        assert np.mean(np.sum(x * ref, axis=1)) > (0.999 if p == "onnx-fp32" else 0.95)
        rec = e.calibrate(TEXTS)
        assert rec["forced"] and rec["chosen"] == p and rec["backend"] == BACKENDS[p] and "fallback" not in rec
    # int8 is only the packaged MiniLM graph: another model runs fp32 and says so
    e = Encoder(tiny_encoder_dir, precision="int8", max_length=64)
    np.testing.assert_array_equal(e.encode(TEXTS), ref)
    assert e.precision_used_ == "fp32" and "packaged" in e.info()["fallback"]["reason"]


def test_unknown_precision_is_one_clear_error() -> None:
    with pytest.raises(AdaptError, match="unknown encoder precision 'fp8'"):
        Encoder("minilm", precision="fp8")


def test_speed_order_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enc_mod, "cpu_has_native_bf16", lambda: True)
    assert enc_mod.speed_order() == ("bf16", "onnx-fp32", "fp32")
    monkeypatch.setattr(enc_mod, "cpu_has_native_bf16", lambda: False)
    assert enc_mod.speed_order() == ("onnx-fp32", "fp32")


def test_auto_choice_recorded_and_deterministic(tiny_encoder_dir: str, fresh_cache: Path) -> None:
    texts = [f"{t} {i}" for i, t in enumerate(TEXTS * 6)]
    y = np.arange(len(texts)) % 2
    e1 = Encoder(tiny_encoder_dir, max_length=64)
    r1 = e1.calibrate(texts, y, texts[:20], y[:20])
    assert r1["requested"] == "auto" and r1["chosen"] in enc_mod.speed_order()
    assert r1["speed_order"] == list(enc_mod.speed_order())
    assert e1.precision_used_ == r1["chosen"] and e1.model_key.split("|")[1] == BACKENDS[r1["chosen"]]
    assert r1["sample"]["head_check"] == "validation" and r1["fp32_macro_f1"] is not None
    for c in r1["candidates"]:
        assert 0 < c["mean_cosine"] <= 1.0 + 1e-6 and isinstance(c["passed"], bool)
    if r1["chosen"] != "fp32":
        assert r1["candidates"][-1]["precision"] == r1["chosen"] and r1["candidates"][-1]["passed"]
    assert e1.info()["calibration"] is r1
    # same data in another order, in a fresh encoder (no memory): the same sample, figures and choice
    e2 = Encoder(tiny_encoder_dir, max_length=64)
    r2 = e2.calibrate(list(reversed(texts)), y[::-1], texts[:20], y[:20])
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert strip(r2) == strip(r1)


def test_auto_tries_candidates_in_speed_order(tiny_encoder_dir: str, fresh_cache: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """On a native-bf16 CPU bf16 comes first; when it fails the rule, the next (onnx-fp32) is taken."""
    monkeypatch.setattr(enc_mod, "speed_order", lambda: ("bf16", "onnx-fp32", "fp32"))
    e = Encoder(tiny_encoder_dir, max_length=64)
    rec = e.calibrate(TEXTS, min_cosine=0.999999)  # bf16 (cos ~0.99999) fails, fp32-exact ONNX passes
    assert [c["precision"] for c in rec["candidates"]] == ["bf16", "onnx-fp32"]
    assert not rec["candidates"][0]["passed"] and rec["candidates"][1]["passed"]
    assert rec["chosen"] == "onnx-fp32" and e.precision_used_ == "onnx-fp32"


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
    # another backend or max length is another key: no false hits
    for p, n in (("onnx-fp32", 64), ("bf16", 64), ("fp32", 32)):
        other = Encoder(tiny_encoder_dir, precision=p, max_length=n)
        other.encode(TEXTS)
        assert other.stats == {"hits": 0, "misses": uniq}, p


def test_cache_entries_of_the_removed_engine_are_not_read(tiny_encoder_dir: str, fresh_cache: Path) -> None:
    """Keys before this version named the precision only (model|fp32|64): those vectors came from
    another code path, so they must not be mixed into a new run."""
    store = enc_mod.EmbeddingCache(fresh_cache / "embeddings.sqlite")
    old_key = f"{tiny_encoder_dir}|fp32|64"
    store.put_many({enc_mod.text_key(old_key, t): np.ones(32, np.float32) for t in TEXTS})
    e = Encoder(tiny_encoder_dir, precision="fp32", max_length=64)
    x = e.encode(TEXTS)
    assert e.stats["hits"] == 0 and not np.allclose(x[0], np.ones(32))


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


def test_progress_advances_per_chunk(tiny_encoder_dir: str, fresh_cache: Path) -> None:
    e = Encoder(tiny_encoder_dir, precision="onnx-fp32", max_length=64, batch_size=2)
    texts = [f"text number {i}" for i in range(40)]
    seen: list[int] = []
    out = e._run(texts, "onnx-fp32", on_batch=seen.append)
    assert seen == [16, 16, 8] and out.shape == (40, 32)
    np.testing.assert_allclose(out, e._run(texts[::-1], "onnx-fp32")[::-1], atol=1e-6)  # input order kept


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
    assert rung.extra_info()["encoder"]["backend"] == BACKENDS[rung.precision_used_]
    rung.save(tmp_path / "m")
    back = load_rung(tmp_path / "m")
    assert back.extra_info()["precision_check"] == check
    np.testing.assert_allclose(back.predict_proba(texts), rung.predict_proba(texts), atol=1e-6)


# ------------------------------------------------------------------ the packaged MiniLM
@pytest.mark.slow
def test_packaged_minilm_backends_match_sentence_transformers(fresh_cache: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from adaptladder.models import resolve_encoder

    st = SentenceTransformer(resolve_encoder("minilm"), device="cpu")
    ref = st.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(Encoder("minilm", precision="fp32").encode(TEXTS), ref, atol=2e-5)
    onnx = Encoder("minilm", precision="onnx-fp32")
    np.testing.assert_allclose(onnx.encode(TEXTS), ref, atol=2e-5)
    assert onnx.backend_name == "onnxruntime-fp32"
    int8 = Encoder("minilm", precision="int8")
    assert float(np.mean(np.sum(int8.encode(TEXTS) * ref, axis=1))) >= 0.99
    assert int8.backend_name == "onnxruntime-int8-packaged"
    rec = Encoder("minilm").calibrate(TEXTS * 3)
    assert rec["chosen"] == ("bf16" if cpu_has_native_bf16() else "onnx-fp32")
    assert rec["candidates"][-1]["mean_cosine"] >= 0.99

"""LM precision: bf16 only where native and faithful on the task's validation data; the record says which."""
from __future__ import annotations

from pathlib import Path

import pytest

from adaptladder import precision
from adaptladder.errors import AdaptError
from test_prompting import tiny_lm  # noqa: F401  (the tiny LM fixture)


def _passing() -> dict:
    return {"passed": True, "identical_share": 1.0}


def test_auto_without_native_bf16_stays_fp32_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTLADDER_NATIVE_BF16", "0")
    called = []
    rec = precision.decide("auto", "cpu", lambda: called.append(1) or _passing())
    assert rec["used"] == "fp32" and "no native bf16" in rec["reason"] and not called  # nothing measured


def test_auto_with_native_bf16_keeps_it_only_when_faithful(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTLADDER_NATIVE_BF16", "1")
    assert precision.decide("auto", "cpu", _passing)["used"] == "bf16"
    failed = precision.decide("auto", "cpu", lambda: {"passed": False})
    assert failed["used"] == "fp32" and failed["reason"] == "bf16 failed the fidelity rule"
    assert precision.decide("auto", "cpu", None)["used"] == "fp32"  # no validation data: no evidence


def test_a_set_precision_is_obeyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTLADDER_NATIVE_BF16", "0")
    rec = precision.decide("bf16", "cpu", None)
    assert rec["used"] == "bf16" and "emulated" in rec["reason"]
    assert precision.decide("fp32", "cpu", _passing)["used"] == "fp32"


def test_fidelity_rules() -> None:
    ok = precision.choice_fidelity([0, 1, 2] * 34, [0, 1, 2] * 34)
    assert ok["passed"] and ok["identical_share"] == 1.0
    one_off = precision.choice_fidelity([0] * 100, [0] * 99 + [1])
    assert one_off["passed"] and one_off["identical_share"] == 0.99
    two_off = precision.choice_fidelity([0] * 100, [0] * 98 + [1, 1])
    assert not two_off["passed"]
    near = precision.generation_fidelity(["a", "b", "c", "d"], ["a", "b", "c", "x"], [0.5, 0.6, 0.7, 0.4],
                                         [0.5, 0.6, 0.7, 0.35], "chrf")
    assert near["passed"] and near["identical_share"] == 0.75 and near["n"] == 4
    far = precision.generation_fidelity(["a"] * 8, ["z"] * 8, [0.9, 0.8] * 4, [0.0] * 8, "chrf")
    assert not far["passed"] and far["bf16_mean"] == 0.0


def test_unknown_precision_is_one_clear_error(tiny_causal_lm_dir: str) -> None:
    from adaptladder.generation.rungs import make_gen_rung

    with pytest.raises(AdaptError, match=r"precision='fp8' is invalid: use 'auto' or 'fp32' or 'bf16'"):
        make_gen_rung("zero-shot", lm=tiny_causal_lm_dir, precision="fp8")


@pytest.mark.parametrize("native", ["0", "1"])
def test_generation_rung_records_and_keeps_its_precision(native: str, tiny_causal_lm_dir: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptladder.generation.rungs import load_gen_rung, make_gen_rung
    from test_generation_prompting import TEXT_SPEC, TRAIN_X, TRAIN_Y, VAL_X

    monkeypatch.setenv("ADAPTLADDER_NATIVE_BF16", native)
    r = make_gen_rung("few-shot", lm=tiny_causal_lm_dir, threads=1, batch_size=2, max_new_tokens=4)
    r.fit(TRAIN_X, TRAIN_Y, spec=TEXT_SPEC, val_inputs=VAL_X, val_targets=TRAIN_Y[:2])
    rec = r.extra_info()["precision"]
    if native == "0":
        assert rec["used"] == "fp32" and "fidelity" not in rec and "no native bf16" in rec["reason"]
    else:  # measured on the validation pairs, both precisions generated
        fid = rec["fidelity"]
        assert fid["n"] == 2 and fid["metric"] == "chrf" and 0 <= fid["identical_share"] <= 1
        assert rec["used"] == ("bf16" if fid["passed"] else "fp32")
    assert r.backend.backend.dtype == precision.DTYPE[rec["used"]]
    out = r.generate(["free entry to win a car"])
    r.save(tmp_path / "m")
    r2 = load_gen_rung(tmp_path / "m")
    assert r2.precision_ == rec["used"] and r2.extra_info()["precision"] == rec
    assert r2.generate(["free entry to win a car"]) == out


def test_bf16_set_generates_with_bf16_weights(tiny_causal_lm_dir: str) -> None:
    import torch

    from adaptladder.generation.rungs import make_gen_rung
    from test_generation_prompting import TEXT_SPEC, TRAIN_X, TRAIN_Y

    r = make_gen_rung("zero-shot", lm=tiny_causal_lm_dir, threads=1, max_new_tokens=3, precision="bf16")
    r.fit(TRAIN_X, TRAIN_Y, spec=TEXT_SPEC)
    assert r.extra_info()["precision"]["used"] == "bf16"
    model, _ = r.backend._load()
    assert next(model.parameters()).dtype == torch.bfloat16
    assert len(r.generate(["hello there"])) == 1


@pytest.mark.parametrize("native", ["0", "1"])
def test_label_scoring_records_and_keeps_its_precision(native: str, tiny_lm: str, tmp_path: Path,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from adaptladder.rungs import load_rung, make_rung
    from test_prompting import _toy_task

    monkeypatch.setenv("ADAPTLADDER_NATIVE_BF16", native)
    texts, y, names, _ = _toy_task()
    r = make_rung("zero-shot", model=tiny_lm, threads=1, calibrate=False)
    r.fit(texts, y, label_names=names, val_texts=texts[:6], val_y=y[:6])
    rec = r.extra_info()["precision"]
    if native == "0":
        assert rec["used"] == "fp32" and "fidelity" not in rec
    else:
        fid = rec["fidelity"]
        assert fid["n"] == 6 and fid["rule"].startswith("identical label choices")
        assert rec["used"] == ("bf16" if fid["passed"] else "fp32")
    assert r.backend.dtype == precision.DTYPE[rec["used"]]
    before = r.predict_proba(["free cash now", "lunch at the station"])
    r.save(tmp_path)
    back = load_rung(tmp_path)
    assert back.precision_ == rec["used"]
    np.testing.assert_allclose(back.predict_proba(["free cash now", "lunch at the station"]), before, atol=1e-6)

"""Rung settings through the CLI: checked for every chosen rung before any compute; `adaptladder rungs`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptladder.cli import main


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main(args)
    cap = capsys.readouterr()
    return int(ex.value.code or 0), cap.out, cap.err


@pytest.mark.parametrize(("setting", "expected"), [
    ("tfidf.foo=1", "unknown setting foo for the tfidf rung; accepted: ngram_max, C,"),
    ("tfidf.C=-1", "tfidf setting C=-1 is invalid: use a positive number"),
    ("lora.rr=1", "unknown setting rr for the lora rung; accepted: model,"),
    ("features.heads=[svm]", "features setting heads=['svm'] is invalid"),
    ("zero-shot.timeout=soon", "zero-shot setting timeout='soon' is invalid"),
])
def test_a_bad_setting_stops_the_run_before_anything_runs(setting: str, expected: str, toy_csv: Path,
                                                          tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    # majority and tfidf would run first; the audit before them: none of it may happen
    code, stdout, err = _cli(["run", str(toy_csv), "--rungs", "majority,tfidf,zero-shot,features,lora",
                              "--out", str(out), "--set", setting], capsys)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in " ".join(lines[0].split()), err
    assert "Traceback" not in err and "running" not in stdout
    assert not out.exists(), "nothing is written before the settings are checked"


def test_settings_of_a_rung_not_climbed_are_checked_too(toy_csv: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(["run", str(toy_csv), "--rungs", "majority", "--out", str(tmp_path / "r"),
                         "--set", "lora.rr=1"], capsys)
    assert code == 2 and "unknown setting rr for the lora rung" in err


def test_valid_string_settings_are_converted_and_recorded(toy_csv: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    code, _, err = _cli(["run", str(toy_csv), "--rungs", "majority,tfidf", "--out", str(out), "--no-audit",
                         "--set", "tfidf.C=2", "--set", "tfidf.max_features=none"], capsys)
    assert code == 0, err
    rec = json.loads((out / "config.json").read_text())
    assert rec["rung_params_resolved"]["tfidf"] == {"seed": 13, "C": 2, "max_features": None}
    assert rec["rung_params_resolved"]["majority"] == {}


def test_rungs_command_lists_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from adaptladder.rungs import GEN_RUNGS, RUNGS

    code, out, err = _cli(["rungs", "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert {(r["kind"], r["name"]) for r in rows} == ({("classification", n) for n in RUNGS}
                                                      | {("generation", n) for n in GEN_RUNGS})
    for kind in ("classification", "generation"):
        ranks = [r["cost_rank"] for r in rows if r["kind"] == kind]
        assert ranks == sorted(ranks), f"{kind} rungs are listed in climbing order"
    tfidf = next(r for r in rows if r["name"] == "tfidf")
    assert tfidf["cost_rank"] == 10 and tfidf["family"] == "floor"
    c = next(s for s in tfidf["settings"] if s["name"] == "C")
    assert c["type"] == "float | None" and c["default"] is None and "validation" in c["help"]
    zs = next(r for r in rows if r["name"] == "zero-shot" and r["kind"] == "classification")
    assert {"timeout", "retries", "concurrency"} <= {s["name"] for s in zs["settings"]}
    gen_zs = next(r for r in rows if r["name"] == "zero-shot" and r["kind"] == "generation")
    assert {"max_new_tokens", "shot_tokens"} <= {s["name"] for s in gen_zs["settings"]}
    sft = next(r for r in rows if r["name"] == "lora-sft")
    lora = next(r for r in rows if r["name"] == "lora")
    shared = {"r", "alpha", "dropout", "target_modules"}
    for row in (sft, lora):  # the LoRA fields are spelt once for both kinds
        declared = {s["name"]: s for s in row["settings"]}
        assert shared <= set(declared) and declared["r"]["type"] == "int" and declared["r"]["help"] == "LoRA rank"
    assert all(s["help"] for r in rows for s in r["settings"]), "every setting has a help line"
    code, out, _ = _cli(["rungs", "--kind", "generation", "--json"], capsys)
    assert code == 0 and {r["kind"] for r in json.loads(out)} == {"generation"}
    code, out, _ = _cli(["rungs", "lora"], capsys)
    assert code == 0 and "target_modules" in out and "cost rank 70" in out
    code, _, err = _cli(["rungs", "telepathy"], capsys)
    assert code == 2 and "unknown rung 'telepathy'" in err
    code, _, err = _cli(["rungs", "--kind", "poetry"], capsys)
    assert code == 2 and "--kind 'poetry' is not a task kind" in err


@pytest.mark.parametrize(("setting", "expected"), [
    ("lora-sft.foo=1", "unknown setting foo for the lora-sft rung; accepted: r, alpha,"),
    ("lora-sft.r=0", "lora-sft setting r=0 is invalid: use an integer >= 1"),
    ("few-shot.shot_pick=longest", "few-shot setting shot_pick='longest' is invalid"),
    ("distill.teacher_budget_share=2", "distill setting teacher_budget_share=2 is invalid"),
])
def test_a_bad_generation_setting_stops_the_run_before_the_data_is_read(
        setting: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import adaptladder.generation.loaders as loaders

    def no_reading(*a: object, **k: object) -> None:
        raise AssertionError("the data was read before the settings were checked")

    monkeypatch.setattr(loaders, "load_generation", no_reading)
    out = tmp_path / "r"
    code, _, err = _cli(["run", "sms-abbreviations", "--out", str(out), "--set", setting], capsys)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in " ".join(lines[0].split()), err
    assert not out.exists()


def test_one_registry_keyed_by_kind_and_name() -> None:
    from adaptladder.generation.rungs import GEN_RUNGS, get_gen_rung_class
    from adaptladder.rungs import REGISTRY, RUNGS, get_rung_class

    assert REGISTRY["classification", "zero-shot"] == RUNGS["zero-shot"]
    assert REGISTRY["generation", "zero-shot"] == GEN_RUNGS["zero-shot"] != RUNGS["zero-shot"]
    assert len(REGISTRY) == len(RUNGS) + len(GEN_RUNGS)
    assert get_rung_class("zero-shot", "generation") is get_gen_rung_class("zero-shot")
    assert get_rung_class("zero-shot").__name__ == "ZeroShotRung"

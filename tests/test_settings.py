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
    from adaptladder.rungs import RUNGS

    code, out, err = _cli(["rungs", "--kind", "classification", "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == sorted(RUNGS, key=lambda n: next(r["cost_rank"] for r in rows
                                                                         if r["name"] == n))
    assert set(r["name"] for r in rows) == set(RUNGS)
    tfidf = next(r for r in rows if r["name"] == "tfidf")
    assert tfidf["cost_rank"] == 10 and tfidf["family"] == "floor"
    c = next(s for s in tfidf["settings"] if s["name"] == "C")
    assert c["type"] == "float | None" and c["default"] is None and "validation" in c["help"]
    zs = next(r for r in rows if r["name"] == "zero-shot")
    assert {"timeout", "retries", "concurrency"} <= {s["name"] for s in zs["settings"]}
    code, out, _ = _cli(["rungs", "lora"], capsys)
    assert code == 0 and "target_modules" in out and "cost rank 70" in out
    code, _, err = _cli(["rungs", "telepathy"], capsys)
    assert code == 2 and "unknown rung 'telepathy'" in err

"""RunConfig: a --config YAML's values stand unless the command line overrides them; wrong types are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptladder.cli import main
from adaptladder.config import RunConfig
from adaptladder.errors import AdaptError


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as ex:
        main(args)
    return int(ex.value.code or 0), capsys.readouterr().err


def test_yaml_values_stand_when_the_cli_does_not_give_them(toy_csv: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("seed: 7\nmetric: accuracy\nencoder: my-encoder\nrungs: [majority]\n")
    out = tmp_path / "r"
    code, err = _run_cli(["run", str(toy_csv), "--config", str(cfg_file), "--out", str(out), "--no-audit"], capsys)
    assert code == 0, err
    rec = json.loads((out / "config.json").read_text())
    assert (rec["seed"], rec["metric"], rec["encoder"]) == (7, "accuracy", "my-encoder")
    assert json.loads((out / "results.json").read_text())["metric"] == "accuracy"


def test_command_line_overrides_the_yaml(toy_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("seed: 7\nmetric: accuracy\nrungs: [majority]\nrung_params: {tfidf: {ngram_max: 1}}\n")
    out = tmp_path / "r"
    code, err = _run_cli(["run", str(toy_csv), "--config", str(cfg_file), "--out", str(out), "--no-audit",
                          "--seed", "3", "--metric", "macro_f1", "--set", "tfidf.C=2"], capsys)
    assert code == 0, err
    rec = json.loads((out / "config.json").read_text())
    assert (rec["seed"], rec["metric"]) == (3, "macro_f1")
    assert rec["rung_params"]["tfidf"] == {"ngram_max": 1, "C": 2}  # --set adds to the file's settings


def test_no_config_uses_the_defaults() -> None:
    cfg = RunConfig()
    assert (cfg.seed, cfg.metric, cfg.encoder) == (13, "macro_f1", "minilm")


@pytest.mark.parametrize(("yaml_text", "expected"), [
    ("bar: high\n", "bar: 'high' is not a number"),
    ("sample: lots\n", "sample: 'lots' is not an integer"),
    ("seed: -1\n", "seed: -1 is not an integer from 0 to 4294967295"),
    ("seed: 1.5\n", "seed: 1.5 is not an integer"),
    ("no_audit: maybe\n", "no_audit: 'maybe' is not true or false"),
    ("rungs: 3\n", "rungs: 3 is not a list of rung names"),
    ("rung_params: {tfidf: 3}\n", "rung_params"),
    ("metric:\n", "metric: None is not allowed to be empty"),
])
def test_yaml_values_of_the_wrong_type_are_one_line_exit_2(yaml_text: str, expected: str, toy_csv: Path,
                                                           tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text(yaml_text)
    code, err = _run_cli(["run", str(toy_csv), "--config", str(cfg_file), "--out", str(tmp_path / "r")], capsys)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert expected in " ".join(lines[0].split()) and str(cfg_file.name) in lines[0]
    assert not (tmp_path / "r").exists(), "nothing is created before the inputs are checked"


def test_negative_seed_on_the_command_line(toy_csv: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_cli(["run", str(toy_csv), "--seed", "-1", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "seed" in err and "from 0 to 4294967295" in err and "Traceback" not in err


def test_api_validates_types_too() -> None:
    with pytest.raises(AdaptError, match="budget_minutes"):
        RunConfig(budget_minutes="soon").validate()  # type: ignore[arg-type]
    with pytest.raises(AdaptError, match="budget"):
        RunConfig(budget_minutes=-2).validate()


def test_ladder_still_exports_runconfig() -> None:
    from adaptladder.ladder import METRICS
    from adaptladder.ladder import RunConfig as FromLadder

    assert FromLadder is RunConfig and METRICS == ("macro_f1", "accuracy")

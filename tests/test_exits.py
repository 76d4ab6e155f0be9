"""Issue #27's tracebacks, wrong exit codes and silent results: each a clean one-line exit 2 now
(each case failed on the main of 2026-12-04)."""
from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from adaptladder.cli import main
from conftest import toy_run


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main(argv)
    cap = capsys.readouterr()
    code = ex.value.code
    return (0 if code is None else int(code)), cap.out, cap.err


def _one_line(code: int, err: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "Usage" not in err, err


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toy_run(tmp_path_factory.mktemp("exits"))


@pytest.fixture
def run(toy: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(toy, out)
    (tmp_path / "texts.csv").write_text("text\nfree cash now\n")
    return out


@pytest.mark.parametrize("argv", [["run", "x.csv", "--bar", "abc"], ["run", "x.csv", "--seed", "abc"],
                                  ["run", "x.csv", "--nope"], ["predict"]])
def test_usage_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(argv, capsys)
    _one_line(code, err)
    assert "--help" in err


def test_a_seed_too_large_is_refused_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(["run", "sms-spam", "--seed", "99999999999999999999", "--rungs", "majority", "--no-audit",
                         "--out", str(tmp_path / "r")], capsys)
    _one_line(code, err)
    assert "4294967295" in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_serve_port_out_of_range(port: str, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(["serve", str(run), "--port", port], capsys)
    _one_line(code, err)
    assert "not a TCP port" in err


def test_serve_on_a_port_in_use_exits_2(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        code, _, err = _cli(["serve", str(run), "--port", str(s.getsockname()[1])], capsys)
    _one_line(code, err)
    assert "another program uses the port" in err


@pytest.mark.parametrize("damage", ["rungs-string", "deep"])
@pytest.mark.parametrize("command", ["report", "advise", "predict"])
def test_a_damaged_results_json_is_one_line(damage: str, command: str, run: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = run / "results.json"
    if damage == "deep":
        path.write_text("[" * 200_000 + "]" * 200_000)
    else:
        doc = json.loads(path.read_text())
        doc["rungs"] = "oops"
        path.write_text(json.dumps(doc))
    argv = [command, str(run)]
    if command == "predict":
        argv += ["-i", str(run.parent / "texts.csv"), "-o", str(run.parent / "o.csv")]
    code, _, err = _cli(argv, capsys)
    _one_line(code, err)
    assert "results.json" in err


def test_a_classification_metric_on_a_generation_task_is_refused_at_start(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(["run", "sms-abbreviations", "--metric", "macro_f1", "--rungs", "zero-shot", "--no-audit",
                         "--out", str(tmp_path / "r")], capsys)
    _one_line(code, err)
    assert "classification metric" in err

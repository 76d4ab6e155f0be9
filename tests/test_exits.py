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


@pytest.mark.parametrize(("data", "opt"), [("sms-spam", "--text-col"), ("sms-spam", "--label-col"),
                                           ("sms-abbreviations", "--target-col"), ("sms-abbreviations", "--text-col")])
def test_a_built_in_set_refuses_columns_it_does_not_have(data: str, opt: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(["run", data, opt, "[/x]", "--no-audit", "--out", str(tmp_path / "r")], capsys)
    _one_line(code, err)
    assert "is a built-in set with the columns" in err and not (tmp_path / "r").exists()


def test_parquet_bytes_are_decoded_or_refused(tmp_path: Path) -> None:
    import pandas as pd

    from adaptladder.errors import AdaptError
    from adaptladder.task import read_table

    pd.DataFrame({"text": ["café".encode(), b"ok"], "label": ["a", "b"]}).to_parquet(tmp_path / "b.parquet")
    assert read_table(tmp_path / "b.parquet")["text"].tolist() == ["café", "ok"]
    pd.DataFrame({"text": [b"ok", b"\xff\xfe"], "label": ["a", "b"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(AdaptError, match=r"record 2 of column 'text' holds bytes that are not UTF-8"):
        read_table(tmp_path / "bad.parquet")


def test_a_chat_turn_whose_content_is_not_text_is_refused(tmp_path: Path) -> None:
    from adaptladder.errors import AdaptError
    from adaptladder.generation.loaders import parse_chat

    good = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}, {"role": "assistant", "content": "yo"}]
    assert parse_chat([good], tmp_path / "c.jsonl", "messages")[:2] == (["hi"], ["yo"])
    for content in (["x", 1], 5, [{"type": "image_url", "image_url": {"url": "u"}}]):
        bad = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]
        with pytest.raises(AdaptError, match=r"c\.jsonl: record 2 \('messages', turn 2\)"):
            parse_chat([good, bad], tmp_path / "c.jsonl", "messages")


def test_a_constant_target_is_an_audit_error() -> None:
    import numpy as np

    from adaptladder.audit.generation import audit_generation
    from adaptladder.generation.task import GenTask
    from test_generation_audit import _cfg

    split = np.array(["train"] * 40 + ["validation"] * 10 + ["test"] * 10, dtype=object)
    task = GenTask("same", [f"input number {i}" for i in range(60)], ["always this"] * 60, split, "rewrite")
    from adaptladder.errors import AdaptError

    with pytest.raises(AdaptError, match="constant_target: every one of the 60 targets is the same text"):
        audit_generation(task, _cfg())  # an error finding stops the run (--force overrides)


@pytest.mark.parametrize("command", ["audit", "validate-jsonl"])
def test_report_files_are_not_overwritten_without_overwrite(command: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import json as _json

    if command == "audit":
        from conftest import HAM, SPAM

        data = tmp_path / "d.csv"
        data.write_text("text,label\n" + "".join(f"{t} {i},spam\n" for i, t in enumerate(SPAM * 3))
                        + "".join(f"{t} {i},ham\n" for i, t in enumerate(HAM * 3)))
    else:
        data = tmp_path / "d.jsonl"
        data.write_text("".join(_json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                          {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                                for i in range(12)))
    mine = tmp_path / "mine.json"
    mine.write_text("my notes")
    code, _, err = _cli([command, str(data), "-o", str(mine)], capsys)
    _one_line(code, err)
    assert "already exists; pass --overwrite" in err and mine.read_text() == "my notes"
    code, _, err = _cli([command, str(data), "-o", str(mine), "--overwrite"], capsys)
    assert code == 0, err
    assert mine.read_text() != "my notes"


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_row_numbers_are_the_users_for_jsonl_and_parquet(suffix: str, tmp_path: Path) -> None:
    import pandas as pd

    from adaptladder.errors import AdaptError
    from adaptladder.task import load_task

    df = pd.DataFrame({"text": ["a", "b", "", "d"] * 3, "label": ["x", "y"] * 6})
    path = tmp_path / f"d{suffix}"
    if suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    with pytest.raises(AdaptError, match="row 3 has an empty text"):  # the third record, line 3 of the JSONL
        load_task(str(path))


def test_a_device_file_is_not_called_empty(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(["audit", "/dev/zero"], capsys)
    _one_line(code, err)
    assert "not a regular file" in err


def test_serve_answers_413_for_a_large_chunked_body_and_422_for_deep_json(run: Path) -> None:
    import httpx

    from adaptladder.serve import ServeSettings, create_app, run_in_thread

    server, _, port = run_in_thread(create_app(ServeSettings(run_dir=str(run))))
    url = f"http://127.0.0.1:{port}/predict"
    try:
        def chunks():
            yield b'{"texts": ["'
            for _ in range(5):
                yield b"a" * 1_000_000
            yield b'"]}'

        r = httpx.post(url, content=chunks(), headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 413 and r.json()["limit"] == "max_body_bytes"
        deep = ('{"texts": ' + "[" * 200_000 + "]" * 200_000 + "}").encode()
        r = httpx.post(url, content=deep, headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 422 and "nested too deeply" in r.json()["error"]
        r = httpx.post(url, json={"texts": ["free cash now"]}, timeout=60)
        assert r.status_code == 200
    finally:
        server.should_exit = True


def test_an_unknown_generation_setting_is_refused_before_the_data_is_read(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import adaptladder.generation.task as gtask

    def no_read(*a: object, **k: object) -> None:
        raise AssertionError("the data was read")

    monkeypatch.setattr(gtask, "load_generation_task", no_read)
    code, _, err = _cli(["run", "sms-abbreviations", "--set", "lora-sft.foo=1", "--out", str(tmp_path / "r")], capsys)
    _one_line(code, err)
    assert "unknown setting foo for the lora-sft rung; accepted: r, alpha" in err and not (tmp_path / "r").exists()


def test_rungs_lists_both_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    from adaptladder.generation.rungs import GEN_RUNGS
    from adaptladder.rungs import RUNGS

    code, out, _ = _cli(["rungs", "--json"], capsys)
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows if r["kind"] == "classification"] == list(RUNGS)
    gen = {r["name"]: r for r in rows if r["kind"] == "generation"}
    assert set(gen) == set(GEN_RUNGS)
    assert {"name": "n_words", "type": "int | None", "default": None,
            "help": "words of the input kept; unset: chosen on validation"} in gen["lead"]["settings"]
    code, out, _ = _cli(["rungs", "--kind", "generation", "--json"], capsys)
    assert {r["kind"] for r in json.loads(out)} == {"generation"}

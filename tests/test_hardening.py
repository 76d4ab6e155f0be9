"""Hostile and careless input (issue #14): one line and exit 2, nothing of the user's overwritten,
no silently wrong result, no secret printed. Each test reproduces one case of the issue."""

from __future__ import annotations

import errno
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from adaptladder.cli import main
from adaptladder.errors import AdaptError
from adaptladder.task import load_task

SECRET = "sk-hardening-test-0123456789"


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main(argv)
    cap = capsys.readouterr()
    code = ex.value.code
    return (0 if code is None else int(code)), cap.out, cap.err


def _frame(n: int = 12, labels: tuple[str, ...] = ("pos", "neg")) -> pd.DataFrame:
    return pd.DataFrame([{"text": f"example {lab} number {i} words", "label": lab}
                         for lab in labels for i in range(n)])


def _csv(tmp_path: Path, df: pd.DataFrame, name: str = "d.csv") -> Path:
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


# ------------------------------------------------------------------ a scripted OpenAI-compatible server
class _Server:
    """Answers every POST with ``reply()``: (status, body bytes); ``hang`` seconds of silence first."""

    def __init__(self, status: int = 200, body: bytes = b"{}", hang: float = 0.0) -> None:
        self.status, self.body, self.hang, self.hits = status, body, hang, 0
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                srv.hits += 1
                if srv.hang:
                    time.sleep(srv.hang)
                try:
                    self.send_response(srv.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(srv.body)))
                    self.end_headers()
                    self.wfile.write(srv.body)
                except OSError:
                    pass

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.server = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("HARDENING_KEY", SECRET)
    made: list[_Server] = []

    def make(**kw: Any) -> _Server:
        made.append(_Server(**kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


# ------------------------------------------------------------------ 2. secrets
def test_api_key_echoed_by_the_server_is_never_printed(server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    s = server(status=401, body=json.dumps({"error": f"invalid api key Bearer {SECRET}; key={SECRET}!"}).encode())
    code, out, err = _cli(["prompt", "hello", "--labels", "ham,spam", "--backend", "openai", "--model", "m",
                           "--base-url", s.url, "--api-key-env", "HARDENING_KEY"], capsys)
    assert code == 2
    assert SECRET not in err + out and SECRET[5:20] not in err + out
    assert "401" in err and "[redacted]" in err and "Traceback" not in err


# ------------------------------------------------------------------ 3. --out
def test_out_into_a_user_folder_is_refused_and_nothing_overwritten(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = _csv(tmp_path, _frame())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my own notes")
    code, _, err = _cli(["run", str(data), "--rungs", "majority", "--no-audit", "--out", str(mine)], capsys)
    assert code == 2 and "not an adaptladder run" in err and "Traceback" not in err
    assert sorted(p.name for p in mine.iterdir()) == ["report.md"]
    assert (mine / "report.md").read_text() == "my own notes"
    # an empty folder and an existing run of the tool are fine (the second run resumes)
    empty = tmp_path / "empty"
    empty.mkdir()
    for _ in range(2):
        code, _, err = _cli(["run", str(data), "--rungs", "majority", "--no-audit", "--out", str(empty)], capsys)
        assert code == 0, err
    assert (empty / "results.json").is_file()


def test_out_onto_a_file_or_unwritable_place_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data = _csv(tmp_path, _frame())
    afile = tmp_path / "afile.txt"
    afile.write_text("keep")
    for out in (afile, afile / "sub"):
        code, _, err = _cli(["run", str(data), "--rungs", "majority", "--no-audit", "--out", str(out)], capsys)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert afile.read_text() == "keep"

    real_mkdir = Path.mkdir

    def denied(self: Path, *a: Any, **kw: Any) -> None:
        if "locked" in str(self):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", denied)
    code, _, err = _cli(["run", str(data), "--rungs", "majority", "--no-audit", "--out",
                         str(tmp_path / "locked" / "r")], capsys)
    assert code == 2 and "Permission denied" in err and "Traceback" not in err


def test_out_with_dotdot_leaves_no_stray_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data = _csv(tmp_path, _frame())
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(["run", str(data), "--rungs", "majority", "--no-audit", "--out", "stray/../r"], capsys)
    assert code == 0, err
    assert (tmp_path / "r" / "results.json").is_file()
    assert not (tmp_path / "stray").exists()
    # bad input: nothing at all is created
    code, _, _ = _cli(["run", str(tmp_path / "missing.csv"), "--no-audit", "--out", "new/../other"], capsys)
    assert code == 2 and not (tmp_path / "new").exists() and not (tmp_path / "other").exists()


# ------------------------------------------------------------------ 4. / 6. / 15. loading
def test_labels_written_differently_stay_distinct(tmp_path: Path) -> None:
    df = pd.DataFrame({"text": [f"text number {i}" for i in range(24)], "label": ["007", "7", "8"] * 8})
    p = tmp_path / "d.csv"
    df.to_csv(p, index=False)
    task = load_task(p)
    assert sorted(task.label_names) == ["007", "7", "8"]
    # the same number written one way is still one number: 1.0 from a float column is 1
    df2 = pd.DataFrame({"text": [f"t {i}" for i in range(24)], "label": [1.0, 2.0, 3.0] * 8})
    task2 = load_task(_csv(tmp_path, df2, "f.csv"))
    assert task2.label_names == ["1", "2", "3"]


def test_two_label_columns_are_refused_naming_both(tmp_path: Path) -> None:
    p = tmp_path / "dup.csv"
    p.write_text("text,label,label\n" + "".join(f"t{i},a,b\nu{i},b,a\n" for i in range(8)))
    with pytest.raises(AdaptError, match=r"'label' twice \(columns 2 and 3\)"):
        load_task(p)


def test_latin1_byte_is_located_by_line_and_byte_offset(tmp_path: Path) -> None:
    head = "text,label\n" + "".join(f"plain ascii text {i:03d},pos\n" for i in range(10))
    raw = head.encode() + b"caf\xe9 au lait,neg\n" + b"more,neg\n" * 5
    bad_at = len(head.encode()) + 3
    p = tmp_path / "latin.csv"
    p.write_bytes(raw)
    with pytest.raises(AdaptError) as e:
        load_task(p)
    assert f"byte offset {bad_at}" in str(e.value) and "line 12" in str(e.value) and "0xe9" in str(e.value)


def test_broken_jsonl_line_is_reported_by_line_number(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"t {i}", "label": "ab"[i % 2]}) for i in range(12)]
    lines[6] = '{"text": "broken", "label": '
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(AdaptError, match=r"line 7 is not valid JSON"):
        load_task(p)
    p.write_text("\n".join([*lines[:6], "[1, 2]", *lines[7:]]) + "\n")
    with pytest.raises(AdaptError, match=r"line 7 is a JSON list"):
        load_task(p)


def test_parquet_list_labels_are_not_scalars(tmp_path: Path) -> None:
    p = tmp_path / "d.parquet"
    pd.DataFrame({"text": [f"t {i}" for i in range(12)], "label": [[1, 2]] * 12}).to_parquet(p)
    with pytest.raises(AdaptError, match="labels must be scalars"):
        load_task(p)


# ------------------------------------------------------------------ 8. split sanity without the audit
def test_class_only_in_test_is_an_error_without_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    df = _frame(9)
    df["split"] = ["train", "train", "train", "train", "train", "validation", "validation", "test", "test"] * 2
    extra = pd.DataFrame({"text": ["only in test a", "only in test b"], "label": ["rare", "rare"],
                          "split": ["test", "test"]})
    data = _csv(tmp_path, pd.concat([df, extra]))
    code, _, err = _cli(["run", str(data), "--split-col", "split", "--rungs", "majority", "--no-audit", "--out",
                         str(tmp_path / "r")], capsys)
    assert code == 2 and "'rare'" in err and "no training examples" in err


def test_empty_validation_split_is_an_error_without_audit(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # two distinct texts per class, each copied many times: copies stay together, so no validation unit
    rows = [{"text": f"{lab} text {j}", "label": lab} for lab in ("a", "b") for j in range(2) for _ in range(10)]
    data = _csv(tmp_path, pd.DataFrame(rows))
    code, _, err = _cli(["run", str(data), "--rungs", "majority", "--no-audit", "--out", str(tmp_path / "r")],
                        capsys)
    assert code == 2 and "validation split is empty" in err and "distinct texts" in err


# ------------------------------------------------------------------ 9. tfidf on texts without word tokens
def test_tfidf_rung_handles_emoji_only_texts() -> None:
    from adaptladder.rungs.classical import TfidfRung

    texts = ["😀😀", "😀 🎉", "🎉😀", "😀", "😡😡", "😡 💢", "💢😡", "😡"] * 2
    y = np.array(([0] * 4 + [1] * 4) * 2)
    rung = TfidfRung(C=1.0).fit(texts, y, label_names=["happy", "angry"])
    assert rung.predict_proba(["😀😀😀", "😡😡😡"]).argmax(axis=1).tolist() == [0, 1]
    assert "char" in rung.extra_info()["analyzer"]


# ------------------------------------------------------------------ 11. rich markup in user text
@pytest.mark.parametrize("argv", [
    ["--text-col", "[/x]"],
    ["--label-col", "[bold]oops[/bold]"],
])
def test_user_text_with_markup_prints_literally(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                argv: list[str]) -> None:
    data = _csv(tmp_path, _frame())
    code, _, err = _cli(["run", str(data), "--rungs", "majority", "--no-audit", "--out", str(tmp_path / "r"), *argv],
                        capsys)
    assert code == 2 and "Traceback" not in err and "MarkupError" not in err
    assert repr(argv[1]) in err


def test_file_name_with_markup_prints_literally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil = tmp_path / "[/evil].csv"
    code, _, err = _cli(["run", str(evil), "--rungs", "majority", "--no-audit"], capsys)
    assert code == 2 and "[/evil].csv" in err and "Traceback" not in err


def test_failed_rung_reason_with_markup_prints_literally(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptladder.rungs.classical import TfidfRung

    def boom(self: Any, *a: Any, **kw: Any) -> None:
        raise RuntimeError("label [/bold] broke [red]it")

    monkeypatch.setattr(TfidfRung, "fit", boom)
    data = _csv(tmp_path, _frame())
    code, out, err = _cli(["run", str(data), "--rungs", "majority,tfidf", "--no-audit", "--out",
                           str(tmp_path / "r")], capsys)
    assert code == 0, err
    assert "label [/bold] broke [red]it" in out + err  # the log line (stderr) and the table


# ------------------------------------------------------------------ 12. damaged run directories
@pytest.fixture
def finished_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    data = _csv(tmp_path, _frame())
    run = tmp_path / "run"
    code, _, err = _cli(["run", str(data), "--rungs", "majority,tfidf", "--no-audit", "--all", "--out", str(run)],
                        capsys)
    assert code == 0, err
    return run, data


@pytest.mark.parametrize("damage", ["delete model file", "garble model file", "garble rung.json",
                                    "rung.json a list", "delete rung.json", "garble majority prior"])
def test_predict_and_evaluate_on_a_damaged_model_name_the_file(finished_run: tuple[Path, Path], damage: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    run, data = finished_run
    rung = "majority" if "majority" in damage else "tfidf"
    model = run / "rungs" / rung / "model"
    target = model / "rung.json" if "rung.json" in damage else next(
        p for p in model.iterdir() if p.name != "rung.json")
    if damage.startswith("delete"):
        target.unlink()
    elif damage == "rung.json a list":
        target.write_text("[1, 2]")
    else:
        target.write_bytes(b"\x80\x04garbage" + bytes(range(50)))
    for argv in (["predict", str(run), "--rung", rung, "-i", str(data), "-o", str(run.parent / "p.csv")],
                 ["evaluate", str(run), "--rung", rung, "--data", str(data)]):
        code, _, err = _cli(argv, capsys)
        assert code == 2, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert target.name in err


# ------------------------------------------------------------------ 13. the openai backend
@pytest.mark.parametrize(("body", "expected"), [(b"<html>not json</html>", "not with JSON"),
                                                (b"[1, 2, 3]", "JSON list")])
def test_openai_200_with_malformed_json_is_one_line(server: Any, body: bytes, expected: str) -> None:
    from adaptladder.backends.openai import OpenAIBackend

    s = server(body=body)
    b = OpenAIBackend(model="m", base_url=s.url, api_key_env="HARDENING_KEY", max_retries=0)
    with pytest.raises(AdaptError, match=expected):
        b.generate_prompts("sys", ["hi"])
    with pytest.raises(AdaptError, match=expected):
        b.score_prompts("sys", ["hi", "there"], ["ham", "spam"])


def test_openai_prompt_command_with_malformed_answer_exits_2(server: Any,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    s = server(body=b'["not", "an", "object"]')
    code, _, err = _cli(["prompt", "hello", "--labels", "ham,spam", "--backend", "openai", "--model", "m",
                         "--base-url", s.url, "--api-key-env", "HARDENING_KEY"], capsys)
    assert code == 2 and "JSON list" in err and "Traceback" not in err


def test_openai_hanging_server_fails_fast_once(server: Any) -> None:
    from adaptladder.backends.openai import OpenAIBackend

    s = server(hang=3.0)
    b = OpenAIBackend(model="m", base_url=s.url, api_key_env="HARDENING_KEY", timeout=0.3, retries=1,
                      backoff=0.01, concurrency=2)
    assert (b.timeout, b.max_retries, b.concurrency) == (0.3, 1, 2)
    t0 = time.perf_counter()
    with pytest.raises(AdaptError, match=r"timed out after 0\.3 s"):
        b.generate_prompts("sys", [f"text {i}" for i in range(20)])
    # 20 texts cost about one request's budget (2 attempts x 0.3 s, two at once), not 20 x that
    assert time.perf_counter() - t0 < 2.5
    assert s.hits <= 4
    with pytest.raises(AdaptError, match="timed out"):  # remembered: later requests fail at once
        b.generate_prompts("sys", ["again"])
    assert s.hits <= 4


def test_openai_request_settings_are_checked_and_passed_from_the_rung(server: Any) -> None:
    from adaptladder.backends.openai import OpenAIBackend
    from adaptladder.rungs.prompting import ZeroShotRung

    for bad in ({"timeout": 0}, {"retries": -1}, {"concurrency": 0}, {"timeout": "soon"}):
        with pytest.raises(AdaptError):
            OpenAIBackend(model="m", **bad)  # type: ignore[arg-type]
    rung = ZeroShotRung(backend="openai", model="m", base_url="http://127.0.0.1:9/v1", api_key_env="HARDENING_KEY",
                        timeout=5, retries=0, concurrency=3)
    b = rung.backend
    assert (b.timeout, b.max_retries, b.concurrency) == (5.0, 0, 3)


def test_run_keeps_finished_rungs_when_a_later_rung_cannot_reach_its_server(
        server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = server(status=401, body=b'{"error": "bad key"}')
    data = _csv(tmp_path, _frame())
    run = tmp_path / "r"
    code, _, err = _cli(["run", str(data), "--rungs", "majority,zero-shot", "--no-audit", "--out", str(run),
                         "--set", "zero-shot.backend=openai", "--set", f"zero-shot.base_url={s.url}",
                         "--set", "zero-shot.api_key_env=HARDENING_KEY", "--set", "zero-shot.calibrate=false"],
                        capsys)
    assert code == 2 and "401" in err and "Traceback" not in err
    doc = json.loads((run / "results.json").read_text())
    assert doc["partial"] is True and [r["name"] for r in doc["rungs"]] == ["majority"]
    assert (run / "report.html").is_file() and (run / "report.md").is_file()
    assert any("zero-shot" in r for r in doc["recommendation"]["reasons"])


# ------------------------------------------------------------------ 14. disk full
def test_disk_full_while_writing_the_report_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import adaptladder.report

    def full(*a: Any, **kw: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(adaptladder.report, "write_report", full)
    data = _csv(tmp_path, _frame())
    code, out, err = _cli(["run", str(data), "--rungs", "majority", "--no-audit", "--out", str(tmp_path / "r")],
                          capsys)
    assert code != 0
    assert "report.html" in err and "No space left on device" in err and "Traceback" not in err
    assert "report.html, report.md, results.json" not in out  # never claims what is not there
    assert (tmp_path / "r" / "results.json").is_file()


def test_prompt_table_prints_markup_labels_and_texts_literally(server: Any,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    answer = {"choices": [{"message": {"role": "assistant", "content": "[bold]"}, "logprobs": None}]}
    s = server(body=json.dumps(answer).encode())
    code, out, err = _cli(["prompt", "text with [/x] in it", "--labels", "[bold],plain", "--backend", "openai",
                           "--model", "m", "--base-url", s.url, "--api-key-env", "HARDENING_KEY"], capsys)
    assert code == 0, err
    assert "[bold]" in out and "text with [/x] in it" in out


def test_audit_out_path_with_markup_prints_literally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _csv(tmp_path, _frame())
    target = tmp_path / "[/x].json"
    code, out, err = _cli(["audit", str(data), "--no-near-dups", "--no-label-errors", "--out", str(target)], capsys)
    assert code in (0, 1), err
    assert target.is_file() and f"wrote {target}" in out.replace("\n", "")


def test_disk_full_anywhere_else_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import adaptladder.store

    real = adaptladder.store.atomic_write_text

    def full(path: Path, text: str) -> None:
        if path.name == "task.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)

    monkeypatch.setattr(adaptladder.store, "atomic_write_text", full)
    data = _csv(tmp_path, _frame())
    code, _, err = _cli(["run", str(data), "--rungs", "majority", "--no-audit", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "task.json" in err and "No space left" in err and "Traceback" not in err

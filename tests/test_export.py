"""export-jsonl / validate-jsonl: round trip on a built-in data set, and every malformed case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptladder.cli import main
from adaptladder.errors import AdaptError
from adaptladder.export import (
    MIN_EXAMPLES,
    chat_example,
    export_jsonl,
    get_token_counter,
    system_prompt_from_run,
    validate_jsonl,
)
from adaptladder.task import load_builtin

SYSTEM = "Classify the question as ABBR, DESC, ENTY, HUM, LOC or NUM. Answer with the label only."


def run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture(scope="module")
def small_task():  # type: ignore[no-untyped-def]
    return load_builtin("trec6").sample({"train": 60, "validation": 20, "test": 20}, seed=1)


def fake_run(root: Path, prompts: dict[str, str], recommended: str | None = None) -> Path:
    (root / "rungs").mkdir(parents=True)
    for rung, prompt in prompts.items():
        d = root / "rungs" / rung / "model"
        d.mkdir(parents=True)
        (d / "system_prompt.txt").write_text(prompt + "\n", encoding="utf-8")
    if recommended:
        (root / "results.json").write_text(json.dumps({"recommendation": {"rung": recommended}}))
    return root


# ---------------------------------------------------------------- export
def test_export_then_validate_round_trip(small_task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = export_jsonl(small_task, system=SYSTEM, out=tmp_path / "train.jsonl", val_out=tmp_path / "val.jsonl")
    lines = (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()
    tx, ty = small_task.part("train")
    assert len(lines) == res.files[0].examples == len(set(zip(tx, ty.tolist(), strict=True)))
    first = json.loads(lines[0])
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert first["messages"][0]["content"] == SYSTEM
    pairs = {(json.loads(ln)["messages"][1]["content"], json.loads(ln)["messages"][2]["content"]) for ln in lines}
    assert pairs == {(t, small_task.label_names[k]) for t, k in zip(tx, ty.tolist(), strict=True)}
    # the test split is never exported by default, and the result says so
    test_only = set(small_task.part("test")[0]) - set(tx)
    assert test_only and not test_only & {p[0] for p in pairs}
    assert res.held_out == {"test": 20} and any("held out" in n for n in res.notes)
    for name in ("train.jsonl", "val.jsonl"):
        rep = validate_jsonl(tmp_path / name, tokenizer="chars4")
        assert rep.ok, rep.problems
        assert rep.system_prompt == SYSTEM
        assert rep.tokens_total > 0 and rep.longest[0]["tokens"] == rep.tokens_max
        assert rep.cost is not None
        assert rep.cost["usd"] == pytest.approx(rep.tokens_total * 3 / 1e6 * 3.00, rel=1e-4)


def test_cli_round_trip_on_builtin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    assert run_cli(["export-jsonl", "trec6", "--system", SYSTEM, "-o", str(out), "--val-output", str(val)]) == 0
    text = capsys.readouterr().out
    assert "held out" in text
    n_train = len(out.read_text().splitlines())
    assert n_train > 3000
    assert run_cli(["validate-jsonl", str(out), "--tokenizer", "chars4", "--epochs", "2",
                    "-o", str(tmp_path / "rep.json")]) == 0
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["ok"] and rep["examples"] == n_train and rep["cost"]["epochs"] == 2
    assert "ok" in capsys.readouterr().out
    # refuses to overwrite, then overwrites when asked (--out: the old name of --output, still accepted)
    assert run_cli(["export-jsonl", "trec6", "--system", SYSTEM, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert run_cli(["export-jsonl", "trec6", "--system", "", "--output", str(out), "--overwrite"]) == 0
    assert [m["role"] for m in json.loads(out.read_text().splitlines()[0])["messages"]] == ["user", "assistant"]


def test_export_refuses_bad_requests(small_task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AdaptError, match="unknown export format"):
        export_jsonl(small_task, system=SYSTEM, out=tmp_path / "a.jsonl", fmt="alpaca")
    with pytest.raises(AdaptError, match="must differ"):
        export_jsonl(small_task, system=SYSTEM, out=tmp_path / "a.jsonl", val_out=tmp_path / "a.jsonl")
    with pytest.raises(AdaptError, match="does not exist"):
        export_jsonl(small_task, system=SYSTEM, out=tmp_path / "nodir" / "a.jsonl")
    assert run_cli(["export-jsonl", "trec6", "-o", str(tmp_path / "b.jsonl")]) == 2  # no --system / RUN_DIR


def test_export_test_split_only_when_asked(small_task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = export_jsonl(small_task, system=SYSTEM, out=tmp_path / "t.jsonl", test_out=tmp_path / "test.jsonl")
    assert [f.split for f in res.files] == ["train", "test"]
    assert "test" not in res.held_out and "validation" in res.held_out


def test_system_prompt_from_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fake_run(tmp_path / "run", {"zero-shot": "You label questions.", "few-shot": "You label questions."})
    assert system_prompt_from_run(run) == ("You label questions.", "few-shot")
    out = tmp_path / "train.jsonl"
    assert run_cli(["export-jsonl", "trec6", str(run), "-o", str(out)]) == 0
    assert json.loads(out.read_text().splitlines()[0])["messages"][0]["content"] == "You label questions."
    capsys.readouterr()
    assert run_cli(["validate-jsonl", str(out), str(run), "--tokenizer", "chars4"]) == 0
    # a different run prompt makes every line a problem (--system-from: the old spelling, still accepted)
    other = fake_run(tmp_path / "other", {"few-shot": "Something else."})
    assert run_cli(["validate-jsonl", str(out), "--system-from", str(other), "--tokenizer", "chars4"]) == 2
    err = capsys.readouterr().err
    assert "line 1" in err and "few-shot" in err
    # prompts that differ: the recommended rung decides, else --rung must choose
    mixed = fake_run(tmp_path / "mixed", {"zero-shot": "A.", "knn-few-shot": "B."})
    with pytest.raises(AdaptError, match="--rung"):
        system_prompt_from_run(mixed)
    assert system_prompt_from_run(mixed, "zero-shot") == ("A.", "zero-shot")
    (mixed / "results.json").write_text(json.dumps({"recommendation": {"rung": "knn-few-shot"}}))
    assert system_prompt_from_run(mixed) == ("B.", "knn-few-shot")
    with pytest.raises(AdaptError, match="no prompting rung"):
        system_prompt_from_run(fake_run(tmp_path / "empty", {}))


# ---------------------------------------------------------------- malformed files
def good_lines(n: int = 12, system: str = SYSTEM) -> list[str]:
    return [json.dumps(chat_example(system, f"Question number {i} ?", "NUM")) for i in range(n)]


MALFORMED = {
    "invalid-json": '{"messages": [{"role": "user", "content": "x"}',
    "missing-messages": '{"prompt": "x", "completion": "NUM"}',
    "role-order": json.dumps({"messages": [{"role": "system", "content": SYSTEM},
                                           {"role": "assistant", "content": "NUM"},
                                           {"role": "user", "content": "x"}]}),
    "empty-content": json.dumps(chat_example(SYSTEM, "   ", "NUM")),
    "system-prompt": json.dumps(chat_example("A different prompt.", "Question x ?", "NUM")),
    "duplicate": json.dumps(chat_example(SYSTEM, "Question number 2 ?", "NUM")),
    "bad-role": json.dumps({"messages": [{"role": "human", "content": "x"}, {"role": "assistant", "content": "y"}]}),
    "blank-line": "",
    "not-object": "[1, 2]",
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_each_malformed_case_gives_its_line_and_exit_2(kind: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    lines = good_lines()
    lines.insert(6, MALFORMED[kind])  # line 7
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rep = validate_jsonl(f, tokenizer="chars4")
    assert [(p.line, p.kind) for p in rep.problems] == [(7, kind)]
    assert run_cli(["validate-jsonl", str(f), "--tokenizer", "chars4"]) == 2
    captured = capsys.readouterr()
    assert "line 7" in captured.err and "Traceback" not in captured.err
    assert f"line 7: {kind}" in captured.out.replace("\n", " ")


def test_more_structural_problems(tmp_path: Path) -> None:
    cases = {
        "ends-with-user": {"messages": [{"role": "user", "content": "x"}]},
        "system-later": {"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": SYSTEM},
                                      {"role": "assistant", "content": "y"}]},
        "non-string": {"messages": [{"role": "user", "content": ["x"]}, {"role": "assistant", "content": "y"}]},
        "no-content": {"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]},
        "extra-key": {"messages": [{"role": "user", "content": "x", "weight": 1, "lang": "en"},
                                   {"role": "assistant", "content": "y"}]},
        "empty-list": {"messages": []},
    }
    f = tmp_path / "f.jsonl"
    f.write_text("\n".join([json.dumps(c) for c in cases.values()] + good_lines(12, system="")) + "\n")
    rep = validate_jsonl(f, tokenizer="chars4", model=None)
    got = {p.line: p.kind for p in rep.problems}
    assert got == {1: "role-order", 2: "role-order", 3: "bad-content", 4: "bad-content", 5: "unknown-key",
                   6: "missing-messages"}
    assert rep.cost is None


def test_whole_file_problems(tmp_path: Path) -> None:
    f = tmp_path / "few.jsonl"
    f.write_text("\n".join(good_lines(MIN_EXAMPLES - 1)) + "\n")
    rep = validate_jsonl(f, tokenizer="chars4")
    assert [(p.line, p.kind) for p in rep.problems] == [(None, "too-few")]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(AdaptError, match="empty"):
        validate_jsonl(empty)
    with pytest.raises(AdaptError, match="not found"):
        validate_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(AdaptError, match="no training price"):
        validate_jsonl(f, model="my-own-model", tokenizer="chars4")
    f.write_bytes(b'{"messages": "\xff"}\n' + ("\n".join(good_lines(12)) + "\n").encode())
    assert [p.kind for p in validate_jsonl(f, tokenizer="chars4").problems] == ["encoding"]


def test_token_counters() -> None:
    c4 = get_token_counter("chars4")
    assert c4.count("abcdefgh") == 2 and c4.count("abcdefghi") == 3
    minilm = get_token_counter("minilm")
    assert 5 <= minilm.count("What is the capital of France ?") <= 10
    with pytest.raises(AdaptError, match="unknown tokenizer"):
        get_token_counter("tiktoken")


@pytest.mark.slow
def test_smollm2_token_counter() -> None:
    """The default counter (extracted from the packaged SmolLM2 GGUF once, then cached)."""
    tok = get_token_counter("smollm2")
    assert tok.name == "smollm2"
    n = tok.count("What is the capital of France? The quick brown fox jumps over the lazy dog.")
    assert 14 <= n <= 22  # OpenAI's cl100k gives 17


def test_user_template_from_run(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", {"zero-shot": "You label questions."})
    (run / "rungs" / "zero-shot" / "model" / "prompt_template.j2").write_text(
        "{% for ex in shots %}Text: {{ ex.text }}\nLabel: {{ ex.label }}\n\n{% endfor %}Text: {{ text }}\nLabel:")
    out = tmp_path / "train.jsonl"
    assert run_cli(["export-jsonl", "trec6", str(run), "--template-from-run", "-o", str(out)]) == 0
    user = json.loads(out.read_text().splitlines()[0])["messages"][1]["content"]
    assert user.startswith("Text: ") and user.endswith("\nLabel:")
    assert validate_jsonl(out, tokenizer="chars4", model=None).ok
    bad = fake_run(tmp_path / "bad", {"zero-shot": "x"})
    (bad / "rungs" / "zero-shot" / "model" / "prompt_template.j2").write_text("{{ undefined_thing }} {{ text }}")
    assert run_cli(["export-jsonl", "trec6", "--from-run", str(bad), "--template-from-run",
                    "--out", str(tmp_path / "b.jsonl")]) == 2  # the old spellings still work
    assert run_cli(["export-jsonl", "trec6", "--system", "x", "--template-from-run",
                    "-o", str(tmp_path / "c.jsonl")]) == 2

"""Generation tasks from the user's files (adaptladder.generation.loaders), their detection, and every
bad input as one line + exit 2 through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adaptladder.cli import main
from adaptladder.config import RunConfig
from adaptladder.errors import AdaptError
from adaptladder.generation.loaders import (
    check_context,
    detect_task,
    load_generation_data,
    load_schema,
    looks_like_generation,
    resolve_generation_metric,
)
from adaptladder.generation.task import GenTask
from adaptladder.ladder import prepare_task
from adaptladder.task import Task

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


def _pairs(n: int = 40) -> list[dict[str, str]]:
    return [{"input": f"please make sentence number {i} sound formal", "output": f"Kindly render sentence {i} "
             "formally."} for i in range(n)]


def _write(df: pd.DataFrame, path: Path) -> Path:
    s = path.suffix
    if s == ".csv":
        df.to_csv(path, index=False)
    elif s == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    elif s == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    return path


def _chat_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cli_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, expect exit 2 with exactly one error line on stderr (no traceback); return it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]  # progress lines (detection) may come before it
    assert last.startswith("error:") and err.count("error:") == 1, err
    return last


# ------------------------------------------------------------------ formats
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_each_format_loads_the_same_pairs(tmp_path: Path, suffix: str) -> None:
    path = _write(pd.DataFrame(_pairs()), tmp_path / f"d{suffix}")
    task = load_generation_data(path, seed=3)
    assert isinstance(task, GenTask) and task.is_generation
    assert task.inputs[5] == "please make sentence number 5 sound formal"
    assert task.targets[5] == "Kindly render sentence 5 formally."
    assert {p: int((task.split == p).sum()) for p in ("train", "validation", "test")} == \
        {"train": 28, "validation": 6, "test": 6}
    assert task.kind == "rewrite" and task.output == "text" and task.default_metric == "chrf"
    assert task.source["text_col"] == "input" and task.source["target_col"] == "output"


def test_columns_by_flag_and_json_targets(tmp_path: Path) -> None:
    rows = [{"email": f"I am person {i} and I am {20 + i} years old", "record": {"name": f"p{i}", "age": 20 + i}}
            for i in range(12)]
    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s.json").write_text(json.dumps(SCHEMA))
    task = load_generation_data(path, text_col="email", target_col="record", schema=tmp_path / "s.json")
    assert json.loads(task.targets[3]) == {"name": "p3", "age": 23}
    assert task.kind == "extraction" and task.output == "json" and task.schema == SCHEMA
    assert task.default_metric == "field_f1"


def test_duplicate_inputs_stay_in_one_split(tmp_path: Path) -> None:
    rows = [*_pairs(30), {"input": "PLEASE make sentence number 4 sound formal!", "output": "Another reply."}]
    task = load_generation_data(_write(pd.DataFrame(rows), tmp_path / "d.csv"))
    assert task.split[4] == task.split[30]


def test_split_column_and_carved_validation(tmp_path: Path) -> None:
    df = pd.DataFrame(_pairs(40))
    df["part"] = ["test" if i % 5 == 0 else "train" for i in range(40)]
    task = load_generation_data(_write(df, tmp_path / "d.csv"), split_col="part")
    assert (task.split[::5] == "test").all()
    assert (task.split == "validation").sum() == round(32 * 0.15)
    df["part"] = ["test" if i % 5 == 0 else "dev" if i % 5 == 1 else "train" for i in range(40)]
    task = load_generation_data(_write(df, tmp_path / "d.csv"), split_col="part")
    assert (task.split[1::5] == "validation").all() and (task.split == "validation").sum() == 8


def test_split_files(tmp_path: Path) -> None:
    rows = pd.DataFrame(_pairs(40))
    tr, va, te = (_write(rows.iloc[a:b], tmp_path / f"{n}.csv") for n, a, b in
                  (("tr", 0, 30), ("va", 30, 35), ("te", 35, 40)))
    task = load_generation_data(train=tr, validation=va, test=te)
    assert task.split.tolist() == ["train"] * 30 + ["validation"] * 5 + ["test"] * 5
    task = load_generation_data(train=tr, test=te)
    assert (task.split == "validation").sum() == round(30 * 0.15) and (task.split[35:] == "test").all()


def test_chat_jsonl(tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "system", "content": "Answer like a pirate."},
                          {"role": "user", "content": f"where is item {i}?"},
                          {"role": "assistant", "content": f"Arr, item {i} be in the hold."}]} for i in range(20)]
    rows.append({"messages": [{"role": "system", "content": "Answer like a pirate."},
                              {"role": "user", "content": "hello"}, {"role": "assistant", "content": "Ahoy."},
                              {"role": "user", "content": "how are you?"},
                              {"role": "assistant", "content": [{"type": "text", "text": "Shipshape, matey."}]},
                              {"role": "user", "content": "a trailing turn is ignored"}]})
    task = load_generation_data(_chat_lines(tmp_path / "c.jsonl", rows))
    assert task.kind == "dialogue" and task.instruction == "Answer like a pirate."
    assert task.inputs[0] == "where is item 0?" and task.targets[0] == "Arr, item 0 be in the hold."
    assert task.inputs[-1] == "User: hello\nAssistant: Ahoy.\nUser: how are you?"
    assert task.targets[-1] == "Shipshape, matey."
    # system prompts that differ are kept in each input; --instruction wins
    rows[0]["messages"][0]["content"] = "Answer like a parrot."
    task = load_generation_data(_chat_lines(tmp_path / "c.jsonl", rows), instruction="Be brief.")
    assert task.instruction == "Be brief."
    assert task.inputs[0] == "System: Answer like a parrot.\nUser: where is item 0?"


def test_builtin_through_prepare_task_with_sample() -> None:
    task = prepare_task(RunConfig(data="us-cities-json", sample=20, seed=1))
    assert isinstance(task, GenTask) and task.kind == "extraction"
    assert task.summary()["split_sizes"] == {"train": 20, "validation": 20, "test": 20}
    assert prepare_task(RunConfig(data="us-cities-json", sample=20, seed=1)).fingerprint() == task.fingerprint()


# ------------------------------------------------------------------ detection
def test_detection(tmp_path: Path) -> None:
    assert looks_like_generation(["a long reply here", "another one here", "third text"])[0]
    assert not looks_like_generation(["spam", "ham", "spam", "ham"])[0]
    assert not looks_like_generation(["very good", "very bad"] * 10)[0]  # multi-word labels, few distinct
    assert not looks_like_generation(["1", "2", "3"])[0]
    assert looks_like_generation([{"a": 1}, {"a": 2}])[0]

    gen = _write(pd.DataFrame(_pairs()), tmp_path / "g.csv")
    said: list[str] = []
    task = prepare_task(RunConfig(data=str(gen)), said.append)
    assert isinstance(task, GenTask)
    assert any("looks like text to generate" in s and "'output'" in s for s in said)

    labels = pd.DataFrame({"text": [f"message {i} about things" for i in range(30)],
                           "label": ["spam", "ham", "eggs"] * 10})
    lab = _write(labels, tmp_path / "l.csv")
    assert isinstance(prepare_task(RunConfig(data=str(lab))), Task)
    said.clear()
    assert isinstance(prepare_task(RunConfig(data=str(lab), target_col="label"), said.append), Task)
    assert any("looks like labels" in s for s in said)
    # forced either way
    assert detect_task(RunConfig(data=str(gen), task="classification")) == "classification"
    forced = prepare_task(RunConfig(data=str(lab), task="generation", target_col="label"))
    assert isinstance(forced, GenTask) and forced.targets[0] == "spam"
    assert detect_task(RunConfig(data=str(_chat_lines(tmp_path / "c.jsonl", [{"messages": []}])))) == "generation"
    assert detect_task(RunConfig(data="movie-replies")) == "generation"
    assert detect_task(RunConfig(data="sms-spam")) == "classification"


def test_metric_and_config_validation() -> None:
    gen = GenTask("t", ["a b", "c d", "e f"], ["x y", "z w", "q r"], np.array(["train", "validation", "test"]),
                  "summarisation")
    assert resolve_generation_metric(RunConfig(), gen) == "rouge_l"
    assert resolve_generation_metric(RunConfig(metric="chrf"), gen) == "chrf"
    with pytest.raises(AdaptError, match="classification metric"):
        resolve_generation_metric(RunConfig(metric="accuracy"), gen)
    with pytest.raises(AdaptError, match="scores JSON output"):
        resolve_generation_metric(RunConfig(metric="field_f1"), gen)
    with pytest.raises(AdaptError, match="--task 'regression' is unknown"):
        RunConfig(task="regression").validate()
    with pytest.raises(AdaptError, match="for a generation task"):
        RunConfig(data="grimm-summaries", metric="accuracy").validate()
    with pytest.raises(AdaptError, match="need --task generation"):
        RunConfig(data="sms-spam", metric="rouge_l").validate()
    RunConfig(data="grimm-summaries", metric="rouge_l", rungs=["zero-shot", "lora-sft"]).validate()
    RunConfig(task="generation", rungs=["structured"]).validate()
    RunConfig(data="x.csv", metric="chrf").validate()  # undecided until the data is read
    with pytest.raises(AdaptError, match="unknown rung 'lora-sft' for a classification task"):
        RunConfig(data="sms-spam", rungs=["lora-sft"]).validate()
    with pytest.raises(AdaptError, match="unknown rung 'tfidf' for a generation task"):
        RunConfig(data="grimm-summaries", rungs=["tfidf"]).validate()


def test_check_context() -> None:
    task = GenTask("t", ["short one", "a much longer input " * 20, "x y", "w z"], ["a", "b", "c", "d"],
                   np.array(["train", "train", "validation", "test"]))
    words = lambda s: len(s.split())  # noqa: E731
    assert check_context(task, words, max_ctx=200, reserve=50)["max"] == 80
    with pytest.raises(AdaptError, match=r"80 tokens, more than the 50 .* 100-token context"):
        check_context(task, words, max_ctx=100, reserve=50)
    with pytest.raises(AdaptError, match="more than the model's 40-token context"):
        check_context(task, words, max_ctx=40, reserve=50)


def test_check_context_names_the_file_row(tmp_path: Path) -> None:
    rows = _pairs(20)
    rows[7]["input"] = "long " * 500
    task = load_generation_data(_write(pd.DataFrame(rows), tmp_path / "d.csv")).sample(100)
    with pytest.raises(AdaptError, match=r"d.csv: row 9: the input has 500 tokens"):
        check_context(task, lambda s: len(s.split()), max_ctx=300, reserve=20)


def test_schema_loading(tmp_path: Path) -> None:
    (tmp_path / "ok.json").write_text(json.dumps(SCHEMA))
    assert load_schema(tmp_path / "ok.json") == SCHEMA
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(AdaptError, match="holds a JSON list, not an object"):
        load_schema(tmp_path / "list.json")


# ------------------------------------------------------------------ bad inputs: one line, exit 2, through the CLI
def test_bad_inputs_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "run"), "--no-audit"]
    rows = _pairs(20)
    rows[6]["output"] = "  "
    empty = _write(pd.DataFrame(rows), tmp_path / "empty.csv")
    err = _cli_error(["run", str(empty), "--task", "generation", *out], capsys)
    assert "empty.csv: row 8 has an empty target in column 'output'" in err

    nums = _write(pd.DataFrame({"input": [f"text {i} here" for i in range(20)], "output": list(range(20))}),
                  tmp_path / "nums.csv")
    err = _cli_error(["run", str(nums), "--task", "generation", *out], capsys)
    assert "target column 'output' holds only numbers" in err

    people = [{"input": f"I am p{i}, aged {20 + i}", "output": json.dumps({"name": f"p{i}", "age": 20 + i})}
              for i in range(20)]
    people[4]["output"] = json.dumps({"name": "p4", "age": "old"})
    people_csv = _write(pd.DataFrame(people), tmp_path / "people.csv")
    (tmp_path / "s.json").write_text(json.dumps(SCHEMA))
    err = _cli_error(["run", str(people_csv), "--schema", str(tmp_path / "s.json"), *out], capsys)
    assert "people.csv: row 6: the target does not validate against" in err and "'old' is not of type" in err
    people[4]["output"] = "name p4, age 24"
    _write(pd.DataFrame(people), people_csv)
    err = _cli_error(["run", str(people_csv), "--schema", str(tmp_path / "s.json"), *out], capsys)
    assert "row 6: the target is not JSON" in err

    (tmp_path / "broken.json").write_text('{"type": "object",')
    err = _cli_error(["run", str(people_csv), "--schema", str(tmp_path / "broken.json"), *out], capsys)
    assert "broken.json is not valid JSON" in err
    (tmp_path / "invalid.json").write_text('{"type": 5}')
    err = _cli_error(["run", str(people_csv), "--schema", str(tmp_path / "invalid.json"), *out], capsys)
    assert "invalid.json is not a valid JSON Schema" in err
    err = _cli_error(["run", str(people_csv), "--schema", str(tmp_path / "missing.json"), *out], capsys)
    assert "schema file" in err and "not found" in err

    chat = _chat_lines(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                            {"role": "assistant", "content": "hello"}]},
                                              {"messages": [{"role": "user", "content": "no reply"}]}])
    err = _cli_error(["run", str(chat), *out], capsys)
    assert "c.jsonl: record 2 has no assistant turn" in err
    chat = _chat_lines(tmp_path / "c.jsonl", [{"messages": "not turns"}])
    assert "is not a list of" in _cli_error(["run", str(chat), *out], capsys)
    chat = _chat_lines(tmp_path / "c.jsonl", [{"messages": [{"role": "assistant", "content": "hi"}]}])
    assert "no user turn before" in _cli_error(["run", str(chat), *out], capsys)
    chat = _chat_lines(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "x"},
                                                            {"role": "assistant", "content": ""}]}])
    assert "record 1 has an empty target" in _cli_error(["run", str(chat), *out], capsys)

    gen = _write(pd.DataFrame(_pairs()), tmp_path / "g.csv")
    assert "no column 'reply'" in _cli_error(["run", str(gen), "--target-col", "reply", "--task", "generation",
                                              *out], capsys)
    assert "both 'input'" in _cli_error(["run", str(gen), "--text-col", "input", "--target-col", "input",
                                         "--task", "generation", *out], capsys)
    assert "--metric accuracy is a classification metric" in _cli_error(["run", str(gen), "--metric", "accuracy",
                                                                          *out], capsys)
    assert "scores JSON output" in _cli_error(["run", str(gen), "--metric", "schema_valid", *out], capsys)
    assert "--task 'summaries' is unknown" in _cli_error(["run", str(gen), "--task", "summaries", *out], capsys)
    labels = _write(pd.DataFrame({"text": [f"m {i} x" for i in range(30)], "label": ["a", "b", "c"] * 10}),
                    tmp_path / "l.csv")
    assert "--instruction is for generation tasks" in _cli_error(
        ["run", str(labels), "--instruction", "do it", *out], capsys)
    assert "is a generation metric, but this is a classification task" in _cli_error(
        ["run", str(labels), "--metric", "rouge_l", *out], capsys)
    assert "with its own schema" in _cli_error(["run", "us-cities-json", "--schema", str(tmp_path / "s.json"),
                                               *out], capsys)
    assert "is a generation task and 'majority' is not a generation rung" in _cli_error(
        ["run", str(gen), "--rungs", "majority", *out], capsys)
    assert not (tmp_path / "run").exists()  # nothing written for a refused input


def test_datasets_lists_generation_sets_with_their_kind(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["datasets", "--json"])
    assert e.value.code == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["grimm-summaries"]["kind"] == "summarisation" and rows["grimm-summaries"]["task"] == "generation"
    assert rows["us-cities-json"]["output"] == "json" and rows["us-cities-json"]["rows"] == 11606
    assert rows["movie-replies"]["kind"] == "dialogue" and rows["sms-abbreviations"]["kind"] == "rewrite"
    assert rows["sms-spam"]["task"] == "classification"


def _tag(v: object, k: int) -> object:
    return f"{v} {k}" if isinstance(v, str) and v.strip() and not v.startswith("{") else v


def test_fuzzed_generation_files_load_or_fail_in_one_line(tmp_path: Path) -> None:
    """Hostile cells in every format: the loader returns a GenTask or raises one AdaptError line, nothing else."""
    import random

    rng = random.Random(7)
    cells = ["", " ", None, float("nan"), 3, 2.5, True, "ok", "two words", "naïve café ✓", {"a": 1}, [1, 2],
             "line\nbreak", "<b>[bold]x[/bold]</b>", '{"name": "p", "age": 3}', "0", "-1e9"]
    turns = [None, "text", [], [{"role": "user"}], [{"role": "assistant", "content": "x"}],
             [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
             [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}],
             [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "q"}]},
              {"role": "assistant", "content": "a b"}]]
    (tmp_path / "s.json").write_text(json.dumps(SCHEMA))
    outcomes = {"task": 0, "error": 0}
    for case in range(80):
        n = rng.choice([1, 2, 3, 5, 12])
        if rng.random() < 0.25:
            rows = [{"messages": rng.choice(turns)} for _ in range(n)]
        else:
            clean = ["two words", "naïve café ✓", "<b>[bold]x[/bold]</b>", "line\nbreak"]
            pool = cells if rng.random() < 0.5 else clean
            rows = [{"input": _tag(rng.choice(pool), k), "output": _tag(rng.choice(pool), k)} for k in range(n)]
            if rng.random() < 0.3:
                for r in rows:
                    r["split"] = rng.choice(["train", "test", "dev", "bogus", None])
        suffix = rng.choice([".jsonl", ".csv", ".parquet"]) if "messages" not in rows[0] else ".jsonl"
        path = tmp_path / f"c{case}{suffix}"
        try:
            if suffix == ".jsonl":
                path.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
            elif suffix == ".csv":
                pd.DataFrame(rows).to_csv(path, index=False)
            else:
                pd.DataFrame(rows).astype(str).to_parquet(path)
        except (ValueError, TypeError):
            continue
        kw: dict = {}
        if rows and "split" in rows[0]:
            kw["split_col"] = "split"
        if rng.random() < 0.2:
            kw["schema"] = tmp_path / "s.json"
        try:
            task = load_generation_data(path, **kw)
        except AdaptError as e:
            assert "\n" not in str(e).replace("line\nbreak", "") and str(e), (case, str(e))
            outcomes["error"] += 1
            continue
        assert isinstance(task, GenTask) and all(isinstance(t, str) and t.strip() for t in task.targets)
        assert all(isinstance(x, str) for x in task.inputs)
        outcomes["task"] += 1
    print(f"fuzz: {outcomes}")
    assert outcomes["task"] and outcomes["error"], outcomes


def test_inputs_longer_than_the_lm_context_stop_the_run(tmp_path: Path, tiny_encoder_dir: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The run's LM (a local folder here: 128-token context) bounds the inputs, before any compute."""
    from adaptladder.generation.loaders import check_run_context, lm_checkpoint

    assert lm_checkpoint(tiny_encoder_dir)[1] == 128
    assert lm_checkpoint("gpt-4o-mini") is None and lm_checkpoint(str(tmp_path)) is None
    rows = _pairs(20)
    path = _write(pd.DataFrame(rows), tmp_path / "d.csv")
    short = load_generation_data(path)
    assert check_run_context(short, RunConfig(lm=tiny_encoder_dir))["exact"] is True
    # every input is shorter in bytes than the room: no tokenizer needed (this folder has none)
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "config.json").write_text('{"max_position_embeddings": 100000}')
    assert check_run_context(short, RunConfig(lm=str(tmp_path / "big")))["exact"] is False
    rows[11]["input"] = "many words " * 80
    _write(pd.DataFrame(rows), path)
    err = _cli_error(["run", str(path), "--lm", tiny_encoder_dir, "--out", str(tmp_path / "run"), "--no-audit"],
                     capsys)
    assert "d.csv: row 13: the input has 160 tokens" in err and "128-token context" in err
    assert not (tmp_path / "run").exists()
    long = load_generation_data(path)
    with pytest.raises(AdaptError, match="row 13"):
        check_run_context(long, RunConfig(lm=tiny_encoder_dir))
    # an API backend's context is not known here: not checked
    assert check_run_context(long, RunConfig(lm=tiny_encoder_dir,
                                             rung_params={"zero-shot": {"backend": "openai"}})) is None

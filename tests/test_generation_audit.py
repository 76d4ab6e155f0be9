"""The generation audit (adaptladder.audit.generation): every check on planted problems, the error
gate, and the Markdown / HTML renderers."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from adaptladder.audit.generation import audit_generation, generation_audit_html, generation_audit_markdown
from adaptladder.errors import AdaptError
from adaptladder.generation.loaders import load_generation_data
from adaptladder.generation.task import GenTask


def _cfg(**kw: object) -> SimpleNamespace:
    return SimpleNamespace(**{"no_audit": False, "force": False, "seed": 13, **kw})


def _clean(n: int = 60) -> tuple[list[str], list[str], list[str]]:
    inputs = [f"the quarterly report number {i} says sales rose in region {i % 7}" for i in range(n)]
    targets = [f"Sales rose in region {i % 7} (report {i})." for i in range(n)]
    split = ["train"] * (n - 20) + ["validation"] * 10 + ["test"] * 10
    return inputs, targets, split


def _codes(doc: dict) -> dict[str, dict]:
    return {f["code"]: f for f in doc["findings"]}


def test_clean_task_has_no_warnings_and_right_shape() -> None:
    x, y, s = _clean()
    doc = audit_generation(GenTask("clean", x, y, np.array(s), "summarisation"), _cfg())
    f = _codes(doc)
    assert doc["task_type"] == "generation" and doc["kind"] == "summarisation"
    assert not doc["has_errors"]
    # 60 pairs against the seeds' summarisation minimum of 1,000
    assert f["size_below_minimum"]["severity"] == "warning" and "1,000" in f["size_below_minimum"]["message"]
    assert doc["n_warnings"] == 1
    assert doc["stats"]["lengths"]["unit"] == "words"
    assert doc["stats"]["lengths"]["input"]["p50"] == 11 and doc["stats"]["lengths"]["target"]["p50"] == 7
    assert doc["family_support"]["prompting"]["supported"] and not doc["family_support"]["finetune"]["supported"]
    assert doc["stats"]["leakage"]["test"]["count"] == 0


def test_size_rules_per_kind() -> None:
    x, y, s = _clean(600)
    s = ["train"] * 500 + ["validation"] * 50 + ["test"] * 50
    dialogue = audit_generation(GenTask("d", x, y, np.array(s), "dialogue"), _cfg())
    assert _codes(dialogue)["size"]["severity"] == "info" and "3,000-10,000" in _codes(dialogue)["size"]["message"]
    summ = audit_generation(GenTask("s", x, y, np.array(s), "summarisation"), _cfg())
    assert "size_below_minimum" in _codes(summ)
    assert summ["family_support"]["finetune"]["supported"] and summ["family_support"]["distill"]["supported"]


def test_planted_problems_are_found() -> None:
    x, y, s = _clean()
    y[1] = "ok"                                   # one-word target
    y[2] = x[2].upper() + "!"                     # exact copy after normalisation
    x[3] = "a b c d e f g h i j k l m n o p q r s t"
    y[3] = "a b c d e f g h i j k l m n o p q r s u"  # near copy (19 of 20 words)
    x[4], y[4] = x[5], y[5]                       # duplicate pair (both train)
    x[50] = x[6]                                  # test input also in train (leak)
    x[7] = "word " * 400                          # long input
    task = GenTask("t", x, y, np.array(s), "rewrite")
    with pytest.raises(AdaptError, match="test_input_leakage"):
        audit_generation(task, _cfg(), count_tokens=lambda t: len(t.split()), max_ctx=300, reserve=50)
    doc = audit_generation(task, _cfg(force=True), count_tokens=lambda t: len(t.split()), max_ctx=300, reserve=50)
    f = _codes(doc)
    assert f["test_input_leakage"]["severity"] == "error" and f["test_input_leakage"]["count"] == 1
    assert f["one_word_targets"]["count"] == 1
    assert doc["stats"]["copies"] == {"exact": 1, "near": 1, "near_similarity": 0.9}
    assert f["target_copies_input"]["count"] == 2
    assert f["duplicate_pairs"]["count"] == 1
    assert f["truncated_inputs"]["count"] == 1 and f["truncated_inputs"]["examples"][0]["tokens"] == 400
    assert doc["stats"]["lengths"]["unit"] == "tokens"
    assert doc["has_errors"]


def test_empty_and_schema_breaking_targets_are_errors() -> None:
    x, y, s = _clean(30)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    y = [json.dumps({"a": i}) for i in range(30)]
    y[3] = json.dumps({"a": "three"})
    y[4] = "not json"
    y[5] = " "
    task = GenTask("j", x, y, np.array(s), "extraction", schema=schema)
    doc = audit_generation(task, _cfg(force=True))
    f = _codes(doc)
    assert f["targets_break_schema"]["count"] == 3 and f["empty_targets"]["count"] == 1
    assert "one_word_targets" not in f  # JSON targets are not words
    with pytest.raises(AdaptError, match="2 error"):
        audit_generation(task, _cfg())


def test_no_audit_run_dir_and_file_rows(tmp_path: Path) -> None:
    x, y, s = _clean(40)
    assert audit_generation(GenTask("t", x, y, np.array(s), "rewrite"), _cfg(no_audit=True)) is None
    df = pd.DataFrame({"input": x, "output": y, "split": s})
    df.loc[25, "input"] = df.loc[0, "input"]  # a validation input that is also in train
    df.to_csv(tmp_path / "d.csv", index=False)
    task = load_generation_data(tmp_path / "d.csv", split_col="split")
    doc = audit_generation(task, _cfg(), run_dir=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "audit.json").read_text())["findings"] == doc["findings"]
    leak = _codes(doc)["validation_input_leakage"]
    assert leak["severity"] == "warning" and leak["examples"][0]["where"].endswith("d.csv: row 27")


def test_renderers_escape_and_show_findings() -> None:
    x, y, s = _clean()
    x[0] = "<script>alert(1)</script> | pipe"
    y[0] = "<b>x</b>"
    x[50] = x[0]
    doc = audit_generation(GenTask("t<1>", x, y, np.array(s), "rewrite"), _cfg(force=True))
    md = generation_audit_markdown(doc)
    assert "## Data audit (generation)" in md and "`test_input_leakage`" in md and "\\|" in md
    assert "Lengths in words" in md and "fine-tuning (LoRA / QLoRA / full SFT): **no**" in md
    page = generation_audit_html(doc)
    assert "<script>" not in page and "&lt;script&gt;" in page and "t&lt;1&gt;" in page
    assert page.count("<tr class=") == len(doc["findings"])


def test_audit_command_on_generation_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adaptladder.cli import main

    x, y, s = _clean(40)
    x[35] = x[0]  # a test input also in train: an error
    pd.DataFrame({"input": x, "output": y, "split": s}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(SystemExit) as e:
        main(["audit", str(tmp_path / "d.csv"), "--split-col", "split", "--json", "--markdown",
              str(tmp_path / "a.md")])
    assert e.value.code == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["task_type"] == "generation" and _codes(doc)["test_input_leakage"]["severity"] == "error"
    assert "test_input_leakage" in (tmp_path / "a.md").read_text()
    with pytest.raises(SystemExit) as e:
        main(["audit", str(tmp_path / "d.csv"), "--split-col", "split", "--dedupe", str(tmp_path / "clean")])
    assert e.value.code == 2

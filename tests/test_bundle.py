"""`adaptladder export RUN_DIR OUT`: a shippable folder that predicts identically in a new process."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import adaptladder
from adaptladder.cli import main
from conftest import toy_run


def _cli(argv: list[str]) -> None:
    """Run the CLI in-process; it exits 0 on success."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code in (0, None)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("export")
    return toy_run(tmp)


def test_exported_folder_predicts_identically_in_a_new_process(run_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "spam-model"
    _cli(["export", str(run_dir), str(out), "--rung", "tfidf"])
    assert "exported to" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"model", "README.md", "card.json", "requirements.txt",
                                               "provenance.json"}
    readme = (out / "README.md").read_text()
    for section in ("## Load it", "## Task", "## Scores (95% bootstrap CIs)", "## The decision", "## Limits"):
        assert section in readme
    card = json.loads((out / "card.json").read_text())
    doc = json.loads((run_dir / "results.json").read_text())
    tfidf = next(r for r in doc["rungs"] if r["name"] == "tfidf")
    assert card["labels"] == ["ham", "spam"] and card["test"]["macro_f1_ci"] == tfidf["test"]["macro_f1_ci"]
    assert card["split_sizes"] == doc["task"]["split_sizes"] and card["reasons"] == doc["recommendation"]["reasons"]
    assert any(r.startswith("scikit-learn==") for r in card["requirements"])
    # the README's own two-line example, run in a fresh interpreter next to the folder
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert len([ln for ln in code.strip().splitlines() if not ln.startswith("from ")]) == 2
    assert "model.predict_proba(...)" in code
    texts = ["WIN a free prize now", "see you at lunch tomorrow", "running late", "free cash"]
    probe = code.replace('(["some text"])', f"({json.dumps(texts)})", 1) + (
        "import json; print(json.dumps(model.predict_proba(" + json.dumps(texts) + ").tolist()))\n")
    ran = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-2000:]
    lines = ran.stdout.strip().splitlines()
    want = adaptladder.predict(run_dir, texts, rung="tfidf")
    assert ast.literal_eval(lines[0]) == list(want["label"])  # the example prints a list of labels
    assert np.array_equal(np.array(json.loads(lines[1])), want[["proba_ham", "proba_spam"]].to_numpy())


def test_export_refuses_a_non_empty_out_and_a_tampered_model(run_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit) as e:
        main(["export", str(run_dir), str(busy)])
    assert e.value.code == 2 and "not an empty folder" in capsys.readouterr().err
    assert (busy / "mine.txt").read_text() == "keep me"
    import shutil

    copy = tmp_path / "run-copy"
    shutil.copytree(run_dir, copy)
    state = copy / "rungs" / "tfidf" / "model" / "state.json"
    state.write_text(state.read_text().replace("1", "2", 1))
    with pytest.raises(SystemExit) as e:
        main(["export", str(copy), str(tmp_path / "out"), "--rung", "tfidf"])
    assert e.value.code == 2 and "content hash" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp*"))

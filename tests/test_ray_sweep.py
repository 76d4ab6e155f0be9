"""Sweeps (`run --sweep RUNG.KEY=v1,v2`): settings searched on validation, locally and on Ray Tune."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import adaptladder
from adaptladder import cli
from adaptladder.errors import AdaptError
from adaptladder.sweep import grid, parse_sweep
from test_finetune import tiny_bert  # noqa: F401  (the tiny BERT fixture)


def _data(tmp: Path, n: int = 240) -> Path:
    """Three classes with a cue word in 80% of the texts: max_features=1 cannot see the cues."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(200)]
    rows = []
    for i in range(n):
        lab = "abc"[i % 3]
        toks = list(rng.choice(words, 6)) + ([f"{lab}cue{rng.integers(3)}"] if rng.random() < 0.8 else [])
        rows.append({"text": " ".join(toks) + f" n{i}", "label": lab})
    path = tmp / "syn.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_parse_sweep_values_like_set() -> None:
    spec = parse_sweep(["tfidf.C=0.1,1,10", "tfidf.class_weight=balanced,null", "features.heads=[logreg],[mlp,knn]"])
    assert spec["tfidf"] == {"C": [0.1, 1, 10], "class_weight": ["balanced", None]}
    assert spec["features"]["heads"] == [["logreg"], ["mlp", "knn"]]
    assert grid({"a": [1, 2], "b": ["x", "y"]}) == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"},
                                                   {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    for bad in ("tfidf.C", "tfidfC=1,2", "tfidf.C=", "tfidf.C=1,,2", ".C=1"):
        with pytest.raises(AdaptError, match=r"RUNG\.KEY=V1,V2"):
            parse_sweep([bad])
    with pytest.raises(AdaptError, match="given twice"):
        parse_sweep(["tfidf.C=1", "tfidf.C=2"])


def test_local_sweep_picks_best_validation_setting_and_records_table(tmp_path: Path) -> None:
    data = _data(tmp_path)
    # the good value comes second: the choice is the validation score, not the order
    res = adaptladder.run(no_audit=True, data=str(data), rungs=["majority", "tfidf"], out=str(tmp_path / "run"),
                          run_all=True, cv_folds=0, sweep={"tfidf": {"max_features": [1, 5000], "C": [1, 4]}})
    tf = res.result("tfidf")
    sw = tf["sweep"]
    assert sw["selected_on"] == "validation" and sw["executor"] == "local"
    assert [t["settings"] for t in sw["trials"]] == [{"max_features": 1, "C": 1}, {"max_features": 1, "C": 4},
                                                     {"max_features": 5000, "C": 1}, {"max_features": 5000, "C": 4}]
    scores = [t["validation"] for t in sw["trials"]]
    best = int(np.argmax(scores))  # the first of the best
    assert [t["chosen"] for t in sw["trials"]] == [i == best for i in range(4)]
    assert sw["chosen"] == sw["trials"][best]["settings"]
    assert sw["trials"][best]["settings"]["max_features"] == 5000 and max(scores) > scores[0] + 0.2
    assert all(t["fit_seconds"] is not None and t["fit_seconds"] >= 0 for t in sw["trials"])
    # the chosen setting is the rung's model and its measured validation score
    assert tf["params"]["max_features"] == 5000 and tf["params"]["C"] == sw["chosen"]["C"]
    assert tf["validation"]["macro_f1"] == pytest.approx(scores[best])
    saved = json.loads((tmp_path / "run" / "rungs" / "tfidf" / "model" / "rung.json").read_text())
    assert saved["params"]["max_features"] == 5000
    # results.json and both reports carry the table
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert next(r for r in doc["rungs"] if r["name"] == "tfidf")["sweep"]["chosen"] == sw["chosen"]
    md = (tmp_path / "run" / "report.md").read_text()
    assert "## Sweeps (settings searched on validation)" in md and "**chosen**" in md
    assert "<h2>Sweeps (settings searched on validation)</h2>" in (tmp_path / "run" / "report.html").read_text()
    # the other rungs are unaffected: the same as a run without the sweep
    plain = adaptladder.run(no_audit=True, data=str(data), rungs=["majority"], out=str(tmp_path / "plain"),
                            cv_folds=0)
    assert plain.result("majority")["validation"]["predictions"] == res.result("majority")["validation"]["predictions"]
    assert "sweep" not in res.result("majority")


def test_swept_rung_resumes_only_with_the_same_sweep(tmp_path: Path) -> None:
    data = _data(tmp_path, n=150)
    kw = dict(no_audit=True, data=str(data), rungs=["tfidf"], out=str(tmp_path / "run"), cv_folds=0)
    first = adaptladder.run(**kw, sweep={"tfidf": {"C": [1, 4]}})
    again = adaptladder.run(**kw, sweep={"tfidf": {"C": [1, 4]}})
    assert again.result("tfidf").get("resumed") and again.result("tfidf")["sweep"] == first.result("tfidf")["sweep"]
    other = adaptladder.run(**kw, sweep={"tfidf": {"C": [1, 16]}})
    assert not other.result("tfidf").get("resumed")
    assert [t["settings"]["C"] for t in other.result("tfidf")["sweep"]["trials"]] == [1, 16]
    unswept = adaptladder.run(**kw)
    assert not unswept.result("tfidf").get("resumed") and "sweep" not in unswept.result("tfidf")


@pytest.mark.parametrize("args, match", [
    (["--sweep", "tfidf.nope=1,2"], "'nope' is not a setting of the tfidf rung"),
    (["--sweep", "tfidf.C=1,-2"], r"--sweep tfidf \(C=-2\).*C=-2"),
    (["--sweep", "lora.r=4,8"], "the lora rung is not climbed in this run"),
    (["--sweep", "nosuch.r=4,8"], "unknown rung 'nosuch'"),
    (["--sweep", "tfidf.C"], "RUNG.KEY=V1,V2"),
])
def test_bad_sweep_is_one_line_error_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     args: list[str], match: str) -> None:
    import re

    data = _data(tmp_path, n=60)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as ex:
        cli.main(["run", str(data), "--rungs", "majority,tfidf", "--no-audit", "--out", str(out), *args])
    assert ex.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and re.search(match, lines[0]), err
    assert not out.exists()  # nothing was read, fitted or written


def test_ray_tune_sweep_chooses_like_the_local_grid(tmp_path: Path, tiny_ray: None) -> None:
    data = _data(tmp_path, n=150)
    spec = {"tfidf": {"max_features": [1, 5000], "C": [1, 4]}}
    kw = dict(no_audit=True, data=str(data), rungs=["tfidf"], cv_folds=0, sweep=spec)
    local = adaptladder.run(out=str(tmp_path / "local"), **kw).result("tfidf")
    on_ray = adaptladder.run(out=str(tmp_path / "ray"), executor="ray", **kw).result("tfidf")
    sw = on_ray["sweep"]
    assert sw["executor"] == "ray" and sw["scheduler"] is None  # tfidf reports no intermediate values: plain grid
    assert [t["status"] for t in sw["trials"]] == ["done"] * 4
    assert [t["validation"] for t in sw["trials"]] == pytest.approx([t["validation"] for t in local["sweep"]["trials"]])
    assert sw["chosen"] == local["sweep"]["chosen"] and on_ray["params"] == local["params"]
    # the chosen trial's model came home from its Tune checkpoint and is the rung that was measured
    assert on_ray["validation"]["predictions"] == local["validation"]["predictions"]
    assert (tmp_path / "ray" / "rungs" / "tfidf" / "model" / "rung.json").is_file()


@pytest.mark.slow
def test_finetune_sweep_on_tune_reports_each_evaluation(tmp_path: Path, tiny_ray: None,
                                                        tiny_bert: str) -> None:  # noqa: F811
    from test_finetune import FAST
    from test_finetune import _data as ft_data

    tx, y = ft_data(120, 0)
    pd.DataFrame({"text": tx, "label": ["pos" if v else "neg" for v in y]}).to_csv(tmp_path / "ft.csv", index=False)
    res = adaptladder.run(no_audit=True, data=str(tmp_path / "ft.csv"), rungs=["full-ft"], cv_folds=0,
                          out=str(tmp_path / "run"), executor="ray",
                          rung_params={"full-ft": {**FAST, "model": tiny_bert, "eval_every": 4}},
                          sweep={"full-ft": {"lr": [1e-12, 3e-3, 1e-2]}}).result("full-ft")
    sw = res["sweep"]
    assert sw["scheduler"] == "ASHA" and sw["executor"] == "ray"
    assert {t["status"] for t in sw["trials"]} <= {"done", "stopped"}
    done = [t for t in sw["trials"] if t["status"] == "done"]
    assert done and all(t["reports"] > 1 for t in done)  # per-evaluation reports reached Tune, then the final one
    chosen = next(t for t in sw["trials"] if t["chosen"])
    assert chosen["status"] == "done" and chosen["validation"] == max(t["validation"] for t in done)
    assert res["status"] == "done" and res["params"]["lr"] == chosen["settings"]["lr"]

"""The ladder through its two doors: the Python API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import adaptladder
from adaptladder.cli import main
from adaptladder.errors import AdaptError


def test_api_run_writes_a_complete_run_directory(toy_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["tfidf", "majority"], out=str(out))
    assert [r["name"] for r in res.results] == ["majority", "tfidf"]  # cost order, not the order given
    for f in ("config.json", "task.json", "split.csv", "results.json", "summary.md"):
        assert (out / f).is_file(), f
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema_version"] == 1
    r = res.result("tfidf")
    assert r["status"] == "done"
    for key in ("accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "per_class", "confusion"):
        assert key in r["test"]
    lo, hi = r["test"]["macro_f1_ci"]
    assert lo <= r["test"]["macro_f1"] <= hi
    assert r["predict"]["throughput_per_s"] > 0 and r["predict"]["latency_ms_p95"] >= r["predict"]["latency_ms_p50"]
    assert r["cost_per_1k_usd"] >= 0 and r["fit_seconds"] >= 0
    assert (out / "rungs" / "tfidf" / "model" / "rung.json").is_file()
    loaded = adaptladder.load_rung(out / "rungs" / "tfidf" / "model")
    assert len(loaded.predict(["free prize"])) == 1


def test_second_identical_run_reuses_finished_rungs(toy_csv: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    first = adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["majority", "tfidf"], out=out)
    second = adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["majority", "tfidf"], out=out)
    assert all(r.get("resumed") for r in second.results)
    assert second.result("tfidf")["test"] == first.result("tfidf")["test"]
    # a changed rung setting recomputes only that rung
    third = adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["majority", "tfidf"], out=out,
                            rung_params={"tfidf": {"C": 2.0}})
    assert third.result("majority").get("resumed") and not third.result("tfidf").get("resumed")


def test_changed_data_or_seed_is_never_mixed(toy_csv: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["majority"], out=out)
    with pytest.raises(AdaptError, match="different configuration"):
        adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["majority"], out=out, seed=99)
    res = adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["majority"], out=out, seed=99, fresh=True)
    assert not res.result("majority").get("resumed")
    assert (tmp_path / "run.old1" / "results.json").is_file()  # the old run was moved aside, not deleted


def test_bar_met_by_the_floor_stops_at_once(toy_csv: Path, tmp_path: Path) -> None:
    res = adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["majority", "tfidf"], out=str(tmp_path / "r"),
                          bar=0.01)
    assert res.stopped_at == "majority" and len(res.results) == 1
    assert res.recommendation["rung"] == "majority"


def test_impossible_bar_runs_everything(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)  # random labels: no rung can be perfect on 60 validation rows
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
    df = pd.DataFrame({"text": [" ".join(rng.choice(words, 5)) + f" {i}" for i in range(400)],
                       "label": rng.choice(["a", "b"], 400)})
    df.to_csv(tmp_path / "noise.csv", index=False)
    res = adaptladder.run(no_audit=True, data=str(tmp_path / "noise.csv"), rungs=["majority", "tfidf"],
                          out=str(tmp_path / "r"),
                          bar=1.0, metric="accuracy")
    assert res.stopped_at is None and len(res.results) == 2
    assert res.recommendation.get("bar_met") is False


def test_cli_run_prints_a_table(toy_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ex:
        main(["run", str(toy_csv), "--rungs", "majority,tfidf", "--out", str(tmp_path / "r"), "--no-audit",
              "--set", "tfidf.ngram_max=1"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    assert "tfidf" in out and "Recommendation" in out
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["rung_params"]["tfidf"]["ngram_max"] == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--data", "missing.csv"], "missing.csv: file not found"),
        (["run", "nonexistent-builtin"], "not found"),
        (["run", "sms-spam", "--rungs", "telepathy"], "unknown rung 'telepathy'"),
        (["run", "sms-spam", "--bar", "1.5"], "outside (0, 1]"),
        (["run", "sms-spam", "--set", "tfidf"], "RUNG.PARAM=VALUE"),
        (["run", "sms-spam", "--metric", "auc"], "unknown metric"),
    ],
)
def test_cli_bad_input_one_line_exit_2(args: list[str], expected: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "adaptladder", *args, "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert expected in " ".join(lines[0].split())
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_end_to_end_on_a_builtin_sample(tmp_path: Path) -> None:
    """The real packaged MiniLM on a small stratified sample of sms-spam, through the CLI."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "adaptladder", "run", "sms-spam", "--sample", "60",
           "--rungs", "majority,tfidf,features", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((out / "results.json").read_text())
    by = {r["name"]: r for r in doc["rungs"]}
    assert by["features"]["status"] == "done"
    assert by["features"]["test"]["macro_f1"] > by["majority"]["test"]["macro_f1"]
    assert by["features"]["extra"]["head"] in ("logreg", "mlp", "gbdt")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "reused" in again.stdout


def test_a_run_directory_keeps_rungs_from_earlier_commands(toy_csv: Path, tmp_path: Path,
                                                           tiny_encoder_dir: str) -> None:
    """--rungs majority,tfidf then --rungs features into one directory: results, report and recommendation
    cover all three; --fresh starts over."""
    out = tmp_path / "run"
    adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["majority", "tfidf"], out=str(out), run_all=True)
    res = adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["features"], out=str(out), run_all=True,
                          encoder=tiny_encoder_dir)
    assert [r["name"] for r in res.results] == ["majority", "tfidf", "features"]
    assert not res.result("features").get("from_earlier_command")
    assert res.result("tfidf")["from_earlier_command"] and res.result("majority")["resumed"]
    doc = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in doc["rungs"]] == ["majority", "tfidf", "features"]
    rec = doc["recommendation"]
    assert rec["rung"] in ("majority", "tfidf", "features")
    done = {r["name"]: r["validation"]["macro_f1"] for r in res.results}
    if rec.get("rule") == "best":  # with no bar met, the best on validation over all three (not only features)
        assert done[rec["rung"]] == max(done.values())
    assert "tfidf" in (out / "summary.md").read_text()
    fresh = adaptladder.run(no_audit=True, data=str(toy_csv), rungs=["majority"], out=str(out), fresh=True)
    assert [r["name"] for r in fresh.results] == ["majority"]

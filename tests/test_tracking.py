"""MLflow tracking: a run logged into a temporary store, its model loaded back, a down server is a warning."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import adaptladder
from adaptladder.cli import main
from adaptladder.tracking import expand_track_flag, resolve_uri, track
from conftest import HAM, SPAM


def _cli(argv: list[str]) -> None:
    """Run the CLI in-process; it exits 0 on success."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code in (0, None)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("track")
    rows = [{"text": f"{t} #{i}", "label": lab} for i, (t, lab) in
            enumerate([(t, "spam") for t in SPAM * 2] + [(t, "ham") for t in HAM * 2])]
    pd.DataFrame(rows).to_csv(tmp / "toy.csv", index=False)
    return tmp / "toy.csv"


def test_track_flag_takes_an_optional_uri() -> None:
    assert expand_track_flag(["run", "x.csv", "--track"]) == ["run", "x.csv", "--track", "DEFAULT"]
    assert expand_track_flag(["run", "--track", "--all"]) == ["run", "--track", "DEFAULT", "--all"]
    assert expand_track_flag(["run", "--track", "sms-spam"]) == ["run", "--track", "DEFAULT", "sms-spam"]
    assert expand_track_flag(["run", "--track", "http://h:5000"]) == ["run", "--track", "http://h:5000"]
    assert resolve_uri("DEFAULT").endswith("/runs/mlflow.db") and resolve_uri("x/t.db").startswith("sqlite:///")


def test_run_with_track_logs_rungs_and_a_loadable_model(toy: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    # without --track nothing is logged anywhere
    _cli(["run", str(toy), "--rungs", "majority,tfidf", "--out", str(out), "--no-audit", "--all"])
    assert not (tmp_path / "runs").exists() and "MLflow" not in capsys.readouterr().err
    # --track alone: the default SQLite store under runs/ (the finished rungs are reused)
    _cli(["run", str(toy), "--rungs", "majority,tfidf", "--out", str(out), "--no-audit", "--all", "--track"])
    err = capsys.readouterr().err
    assert (tmp_path / "runs" / "mlflow.db").is_file() and "MLflow: run" in err, err
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("adaptladder/toy")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = {r.data.tags["adaptladder.rung"]: r for r in runs if r.data.tags.get("mlflow.parentRunId")
                == parent.info.run_id}
    assert set(children) == {"majority", "tfidf"}
    doc = json.loads((out / "results.json").read_text())
    winner = doc["recommendation"]["rung"]
    assert parent.data.tags["adaptladder.recommended_rung"] == winner
    res = {r["name"]: r for r in doc["rungs"]}
    m = children["tfidf"].data.metrics
    assert m["test_macro_f1"] == pytest.approx(res["tfidf"]["test"]["macro_f1"])
    lo, hi = res["tfidf"]["validation"]["macro_f1_ci"]
    assert m["validation_macro_f1_ci_low"] == pytest.approx(lo)
    assert m["validation_macro_f1_ci_high"] == pytest.approx(hi)
    assert "fit_seconds" in m and "cost_per_1k_usd" in m and "predict_latency_ms_p50" in m
    assert children["tfidf"].data.params.get("seed") == "13"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.html", "report.md", "results.json", "provenance.json"} <= artifacts
    # the recommended rung as a pyfunc model: same answers as `adaptladder predict`
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(parent.data.tags["adaptladder.model_uri"])
    texts = ["WIN a free prize now", "see you at lunch tomorrow", "call me later"]
    got = model.predict(pd.DataFrame({"text": texts}))
    want = adaptladder.predict(out, texts)
    assert list(got["label"]) == list(want["label"])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))


def test_a_tracking_server_that_is_down_is_one_warning_not_a_lost_run(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    adaptladder.run(no_audit=True, data=str(toy), rungs=["majority"], out=str(out))
    warnings: list[str] = []
    assert track(out, "http://127.0.0.1:9", warnings.append) is None
    assert len(warnings) == 1 and "does not answer" in warnings[0] and "\n" not in warnings[0]
    assert (out / "results.json").is_file()

"""``--executor ray`` on a local two-node Ray cluster (``ray.cluster_utils.Cluster``).

The head and the worker node each have their own Ray temporary directory; a rung runs in a
worker's own temporary run directory (deleted when the task ends), so its model can reach the
driver's run directory only by the files the task ships back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import adaptladder
from adaptladder.errors import AdaptError
from adaptladder.rungs import RUNGS
from adaptladder.winner import predict_file
from conftest import HAM, SPAM

TESTS = Path(__file__).resolve().parent
#: The tests on the cluster: ~40 s to start it and ~110 s of runs on this (loaded, 2-core) machine, so slow.
on_cluster = pytest.mark.slow


def _toy(tmp: Path) -> Path:
    rows = [{"text": f"{t} #{i}", "label": lab}
            for i, (t, lab) in enumerate([(t, "spam") for t in SPAM * 3] + [(t, "ham") for t in HAM * 3])]
    path = tmp / "toy.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Head (1 CPU) + one worker node (1 CPU), separate temp dirs; the test process is the driver."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "PYTHONPATH")}
    root = Path(tempfile.mkdtemp(prefix="alray", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    (root / "ray").mkdir()
    os.environ["RAY_TMPDIR"] = str(root)  # this cluster's address file, away from any other Ray on the machine
    # the nodes' workers import the test rungs (tests/ray_test_rungs.py) by their registry entry
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), saved["PYTHONPATH"]) if p)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": str(root / "head"),
                                                      "include_dashboard": False})
    c.add_node(num_cpus=1, temp_dir=str(root / "worker"))
    c.wait_for_nodes(timeout=120)
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(root, ignore_errors=True)


def _metrics(res: dict[str, Any]) -> dict[str, Any]:
    """Everything measured on the data (scores, CIs, predictions, CV), nothing timed."""
    out = {part: {k: v for k, v in res[part].items()} for part in ("validation", "test")}
    out["cv"] = {k: v for k, v in (res.get("cv") or {}).items() if k != "seconds"}
    out["status"] = res["status"]
    out["params_hash"] = res["params_hash"]
    return out


@on_cluster
def test_ray_run_matches_local_models_come_home_and_resume(cluster: Any, tmp_path: Path) -> None:
    data = _toy(tmp_path)
    kw = dict(no_audit=True, data=str(data), rungs=["majority", "tfidf"], bar=0.99, run_all=True)
    local = adaptladder.run(out=str(tmp_path / "local"), **kw)
    lines: list[str] = []
    remote = adaptladder.run(out=str(tmp_path / "ray"), executor="ray", log=lines.append, **kw)
    assert [r["name"] for r in remote.results] == ["majority", "tfidf"]
    for a, b in zip(local.results, remote.results, strict=True):
        assert _metrics(a) == _metrics(b)
        assert b["executor"]["kind"] == "ray" and b["executor"]["model_via"] == "object store"
    assert "executor" not in local.results[0]
    for key in ("rung", "rule", "bar_met", "reasons", "estimates"):
        assert local.recommendation.get(key) == remote.recommendation.get(key)
    assert any("ray: " in line and "2 nodes" in line for line in lines)
    # the models were written on the workers, in folders since deleted: they are in the driver's run dir now
    model = tmp_path / "ray" / "rungs" / "tfidf" / "model"
    assert (model / "rung.json").is_file()
    rec = json.loads((tmp_path / "ray" / "results.json").read_text())["recommendation"]["rung"]
    out = tmp_path / "pred.csv"
    info = predict_file(tmp_path / "ray", data, out)
    assert info["rung"] == rec and info["n"] == len(pd.read_csv(data))
    local_out = tmp_path / "pred_local.csv"
    predict_file(tmp_path / "local", data, local_out)
    assert pd.read_csv(out)["predicted_label"].tolist() == pd.read_csv(local_out)["predicted_label"].tolist()
    # resume: the same command reuses both finished rungs; nothing is submitted again
    lines.clear()
    again = adaptladder.run(out=str(tmp_path / "ray"), executor="ray", log=lines.append, **kw)
    assert all(r.get("resumed") for r in again.results)
    assert not any("submitting" in line for line in lines)


@on_cluster
def test_killed_worker_is_retried_and_the_run_finishes(cluster: Any, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RUNGS, "kill-once", "ray_test_rungs:KillOnceRung")
    marker = tmp_path / "killed-once"
    result = adaptladder.run(no_audit=True, data=str(_toy(tmp_path)), rungs=["majority", "kill-once"],
                             out=str(tmp_path / "run"), executor="ray", run_all=True,
                             rung_params={"kill-once": {"marker": str(marker)}})
    assert marker.is_file()  # the first attempt ran and killed its worker process
    killed = result.result("kill-once")
    assert killed["status"] == "done", killed.get("reason")
    assert int(marker.read_text()) != killed["executor"]["pid"]  # the retry ran in another process
    assert (tmp_path / "run" / "rungs" / "kill-once" / "model" / "rung.json").is_file()
    assert result.result("majority")["status"] == "done"


@on_cluster
def test_costlier_rungs_are_cancelled_once_the_bar_is_met(cluster: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RUNGS, "slow", "ray_test_rungs:SlowRung")
    lines: list[str] = []
    result = adaptladder.run(no_audit=True, data=str(_toy(tmp_path)), rungs=["majority", "tfidf", "slow"],
                             out=str(tmp_path / "run"), executor="ray", bar=0.9, log=lines.append,
                             rung_params={"slow": {"sleep_s": 300.0}})
    assert result.stopped_at == "tfidf" and result.recommendation["rung"] == "tfidf"
    slow = result.result("slow")
    assert slow["status"] == "cancelled" and slow["reason"] == "cancelled: tfidf cleared the bar"
    assert any(line.startswith("slow: cancelled (tfidf cleared the bar") for line in lines)
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["status"] for r in doc["rungs"]] == ["done", "done", "cancelled"]
    assert doc["recommendation"]["not_run"] == ["slow"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "cancelled: tfidf cleared the bar" in report
    assert not (tmp_path / "run" / "rungs" / "slow" / "result.json").exists()  # nothing of it is reused later


def test_bad_ray_address_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adaptladder.cli import main

    with pytest.raises(SystemExit) as ex:
        main(["run", str(_toy(tmp_path)), "--rungs", "majority", "--no-audit", "--out", str(tmp_path / "r"),
              "--executor", "ray", "--ray-address", "127.0.0.1:1"])
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --ray-address 127.0.0.1:1: no Ray cluster answers there") and "\n" not in err
    assert not (tmp_path / "r").exists()  # nothing written
    with pytest.raises(AdaptError, match="not HOST:PORT"):
        adaptladder.run(data=str(_toy(tmp_path)), executor="ray", ray_address="nonsense")
    with pytest.raises(AdaptError, match="add --executor ray"):
        adaptladder.run(data=str(_toy(tmp_path)), ray_address="127.0.0.1:6379")


def test_resource_requests_by_family_and_memory() -> None:
    from adaptladder.executors.ray_rungs import rung_request
    from adaptladder.rungs import get_rung_class

    nodes = [{"CPU": 2.0, "memory": 8 * 2**30}, {"CPU": 16.0, "memory": 64 * 2**30}]
    assert rung_request(get_rung_class("tfidf"), {}, nodes)[0] == {"num_cpus": 1}
    assert rung_request(get_rung_class("features"), {}, nodes)[0] == {"num_cpus": 16}
    gpu_nodes = [*nodes, {"CPU": 8.0, "GPU": 1.0, "memory": 32 * 2**30, "accelerator_type:H100": 1.0}]
    req, why, _ = rung_request(get_rung_class("lora"), {"model": "7B"}, gpu_nodes)
    assert req == {"num_cpus": 4, "num_gpus": 1} and why is None
    # full fine-tuning of a 70B model fits no node here: skipped with the estimator's figures
    req, why, details = rung_request(get_rung_class("full-ft"), {"model": "70B", "batch_size": 8}, gpu_nodes)
    assert why and why.startswith("no node of the Ray cluster can hold it") and details["estimated_peak_gib"] > 80
    req, why, details = rung_request(get_rung_class("full-ft"), {"model": "70B", "batch_size": 8}, nodes)
    assert req == {"num_cpus": 16} and why and "64.0 GiB" in why


class _FakeContext:
    """Stands in for a Ray session in tests that must not start one."""

    def __init__(self, nodes: list[dict[str, float]]) -> None:
        self._nodes = nodes
        self.closed = False

    def nodes(self) -> list[dict[str, float]]:
        return self._nodes

    def describe(self) -> str:
        return "a fake cluster"

    def shutdown(self) -> None:
        self.closed = True


def test_swept_rungs_stay_in_the_driver_and_oversized_ones_are_skipped(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptladder.config import RunConfig
    from adaptladder.executors import ray_rungs
    from adaptladder.store import RunStore

    ctx = _FakeContext([{"CPU": 2.0, "memory": 2 * 2**30}])
    monkeypatch.setattr(ray_rungs, "ray_init", lambda address: ctx)
    calls: list[str] = []

    def rung_fn(name: str, task: Any, cfg: Any, store: Any, log: Any) -> dict[str, Any]:
        calls.append(name)
        return {"name": name, "status": "done"}

    cfg = RunConfig(executor="ray", sweep={"tfidf": {"C": [1.0, 4.0]}})
    lines: list[str] = []
    ex = ray_rungs.RayExecutor(cfg, object(), RunStore(tmp_path / "run"), lines.append, rung_fn)
    ex.start({"tfidf": {"C": None}, "full-ft": {"model": "70B", "batch_size": 8}})
    assert not ex.refs  # nothing went to Ray: nothing was importing or starting it
    assert ex.run_rung("tfidf")["executor"]["where"].startswith("driver") and calls == ["tfidf"]
    skipped = ex.run_rung("full-ft")
    assert skipped["status"] == "skipped" and "no node of the Ray cluster can hold it" in skipped["reason"]
    assert skipped["skip_details"]["largest_node_gib"] == 2.0
    ex.close()
    assert ctx.closed

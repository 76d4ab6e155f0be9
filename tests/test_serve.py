"""`adaptladder serve`: the HTTP server end to end (FastAPI TestClient and a real uvicorn on loopback)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

import adaptladder
from adaptladder.rungs import make_rung
from adaptladder.serve import ServeSettings, create_app, fastapi_app, run_in_thread
from conftest import HAM, SPAM, toy_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("serve")
    return toy_run(tmp)


class Slow:
    """A fitted rung whose every call takes ``delay`` seconds (to make requests pile up)."""

    def __init__(self, delay: float) -> None:
        self.rung = make_rung("tfidf", C=1.0).fit(SPAM + HAM, np.array([1] * len(SPAM) + [0] * len(HAM)),
                                                  label_names=["ham", "spam"])
        self.delay, self.name, self.label_names_ = delay, "tfidf", ["ham", "spam"]
        self.calls = 0
        self.inside = threading.Event()  # set when a call after the warm-up one is running

    def predict_proba(self, texts: list[str]) -> Any:
        self.calls += 1
        if self.calls > 1:
            self.inside.set()
        time.sleep(self.delay)
        return self.rung.predict_proba(texts)


def test_predict_a_batch_and_one_text(run_dir: Path) -> None:
    app = create_app(ServeSettings(run_dir=str(run_dir), rung="tfidf"))
    texts = ["WIN a prize now", "see you at lunch", "free cash offer"]
    with TestClient(app) as c:
        r = c.post("/predict", json={"texts": texts})
        assert r.status_code == 200, r.text
        body = r.json()
        expected = adaptladder.predict(run_dir, texts, rung="tfidf")
        assert body["labels"] == list(expected["label"]) and body["rung"] == "tfidf"
        for row, (_, e) in zip(body["probabilities"], expected.iterrows(), strict=True):
            assert set(row) == {"ham", "spam"} and abs(sum(row.values()) - 1) < 1e-9
            assert row["spam"] == pytest.approx(e["proba_spam"], abs=1e-12)
        one = c.post("/predict", json={"text": "WIN a prize now"}).json()
        assert one["label"] == body["labels"][0] and one["labels"] == [one["label"]]
        assert c.post("/predict", json={"texts": []}).json()["labels"] == []
        h = c.get("/health").json()
        assert h["status"] == "ok" and h["rung"] == "tfidf" and h["labels"] == ["ham", "spam"]
        assert "/predict" in c.get("/openapi.json").json()["paths"]
        assert c.get("/docs").status_code == 200
        m = c.get("/metrics")
        assert m.status_code == 200 and "text/plain" in m.headers["content-type"]
        assert 'adaptladder_requests_total{endpoint="/predict",status="200"} 3.0' in m.text
        assert "adaptladder_request_latency_seconds_bucket" in m.text
        assert "adaptladder_batch_size_texts_bucket" in m.text


def test_limits_and_malformed_requests_are_json_errors_naming_the_limit(run_dir: Path) -> None:
    s = ServeSettings(run_dir=str(run_dir), rung="tfidf", max_body_bytes=2000, max_texts=5, max_text_chars=50)
    with TestClient(create_app(s)) as c:
        r = c.post("/predict", json={"texts": ["x" * 30] * 100})
        assert r.status_code == 413 and r.json()["limit"] == "max_body_bytes" and r.json()["value"] == 2000
        r = c.post("/predict", json={"texts": ["hi"] * 6})
        assert r.status_code == 413 and r.json()["limit"] == "max_texts" and "max_texts=5" in r.json()["error"]
        r = c.post("/predict", json={"text": "y" * 51})
        assert r.status_code == 422 and r.json()["limit"] == "max_text_chars"
        r = c.post("/predict", content=b'{"texts": ["unterminated', headers={"content-type": "application/json"})
        assert r.status_code == 422 and "error" in r.json()
        for bad in ({"texts": "not a list"}, {"texts": [1, 2]}, {"foo": 1}, {}, {"text": "a", "texts": ["b"]}):
            r = c.post("/predict", json=bad)
            assert r.status_code == 422, bad
            assert "error" in r.json()
        m = c.get("/metrics").text
        assert 'adaptladder_errors_total{kind="max_texts"} 1.0' in m and 'kind="invalid_request"' in m
        assert 'adaptladder_requests_total{endpoint="/predict",status="413"} 2.0' in m


def _post_concurrently(port: int, n: int) -> list[httpx.Response]:
    out: list[httpx.Response | None] = [None] * n
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        with httpx.Client(timeout=30) as c:
            barrier.wait()
            out[i] = c.post(f"http://127.0.0.1:{port}/predict", json={"text": f"free prize number {i}"})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in out if r is not None]


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_requests_are_micro_batched(batching: bool) -> None:
    model = Slow(0.05)
    app = create_app(ServeSettings(batching=batching, max_batch_size=64, max_wait_ms=20), model=model)
    server, thread, port = run_in_thread(app)
    try:
        responses = _post_concurrently(port, 16)
    finally:
        server.should_exit = True
        thread.join(30)
    assert len(responses) == 16 and all(r.status_code == 200 for r in responses)
    assert all(r.json()["labels"] == ["spam"] for r in responses)
    sizes = [t for t, _ in fastapi_app(app).state.metrics.recent_batches]  # texts per model call
    assert sum(sizes) == 16
    if batching:
        assert max(sizes) > 1  # several concurrent requests shared one model call
    else:
        assert set(sizes) == {1}


def test_a_lone_request_does_not_wait_for_a_batch() -> None:
    """With no concurrent load, max_wait_ms is not spent: a one-minute wait would time the client out."""
    app = create_app(ServeSettings(batching=True, max_wait_ms=60_000), model=Slow(0.0))
    server, thread, port = run_in_thread(app)
    try:
        for _ in range(3):  # one client, one request at a time
            r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"text": "free prize"}, timeout=20)
            assert r.status_code == 200 and r.json()["labels"] == ["spam"]
    finally:
        server.should_exit = True
        thread.join(30)
    assert [t for t, _ in fastapi_app(app).state.metrics.recent_batches] == [1, 1, 1]


def test_request_timeout_is_504(run_dir: Path) -> None:
    app = create_app(ServeSettings(timeout_s=0.2), model=Slow(1.0))
    with TestClient(app) as c:
        r = c.post("/predict", json={"text": "free prize"})
        assert r.status_code == 504 and r.json()["limit"] == "timeout_s"


def test_graceful_shutdown_finishes_the_request_in_flight() -> None:
    model = Slow(0.8)
    app = create_app(ServeSettings(), model=model)
    server, thread, port = run_in_thread(app)
    result: dict[str, Any] = {}

    def call() -> None:
        result["r"] = httpx.post(f"http://127.0.0.1:{port}/predict", json={"text": "free prize"}, timeout=30)

    t = threading.Thread(target=call)
    t.start()
    assert model.inside.wait(30)  # the request is now inside the model
    server.should_exit = True  # what SIGTERM does
    t.join(30)
    thread.join(30)
    assert result["r"].status_code == 200 and result["r"].json()["labels"] == ["spam"]
    assert not thread.is_alive()


def test_serve_refuses_a_bad_run_directory_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adaptladder.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", str(tmp_path / "nope")])
    assert e.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_settings_are_validated() -> None:
    from adaptladder.errors import AdaptError

    with pytest.raises(AdaptError, match="max-batch-size"):
        ServeSettings(max_batch_size=0).validate()
    assert json.loads(json.dumps(ServeSettings().__dict__))["max_texts"] == 256

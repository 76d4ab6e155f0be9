"""A generation run served with the OpenAI API (issue #31 item 1): the official ``openai`` client, pointed
at the server, gets the text ``adaptladder predict`` writes for the same input, streaming and not;
concurrent requests are batched; errors come in OpenAI's shape."""
from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import adaptladder

    out = tmp_path_factory.mktemp("genserve") / "run"
    adaptladder.run(data="sms-abbreviations", rungs=["nearest-target"], sample=40, no_audit=True, out=str(out))
    return out


@pytest.fixture(scope="module")
def server(gen_run: Path):
    from adaptladder.serve import ServeSettings, create_app, run_in_thread

    app = create_app(ServeSettings(run_dir=str(gen_run), max_wait_ms=200))
    srv, _, port = run_in_thread(app)
    yield app, f"http://127.0.0.1:{port}"
    srv.should_exit = True


def test_the_openai_client_gets_what_predict_writes(gen_run: Path, server) -> None:
    from adaptladder.winner import predict

    _, url = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="not-needed")
    assert [m.id for m in client.models.list().data] == ["nearest-target"]
    texts = ["c u l8r at the station", "pls call me when u r home"]
    want = predict(gen_run, texts)["generation"].tolist()
    for text, expected in zip(texts, want, strict=True):
        r = client.chat.completions.create(model="nearest-target", messages=[{"role": "user", "content": text}])
        assert r.choices[0].message.content == expected and r.choices[0].finish_reason == "stop"
        assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
        stream = client.chat.completions.create(model="nearest-target", stream=True,
                                                messages=[{"role": "user", "content": text}])
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected
    capped = client.chat.completions.create(model="nearest-target", max_tokens=1,
                                            messages=[{"role": "user", "content": texts[0]}])
    assert capped.choices[0].finish_reason in ("length", "stop") and len(capped.choices[0].message.content) <= len(
        want[0])


def test_concurrent_requests_are_batched(server) -> None:
    app, url = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="x")

    def ask(i: int) -> str:
        return client.chat.completions.create(model="nearest-target",
                                              messages=[{"role": "user", "content": f"msg {i} c u soon"}]
                                              ).choices[0].message.content

    with cf.ThreadPoolExecutor(32) as ex:
        outs = list(ex.map(ask, range(32)))
    assert len(outs) == 32 and all(isinstance(o, str) for o in outs)
    assert max(n for _, n in app.metrics.recent_batches) > 1  # requests merged into one generate call
    import httpx

    assert "adaptladder_batch_size_requests" in httpx.get(url + "/metrics").text


def test_errors_come_in_openai_shape(server) -> None:
    _, url = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="decodes greedily"):
        client.chat.completions.create(model="nearest-target", temperature=0.7,
                                       messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="no user message"):
        client.chat.completions.create(model="nearest-target", messages=[{"role": "system", "content": "be nice"}])

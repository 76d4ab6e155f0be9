"""Serve a run's chosen rung over HTTP: ``adaptladder serve RUN_DIR`` (FastAPI + uvicorn).

* ``POST /predict`` with ``{"texts": [...]}`` or ``{"text": "..."}``: labels and per-class
  probabilities. ``GET /health``, ``GET /metrics`` (Prometheus text), ``/docs`` (OpenAPI).
* Server-side micro-batching: texts of concurrent requests are gathered (up to
  ``max_batch_size`` texts, waiting at most ``max_wait_ms`` after the first) into one
  ``predict_proba`` call, which is where a vectorised model saves its time. The wait applies
  only under concurrent load (the previous call merged requests); a lone client never waits. The model runs in
  one worker thread, one call at a time, with or without batching.
* Limits: request body bytes (413), texts per request (413), characters per text (422), each
  answered with a JSON error naming the limit and its value; a request that waits longer than
  ``timeout_s`` gets 504. Malformed JSON or a wrong shape is 422.
* Graceful shutdown (SIGTERM / Ctrl-C): uvicorn stops accepting connections and waits for the
  requests in flight, which the batcher finishes before it stops.

The model is loaded with :func:`adaptladder.winner.load_model` (registry lookup, no pickle,
content hashes checked) and predicts with the embedding cache bypassed (served texts are not
written into the shared cache).
"""

# no ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at
# run time, and the request/response models are local classes of create_app
import asyncio
import contextlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptladder.errors import AdaptError

ENV_CONFIG = "ADAPTLADDER_SERVE_CONFIG"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass
class ServeSettings:
    """Everything ``adaptladder serve`` can be told (the CLI flags map one to one)."""

    run_dir: str = ""
    rung: str | None = None
    batching: bool = True
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    max_body_bytes: int = 1_000_000
    max_texts: int = 256
    max_text_chars: int = 20_000
    timeout_s: float = 30.0

    def validate(self) -> None:
        for name in ("max_batch_size", "max_body_bytes", "max_texts", "max_text_chars"):
            if getattr(self, name) < 1:
                raise AdaptError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}.")
        if self.max_wait_ms < 0:
            raise AdaptError(f"--max-wait-ms must be 0 or more, not {self.max_wait_ms}.")
        if self.timeout_s <= 0:
            raise AdaptError(f"--timeout must be positive, not {self.timeout_s}.")


class LimitExceeded(Exception):
    def __init__(self, status: int, limit: str, value: Any, message: str) -> None:
        super().__init__(message)
        self.status, self.limit, self.value, self.message = status, limit, value, message

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "limit": self.limit, "value": self.value}


# ---------------------------------------------------------------------------- metrics
class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps in a process do not collide)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("adaptladder_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("adaptladder_request_latency_seconds", "Request latency by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("adaptladder_errors", "Requests answered with an error, by kind", ["kind"], registry=r)
        self.batch_texts = Histogram("adaptladder_batch_size_texts", "Texts per model call", buckets=BATCH_BUCKETS,
                                     registry=r)
        self.batch_requests = Histogram("adaptladder_batch_size_requests", "Requests merged into one model call",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.model_seconds = Histogram("adaptladder_model_seconds", "Seconds per model call", buckets=LATENCY_BUCKETS,
                                       registry=r)
        self.texts = Counter("adaptladder_texts", "Texts predicted", registry=r)
        self.in_flight = Gauge("adaptladder_requests_in_flight", "Requests being handled", registry=r)
        #: the last model calls' (texts, requests), for tests and /health
        self.recent_batches: deque[tuple[int, int]] = deque(maxlen=10_000)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# ---------------------------------------------------------------------------- batching
class Predictor:
    """Runs the model in one thread; with batching, merges concurrent requests into one call."""

    def __init__(self, predict_proba: Callable[[list[str]], np.ndarray], settings: ServeSettings,
                 metrics: Metrics) -> None:
        self.predict_proba = predict_proba
        self.s = settings
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adaptladder-model")
        self.queue: asyncio.Queue[tuple[list[str], asyncio.Future[np.ndarray]]] | None = None
        self.worker: asyncio.Task[None] | None = None
        self._recent_concurrency = False  # did the last model call merge requests (or find more queued)?

    async def start(self) -> None:
        if self.s.batching:
            self.queue = asyncio.Queue()
            self.worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Finish what is queued, then stop the worker (graceful shutdown)."""
        if self.queue is not None and self.worker is not None:
            await self.queue.join()
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        self.executor.shutdown(wait=True)

    def _call(self, texts: list[str], n_requests: int) -> np.ndarray:
        t0 = time.perf_counter()
        out = np.asarray(self.predict_proba(texts))
        self.metrics.model_seconds.observe(time.perf_counter() - t0)
        self.metrics.batch_texts.observe(len(texts))
        self.metrics.batch_requests.observe(n_requests)
        self.metrics.texts.inc(len(texts))
        self.metrics.recent_batches.append((len(texts), n_requests))
        return out

    async def predict(self, texts: list[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if self.queue is None:
            return await loop.run_in_executor(self.executor, self._call, texts, 1)
        fut: asyncio.Future[np.ndarray] = loop.create_future()
        await self.queue.put((texts, fut))
        return await fut

    async def _loop(self) -> None:
        assert self.queue is not None
        q = self.queue
        loop = asyncio.get_running_loop()
        while True:
            first = await q.get()
            items = [first]
            n = len(first[0])
            # Wait for more requests only under concurrent load (the previous model call merged
            # several requests): a lone client is answered at once instead of paying max_wait_ms
            # per request; under load, requests queue while the model runs and batches still form.
            wait_s = self.s.max_wait_ms / 1000 if self._recent_concurrency else 0.0
            deadline = loop.time() + wait_s
            while n < self.s.max_batch_size:
                try:
                    nxt = q.get_nowait() if loop.time() >= deadline else await asyncio.wait_for(
                        q.get(), deadline - loop.time())
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                items.append(nxt)
                n += len(nxt[0])
                if n >= self.s.max_batch_size:
                    break
            live = [(t, f) for t, f in items if not f.done()]  # a timed-out request was cancelled: skip it
            self._recent_concurrency = len(items) > 1 or not q.empty()
            try:
                if live:
                    texts = [x for t, _ in live for x in t]
                    try:
                        proba = await loop.run_in_executor(self.executor, self._call, texts, len(live))
                    except Exception as e:
                        for _, f in live:
                            if not f.done():
                                f.set_exception(e)
                    else:
                        i = 0
                        for t, f in live:
                            if not f.done():
                                f.set_result(proba[i:i + len(t)])
                            i += len(t)
            finally:
                for _ in items:
                    q.task_done()


# ---------------------------------------------------------------------------- the app
class BodyLimit:
    """ASGI middleware: the request body is read here first (at most ``limit`` bytes, chunked or not) and
    refused with 413 above it, or with 422 when it is JSON nested too deeply to parse, before the app
    parses it (FastAPI would answer either with a generic 400); the app then reads the buffered body."""

    def __init__(self, app: Any, limit: int, metrics: Metrics) -> None:
        self.app, self.limit, self.metrics = app, limit, metrics

    async def _answer(self, send: Any, status: int, body_doc: dict[str, Any], kind: str, path: str) -> None:
        body = json.dumps(body_doc).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        self.metrics.errors.labels(kind).inc()
        self.metrics.requests.labels(path if path in ("/predict",) else "other", str(status)).inc()

    async def _refuse(self, send: Any, path: str = "/predict") -> None:
        await self._answer(send, 413, LimitExceeded(413, "max_body_bytes", self.limit,
                                                    f"request body larger than max_body_bytes={self.limit}").body(),
                           "max_body_bytes", path)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        try:
            too_big = length is not None and int(length) > self.limit
        except ValueError:
            too_big = False
        if too_big:
            return await self._refuse(send, path)
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        seen = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                return await self._refuse(send, path)
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        if b"json" in headers.get(b"content-type", b"json") and body.count(b"[") + body.count(b"{") > 1000:
            try:
                json.loads(body)
            except RecursionError:
                return await self._answer(send, 422, {"error": "the request body is JSON nested too deeply; send "
                                                               "{\"texts\": [\"...\"]}"}, "invalid_request", path)
            except ValueError:
                pass  # malformed JSON: the app's own 422
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _load_predict_fn(settings: ServeSettings, model: Any) -> tuple[Any, Callable[[list[str]], np.ndarray],
                                                                   dict[str, Any]]:
    run_dir = Path(settings.run_dir)

    def predict_proba(texts: list[str]) -> np.ndarray:
        try:
            from adaptladder.encode import cache_disabled
        except ImportError:  # pragma: no cover
            return np.asarray(model.predict_proba(texts))
        with cache_disabled():  # served texts are not written into the shared embedding cache
            return np.asarray(model.predict_proba(texts))

    info = {"rung": model.name, "run_dir": str(run_dir)}
    return model, predict_proba, info


def create_app(settings: ServeSettings, *, model: Any = None) -> Any:
    """The FastAPI app serving ``settings.run_dir`` (or an already loaded ``model``, for tests)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from pydantic import BaseModel, ConfigDict, Field

    settings.validate()
    from adaptladder.generation.rungs import GenRung

    from_run = model is None
    if from_run:
        from adaptladder.winner import load_model

        model = load_model(Path(settings.run_dir), settings.rung)
    if isinstance(model, GenRung):  # a generation run: the OpenAI chat API (adaptladder.serve_openai)
        from adaptladder.serve_openai import create_openai_app

        return create_openai_app(settings, model, {"rung": model.name, "run_dir": settings.run_dir or None},
                                 parts=(Metrics, Predictor, BodyLimit))
    if from_run:
        model, predict_proba, info = _load_predict_fn(settings, model)
    else:
        def predict_proba(texts: list[str]) -> np.ndarray:
            return np.asarray(model.predict_proba(texts))

        info = {"rung": getattr(model, "name", "?"), "run_dir": settings.run_dir or None}
    labels: list[str] = [str(x) for x in model.label_names_]
    metrics = Metrics()
    predictor = Predictor(predict_proba, settings, metrics)

    class PredictRequest(BaseModel):
        """One text or a batch of texts (exactly one of the two fields)."""

        model_config = ConfigDict(extra="forbid")
        text: str | None = Field(None, description="One text to label.")
        texts: list[str] | None = Field(None, description="Several texts to label.")

    class PredictResponse(BaseModel):
        rung: str
        labels: list[str] = Field(description="The predicted label of each text, in input order.")
        probabilities: list[dict[str, float]] = Field(description="Per-class probabilities of each text.")
        label: str | None = Field(None, description="With {\"text\": ...}: the one predicted label.")

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        await predictor.start()
        await asyncio.get_running_loop().run_in_executor(predictor.executor, predict_proba, ["warm up"])
        yield
        await predictor.stop()

    app = FastAPI(title=f"adaptladder: {info['rung']}", lifespan=lifespan,
                  description=f"Labels texts with the {info['rung']} rung of {info.get('run_dir')}. "
                              f"Labels: {', '.join(labels)}.")
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.predictor = predictor

    def error(status: int, body: dict[str, Any], kind: str) -> JSONResponse:
        metrics.errors.labels(kind).inc()
        return JSONResponse(status_code=status, content=body)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        msg = first.get("msg", "invalid request")
        text = f"invalid request body{' at ' + where if where else ''}: {msg}; send {{\"texts\": [\"...\"]}} or " \
               "{\"text\": \"...\"}"
        return error(422, {"error": text, "detail": json.loads(json.dumps(errs, default=str))}, "invalid_request")

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Any:
        t0 = time.perf_counter()
        metrics.in_flight.inc()
        try:
            response = await call_next(request)
        finally:
            metrics.in_flight.dec()
        path = request.url.path
        endpoint = path if path in ("/predict", "/health", "/metrics") else "other"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
        return response

    async def predict(req: PredictRequest) -> Any:
        """Labels and per-class probabilities for one text or a batch."""
        if (req.text is None) == (req.texts is None):
            return error(422, {"error": "send exactly one of \"text\" (a string) and \"texts\" (a list of strings)"},
                         "invalid_request")
        texts = [req.text] if req.text is not None else list(req.texts or [])
        try:
            check_limits(texts, settings)
        except LimitExceeded as e:
            return error(e.status, e.body(), e.limit)
        if not texts:
            return {"rung": info["rung"], "labels": [], "probabilities": []}
        try:
            proba = await asyncio.wait_for(predictor.predict(texts), settings.timeout_s)
        except TimeoutError:
            return error(504, {"error": f"prediction took longer than timeout_s={settings.timeout_s}",
                               "limit": "timeout_s", "value": settings.timeout_s}, "timeout")
        except Exception as e:
            return error(500, {"error": f"prediction failed ({type(e).__name__}: {e})"}, "model_error")
        idx = proba.argmax(axis=1)
        out: dict[str, Any] = {
            "rung": info["rung"],
            "labels": [labels[k] for k in idx],
            "probabilities": [{n: float(p[k]) for k, n in enumerate(labels)} for p in proba],
        }
        if req.text is not None:
            out["label"] = out["labels"][0]
        return out

    app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True,
             responses={413: {"description": "a limit was exceeded (body bytes, texts per request)"},
                        422: {"description": "malformed JSON, wrong shape, or a text over the length limit"},
                        504: {"description": "the prediction did not finish within the request timeout"}})(predict)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and what is served."""
        return {"status": "ok", "rung": info["rung"], "run_dir": info.get("run_dir"), "labels": labels,
                "settings": {k: v for k, v in asdict(settings).items() if k not in ("run_dir",)}}

    @app.get("/metrics")
    async def prom() -> Response:
        """Prometheus text exposition: requests, latency histogram, batch sizes, errors."""
        data, ctype = metrics.exposition()
        return Response(content=data, media_type=ctype)

    return BodyLimit(app, settings.max_body_bytes, metrics) if settings.max_body_bytes else app


def check_limits(texts: Sequence[str], s: ServeSettings) -> None:
    if len(texts) > s.max_texts:
        raise LimitExceeded(413, "max_texts", s.max_texts,
                            f"{len(texts)} texts in one request; the limit is max_texts={s.max_texts}")
    for i, t in enumerate(texts):
        if len(t) > s.max_text_chars:
            raise LimitExceeded(422, "max_text_chars", s.max_text_chars,
                                f"text #{i} has {len(t):,} characters; the limit is max_text_chars={s.max_text_chars}")


def fastapi_app(app: Any) -> Any:
    """The FastAPI object inside what :func:`create_app` returns (under the body-size middleware)."""
    return app.app if isinstance(app, BodyLimit) else app


def app_from_env() -> Any:
    """Factory for uvicorn workers (``--workers N``): the settings travel in an environment variable."""
    raw = os.environ.get(ENV_CONFIG)
    if not raw:
        raise RuntimeError(f"{ENV_CONFIG} is not set; start the server with `adaptladder serve RUN_DIR`.")
    return create_app(ServeSettings(**json.loads(raw)))


def serve(settings: ServeSettings, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info") -> None:
    """Run the server until SIGINT/SIGTERM; in-flight requests finish before it exits."""
    import uvicorn

    settings.validate()
    if workers < 1:
        raise AdaptError(f"--workers must be at least 1, not {workers}.")
    # load once here so a bad run directory is a one-line error before any worker starts
    from adaptladder.winner import load_model

    load_model(settings.run_dir, settings.rung)
    _check_port_free(host, port)
    grace = int(settings.timeout_s) + 5
    if workers == 1:
        app = create_app(settings)
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=grace)
        return
    os.environ[ENV_CONFIG] = json.dumps(asdict(settings))
    uvicorn.run("adaptladder.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, timeout_graceful_shutdown=grace)


def _check_port_free(host: str, port: int) -> None:
    """A port taken by another program, or an address this machine does not have, is one line (exit 2)
    before the server starts (uvicorn would log and exit 1 or 3)."""
    import socket

    if not 1 <= int(port) <= 65535:
        raise AdaptError(f"--port {port} is not a TCP port: use 1-65535 (e.g. 8000).")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise AdaptError(f"--host {host} is not an address of this machine ({e.strerror or e}); use 127.0.0.1 or "
                         "0.0.0.0.") from e
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise AdaptError(f"cannot listen on {host}:{port} ({e.strerror or e}): another program uses the port; "
                             "pick another with --port.") from e


def run_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> tuple[Any, threading.Thread, int]:
    """Start uvicorn on a background thread (tests, benchmarks); returns (server, thread, port)."""
    import socket

    import uvicorn

    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=60))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError("the test server did not start")
    return server, thread, port

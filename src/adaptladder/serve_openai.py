"""A generation run served with the OpenAI API subset clients use (issue #31 item 1).

``POST /v1/chat/completions`` and ``GET /v1/models`` (the rung is the model id), beside ``/health``
and Prometheus ``/metrics``. The messages become the rung's input exactly as ``adaptladder predict``
reads a chat file (one user message: its text; several turns: ``Role: text`` lines), and the saved
rung applies its own prompt, shots or adapters, so the answer is the text ``predict`` writes for the
same input. Concurrent requests are merged into one ``generate`` call on the one loaded model (the
micro-batching of :class:`adaptladder.serve.Predictor`; batch sizes in ``/metrics``).

Decoding is greedy (the rung's own, as evaluated): ``temperature`` must be 0 or absent (greedy is
what was measured; a request for sampling is refused, not silently ignored). ``max_tokens`` and
``stop`` cut the greedy output, which is exact: a greedy decode capped at N tokens is the first N
tokens of the uncapped one. ``stream: true`` sends the answer as server-sent events in OpenAI's
chunk format once it is generated (chunks of words, then ``data: [DONE]``), so streaming clients
work; tokens are not streamed while they are decoded. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``.
"""

# no ``from __future__ import annotations``: FastAPI reads the route's ``request: Request`` annotation,
# which must be the class itself (it is imported inside create_openai_app)
import json
import time
import uuid
from typing import Any

import numpy as np

from adaptladder.errors import AdaptError


def _tokenizer(model: Any) -> Any:
    """The tokenizer of a local generation rung (prompting: its generator's; SFT: its model's), or None."""
    for path in (("backend", "tokenizer"), ("gen_", "tokenizer")):
        obj = model
        try:
            for attr in path:
                obj = getattr(obj, attr)
            return obj
        except Exception:  # an API backend, an unfitted part: no local tokenizer
            continue
    return None


def _render(messages: list[dict[str, Any]]) -> str:
    """The rung's input for a chat request, as ``predict`` renders a messages cell."""
    from adaptladder.generation.loaders import render_turns

    turns, system = [], []
    for k, m in enumerate(messages):
        role = str(m.get("role", "")).lower()
        if role not in ("system", "user", "assistant", "developer"):
            raise AdaptError(f"messages[{k}].role {m.get('role')!r} is not one of system, user, assistant")
        if role in ("system", "developer"):
            from adaptladder.generation.loaders import _content

            system.append(_content(m.get("content"), f"messages[{k}]"))
        else:
            turns.append({"role": role, "content": m.get("content")})
    if not turns:
        raise AdaptError("messages holds no user message; send at least one {\"role\": \"user\", \"content\": ...}")
    return render_turns(turns, "\n".join(system).strip() or None)


def create_openai_app(settings: Any, model: Any, run_info: dict[str, Any], *, parts: tuple[Any, Any, Any]) -> Any:
    """The FastAPI app for a generation rung (``model``: loaded and checked by the caller; ``parts``: the
    serving machinery shared with ``/predict``, :class:`adaptladder.serve.Metrics`, ``Predictor`` and
    ``BodyLimit``, passed in so that this module does not import the one that imports it)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    Metrics, Predictor, BodyLimit = parts

    rung_name = str(run_info.get("rung") or getattr(model, "name", "rung"))
    metrics = Metrics()
    tok = _tokenizer(model)

    def n_tokens(text: str) -> int:
        if tok is not None:
            return len(tok(text, add_special_tokens=False)["input_ids"])
        return len(text.split())

    def generate(inputs: list[str]) -> np.ndarray:
        from adaptladder.winner import generate_all

        return np.asarray(generate_all(model, inputs), dtype=object)

    predictor = Predictor(generate, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        await predictor.start()
        try:
            yield
        finally:
            await predictor.stop()

    app = FastAPI(title=f"adaptladder: {rung_name} (OpenAI-compatible)", lifespan=lifespan)

    def error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
              code: str | None = None) -> JSONResponse:
        metrics.errors.labels(code or kind).inc()
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind,
                                                                   "param": param, "code": code}})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error(400, f"invalid request body{' at ' + where if where else ''}: {first.get('msg', 'invalid')}",
                     param=where or None)

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Any:
        t0 = time.perf_counter()
        metrics.in_flight.inc()
        try:
            response = await call_next(request)
        finally:
            metrics.in_flight.dec()
        path = request.url.path
        endpoint = path if path in ("/v1/chat/completions", "/v1/models", "/health", "/metrics") else "other"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
        return response

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": rung_name, "object": "model", "created": 0,
                                            "owned_by": "adaptladder"}]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "task": "generation", **run_info}

    @app.get("/metrics")
    async def prom() -> Response:
        body, ctype = metrics.exposition()
        return Response(content=body, media_type=ctype)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        try:
            req = json.loads(await request.body())
        except (ValueError, RecursionError):
            return error(400, "the request body is not JSON; send {\"model\": ..., \"messages\": [...]}")
        if not isinstance(req, dict):
            return error(400, "the request body must be a JSON object")
        if req.get("model") not in (None, rung_name):
            return error(404, f"the model {req.get('model')!r} does not exist: this server serves {rung_name!r}",
                         param="model", code="model_not_found")
        msgs = req.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
            return error(400, "messages must be a non-empty list of {\"role\": ..., \"content\": ...}",
                         param="messages")
        temperature = req.get("temperature")
        if temperature not in (None, 0, 0.0):
            return error(400, f"temperature={temperature!r}: this rung decodes greedily, as it was evaluated; send "
                              "temperature 0 (or none)", param="temperature")
        if req.get("n") not in (None, 1):
            return error(400, "n must be 1 (greedy decoding gives one answer)", param="n")
        max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens < 1):
            return error(400, f"max_tokens={max_tokens!r} must be a positive integer", param="max_tokens")
        stop = req.get("stop")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if not all(isinstance(s, str) for s in stops) or len(stops) > 4:
            return error(400, "stop must be a string or a list of at most 4 strings", param="stop")
        try:
            text_in = _render(msgs)
        except AdaptError as e:
            return error(400, str(e), param="messages")
        if len(text_in) > settings.max_text_chars:
            return error(413, f"the messages hold {len(text_in):,} characters, more than max_text_chars="
                              f"{settings.max_text_chars:,}", param="messages", code="max_text_chars")
        try:
            out = await predictor.predict([text_in])
        except Exception as e:  # one line: the model failed on this input
            return error(500, f"generation failed ({type(e).__name__}: {str(e)[:200]})", kind="server_error")
        answer, finish = str(out[0]), "stop"
        cut = min((answer.find(s) for s in stops if s and s in answer), default=-1)
        if cut >= 0:
            answer = answer[:cut]
        if max_tokens is not None and tok is not None:
            ids = tok(answer, add_special_tokens=False)["input_ids"]
            if len(ids) > max_tokens:
                answer, finish = tok.decode(ids[:max_tokens], skip_special_tokens=True), "length"
        elif max_tokens is not None and len(answer.split()) > max_tokens:
            answer, finish = " ".join(answer.split()[:max_tokens]), "length"
        usage = {"prompt_tokens": n_tokens(text_in), "completion_tokens": n_tokens(answer)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if req.get("stream"):
            def events() -> Any:
                base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": rung_name}
                yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {'role': 'assistant', 'content': ''}, 'finish_reason': None}]})}\n\n"  # noqa: E501
                words = answer.split(" ")
                for k, w in enumerate(words):
                    piece = w if k == 0 else " " + w
                    yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {'content': piece}, 'finish_reason': None}]})}\n\n"  # noqa: E501
                last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
                if (req.get("stream_options") or {}).get("include_usage"):
                    last["usage"] = usage
                yield f"data: {json.dumps(last)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return {"id": cid, "object": "chat.completion", "created": created, "model": rung_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": finish, "logprobs": None}],
                "usage": usage}

    app.state.metrics = metrics
    app.state.settings = settings
    app.state.predictor = predictor
    return BodyLimit(app, settings.max_body_bytes, metrics) if settings.max_body_bytes else app

"""Any OpenAI-compatible HTTP server (OpenAI, vLLM, Ollama, llama.cpp server) through httpx.

Label scoring uses what the server offers, best first:

* ``echo``: ``/completions`` with ``echo=true, max_tokens=0, logprobs`` returns the prompt's own
  token log-probabilities, so ``log P(label | prompt)`` is exact (vLLM, older OpenAI models).
* ``logprobs``: ``/chat/completions`` with ``logprobs=true, top_logprobs=N, max_tokens=1``:
  the label's first token's log-probability from the top-N list (an approximation: labels that
  share their first token tie, and a label outside the top N gets a floor value).
* ``generate``: constrained generation (temperature 0, a few tokens) parsed into a label.

``auto`` tries ``logprobs`` and falls back to ``generate`` when a server returns none. The API
key is read from the environment variable named by ``api_key_env`` at request time, and is
never stored, logged or written to a report. 429 and 5xx answers and timeouts are retried with
exponential backoff (honouring ``Retry-After``); ``concurrency`` requests run in parallel.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from adaptladder.backends.base import ChoiceScores, LMBackend, parse_label
from adaptladder.errors import AdaptError

SCORING = ("auto", "echo", "logprobs", "generate")


def _check_number(what: str, value: Any, low: float, unit: str, strict: bool = False) -> None:
    try:
        ok = not isinstance(value, bool) and (float(value) > low if strict else float(value) >= low)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise AdaptError(f"{what}={value!r} for the openai backend is not valid: give a number "
                         f"{'>' if strict else '>='} {low:g} ({unit}).")


def _first_choice(data: dict[str, Any]) -> dict[str, Any]:
    """``data["choices"][0]`` when the answer has that shape, else an empty dict (read as "no answer")."""
    choices = data.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    return first if isinstance(first, dict) else {}


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


class OpenAIBackend(LMBackend):
    """An OpenAI-compatible server. ``api_key_env=None`` (or "") for servers that need no key."""

    name = "openai"
    use_chat_template = True

    def __init__(self, model: str = "gpt-4o-mini", base_url: str = "https://api.openai.com/v1",
                 api_key_env: str | None = "OPENAI_API_KEY", timeout: float = 30.0, max_retries: int = 4,
                 backoff: float = 0.5, concurrency: int = 4, scoring: str = "auto", top_logprobs: int = 20,
                 max_context: int = 8192, retries: int | None = None) -> None:
        super().__init__()
        if scoring not in SCORING:
            raise AdaptError(f"unknown scoring {scoring!r} for the openai backend: choose from {', '.join(SCORING)}.")
        if retries is not None:  # the rung setting's name; ``max_retries`` kept for callers of the backend
            max_retries = retries
        _check_number("timeout", timeout, 0.0, "seconds per request", strict=True)
        _check_number("retries", max_retries, 0, "extra attempts")
        _check_number("concurrency", concurrency, 1, "requests at once")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env or None
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.concurrency = int(concurrency)
        self._unreachable: str | None = None  # set once a request ran out of retries: later ones fail at once
        self.scoring = scoring
        self.top_logprobs = int(top_logprobs)
        self._max_context = int(max_context)
        self._client: Any = None
        self._lock = threading.Lock()
        self.retries = 0

    # ------------------------------------------------------------------ http
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise AdaptError(f"the environment variable {self.api_key_env} holding the API key for "
                                 f"{self.base_url} is not set: export it, or set api_key_env to the variable "
                                 "you use (empty for a server that needs no key).")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.timeout,
                                        limits=httpx.Limits(max_connections=self.concurrency))
        return self._client

    def _redact(self, text: str) -> str:
        """``text`` with every word that contains the API key replaced (a server may echo the key back)."""
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if not key or len(key) < 4:
            return text
        return re.sub(r"\S*" + re.escape(key) + r"\S*", "[redacted]", text)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries on 429 / 5xx / timeouts; one AdaptError line when it finally fails.

        A server that does not answer within ``timeout`` seconds on every one of the ``retries + 1``
        attempts is remembered as unreachable: every later request fails at once with the same
        message, so a hanging server costs one request's budget, not that budget for every text.
        """
        import httpx

        if self._unreachable is not None:
            raise AdaptError(self._unreachable)
        headers = self._headers()
        url = f"{self.base_url}/{path.lstrip('/')}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if self._unreachable is not None:  # another thread gave up on this server meanwhile
                raise AdaptError(self._unreachable)
            t0 = time.perf_counter()
            try:
                r = self._http().post(url, json=body, headers=headers)
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout:g} s"
            except httpx.HTTPError as e:
                last = self._redact(f"{type(e).__name__}: {e}")
            else:
                if r.status_code == 200:
                    data = self._json(r, url)
                    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
                    self.usage.add(requests=1, prompt=_int(usage.get("prompt_tokens")),
                                   completion=_int(usage.get("completion_tokens")), seconds=time.perf_counter() - t0)
                    return data
                last = self._redact(f"HTTP {r.status_code}: {' '.join(r.text[:200].split())}")
                if r.status_code not in (408, 409, 429) and r.status_code < 500:
                    raise AdaptError(f"{url} refused the request ({last}); check the model name "
                                     f"{self.model!r}, the base URL and the key.")
                retry_after = r.headers.get("retry-after")
                if retry_after and attempt < self.max_retries:
                    try:
                        time.sleep(min(float(retry_after), 30.0))
                        with self._lock:
                            self.retries += 1
                        continue
                    except ValueError:
                        pass
            if attempt < self.max_retries:
                with self._lock:
                    self.retries += 1
                time.sleep(min(self.backoff * 2 ** attempt, 30.0))
        msg = (f"{url} failed after {self.max_retries + 1} attempts ({last}); check that the server is up, "
               "or lower the request rate (concurrency), or raise timeout / retries (e.g. --set "
               "zero-shot.timeout=60).")
        self._unreachable = msg
        raise AdaptError(msg)

    def _json(self, r: Any, url: str) -> dict[str, Any]:
        """The body of a 200 answer as a JSON object, or one AdaptError line saying what came instead."""
        try:
            data = r.json()
        except ValueError as e:
            shown = self._redact(" ".join(r.text[:80].split()))
            raise AdaptError(f"{url} answered 200 but not with JSON ({shown!r}...); is --base-url an "
                             "OpenAI-compatible API (usually ending in /v1)?") from e
        if not isinstance(data, dict):
            raise AdaptError(f"{url} answered 200 with a JSON {type(data).__name__}, not an object; is --base-url "
                             "an OpenAI-compatible API (usually ending in /v1)?")
        return data

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(fn, items))

    # ------------------------------------------------------------------ requests
    def count_tokens(self, text: str) -> int:
        """An estimate (about 4 characters a token): no tokenizer of the remote model is at hand."""
        return max(1, math.ceil(len(text) / 4)) if text else 0

    @property
    def max_context(self) -> int:
        return self._max_context

    def has_chat_template(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "base_url": self.base_url,
                "api_key_env": self.api_key_env, "scoring": self.scoring, "retries": self.retries,
                "concurrency": self.concurrency}

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        """Exact log-likelihoods via ``/completions`` with ``echo`` (the server must support it)."""

        def one(req: tuple[str, str]) -> tuple[float, int]:
            ctx, cont = req
            data = self._post("completions", {"model": self.model, "prompt": ctx + cont, "max_tokens": 0,
                                              "echo": True, "logprobs": 1, "temperature": 0})
            lp = _first_choice(data).get("logprobs") or {}
            offsets, values = lp.get("text_offset"), lp.get("token_logprobs")
            if not offsets or values is None:
                raise AdaptError(f"{self.base_url} returned no prompt logprobs for echo=true; use scoring=logprobs "
                                 "or scoring=generate for this server.")
            picked = [v for o, v in zip(offsets, values, strict=False) if o >= len(ctx) and v is not None]
            return float(sum(picked)), len(picked)

        return self._map(one, list(requests))

    def generate_until(self, contexts: Sequence[str], stop: Sequence[str] = ("\n",),
                       max_tokens: int = 16) -> list[str]:
        def one(ctx: str) -> str:
            data = self._post("completions", {"model": self.model, "prompt": ctx, "max_tokens": max_tokens,
                                              "temperature": 0, "stop": list(stop)[:4] or None})
            return str(_first_choice(data).get("text", ""))

        return self._map(one, list(contexts))

    def _chat(self, system: str, user: str, **extra: Any) -> dict[str, Any]:
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return self._post("chat/completions", {"model": self.model, "messages": msgs, "temperature": 0, **extra})

    def generate_prompts(self, system: str, users: Sequence[str], max_tokens: int = 16,
                         stop: Sequence[str] = ("\n",)) -> list[str]:
        def one(u: str) -> str:
            data = self._chat(system, u, max_tokens=max_tokens)
            return str((_first_choice(data).get("message") or {}).get("content") or "")

        return self._map(one, list(users))

    def chat_generate(self, conversations: Sequence[Sequence[dict[str, str]]], *, max_tokens: int,
                      schema: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Greedy (temperature 0) chat completions of whole conversations (for the generation rungs).

        ``schema``: a JSON Schema sent as ``response_format`` ``json_schema`` (strict), so a server
        that supports structured outputs answers schema-valid JSON. One dict per conversation:
        ``text``, ``prompt_tokens``, ``completion_tokens``, ``seconds``, ``finish_reason``.
        Same retries, timeouts and key redaction as every other request of this backend.
        """
        extra: dict[str, Any] = {"max_tokens": int(max_tokens)}
        if schema is not None:
            extra["response_format"] = {"type": "json_schema",
                                        "json_schema": {"name": "output", "schema": schema, "strict": True}}

        def one(msgs: Sequence[dict[str, str]]) -> dict[str, Any]:
            t0 = time.perf_counter()
            data = self._post("chat/completions", {"model": self.model, "messages": list(msgs), "temperature": 0,
                                                   **extra})
            first = _first_choice(data)
            usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
            return {"text": str((first.get("message") or {}).get("content") or ""),
                    "prompt_tokens": _int(usage.get("prompt_tokens")),
                    "completion_tokens": _int(usage.get("completion_tokens")),
                    "seconds": time.perf_counter() - t0, "finish_reason": first.get("finish_reason")}

        return self._map(one, list(conversations))

    def score_prompts(self, system: str, users: Sequence[str], choices: Sequence[str],
                      user_prefix: str = "") -> ChoiceScores:
        mode = self.scoring
        if mode == "echo":
            fulls = [self.format_chat(system, u) for u in users]
            return self.score_choices("", [f + "\n" if not f.endswith((" ", "\n")) else f for f in fulls],
                                      list(choices))
        if mode in ("auto", "logprobs"):
            first = self._score_logprobs(system, users[:1], choices)
            if first is not None:
                rest = self._score_logprobs(system, users[1:], choices) if len(users) > 1 else None
                lp = first if rest is None else np.vstack([first, rest])
                return ChoiceScores(lp, np.ones_like(lp, dtype=np.int64), exact=False, method="top_logprobs")
            if mode == "logprobs":
                raise AdaptError(f"{self.base_url} returned no logprobs for chat completions; use scoring=generate.")
            self.scoring = "generate"  # remembered: this server gives no logprobs
        return self._score_generate(system, users, choices)

    def _score_logprobs(self, system: str, users: Sequence[str], choices: Sequence[str]) -> np.ndarray | None:
        def one(u: str) -> list[tuple[str, float]] | None:
            data = self._chat(system, u, max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)
            try:
                content = ((_first_choice(data).get("logprobs") or {}).get("content")) or []
                if not content:
                    return None
                top = content[0].get("top_logprobs") or [{"token": content[0].get("token", ""),
                                                          "logprob": content[0].get("logprob", 0.0)}]
                return [(str(t.get("token", "")), float(t.get("logprob", -100.0))) for t in top]
            except (AttributeError, TypeError, ValueError, IndexError) as e:
                raise AdaptError(f"{self.base_url} answered with logprobs of an unexpected shape ({type(e).__name__}); "
                                 "use scoring=generate for this server.") from e

        tops = self._map(one, list(users))
        if any(t is None for t in tops):
            return None
        out = np.zeros((len(users), len(choices)))
        for i, top in enumerate(tops):
            assert top is not None
            floor = min(v for _, v in top) - 1.0 if top else -100.0
            for j, c in enumerate(choices):
                cl = c.strip().lower()
                match = [v for t, v in top if t.strip() and cl.startswith(t.strip().lower())]
                out[i, j] = max(match) if match else floor
        return out

    def _score_generate(self, system: str, users: Sequence[str], choices: Sequence[str]) -> ChoiceScores:
        answers = self.generate_prompts(system, users, max_tokens=max(8, max(len(c) for c in choices) // 2 + 4))
        lp = np.full((len(users), len(choices)), -20.0)
        for i, a in enumerate(answers):
            j = parse_label(a, list(choices))
            if j is None:
                lp[i, :] = 0.0  # unparseable: no preference
            else:
                lp[i, j] = 0.0
        return ChoiceScores(lp, np.ones_like(lp, dtype=np.int64), exact=False, method="generate-and-parse")

"""The language-model seam used by the prompting rungs (in the spirit of lm-evaluation-harness).

A backend answers two kinds of request and nothing else, so rungs never touch model internals:

* :meth:`LMBackend.loglikelihood` -- ``log P(continuation | context)``, batched; the
  classification rungs compare these across label verbalizations instead of parsing free text.
* :meth:`LMBackend.generate_until` -- greedy generation that stops at any stop sequence.

:meth:`LMBackend.score_choices` is the hot path of label scoring: one shared prompt prefix
(instruction + few-shot block), many query tails, the same choices for every query. The base
implementation reduces it to ``loglikelihood``; backends override it when they can do better
(the transformers backend computes the prefix key/value cache once). Backends register by name
in :data:`BACKENDS` and are built with :func:`get_backend`.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaptladder.errors import AdaptError

#: name -> "module:Class", imported lazily (torch / httpx only when used).
BACKENDS: dict[str, str] = {
    "hf": "adaptladder.backends.hf:HFBackend",
    "openai": "adaptladder.backends.openai:OpenAIBackend",
}


@dataclass
class Usage:
    """Token and time accounting of one backend, accumulated over its requests.

    ``prompt_tokens`` counts the logical prompt of every request (what an API would bill);
    ``computed_tokens`` counts what a local model actually ran through its layers (a cached
    prefix is computed once), so the two differ exactly by what caching saved.
    """

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    computed_tokens: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, *, requests: int = 1, prompt: int = 0, completion: int = 0, computed: int = 0,
            seconds: float = 0.0) -> None:
        self.requests += requests
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.computed_tokens += computed
        self.seconds += seconds
        if requests:
            self.latencies_ms.extend([1000 * seconds / requests] * min(requests, 10_000))

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms[-10_000:], dtype=float)
        per = max(self.requests, 1)
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "computed_tokens": self.computed_tokens,
            "prompt_tokens_per_request": round(self.prompt_tokens / per, 1),
            "completion_tokens_per_request": round(self.completion_tokens / per, 2),
            "seconds": round(self.seconds, 3),
            "latency_ms_p50": round(float(np.median(lat)), 2) if lat.size else None,
            "latency_ms_p95": round(float(np.percentile(lat, 95)), 2) if lat.size else None,
        }

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


@dataclass
class ChoiceScores:
    """Summed log-probabilities ``(n_queries, n_choices)`` and continuation token counts ``(n_choices,)``
    or ``(n_queries, n_choices)``; ``exact`` is False when a backend could only approximate them
    (top-k logprobs of an API, or generation and parsing)."""

    logprobs: np.ndarray
    n_tokens: np.ndarray
    exact: bool = True
    method: str = "loglikelihood"

    def normalized(self) -> np.ndarray:
        """Length-normalised scores (mean log-probability per continuation token)."""
        return self.logprobs / np.maximum(self.n_tokens, 1)


class LMBackend(ABC):
    """A language model reachable for scoring and generation."""

    name: str = ""

    def __init__(self) -> None:
        self.usage = Usage()

    # ------------------------------------------------------------------ requests
    @abstractmethod
    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        """For each ``(context, continuation)``: ``(sum log P(continuation | context), n continuation tokens)``."""

    @abstractmethod
    def generate_until(self, contexts: Sequence[str], stop: Sequence[str] = ("\n",),
                       max_tokens: int = 16) -> list[str]:
        """Greedy continuation of each context, cut at the first stop sequence."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (exact for local models; an estimate where no tokenizer is at hand)."""

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """``text`` cut to at most ``max_tokens`` tokens (keeping the start) and whether it was cut."""
        if self.count_tokens(text) <= max_tokens:
            return text, False
        lo, hi = 0, len(text)  # binary search on characters: works for any tokenizer
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.count_tokens(text[:mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        return text[:lo], True

    # ------------------------------------------------------------------ prompts
    #: Whether prompts go through the model's chat template (``format_chat``); rungs may switch it.
    use_chat_template: bool | None = False

    def has_chat_template(self) -> bool:
        """Whether the model has a chat format to offer (the plain format always exists)."""
        return False

    def format_chat(self, system: str, user: str) -> str:
        """The prompt string for one system + user turn, ending where the answer begins.

        Backends whose model has a chat template use it; the plain fallback works for base models.
        """
        return f"{system}\n\n{user}" if system else user

    def score_choices(self, prefix: str, tails: Sequence[str], choices: Sequence[str],
                      batch_size: int | None = None) -> ChoiceScores:
        """Log-likelihood of every choice after ``prefix + tail`` for every tail.

        The reference implementation: one ``loglikelihood`` request per (tail, choice).
        """
        reqs = [(prefix + t, c) for t in tails for c in choices]
        out = self.loglikelihood(reqs)
        lp = np.array([o[0] for o in out], dtype=np.float64).reshape(len(tails), len(choices))
        nt = np.array([o[1] for o in out], dtype=np.int64).reshape(len(tails), len(choices))
        return ChoiceScores(lp, nt)

    def score_prompts(self, system: str, users: Sequence[str], choices: Sequence[str],
                      user_prefix: str = "") -> ChoiceScores:
        """Scores of every choice as the answer to each ``system`` + ``user`` prompt.

        ``user_prefix`` is the part every user message starts with (the few-shot block): the
        matching start of the formatted prompt is passed to :meth:`score_choices` as the shared
        prefix, cut just before a whitespace run so that it tokenizes the same alone as inside
        the whole prompt. Choices get a leading space when the prompt does not end in whitespace.
        """
        fulls = [self.format_chat(system, u) for u in users]
        shared = split_shared_prefix(self.format_chat(system, user_prefix + _SENTINEL), _SENTINEL)
        lead = "" if (not fulls or fulls[0][-1:].isspace()) else " "
        conts = [lead + c for c in choices]
        lp = np.zeros((len(users), len(choices)))
        nt = np.zeros((len(users), len(choices)), dtype=np.int64)
        hit = [i for i, f in enumerate(fulls) if shared and f.startswith(shared)]
        miss = [i for i in range(len(fulls)) if i not in set(hit)]
        method, exact = "loglikelihood", True
        for idx, pre in ((hit, shared), (miss, "")):
            if idx:
                sc = self.score_choices(pre, [fulls[i][len(pre):] for i in idx], conts)
                lp[idx], nt[idx], method, exact = sc.logprobs, sc.n_tokens, sc.method, sc.exact
        return ChoiceScores(lp, nt, exact=exact, method=method)

    def generate_prompts(self, system: str, users: Sequence[str], max_tokens: int = 16,
                         stop: Sequence[str] = ("\n",)) -> list[str]:
        """Free generation as the answer to each ``system`` + ``user`` prompt (the parse-the-answer baseline)."""
        return self.generate_until([self.format_chat(system, u) for u in users], stop=stop, max_tokens=max_tokens)

    @property
    def max_context(self) -> int:
        """The model's context window in tokens."""
        return 2048

    def describe(self) -> dict[str, Any]:
        """What to record in reports about this backend (never secrets)."""
        return {"backend": self.name}

    def _timed(self) -> _Timer:
        return _Timer()


class _Timer:
    def __enter__(self) -> _Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0


_SENTINEL = "\x00QUERY\x00"


def split_shared_prefix(rendered: str, sentinel: str) -> str:
    """The part of ``rendered`` before ``sentinel``, cut back to just before its last line break.

    Cutting before the whitespace run that holds the last newline keeps the prefix's tokens the
    same whether it is tokenized alone or as part of the whole prompt (byte-level BPE merges runs
    of whitespace, and a word is never merged across whitespace).
    """
    head = rendered.split(sentinel, 1)[0] if sentinel in rendered else ""
    cut = head.rfind("\n")
    if cut <= 0:
        return ""
    while cut > 0 and head[cut - 1].isspace():
        cut -= 1
    return head[:cut]


def parse_label(answer: str, label_names: Sequence[str]) -> int | None:
    """The label a generated answer names (exact, then case-insensitive, longest name first), or None."""
    a = answer.strip().strip(".:'\"` ").strip()
    for i, n in enumerate(label_names):
        if a == n:
            return i
    low = a.lower()
    for i in sorted(range(len(label_names)), key=lambda j: -len(label_names[j])):
        if low.startswith(label_names[i].lower()):
            return i
    for i in sorted(range(len(label_names)), key=lambda j: -len(label_names[j])):
        if label_names[i].lower() in low:
            return i
    return None


def get_backend(name: str, **kwargs: Any) -> LMBackend:
    """Build a registered backend by name (``hf`` or ``openai``)."""
    if name not in BACKENDS:
        raise AdaptError(f"unknown LM backend {name!r}: choose from {', '.join(BACKENDS)}.")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)

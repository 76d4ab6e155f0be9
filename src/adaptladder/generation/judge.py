"""An optional LLM-as-judge score for generation outputs (off by default; never the only evidence).

Enabled by ``ADAPTLADDER_JUDGE_MODEL`` (a chat model on an OpenAI-compatible server;
``ADAPTLADDER_JUDGE_BASE_URL``, default the OpenAI API, and ``ADAPTLADDER_JUDGE_API_KEY_ENV``, default
``OPENAI_API_KEY``, say where). The generation ladder then asks the judge to grade each *test* output
against its reference with the written :data:`RUBRIC` and records ``llm_judge`` (the grade 1-5 mapped to
0-1) beside the other metrics; it can never be the primary metric, so it never decides alone.
A reply without a grade scores 0 and is counted (``judge.unparsed``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

RUBRIC = """You are grading the output of a text-generation system against a reference answer.
Task instruction given to the system: {instruction}

Grade the OUTPUT from 1 to 5:
5 = says what the reference says (same facts, same format); wording may differ.
4 = correct and in the right format, with a minor omission or addition.
3 = partly correct: some required content is missing or wrong, or the format is off.
2 = mostly wrong, but related to the input.
1 = wrong, empty, off-topic or unusable.
Judge content and format only; do not reward length. Answer with the digit only."""

_GRADE = re.compile(r"\b([1-5])\b")


def judge_settings() -> dict[str, Any] | None:
    """The judge's settings from the environment, or None when it is off (the default)."""
    model = os.environ.get("ADAPTLADDER_JUDGE_MODEL")
    if not model:
        return None
    return {"model": model, "base_url": os.environ.get("ADAPTLADDER_JUDGE_BASE_URL", "https://api.openai.com/v1"),
            "api_key_env": os.environ.get("ADAPTLADDER_JUDGE_API_KEY_ENV", "OPENAI_API_KEY")}


def make_backend(settings: dict[str, Any]) -> Any:
    from adaptladder.backends.openai import OpenAIBackend

    return OpenAIBackend(model=settings["model"], base_url=settings["base_url"], api_key_env=settings["api_key_env"])


def parse_grade(text: str) -> int | None:
    m = _GRADE.search(text or "")
    return int(m.group(1)) if m else None


def judge_scores(inputs: Sequence[str], outputs: Sequence[str], references: Sequence[str], *, instruction: str,
                 backend: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-example grades mapped to [0, 1] ((grade - 1) / 4) and a record of how they were made."""
    system = RUBRIC.format(instruction=instruction or "(none)")
    convs = [[{"role": "system", "content": system},
              {"role": "user", "content": f"INPUT:\n{x}\n\nREFERENCE:\n{r}\n\nOUTPUT:\n{o}\n\nGrade (1-5):"}]
             for x, o, r in zip(inputs, outputs, references, strict=True)]
    replies = backend.chat_generate(convs, max_tokens=4) if convs else []
    grades = [parse_grade(str(r.get("text", ""))) for r in replies]
    scores = np.array([0.0 if g is None else (g - 1) / 4 for g in grades], dtype=np.float64)
    return scores, {"model": getattr(backend, "model", None), "rubric": system, "n": len(grades),
                    "unparsed": sum(g is None for g in grades), "scale": "grade 1-5 mapped to (grade - 1) / 4"}

"""Deterministic stand-ins shared by several test modules (stand-in encoders, a clean synthetic task).

Import them as ``from fakes import ...`` (the tests folder is on the path, as for ``conftest``).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from adaptladder.task import Task


class TrigramEncoder:
    """Hashed character-trigram counts, L2-normalised: near-copies score ~0.9, unrelated texts ~0.2.
    With ``window``, only the first ``window`` characters count (like a 256-token encoder window)."""

    def __init__(self, dim: int = 2048, window: int | None = None) -> None:
        self.dim, self.window = dim, window
        self.calls = 0

    def encode(self, texts, *, progress: bool = False, desc: str = "") -> np.ndarray:  # type: ignore[no-untyped-def]
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            s = f"  {t[: self.window].lower()}  "
            for j in range(len(s) - 2):
                out[i, zlib.crc32(s[j:j + 3].encode()) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class BagEncoder:
    """A deterministic stand-in sentence encoder: hashed bag of words, L2-normalised."""

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, sum(map(ord, w)) % 64] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def info(self) -> dict[str, Any]:
        return {"model": "bag"}


def words(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` random lowercase 6-8 letter words."""
    letters = list("abcdefghijklmnopqrstuvwxyz")
    return ["".join(rng.choice(letters, size=rng.integers(6, 9))) for _ in range(n)]


def clean_task(n_per_class: int = 40, labels: tuple[str, ...] = ("A", "B", "C"), seed: int = 1) -> Task:
    """A clean classification task: each class its own 25-word vocabulary, 8 distinct words a text,
    split 70/15/15 per class."""
    rng = np.random.default_rng(seed)
    vocab = {c: words(rng, 25) for c in labels}
    texts, y, split = [], [], []
    for k, c in enumerate(labels):
        for i in range(n_per_class):
            texts.append(" ".join(rng.choice(vocab[c], 8, replace=False)))
            y.append(k)
            split.append("train" if i < 0.7 * n_per_class else ("validation" if i < 0.85 * n_per_class else "test"))
    return Task("clean", texts, np.array(y), list(labels), np.array(split, dtype=object), {"kind": "test"})

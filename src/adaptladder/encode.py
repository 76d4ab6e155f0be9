"""Sentence encoding with an on-disk cache: the hot path shared by every part that embeds text.

The feature-extraction rung, retrieval few-shot, the audit's near-duplicate search and
distillation all call :func:`get_encoder` and :meth:`Encoder.encode`. Embeddings are
L2-normalised float32 and cached in SQLite keyed by (model, precision, max length, text), so a
second run over the same texts does not encode again.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptladder.errors import AdaptError
from adaptladder.models import DEFAULT_ENCODER, cache_dir, resolve_encoder

PRECISIONS = ("auto", "fp32", "bf16", "int8")
_CACHE_OFF = threading.local()


class cache_disabled:
    """Bypass the embedding cache inside the block (latency and throughput must measure the model)."""

    def __enter__(self) -> None:
        self._prev = getattr(_CACHE_OFF, "on", False)
        _CACHE_OFF.on = True

    def __exit__(self, *exc: object) -> None:
        _CACHE_OFF.on = self._prev


class EmbeddingCache:
    """A SQLite key -> float32 vector store; safe against concurrent processes and kills."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as con:
            con.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._lock, self._connect() as con:
            for i in range(0, len(keys), 900):
                chunk = keys[i:i + 900]
                q = f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})"
                for k, v in con.execute(q, chunk):
                    out[k] = np.frombuffer(v, dtype=np.float32)
        return out

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        if not items:
            return
        with self._lock, self._connect() as con:
            con.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?)",
                            [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items.items()])


def text_key(model_key: str, text: str) -> str:
    return hashlib.sha1((model_key + "\x00" + text).encode("utf-8", "surrogatepass")).hexdigest()


class Encoder:
    """A frozen sentence encoder (default: the packaged all-MiniLM-L6-v2).

    ``model`` is an alias from :mod:`adaptladder.models`, a sentence-transformers name or a
    local path. ``precision`` is ``fp32`` (the reference) or ``auto``.
    """

    def __init__(self, model: str = DEFAULT_ENCODER, precision: str = "auto", batch_size: int = 64,
                 max_length: int = 256, cache: bool = True) -> None:
        if precision not in PRECISIONS:
            raise AdaptError(f"unknown encoder precision {precision!r}: choose from {', '.join(PRECISIONS)}.")
        self.model = model
        self.precision = precision
        self.batch_size = batch_size
        self.max_length = max_length
        self.use_cache = cache
        self.stats = {"hits": 0, "misses": 0}
        self._st: Any = None
        self._cache: EmbeddingCache | None = None
        self.precision_used_ = "fp32"

    # ---------------------------------------------------------------- model
    def _load(self) -> Any:
        if self._st is None:
            from sentence_transformers import SentenceTransformer

            path = resolve_encoder(self.model)
            try:
                self._st = SentenceTransformer(path, device="cpu")
            except Exception as e:  # a wrong name or path: say so in one line
                raise AdaptError(f"could not load encoder {self.model!r} ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''}); pass a packaged alias "
                                 "(minilm), a local path or a reachable sentence-transformers name.") from e
            self._st.max_seq_length = self.max_length
        return self._st

    @property
    def model_key(self) -> str:
        return f"{self.model}|{self.precision_used_}|{self.max_length}"

    @property
    def dim(self) -> int:
        return int(self._load().get_embedding_dimension())

    def _cache_store(self) -> EmbeddingCache:
        if self._cache is None:
            self._cache = EmbeddingCache(cache_dir() / "embeddings.sqlite")
        return self._cache

    # ---------------------------------------------------------------- encode
    def _encode_uncached(self, texts: list[str], progress: bool) -> np.ndarray:
        st = self._load()
        emb = st.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                        show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(emb, dtype=np.float32)

    def encode(self, texts: Sequence[str], *, progress: bool = False, desc: str = "encoding") -> np.ndarray:
        """L2-normalised float32 embeddings, shape ``(len(texts), dim)``, in input order."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if not self.use_cache or getattr(_CACHE_OFF, "on", False):
            self.stats["misses"] += len(texts)
            return self._encode_uncached(texts, progress)
        keys = [text_key(self.model_key, t) for t in texts]
        store = self._cache_store()
        found = store.get_many(list(dict.fromkeys(keys)))
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in found))
        self.stats["hits"] += len(texts) - sum(1 for k in keys if k not in found)
        self.stats["misses"] += len(missing)
        if missing:
            new = self._encode_with_progress(missing, progress, desc)
            fresh = {text_key(self.model_key, t): v for t, v in zip(missing, new, strict=True)}
            store.put_many(fresh)
            found.update(fresh)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def _encode_with_progress(self, texts: list[str], progress: bool, desc: str) -> np.ndarray:
        if not progress or len(texts) <= self.batch_size:
            return self._encode_uncached(texts, False)
        from rich.progress import Progress

        chunk = self.batch_size * 8
        parts = []
        with Progress(transient=True) as bar:
            task = bar.add_task(desc, total=len(texts))
            for i in range(0, len(texts), chunk):
                parts.append(self._encode_uncached(texts[i:i + chunk], False))
                bar.advance(task, len(texts[i:i + chunk]))
        return np.concatenate(parts)

    def info(self) -> dict[str, Any]:
        return {"model": self.model, "precision_requested": self.precision, "precision_used": self.precision_used_,
                "max_length": self.max_length, "batch_size": self.batch_size, "cache": dict(self.stats)}


_SHARED: dict[tuple[str, str, int], Encoder] = {}


def get_encoder(model: str = DEFAULT_ENCODER, precision: str = "auto", max_length: int = 256) -> Encoder:
    """A process-wide shared encoder, so the model is loaded once per run."""
    key = (model, precision, max_length)
    if key not in _SHARED:
        _SHARED[key] = Encoder(model, precision=precision, max_length=max_length)
    return _SHARED[key]

"""Sentence encoding with an on-disk cache: the hot path shared by every part that embeds text.

The feature-extraction rung, retrieval few-shot, the audit's near-duplicate search and
distillation all call :func:`get_encoder` and :meth:`Encoder.encode`. Embeddings are
L2-normalised float32 and cached in SQLite keyed by (model, precision actually used, max
length, text), so a second run over the same texts does not encode again.

The work is done by :mod:`adaptladder.encode_engine` (length-bucketed batches, bf16 / int8
backends). ``precision="auto"`` picks the fastest precision whose embeddings of a sample of
the user's own texts stay faithful to fp32 (:meth:`Encoder.calibrate`); the choice is a pure
function of the data, so a second run picks the same precision and hits the cache.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptladder.errors import AdaptError
from adaptladder.models import (
    DEFAULT_ENCODER,
    MINILM_INT8_ONNX,
    cache_dir,
    is_packaged_minilm,
    packaged_path,
    resolve_encoder,
)

PRECISIONS = ("auto", "fp32", "bf16", "int8")
#: Fastest first, as measured on this machine kind by benchmarks/bench_encode.py (BENCHMARKS.md,
#: "Embeddings"): unloaded, bf16 ran 1.8-2.0x faster than the packaged ONNX int8 graph on all
#: four built-in sets (int8 is only reached where the CPU has no native bf16). A fixed order,
#: not a timing taken at run time, so the choice is repeatable.
SPEED_ORDER = ("bf16", "int8", "fp32")
#: The fidelity rule of ``precision="auto"``.
MIN_MEAN_COSINE = 0.99
F1_TOLERANCE = 0.01
CALIBRATION_SAMPLE = 256
CALIBRATION_TRAIN_SAMPLE = 512
_CACHE_OFF = threading.local()
#: Set inside :func:`adaptladder.ray_encode.encoding_on_ray`: encodes a call's uncached texts as a Ray Data
#: job, ``(encoder, texts, precision) -> embeddings``; None: in this process.
REMOTE_ENCODE: Any = None
#: The fewest uncached texts worth a Ray Data job (smaller calls stay local).
REMOTE_MIN_TEXTS = 1024


class cache_disabled:
    """Bypass the embedding cache inside the block (latency and throughput must measure the model)."""

    def __enter__(self) -> None:
        self._prev = getattr(_CACHE_OFF, "on", False)
        _CACHE_OFF.on = True

    def __exit__(self, *exc: object) -> None:
        _CACHE_OFF.on = self._prev


def caching_disabled() -> bool:
    """True inside :class:`cache_disabled` (in this thread): compute, never read a cache."""
    return bool(getattr(_CACHE_OFF, "on", False))


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


def _by_hash(texts: Sequence[str], n: int) -> list[int]:
    """Indices of up to ``n`` distinct texts, chosen by the SHA-1 of the text.

    A pseudo-random sample that depends only on the texts themselves (not their order or a
    seed), so the same data always gives the same sample, the same check and the same choice.
    """
    seen: dict[str, int] = {}
    for i, t in enumerate(texts):
        seen.setdefault(t, i)
    ranked = sorted(seen.items(), key=lambda kv: hashlib.sha1(kv[0].encode("utf-8", "surrogatepass")).hexdigest())
    return sorted(i for _, i in ranked[:n])


def _head_f1(X: np.ndarray, y: np.ndarray, Xv: np.ndarray | None, yv: np.ndarray | None) -> float | None:
    """Validation macro-F1 of the features rung's default head (logistic regression) on these embeddings.

    Without a validation set: 5-fold cross-validated predictions on the training sample.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels = np.unique(y)
    if len(labels) < 2:
        return None
    head = LogisticRegression(C=4.0, max_iter=3000, class_weight="balanced", random_state=0)
    if Xv is not None and yv is not None and len(yv):
        pred = head.fit(X, y).predict(Xv)
        truth = yv
    else:
        folds = int(min(5, np.bincount(np.searchsorted(labels, y)).min()))
        if folds < 2:
            return None
        pred = cross_val_predict(head, X, y, cv=StratifiedKFold(folds, shuffle=True, random_state=0))
        truth = y
    return float(f1_score(truth, pred, average="macro", labels=np.union1d(labels, np.unique(truth)),
                          zero_division=0))


class Encoder:
    """A frozen sentence encoder (default: the packaged all-MiniLM-L6-v2).

    ``model`` is an alias from :mod:`adaptladder.models`, a sentence-transformers name or a
    local path. ``precision`` is ``auto`` (the fastest precision that passes the fidelity check
    of :meth:`calibrate`), or forced: ``fp32`` (the reference), ``bf16`` or ``int8``.
    ``batch_size`` caps the texts per batch; batches are otherwise sized by a token budget.
    """

    def __init__(self, model: str = DEFAULT_ENCODER, precision: str = "auto", batch_size: int = 64,
                 max_length: int = 256, cache: bool = True, token_budget: int | None = None) -> None:
        if precision not in PRECISIONS:
            raise AdaptError(f"unknown encoder precision {precision!r}: choose from {', '.join(PRECISIONS)}.")
        if max_length < 2:
            raise AdaptError(f"encoder max_length must be at least 2 tokens, not {max_length}.")
        self.model = model
        self.precision = precision
        self.batch_size = batch_size
        self.max_length = max_length
        self.use_cache = cache
        self.token_budget = token_budget
        self.stats = {"hits": 0, "misses": 0}
        self._st: Any = None
        self._engine: Any = None
        self._cache: EmbeddingCache | None = None
        self.calibration_: dict[str, Any] | None = None
        self.precision_used_ = "fp32" if precision == "auto" else precision

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

    def engine(self) -> Any:
        """The loaded :class:`~adaptladder.encode_engine.Engine` (model, tokenizer, backends)."""
        if self._engine is None:
            from adaptladder.encode_engine import DEFAULT_TOKEN_BUDGET, MAX_BATCH, Engine

            onnx = None
            if is_packaged_minilm(self.model):
                try:
                    onnx = str(packaged_path(*MINILM_INT8_ONNX))
                except AdaptError:  # not installed: int8 falls back to PyTorch dynamic quantization
                    onnx = None
            self._engine = Engine(self._load(), self.max_length, onnx_int8_path=onnx,
                                  token_budget=self.token_budget or DEFAULT_TOKEN_BUDGET,
                                  max_batch=max(MAX_BATCH, self.batch_size))
            if self.precision not in ("auto", "fp32"):
                why = self._engine.available().get(self.precision)
                if why and not self._engine.fast_path:
                    raise AdaptError(f"encoder {self.model!r} cannot run in {self.precision}: it {why}; "
                                     "use precision fp32 or auto.")
        return self._engine

    @property
    def model_key(self) -> str:
        return f"{self.model}|{self.precision_used_}|{self.max_length}"

    def _key_for(self, precision: str) -> str:
        return f"{self.model}|{precision}|{self.max_length}"

    @property
    def dim(self) -> int:
        return int(self._load().get_embedding_dimension())

    def _cache_store(self) -> EmbeddingCache:
        if self._cache is None:
            self._cache = EmbeddingCache(cache_dir() / "embeddings.sqlite")
        return self._cache

    # ---------------------------------------------------------------- calibration
    def calibrate(self, texts: Sequence[str], y: Sequence[int] | np.ndarray | None = None,
                  val_texts: Sequence[str] | None = None, val_y: Sequence[int] | np.ndarray | None = None, *,
                  min_cosine: float = MIN_MEAN_COSINE, f1_tolerance: float = F1_TOLERANCE,
                  sample_size: int | None = None) -> dict[str, Any]:
        """Choose the precision for ``precision="auto"`` on a sample of these texts; return the record.

        Candidates are tried fastest first (:data:`SPEED_ORDER`, limited to what this CPU runs
        natively); the first that passes is used, else fp32. A candidate passes when the mean
        cosine of its embeddings to the fp32 ones is at least ``min_cosine`` and, when labels
        are given, the validation macro-F1 of a logistic-regression head on its embeddings is
        at most ``f1_tolerance`` below the same head on fp32 embeddings (5-fold CV on the
        training sample when no validation set is given). The sample is chosen by a hash of the
        texts, so the same data gives the same choice; embeddings computed here are cached.
        A forced precision is kept and only recorded.
        """
        texts = list(texts)
        if self.precision != "auto":
            self.calibration_ = {"requested": self.precision, "chosen": self.precision, "forced": True,
                                 "backend": self.engine().backend_name(self.precision), "candidates": []}
            return self.calibration_
        t0 = time.perf_counter()
        eng = self.engine()
        avail = eng.available()
        labelled = y is not None and len(texts) > 0
        if labelled:
            y_arr = np.asarray(y)
            if len(y_arr) != len(texts):
                raise AdaptError(f"calibrate got {len(texts)} texts but {len(y_arr)} labels; pass one label per text.")
            tr = _by_hash(texts, sample_size or CALIBRATION_TRAIN_SAMPLE)
            s_texts, s_y = [texts[i] for i in tr], y_arr[tr]
            v_texts: list[str] = []
            v_y: np.ndarray | None = None
            if val_texts is not None and val_y is not None and len(val_texts):
                vt = list(val_texts)
                vi = _by_hash(vt, max(CALIBRATION_SAMPLE, (sample_size or CALIBRATION_TRAIN_SAMPLE) // 2))
                v_texts, v_y = [vt[i] for i in vi], np.asarray(val_y)[vi]
        else:
            pool = texts + (list(val_texts) if val_texts else [])
            s_texts = [pool[i] for i in _by_hash(pool, sample_size or CALIBRATION_SAMPLE)]
            s_y, v_texts, v_y = None, [], None
        all_texts = s_texts + v_texts
        record: dict[str, Any] = {
            "requested": "auto", "rule": f"fastest of {', '.join(SPEED_ORDER)} with mean cosine to fp32 >= "
            f"{min_cosine}" + (f" and validation macro-F1 >= fp32's - {f1_tolerance}" if labelled else ""),
            "min_cosine": min_cosine, "f1_tolerance": f1_tolerance if labelled else None,
            "speed_order": list(SPEED_ORDER), "unavailable": {p: w for p, w in avail.items() if w},
            "sample": {"texts": len(all_texts), "train": len(s_texts) if labelled else None,
                       "validation": len(v_texts) if labelled else None,
                       "head_check": None if not labelled else ("validation" if v_texts else "5-fold CV"),
                       "selection": "sha1 of the text"},
            "candidates": [],
        }
        if not all_texts:
            record.update(chosen="fp32", backend=eng.backend_name("fp32"), seconds=0.0)
            self.calibration_ = record
            self.precision_used_ = "fp32"
            return record
        ref = self._encode_at(all_texts, "fp32")
        n = len(s_texts)
        ref_f1 = _head_f1(ref[:n], s_y, ref[n:] if v_texts else None, v_y) if labelled else None
        record["fp32_macro_f1"] = ref_f1
        chosen = "fp32"
        for p in SPEED_ORDER:
            if p == "fp32":
                break
            if avail.get(p):
                continue
            emb = self._encode_at(all_texts, p)
            cos = np.sum(emb * ref, axis=1)
            cand: dict[str, Any] = {"precision": p, "backend": eng.backend_name(p),
                                    "mean_cosine": round(float(cos.mean()), 6),
                                    "min_cosine": round(float(cos.min()), 6),
                                    "p01_cosine": round(float(np.quantile(cos, 0.01)), 6)}
            ok = cand["mean_cosine"] >= min_cosine
            if labelled and ok:
                f1 = _head_f1(emb[:n], s_y, emb[n:] if v_texts else None, v_y)
                cand["macro_f1"] = f1
                if f1 is not None and ref_f1 is not None:
                    cand["macro_f1_delta"] = round(f1 - ref_f1, 6)
                    ok = f1 >= ref_f1 - f1_tolerance
            cand["passed"] = bool(ok)
            record["candidates"].append(cand)
            if ok:
                chosen = p
                break
        record.update(chosen=chosen, backend=eng.backend_name(chosen),
                      seconds=round(time.perf_counter() - t0, 3))
        self.calibration_ = record
        self.precision_used_ = chosen
        return record

    # ---------------------------------------------------------------- encode
    def _encode_uncached(self, texts: list[str], progress: bool, precision: str | None = None,
                         desc: str = "encoding") -> np.ndarray:
        precision = precision or self.precision_used_
        if REMOTE_ENCODE is not None and len(texts) >= REMOTE_MIN_TEXTS and not caching_disabled():
            return REMOTE_ENCODE(self, texts, precision)  # a Ray Data job; the caller caches here, on the driver
        eng = self.engine()
        if not progress or len(texts) <= self.batch_size:
            return eng.encode(texts, precision)
        from adaptladder import progress as prog

        with prog.task(desc, len(texts)) as advance:
            return eng.encode(texts, precision, on_batch=advance)

    def _encode_at(self, texts: list[str], precision: str, progress: bool = False,
                   desc: str = "encoding") -> np.ndarray:
        """Embeddings at one precision, through the cache (calibration and :meth:`encode` share it)."""
        if not self.use_cache or caching_disabled():  # timing the model itself
            self.stats["misses"] += len(texts)
            return self._encode_uncached(texts, progress, precision, desc)
        mk = self._key_for(precision)
        keys = [text_key(mk, t) for t in texts]
        store = self._cache_store()
        found = store.get_many(list(dict.fromkeys(keys)))
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in found))
        self.stats["hits"] += len(texts) - sum(1 for k in keys if k not in found)
        self.stats["misses"] += len(missing)
        if missing:
            new = self._encode_uncached(missing, progress, precision, desc)
            fresh = {text_key(mk, t): v for t, v in zip(missing, new, strict=True)}
            store.put_many(fresh)
            found.update(fresh)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def encode(self, texts: Sequence[str], *, progress: bool = False, desc: str = "encoding") -> np.ndarray:
        """L2-normalised float32 embeddings, shape ``(len(texts), dim)``, in input order.

        With ``precision="auto"`` and no :meth:`calibrate` call yet, the first call calibrates
        on a sample of its own texts (cosine check only).
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.precision == "auto" and self.calibration_ is None:
            self.calibrate(texts)
        return self._encode_at(texts, self.precision_used_, progress, desc)

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "precision_requested": self.precision,
                               "precision_used": self.precision_used_, "max_length": self.max_length,
                               "batch_size": self.batch_size, "cache": dict(self.stats)}
        if self._engine is not None:
            from adaptladder.encode_engine import cpu_flags

            eng = self._engine
            out["engine"] = {"backend": eng.backend_name(self.precision_used_), "fast_path": eng.fast_path,
                             "fallback_reason": eng.fallback_reason, "threads": eng.threads,
                             "token_budget": eng.token_budget, "cpu_flags": cpu_flags()}
        if self.calibration_ is not None:
            out["calibration"] = self.calibration_
        return out


_SHARED: dict[tuple[str, str, int], Encoder] = {}


def get_encoder(model: str = DEFAULT_ENCODER, precision: str = "auto", max_length: int = 256) -> Encoder:
    """A process-wide shared encoder, so the model is loaded once per run."""
    key = (model, precision, max_length)
    if key not in _SHARED:
        _SHARED[key] = Encoder(model, precision=precision, max_length=max_length)
    return _SHARED[key]

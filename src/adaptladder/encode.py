"""Sentence encoding with an on-disk cache: the hot path shared by every part that embeds text.

The feature-extraction rung, retrieval few-shot, the audit's near-duplicate search and
distillation all call :func:`get_encoder` and :meth:`Encoder.encode`. Embeddings are
L2-normalised float32 and cached in SQLite keyed by (model, backend actually used, max length,
text), so a second run over the same texts does not encode again.

Backends (the ``precision`` names; BENCHMARKS.md "Embeddings" has the side-by-side table that
chose them):

* ``fp32``: ``SentenceTransformer.encode`` in fp32, the reference; always available.
* ``onnx-fp32``: the same model's transformer exported once with ``torch.onnx.export`` into the
  cache directory (atomically, keyed by the model's files) and run by ONNX Runtime, with
  sentence-transformers' tokenisation, batching and pooling. The fastest backend that keeps
  fp32's vectors on CPUs without native bf16 (sentence-transformers' own ``backend="onnx"``
  needs ``optimum``, which cannot be installed next to transformers 5). When ONNX Runtime is
  missing or the export fails, the encoder uses ``fp32`` and records why.
* ``bf16``: ``SentenceTransformer`` loaded with bfloat16 weights; ``auto`` only tries it where
  the CPU has native bf16 (AVX512-BF16 or AMX), where it is the fastest.
* ``int8``: the packaged int8 ONNX graph of all-MiniLM-L6-v2 under ONNX Runtime (only for that
  model; kept so runs saved with it predict the same; not among ``auto``'s candidates: no faster
  than ``onnx-fp32`` when rechecked side by side, and less faithful).

``precision="auto"`` picks the fastest of these whose embeddings of a sample of the user's own
texts stay faithful to fp32 (:meth:`Encoder.calibrate`); the choice is a pure function of the
data and the machine, so a second run picks the same backend and hits the cache.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
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

PRECISIONS = ("auto", "fp32", "onnx-fp32", "bf16", "int8")
#: What runs each precision (the name recorded in ``info()`` and in the cache key).
BACKENDS = {"fp32": "sentence-transformers-fp32", "onnx-fp32": "onnxruntime-fp32",
            "bf16": "sentence-transformers-bf16", "int8": "onnxruntime-int8-packaged"}
#: The fidelity rule of ``precision="auto"``.
MIN_MEAN_COSINE = 0.99
F1_TOLERANCE = 0.01
CALIBRATION_SAMPLE = 256
CALIBRATION_TRAIN_SAMPLE = 512
#: Texts per backend call: progress advances per chunk; texts are sorted by length first, as
#: sentence-transformers sorts them, so chunking does not change the batches.
CHUNK_BATCHES = 8
ONNX_OPSET = 17
_TORCH_THREADS_LOCK = threading.Lock()


def speed_order() -> tuple[str, ...]:
    """``auto``'s candidates, fastest first, from the measured table (BENCHMARKS.md, "Embeddings").

    A fixed order per CPU kind, not a timing taken at run time, so the choice is repeatable:
    with native bf16 the bf16 weights (2.1-2.4x fp32 there) come first; without it bf16 is
    emulated and slower than fp32, and ONNX Runtime fp32 is the fastest faithful backend.
    """
    return ("bf16", "onnx-fp32", "fp32") if cpu_has_native_bf16() else ("onnx-fp32", "fp32")


# --------------------------------------------------------------------------- the CPU
def cpu_threads() -> int:
    """Cores this process may use (affinity mask and cgroup quota, not the machine's core count)."""
    from adaptladder.threads import usable_cores

    return usable_cores()


def set_threads(n: int | None = None) -> int:
    """Torch threads for the encoder: ``n``, else the one policy's choice (a thread per usable core
    that other processes leave free; oversubscribing 2 cores costs 20-40%, see adaptladder.threads)."""
    from adaptladder.threads import apply

    return apply(n or "auto")


def cpu_has_native_bf16() -> bool:
    """True where bf16 matmuls run in hardware (AVX512-BF16 / AMX-BF16); else bf16 is emulated.

    ``ADAPTLADDER_NATIVE_BF16=0`` (or ``1``) overrides the detection: the test suite sets 0 so that
    its results do not depend on the CPU it runs on (tests of the bf16 paths patch it on)."""
    forced = os.environ.get("ADAPTLADDER_NATIVE_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        import torch

        if not torch.backends.mkldnn.is_available():
            return False
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - very old torch
        return False


def cpu_flags() -> list[str]:
    """The CPU features that decide which backends are fast (for the record)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return sorted(have & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                                          "amx_tile", "avx_vnni"})
    except OSError:
        pass
    return []


# --------------------------------------------------------------------------- ONNX export
def _onnx_inputs(st: Any) -> list[str]:
    names = list(getattr(st[0].tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"])
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]


def onnx_eligible(st: Any) -> str | None:
    """None when the model's transformer can be exported and run by ONNX Runtime, else why not."""
    try:
        first = st[0]
    except (TypeError, IndexError):
        return "not a sequential sentence-transformers model"
    if type(first).__name__ != "Transformer" or getattr(first, "auto_model", None) is None:
        return f"its first module is {type(first).__name__}, not a Transformer"
    cfg = getattr(first.auto_model, "config", None)
    if cfg is None or getattr(cfg, "is_encoder_decoder", False):
        return "not an encoder-only transformer"
    if getattr(st, "default_prompt_name", None):
        return "the model uses prompts"
    if getattr(first, "tokenizer", None) is None or "input_ids" not in _onnx_inputs(st):
        return "no text tokenizer"
    return None


def _model_fingerprint(model: str, path: str) -> str:
    """A key for the exported graph: the model's name and, for a local folder, its files' sizes and times."""
    import torch

    h = hashlib.sha1(f"{model}\x00{torch.__version__}\x00{ONNX_OPSET}".encode())
    folder = Path(path)
    if folder.is_dir():
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(folder)}\x00{st.st_size}\x00{st.st_mtime_ns}\n".encode())
    else:
        h.update(path.encode())
    return h.hexdigest()[:16]


def export_onnx(st: Any, dest: Path) -> Path:
    """The transformer of ``st`` as an ONNX graph (token states out, dynamic batch and length) at ``dest``.

    Written to a temporary name next to ``dest``, checked against PyTorch on a few texts, then
    renamed into place, so a killed or concurrent export never leaves a half-written graph.
    """
    import torch

    names = _onnx_inputs(st)

    class Wrap(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, *args: Any) -> Any:
            return self.m(**dict(zip(names, args, strict=True))).last_hidden_state

    model = Wrap(st[0].auto_model.eval()).eval()
    feats = st.preprocess(["a first sentence to trace the export", "short", "a third, somewhat longer text"
                           " with more words than the others"])
    args = tuple(feats[n] for n in names)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about data-dependent branches (masks)
            torch.onnx.export(model, args, str(tmp), input_names=names, output_names=["last_hidden_state"],
                              dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]},
                              opset_version=ONNX_OPSET, dynamo=False)
            want = model(*args).float().numpy()
        got = _ort_session(tmp).run(None, {n: a.numpy().astype(np.int64) for n, a in zip(names, args,
                                                                                         strict=True)})[0]
        diff = float(np.abs(got - want).max())
        if not np.isfinite(diff) or diff > 1e-3:
            raise RuntimeError(f"the exported graph differs from PyTorch by {diff:.2g}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _ort_session(path: Path | str) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = cpu_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- backends
class SentenceTransformersBackend:
    """``SentenceTransformer.encode`` itself (fp32, or a copy loaded with bf16 weights)."""

    def __init__(self, st: Any, name: str) -> None:
        self.st, self.name = st, name

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        emb = self.st.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=False,
                             convert_to_tensor=True, normalize_embeddings=False)
        return emb.float().numpy()


class OnnxBackend:
    """A transformer graph under ONNX Runtime between sentence-transformers' own tokenisation and its
    remaining modules (pooling, dense, normalise), so the vectors are those sentence-transformers computes."""

    def __init__(self, st: Any, path: Path | str, name: str) -> None:
        self.st, self.name = st, name
        self.session = _ort_session(path)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.modules = list(st)[1:]

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        out = []
        # pooling etc. are tiny: a second OpenMP thread only contends with ONNX Runtime's threads
        # (measured 0.2 ms on one thread vs 32 ms on two for a batch's mean pooling, 2 busy cores);
        # the thread count is process-wide, so concurrent calls (serve) take turns
        _TORCH_THREADS_LOCK.acquire()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for s in range(0, len(texts), batch_size):
                feats = self.st.preprocess(texts[s:s + batch_size])
                ids = feats["input_ids"]
                feed = {n: (feats[n].numpy() if n in feats else np.zeros(tuple(ids.shape))).astype(np.int64)
                        for n in self.inputs}
                (h,) = self.session.run(["last_hidden_state"], feed)
                feats["token_embeddings"] = torch.from_numpy(np.ascontiguousarray(h, dtype=np.float32))
                with torch.inference_mode():
                    for m in self.modules:
                        feats = m(feats)
                out.append(feats["sentence_embedding"].float().numpy())
        finally:
            torch.set_num_threads(threads)
            _TORCH_THREADS_LOCK.release()
        return np.concatenate(out)


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


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
    local path. ``precision`` is ``auto`` (the fastest backend that passes the fidelity check
    of :meth:`calibrate`), or forced: ``fp32`` (sentence-transformers, the reference),
    ``onnx-fp32``, ``bf16`` or ``int8`` (see the module doc). A forced backend that cannot run
    here (ONNX Runtime missing, export failed, no packaged int8 graph) falls back to ``fp32``
    and says why in :meth:`info`. ``batch_size`` is the texts per forward pass.
    """

    def __init__(self, model: str = DEFAULT_ENCODER, precision: str = "auto", batch_size: int = 32,
                 max_length: int = 256, cache: bool = True) -> None:
        if precision not in PRECISIONS:
            raise AdaptError(f"unknown encoder precision {precision!r}: choose from {', '.join(PRECISIONS)}.")
        if max_length < 2:
            raise AdaptError(f"encoder max_length must be at least 2 tokens, not {max_length}.")
        self.model = model
        self.precision = precision
        self.batch_size = batch_size
        self.max_length = max_length
        self.use_cache = cache
        self.stats = {"hits": 0, "misses": 0}
        self._st: Any = None
        self._backends: dict[str, Any] = {}
        self._why_not: dict[str, str] = {}  # precision -> why it cannot run here
        self._cache: EmbeddingCache | None = None
        self.calibration_: dict[str, Any] | None = None
        self.fallback_: dict[str, str] | None = None
        self.precision_used_ = "fp32" if precision == "auto" else precision

    # ---------------------------------------------------------------- model
    def _load(self) -> Any:
        if self._st is None:
            self._st = self._load_st(None)
        return self._st

    def _load_st(self, dtype: Any) -> Any:
        import torch
        from sentence_transformers import SentenceTransformer

        set_threads()
        path = resolve_encoder(self.model)
        try:
            st = SentenceTransformer(path, device="cpu", model_kwargs={"dtype": dtype or torch.float32})
        except Exception as e:  # a wrong name or path: say so in one line
            raise AdaptError(f"could not load encoder {self.model!r} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); pass a packaged alias "
                             "(minilm), a local path or a reachable sentence-transformers name.") from e
        st.max_seq_length = self.max_length
        return st

    def _onnx_path(self) -> Path:
        """The exported fp32 graph of this model in the cache directory (exported on first use)."""
        path = resolve_encoder(self.model)
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(path).name)[:60] or "model"
        dest = cache_dir() / "onnx" / f"{slug}-{_model_fingerprint(self.model, path)}" / "model.onnx"
        if not dest.exists():
            export_onnx(self._load(), dest)
        return dest

    def _build(self, precision: str) -> Any:
        """The backend for ``precision``, or raise with the reason it cannot run here."""
        if precision == "fp32":
            return SentenceTransformersBackend(self._load(), BACKENDS["fp32"])
        if precision == "bf16":
            import torch

            return SentenceTransformersBackend(self._load_st(torch.bfloat16), BACKENDS["bf16"])
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise RuntimeError("onnxruntime is not installed") from e
        st = self._load()
        why = onnx_eligible(st)
        if why:
            raise RuntimeError(why)
        if precision == "int8":
            if not is_packaged_minilm(self.model):
                raise RuntimeError("int8 is only the packaged all-MiniLM-L6-v2 graph")
            return OnnxBackend(st, packaged_path(*MINILM_INT8_ONNX), BACKENDS["int8"])
        return OnnxBackend(st, self._onnx_path(), BACKENDS["onnx-fp32"])

    def available(self, precision: str) -> str | None:
        """None when ``precision`` runs here (loading its backend), else why not (one phrase)."""
        if precision in self._backends:
            return None
        if precision not in self._why_not:
            self._load()  # a model that does not load at all is the user's error, not a fallback
            try:
                self._backends[precision] = self._build(precision)
            except Exception as e:  # any failure here means "use fp32", with the reason recorded
                msg = str(e).splitlines()[0] if str(e) else ""
                plain = type(e) is RuntimeError or isinstance(e, AdaptError)
                self._why_not[precision] = (msg if plain else f"{type(e).__name__}: {msg}")[:300]
        return self._why_not.get(precision)

    def _backend(self, precision: str) -> Any:
        why = self.available(precision)
        if why:
            raise AdaptError(f"encoder backend {precision} cannot run here: {why}")
        return self._backends[precision]

    def _resolve_forced(self) -> None:
        """A forced precision that cannot run here becomes fp32, with the reason recorded."""
        if self.precision in ("auto", "fp32") or self.fallback_ is not None:
            return
        why = self.available(self.precision)
        if why:
            self.fallback_ = {"requested": self.precision, "used": "fp32", "reason": why}
            self.precision_used_ = "fp32"

    @property
    def backend_name(self) -> str:
        return BACKENDS[self.precision_used_]

    @property
    def model_key(self) -> str:
        return self._key_for(self.precision_used_)

    def _key_for(self, precision: str) -> str:
        return f"{self.model}|{BACKENDS[precision]}|{self.max_length}"

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
        """Choose the backend for ``precision="auto"`` on a sample of these texts; return the record.

        Candidates are tried fastest first (:func:`speed_order`, what this CPU runs fast); the
        first that runs here and passes is used, else fp32. A candidate passes when the mean
        cosine of its embeddings to the fp32 ones is at least ``min_cosine`` and, when labels
        are given, the validation macro-F1 of a logistic-regression head on its embeddings is
        at most ``f1_tolerance`` below the same head on fp32 embeddings (5-fold CV on the
        training sample when no validation set is given). The sample is chosen by a hash of the
        texts, so the same data gives the same choice; embeddings computed here are cached.
        A forced precision is kept (or its fp32 fallback) and only recorded.
        """
        texts = list(texts)
        if self.precision != "auto":
            self._resolve_forced()
            self.calibration_ = {"requested": self.precision, "chosen": self.precision_used_, "forced": True,
                                 "backend": self.backend_name, "candidates": [],
                                 **({"fallback": self.fallback_} if self.fallback_ else {})}
            return self.calibration_
        t0 = time.perf_counter()
        order = speed_order()
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
            "requested": "auto", "rule": f"fastest of {', '.join(order)} with mean cosine to fp32 >= "
            f"{min_cosine}" + (f" and validation macro-F1 >= fp32's - {f1_tolerance}" if labelled else ""),
            "min_cosine": min_cosine, "f1_tolerance": f1_tolerance if labelled else None,
            "speed_order": list(order), "unavailable": {},
            "sample": {"texts": len(all_texts), "train": len(s_texts) if labelled else None,
                       "validation": len(v_texts) if labelled else None,
                       "head_check": None if not labelled else ("validation" if v_texts else "5-fold CV"),
                       "selection": "sha1 of the text"},
            "candidates": [],
        }
        chosen = "fp32"
        if all_texts:
            ref = self._encode_at(all_texts, "fp32")
            n = len(s_texts)
            ref_f1 = _head_f1(ref[:n], s_y, ref[n:] if v_texts else None, v_y) if labelled else None
            record["fp32_macro_f1"] = ref_f1
            for p in order:
                if p == "fp32":
                    break
                why = self.available(p)
                if why:
                    record["unavailable"][p] = why
                    continue
                emb = self._encode_at(all_texts, p)
                cos = np.sum(emb * ref, axis=1)
                cand: dict[str, Any] = {"precision": p, "backend": BACKENDS[p],
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
        record.update(chosen=chosen, backend=BACKENDS[chosen], seconds=round(time.perf_counter() - t0, 3))
        self.calibration_ = record
        self.precision_used_ = chosen
        return record

    # ---------------------------------------------------------------- encode
    def _run(self, texts: list[str], precision: str, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Embeddings of ``texts`` with one backend, in input order (texts sorted by length, as
        sentence-transformers sorts them, and fed in chunks so progress can advance)."""
        backend = self._backend(precision)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        step = self.batch_size * CHUNK_BATCHES
        for s in range(0, len(texts), step):
            idx = order[s:s + step]
            emb = _normalised(backend.encode([texts[i] for i in idx], self.batch_size))
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
            if on_batch:
                on_batch(len(idx))
        assert out is not None
        return out

    def _encode_uncached(self, texts: list[str], progress: bool, precision: str | None = None,
                         desc: str = "encoding") -> np.ndarray:
        precision = precision or self.precision_used_
        if REMOTE_ENCODE is not None and len(texts) >= REMOTE_MIN_TEXTS and not caching_disabled():
            return REMOTE_ENCODE(self, texts, precision)  # a Ray Data job; the caller caches here, on the driver
        if not progress or len(texts) <= self.batch_size:
            return self._run(texts, precision)
        from adaptladder import progress as prog

        with prog.task(desc, len(texts)) as advance:
            return self._run(texts, precision, on_batch=advance)

    def _encode_at(self, texts: list[str], precision: str, progress: bool = False,
                   desc: str = "encoding") -> np.ndarray:
        """Embeddings with one backend, through the cache (calibration and :meth:`encode` share it)."""
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
        self._resolve_forced()
        return self._encode_at(texts, self.precision_used_, progress, desc)

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "precision_requested": self.precision,
                               "precision_used": self.precision_used_, "backend": self.backend_name,
                               "max_length": self.max_length, "batch_size": self.batch_size,
                               "cache": dict(self.stats), "threads": cpu_threads(), "cpu_flags": cpu_flags()}
        if self.fallback_ is not None:
            out["fallback"] = self.fallback_
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

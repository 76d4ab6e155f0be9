"""The encoding engine behind :class:`adaptladder.encode.Encoder`: fast, length-bucketed inference.

``SentenceTransformer.encode`` re-tokenizes per batch, runs a fixed batch size whatever the
text length, and only does fp32 on CPU. Here every text is tokenized once (fast tokenizer,
batch mode), texts are sorted by token length and cut into batches under a *token budget*
(many short texts per batch, few long ones, padding only to the longest text of the batch),
the transformer runs under ``torch.inference_mode`` in the requested precision, and the
sentence-transformers ``Pooling`` module of the model itself pools the token states, so the
vectors are those sentence-transformers computes. Order is restored at the end.

Backends (the ``precision`` names the cache keys carry):

* ``fp32``: the reference.
* ``bf16``: the transformer weights in bfloat16 (pooling and normalisation in fp32); only
  offered where the CPU has native bf16 (AVX512-BF16 or AMX), emulated bf16 is slower.
* ``int8``: for the packaged all-MiniLM-L6-v2 the packaged int8 ONNX graph run by ONNX
  Runtime; for other models PyTorch dynamic int8 quantization (per-channel weights).

Models whose sentence-transformers pipeline is not ``Transformer -> Pooling [-> Normalize]``
(or that need prompts) fall back to ``SentenceTransformer.encode`` itself, in fp32.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ENGINE_PRECISIONS = ("fp32", "bf16", "int8")
#: Padded tokens per batch. Matmuls of ~4k rows run near the CPU's best GEMM efficiency while
#: attention and activations of long texts still fit in the L2/L3 caches.
DEFAULT_TOKEN_BUDGET = 4096
#: The most texts in one batch (short texts): beyond this, per-batch overheads are already tiny.
MAX_BATCH = 256
#: Batches keep at least this many texts (when the budget allows) before cutting on length.
MIN_BATCH = 16
#: Past MIN_BATCH, a batch stops at the first text shorter than this fraction of its longest.
MIN_FILL = 0.8


def cpu_threads() -> int:
    """Cores this process may use (the affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def set_threads(n: int | None = None) -> int:
    """Use one intra-op thread per available core (oversubscribing 2 cores costs 20-40%)."""
    import torch

    n = n or cpu_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def cpu_has_native_bf16() -> bool:
    """True where bf16 matmuls run in hardware (AVX512-BF16 / AMX-BF16); else bf16 is emulated."""
    try:
        import torch

        if not torch.backends.mkldnn.is_available():
            return False
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - very old torch
        return False


def cpu_flags() -> list[str]:
    """The CPU features that decide which precisions are fast (for the record)."""
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


# --------------------------------------------------------------------------- batching
@dataclass
class Batch:
    """One length bucket: row indices into the input list and padded int64 arrays."""

    index: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.size)


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int, lowercase: bool = False) -> list[list[int]]:
    """Token ids of every text (special tokens included, truncated), one batch call, no padding."""
    if lowercase:
        texts = [t.lower() for t in texts]
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False,
                    return_attention_mask=False, return_token_type_ids=False)
    return enc["input_ids"]


def plan_batches(lengths: Sequence[int], token_budget: int = DEFAULT_TOKEN_BUDGET,
                 max_batch: int = MAX_BATCH, min_batch: int = MIN_BATCH,
                 min_fill: float = MIN_FILL) -> list[np.ndarray]:
    """Row indices per batch: longest first, each batch padded to its own longest text.

    Sorting by length puts similar lengths together. A batch grows while (texts x longest
    length) stays within the token budget; past ``min_batch`` texts it also stops at the
    first text shorter than ``min_fill`` x the longest, so padding stays small without
    making batches so small that per-batch overheads dominate.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    out: list[np.ndarray] = []
    i = 0
    while i < len(order):
        longest = max(1, int(lengths[order[i]]))
        cap = max(1, min(max_batch, token_budget // longest))
        j = i + 1
        while j < len(order) and j - i < cap and (j - i < min_batch or lengths[order[j]] >= min_fill * longest):
            j += 1
        out.append(order[i:j])
        i = j
    return out


def make_batches(ids: list[list[int]], pad_id: int, token_budget: int = DEFAULT_TOKEN_BUDGET,
                 max_batch: int = MAX_BATCH) -> list[Batch]:
    batches = []
    for idx in plan_batches([len(x) for x in ids], token_budget, max_batch):
        width = max(len(ids[j]) for j in idx)
        input_ids = np.full((len(idx), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for r, j in enumerate(idx):
            row = ids[j]
            input_ids[r, :len(row)] = row
            mask[r, :len(row)] = 1
        batches.append(Batch(idx, input_ids, mask))
    return batches


def batch_flops(batch: Batch, hidden: int, intermediate: int, layers: int) -> float:
    """Multiply-add FLOPs of a BERT-style encoder on one padded batch (what the CPU actually does)."""
    b, seq = batch.input_ids.shape
    tokens = b * seq
    per_layer = 2 * tokens * (4 * hidden * hidden + 2 * hidden * intermediate) + 2 * 2 * b * seq * seq * hidden
    return float(layers * per_layer)


# --------------------------------------------------------------------------- backends
class Backend:
    """Runs token ids through a transformer and returns token states (batch, seq, hidden) fp32."""

    precision: str = "fp32"
    name: str = "torch"

    def token_states(self, batch: Batch) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class TorchBackend(Backend):
    def __init__(self, model: Any, precision: str, type_ids: bool) -> None:
        import torch

        self.precision = precision
        self.type_ids = type_ids
        self.name = {"fp32": "torch-fp32", "bf16": "torch-bf16", "int8": "torch-dynamic-int8"}[precision]
        if precision == "bf16":
            import copy

            model = copy.deepcopy(model).to(torch.bfloat16)
        elif precision == "int8":
            import copy

            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            model = quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear: per_channel_dynamic_qconfig},
                                     dtype=torch.qint8)
        self.model = model.eval()

    def token_states(self, batch: Batch) -> Any:
        import torch

        ids = torch.from_numpy(batch.input_ids)
        mask = torch.from_numpy(batch.attention_mask)
        kwargs = {"input_ids": ids, "attention_mask": mask}
        if self.type_ids:
            kwargs["token_type_ids"] = torch.zeros_like(ids)
        with torch.inference_mode():
            out = self.model(**kwargs)
        return out.last_hidden_state.float()


class OnnxBackend(Backend):
    """The packaged int8 ONNX all-MiniLM-L6-v2 under ONNX Runtime (inputs: ids, mask, type ids)."""

    precision = "int8"
    name = "onnxruntime-int8"

    def __init__(self, path: str, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def token_states(self, batch: Batch) -> Any:
        import torch

        feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(batch.input_ids)
        (h,) = self.session.run(["last_hidden_state"], feed)
        return torch.from_numpy(np.ascontiguousarray(h, dtype=np.float32))


# --------------------------------------------------------------------------- the engine
class Engine:
    """A loaded sentence-transformers model plus the backends built from it on demand."""

    def __init__(self, st: Any, max_length: int, onnx_int8_path: str | None = None,
                 token_budget: int = DEFAULT_TOKEN_BUDGET, max_batch: int = MAX_BATCH) -> None:
        self.st = st
        self.max_length = max_length
        self.onnx_int8_path = onnx_int8_path
        self.token_budget = token_budget
        self.max_batch = max_batch
        self.threads = set_threads()
        self._backends: dict[str, Backend] = {}
        self.fast_path, self.fallback_reason = self._inspect()

    def _inspect(self) -> tuple[bool, str | None]:
        """Whether the model is Transformer -> Pooling [-> Normalize] with a fast tokenizer."""
        try:
            mods = list(self.st)
        except TypeError:
            return False, "not a sequential sentence-transformers model"
        kinds = [type(m).__name__ for m in mods]
        if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
            return False, f"pipeline {' -> '.join(kinds)} is not Transformer -> Pooling [-> Normalize]"
        tr, pool = mods[0], mods[1]
        tok = getattr(tr, "tokenizer", None)
        if tok is None or not getattr(tok, "is_fast", False):
            return False, "no fast tokenizer"
        cfg = getattr(tr.auto_model, "config", None)
        if cfg is None or getattr(cfg, "is_encoder_decoder", False):
            return False, "not an encoder-only transformer"
        if getattr(pool, "include_prompt", True) is False or getattr(self.st, "default_prompt_name", None):
            return False, "the model uses prompts"
        self.tokenizer = tok
        self.transformer = tr.auto_model.eval()
        self.pooling = pool
        self.lowercase = bool(getattr(tr, "do_lower_case", False))
        self.type_ids = "token_type_ids" in getattr(tok, "model_input_names", [])
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else 0)
        return True, None

    # ------------------------------------------------------------ capabilities
    def available(self) -> dict[str, str | None]:
        """precision -> None when usable here, else why not (one phrase)."""
        out: dict[str, str | None] = {"fp32": None}
        if not self.fast_path:
            out["bf16"] = out["int8"] = f"falls back to SentenceTransformer ({self.fallback_reason})"
            return out
        out["bf16"] = None if cpu_has_native_bf16() else "this CPU has no native bf16 (AVX512-BF16/AMX)"
        if self.onnx_int8_path:
            try:
                import onnxruntime  # noqa: F401

                out["int8"] = None
            except ImportError:
                out["int8"] = "onnxruntime is not installed"
        else:
            import torch

            engines = torch.backends.quantized.supported_engines
            out["int8"] = None if any(e in engines for e in ("x86", "fbgemm", "onednn")) else "no int8 engine"
        return out

    def backend(self, precision: str) -> Backend:
        if precision not in self._backends:
            if precision == "int8" and self.onnx_int8_path:
                self._backends[precision] = OnnxBackend(self.onnx_int8_path, self.threads)
            else:
                self._backends[precision] = TorchBackend(self.transformer, precision, self.type_ids)
        return self._backends[precision]

    def backend_name(self, precision: str) -> str:
        if not self.fast_path:
            return "sentence-transformers"
        if precision == "int8" and self.onnx_int8_path:
            return OnnxBackend.name
        return {"fp32": "torch-fp32", "bf16": "torch-bf16", "int8": "torch-dynamic-int8"}[precision]

    # ------------------------------------------------------------ encode
    def batches(self, texts: Sequence[str]) -> list[Batch]:
        ids = tokenize(self.tokenizer, texts, self.max_length, self.lowercase)
        return make_batches(ids, self.pad_id, self.token_budget, self.max_batch)

    def encode(self, texts: Sequence[str], precision: str = "fp32",
               on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """L2-normalised float32 embeddings in input order."""
        import torch

        if not self.fast_path:
            emb = self.st.encode(list(texts), normalize_embeddings=True, show_progress_bar=False,
                                 convert_to_numpy=True)
            if on_batch:
                on_batch(len(texts))
            return np.asarray(emb, dtype=np.float32)
        set_threads(self.threads)
        backend = self.backend(precision)
        out: np.ndarray | None = None
        for batch in self.batches(texts):
            h = backend.token_states(batch)
            with torch.inference_mode():
                feats = self.pooling({"token_embeddings": h,
                                      "attention_mask": torch.from_numpy(batch.attention_mask)})
                emb = torch.nn.functional.normalize(feats["sentence_embedding"].float(), p=2, dim=1)
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[batch.index] = emb.numpy()
            if on_batch:
                on_batch(len(batch.index))
        assert out is not None
        return out

    def flops(self, texts: Sequence[str]) -> float:
        """FLOPs the transformer spends on these texts with this engine's batching (for GFLOP/s)."""
        cfg = self.transformer.config
        return sum(batch_flops(b, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers)
                   for b in self.batches(texts))

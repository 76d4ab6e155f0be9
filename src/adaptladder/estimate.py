"""Memory, time and cost estimator for full fine-tuning, LoRA, QLoRA, prompt tuning and inference.

Why another estimator: the common ones count weights, gradients and Adam states only, so they
are wrong wherever activations or the loss dominate (long sequences, big vocabularies, LoRA).
This one counts, per transformer layer and per token, every tensor autograd keeps for the
backward pass, following what PyTorch actually saves:

* a linear layer ``y = x W^T`` saves its input ``x`` only when ``W`` is trained (the input is
  needed for the weight gradient; the input gradient needs only ``W``, which is kept anyway).
  So LoRA/QLoRA/prompt tuning drop the inputs of frozen projections, but keep everything that
  non-linear ops need to pass the gradient on (norm inputs, attention q/k/v/output, the MLP
  activation inputs), plus the adapters' own inputs.
* memory-efficient attention (flash / SDPA kernels) saves q, k, v, the output and a log-sum-exp
  per head; the "math"/eager path also saves the (heads x seq x seq) probabilities, and on CPU
  it is the path taken whenever attention dropout is on.
* the causal-LM loss upcasts logits to fp32 and saves the log-softmax (4 bytes x vocab per
  token); its backward briefly holds two more such tensors.
* gradient checkpointing keeps only each layer's input and recomputes one layer at a time.

The peak is the larger of two moments: the start of the backward pass (weights + optimizer
states + all saved activations + the loss/backward working set) and the optimizer step
(weights + optimizer states + all gradients). Between them gradients grow while activations
are freed, so the sum of both - what simple calculators add up - overstates the peak.
``docs/estimator.md`` walks through the terms for 7B LoRA and QLoRA.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from adaptladder.errors import AdaptError

GIB = 1024**3
METHODS = ("full", "lora", "qlora", "prompt-tuning", "inference")
OPTIMIZERS = ("adamw", "adamw-8bit", "sgd")
TRAIN_DTYPES = ("bf16", "fp16", "fp32")
INFER_DTYPES = ("bf16", "fp16", "fp32", "int8", "nf4")
DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "nf4": 0.5}
NF4_BLOCK = 64  # bitsandbytes 4-bit block size: one absmax constant per 64 weights
NF4_DQ_BLOCK = 256  # double quantisation: absmax constants quantised to 8 bit in blocks of 256
ADAM8_BLOCK = 2048  # bitsandbytes 8-bit optimiser: one fp32 absmax per 2048 values per state

# Short names accepted for presets (case-insensitive).
ALIASES = {
    "minilm": "minilm-l6", "minilm-l6": "minilm-l6", "all-minilm-l6-v2": "minilm-l6",
    "smollm2": "smollm2-135m", "smollm2-135m": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m",
    "llama-7b": "7B", "llama-13b": "13B", "llama-70b": "70B", "llama-65b": "65B", "llama-3-8b": "8B",
}

# LoRA target aliases: the user may use any family's module names.
TARGET_ALIASES = {
    "q_proj": "q", "query": "q", "q": "q", "wq": "q",
    "k_proj": "k", "key": "k", "k": "k", "wk": "k",
    "v_proj": "v", "value": "v", "v": "v", "wv": "v",
    "o_proj": "o", "out_proj": "o", "dense": "o", "attention.output.dense": "o", "wo": "o",
    "gate_proj": "gate", "w1": "gate",
    "up_proj": "up", "fc1": "up", "intermediate.dense": "up", "c_fc": "up", "w3": "up",
    "down_proj": "down", "fc2": "down", "output.dense": "down", "w2": "down",
    "c_attn": "qkv", "qkv_proj": "qkv", "c_proj": "o",
}


# ----------------------------------------------------------------------------- model shape
@dataclass(frozen=True)
class ModelShape:
    """What the estimator needs to know about a transformer (Llama, GPT-2 or BERT family)."""

    name: str
    family: str  # llama | gpt2 | bert
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    head_dim: int = 0  # 0: hidden // n_heads
    max_positions: int = 0  # learned position embeddings (GPT-2, BERT)
    type_vocab: int = 0  # BERT token-type embeddings
    qkv_bias: bool = False  # Qwen2-style biases on q/k/v
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    source: str = ""

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden // self.n_heads

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.d_head

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.d_head

    def linears(self) -> list[tuple[str, int, int, bool, str]]:
        """Per-layer projections: (canonical name, in, out, has bias, input tensor key)."""
        h, i, q, kv = self.hidden, self.intermediate, self.q_dim, self.kv_dim
        if self.family == "llama":
            b = self.qkv_bias
            return [("q", h, q, b, "attn_in"), ("k", h, kv, b, "attn_in"), ("v", h, kv, b, "attn_in"),
                    ("o", q, h, False, "attn_out"), ("gate", h, i, False, "mlp_in"),
                    ("up", h, i, False, "mlp_in"), ("down", i, h, False, "mlp_mid")]
        if self.family == "gpt2":
            return [("qkv", h, 3 * h, True, "attn_in"), ("o", h, h, True, "attn_out"),
                    ("up", h, i, True, "mlp_in"), ("down", i, h, True, "mlp_mid")]
        return [("q", h, h, True, "attn_in"), ("k", h, h, True, "attn_in"), ("v", h, h, True, "attn_in"),
                ("o", h, h, True, "attn_out"), ("up", h, i, True, "mlp_in"), ("down", i, h, True, "mlp_mid")]

    def param_groups(self, head: str = "lm", num_labels: int = 2) -> dict[str, int]:
        """Parameter counts by group: embeddings, layer linears, norms, output head.

        ``head="lm"``: the LM head (nothing extra when tied to the embeddings); ``"classifier"``:
        a sequence-classification head (BERT: pooler + linear; decoders: a bias-free score layer).
        """
        h, L = self.hidden, self.n_layers
        lin = sum(a * b + (b if bias else 0) for _, a, b, bias, _ in self.linears())
        norm = h if self.family == "llama" else 2 * h
        emb = self.vocab * h + self.max_positions * h + self.type_vocab * h
        norms = L * 2 * norm + norm  # two per layer + the final one (BERT: the embedding LayerNorm)
        if head == "lm":
            out = 0 if self.tied_embeddings else self.vocab * h
        elif self.family == "bert":
            out = h * h + h + h * num_labels + num_labels
        else:
            out = h * num_labels
        return {"embeddings": emb, "layer_linears": L * lin, "norms": norms, "head": out}

    @property
    def n_params(self) -> int:
        """Parameters of the base model with its LM head (BERT: with its pooler)."""
        return sum(self.param_groups("lm" if self.family != "bert" else "classifier", 0).values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _yaml_data(name: str, env: str) -> dict[str, Any]:
    """A packaged table overlaid by the YAML file named in ``$env`` (deep merge, :mod:`adaptladder.packaged`)."""
    from adaptladder.packaged import load_table

    what = {"gpus.yaml": "GPU table", "model_presets.yaml": "model presets table"}.get(name, "table")
    return load_table(name, os.environ.get(env), what=what, fix=f"fix {env}")


@lru_cache(maxsize=4)
def _presets_cached(env_value: str | None) -> dict[str, Any]:
    return _yaml_data("model_presets.yaml", "ADAPTLADDER_MODEL_PRESETS")


def presets() -> dict[str, Any]:
    """Model shape presets (data/model_presets.yaml, overlaid by ``$ADAPTLADDER_MODEL_PRESETS``)."""
    return _presets_cached(os.environ.get("ADAPTLADDER_MODEL_PRESETS"))


@lru_cache(maxsize=4)
def _gpus_cached(env_value: str | None) -> dict[str, Any]:
    return _yaml_data("gpus.yaml", "ADAPTLADDER_GPUS")


def gpu_table() -> dict[str, Any]:
    """The accelerator table (data/gpus.yaml, overlaid by ``$ADAPTLADDER_GPUS``)."""
    return _gpus_cached(os.environ.get("ADAPTLADDER_GPUS"))


def _shape_from_preset(key: str, spec: dict[str, Any]) -> ModelShape:
    fields = {k: v for k, v in spec.items() if k in ModelShape.__dataclass_fields__}
    return ModelShape(name=key, **fields)


def shape_from_config(cfg: dict[str, Any], name: str = "config") -> ModelShape:
    """A :class:`ModelShape` from a Hugging Face ``config.json`` dict (Llama/Mistral/Qwen/Gemma, GPT-2, BERT)."""
    mt = str(cfg.get("model_type", "")).lower()

    def need(*keys: str) -> int:
        for k in keys:
            if cfg.get(k) is not None:
                return int(cfg[k])
        raise AdaptError(f"{name}: config.json has no {keys[0]!r}; pass a complete Hugging Face config.json.")

    if mt in {"gpt2", "gpt_neo", "gpt-neo"} or ("n_embd" in cfg and "n_layer" in cfg):
        h = need("n_embd", "hidden_size")
        return ModelShape(name=name, family="gpt2", n_layers=need("n_layer", "num_hidden_layers"), hidden=h,
                          n_heads=need("n_head", "num_attention_heads"),
                          n_kv_heads=need("n_head", "num_attention_heads"),
                          intermediate=int(cfg.get("n_inner") or 4 * h), vocab=need("vocab_size"),
                          tied_embeddings=bool(cfg.get("tie_word_embeddings", True)),
                          max_positions=need("n_positions", "max_position_embeddings"),
                          hidden_dropout=float(cfg.get("resid_pdrop", 0.1)),
                          attention_dropout=float(cfg.get("attn_pdrop", 0.1)), source=name)
    if mt in {"bert", "roberta", "xlm-roberta", "electra", "camembert"}:
        return ModelShape(name=name, family="bert", n_layers=need("num_hidden_layers"), hidden=need("hidden_size"),
                          n_heads=need("num_attention_heads"), n_kv_heads=need("num_attention_heads"),
                          intermediate=need("intermediate_size"), vocab=need("vocab_size"),
                          max_positions=need("max_position_embeddings"), type_vocab=int(cfg.get("type_vocab_size", 2)),
                          hidden_dropout=float(cfg.get("hidden_dropout_prob", 0.1)),
                          attention_dropout=float(cfg.get("attention_probs_dropout_prob", 0.1)), source=name)
    llama_like = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "phi3",
                  "granite", "smollm3", "internlm2", "yi", "deepseek"}
    if mt in llama_like or (not mt and "num_key_value_heads" in cfg):
        heads = need("num_attention_heads")
        return ModelShape(name=name, family="llama", n_layers=need("num_hidden_layers"), hidden=need("hidden_size"),
                          n_heads=heads, n_kv_heads=int(cfg.get("num_key_value_heads") or heads),
                          intermediate=need("intermediate_size"), vocab=need("vocab_size"),
                          tied_embeddings=bool(cfg.get("tie_word_embeddings", mt.startswith("gemma"))),
                          head_dim=int(cfg.get("head_dim") or 0),
                          qkv_bias=bool(cfg.get("attention_bias", mt == "qwen2")),
                          attention_dropout=float(cfg.get("attention_dropout", 0.0) or 0.0), source=name)
    raise AdaptError(f"{name}: model_type {mt or '(missing)'!r} is not supported; the estimator reads Llama-style "
                     "(llama, mistral, qwen2, qwen3, gemma), gpt2 and bert/roberta configs.")


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _gguf_metadata(path: Path) -> tuple[dict[str, Any], set[str]]:
    """Scalar metadata and tensor names of a GGUF file, skipping arrays (the tokenizer) cheaply.

    A small reader instead of ``gguf.GGUFReader``, which materialises every tokenizer string
    and takes minutes on a loaded machine for a 50k-token vocabulary.
    """
    import struct

    meta: dict[str, Any] = {}
    with path.open("rb") as f:
        def rd(fmt: str) -> Any:
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def rstr() -> str:
            return f.read(rd("<Q")).decode("utf-8", "replace")

        def value(t: int) -> Any:
            if t in _GGUF_SCALARS:
                return rd(_GGUF_SCALARS[t])
            if t == 8:
                return rstr()
            if t == 9:
                it, n = rd("<I"), rd("<Q")
                if it in _GGUF_SCALARS:
                    f.seek(n * struct.calcsize(_GGUF_SCALARS[it]), 1)
                else:
                    for _ in range(n):
                        value(it)
                return n  # arrays: only their length is kept
            raise ValueError(f"unknown GGUF value type {t}")

        if f.read(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        version = rd("<I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        n_tensors, n_kv = rd("<Q"), rd("<Q")
        for _ in range(n_kv):
            key = rstr()
            meta[key] = value(rd("<I"))
        names = set()
        for _ in range(n_tensors):
            names.add(rstr())
            f.seek(8 * rd("<I") + 4 + 8, 1)  # dims, type, offset
    return meta, names


def shape_from_gguf(path: Path) -> ModelShape:
    """A Llama-family shape from a GGUF file's metadata (e.g. the packaged SmolLM2)."""
    try:
        meta, tensors = _gguf_metadata(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise AdaptError(f"{path} could not be read as GGUF ({e}); pass a config.json instead.") from e
    arch = str(meta.get("general.architecture", ""))
    if arch not in {"llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3"}:
        raise AdaptError(f"{path}: GGUF architecture {arch or '(missing)'!r} is not supported; pass a config.json.")
    vocab = meta.get(f"{arch}.vocab_size") or meta.get("tokenizer.ggml.tokens")
    heads = meta.get(f"{arch}.attention.head_count")
    need = (meta.get(f"{arch}.block_count"), meta.get(f"{arch}.embedding_length"), heads, vocab,
            meta.get(f"{arch}.feed_forward_length"))
    if any(v is None for v in need):
        raise AdaptError(f"{path}: GGUF metadata lacks the model shape; pass a config.json.")
    return ModelShape(name=path.name, family="llama", n_layers=int(need[0]), hidden=int(need[1]), n_heads=int(heads),
                      n_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv") or heads),
                      intermediate=int(need[4]), vocab=int(vocab), tied_embeddings="output.weight" not in tensors,
                      head_dim=int(meta.get(f"{arch}.attention.key_length") or 0), qkv_bias=arch == "qwen2",
                      source=str(path))


def _read_config_file(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise AdaptError(f"{path} not found; pass a preset ({', '.join(presets())}) or a config.json path.")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AdaptError(f"{path} is not valid JSON ({e}); pass a Hugging Face config.json.") from e
    if not isinstance(data, dict):
        raise AdaptError(f"{path} must hold a JSON object (a Hugging Face config.json).")
    return data


def _fetch_hf_config(model_id: str) -> dict[str, Any]:
    """config.json for a Hub id: the local Hugging Face cache first, then one quick HTTP request."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model_id, "config.json")
        if isinstance(cached, str):
            return _read_config_file(Path(cached))
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        pass
    hint = "download its config.json and pass --model path/to/config.json"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise AdaptError(f"{model_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; {hint}.")
    import httpx

    url = f"{os.environ.get('HF_ENDPOINT', 'https://huggingface.co').rstrip('/')}/{model_id}/resolve/main/config.json"
    try:
        r = httpx.get(url, timeout=10, follow_redirects=True)
    except httpx.HTTPError as e:
        raise AdaptError(f"could not reach the Hugging Face Hub for {model_id!r} ({type(e).__name__}: offline?); "
                         f"{hint}.") from e
    if r.status_code != 200:
        raise AdaptError(f"the Hugging Face Hub answered {r.status_code} for {model_id!r}/config.json (unknown or "
                         f"gated model); {hint}.")
    try:
        data = r.json()
    except ValueError as e:
        raise AdaptError(f"the Hub's config.json for {model_id!r} is not JSON; {hint}.") from e
    if not isinstance(data, dict):
        raise AdaptError(f"the Hub's config.json for {model_id!r} is not a JSON object; {hint}.")
    return data


def resolve_model(model: str | dict[str, Any] | ModelShape) -> ModelShape:
    """A preset name (7B, 13B, 70B, smollm2, minilm...), a config.json path/dict, or a Hub id."""
    if isinstance(model, ModelShape):
        return model
    if isinstance(model, dict):
        if "family" in model and "n_layers" in model:
            return _shape_from_preset(str(model.get("name", "custom")), {k: v for k, v in model.items() if k != "name"})
        return shape_from_config(model, "config")
    if not isinstance(model, str) or not model.strip():
        raise AdaptError("--model is empty; pass a preset (7B, 13B, 70B, smollm2, minilm), a config.json or a Hub id.")
    table = presets()
    key = ALIASES.get(model.lower(), model)
    for name in table:
        if name.lower() == key.lower():
            return _shape_from_preset(name, table[name])
    path = Path(model).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return shape_from_gguf(path)
    if path.is_dir() and not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return shape_from_gguf(ggufs[0])
    if path.exists() or model.endswith(".json"):
        return shape_from_config(_read_config_file(path), path.name if path.is_file() else str(path))
    if model.count("/") == 1 and " " not in model:
        return shape_from_config(_fetch_hf_config(model), model)
    raise AdaptError(f"unknown model {model!r}; use a preset ({', '.join(table)}), a config.json path or a "
                     "Hugging Face id like org/name.")


# ----------------------------------------------------------------------------- settings
@dataclass
class Settings:
    """Everything besides the model that the estimate depends on (defaults are stated, not hidden)."""

    method: str = "lora"
    seq_len: int = 2048
    batch: int = 4
    dtype: str = "bf16"
    optimizer: str = "adamw"
    grad_checkpointing: bool | None = None  # None: on for QLoRA (peft's prepare_model_for_kbit_training), else off
    lora_r: int = 16
    lora_targets: tuple[str, ...] = ("q", "v")
    lora_dropout: float = 0.05
    double_quant: bool = True
    num_virtual_tokens: int = 20
    grad_accum: int = 1
    device: str = "cuda"  # cuda | cpu: CUDA context, kernels (flash attention) and optimizer implementation
    attention: str = "auto"  # auto | flash | eager
    head: str = "auto"  # auto | lm | classifier
    num_labels: int = 2
    dropout_on: bool = True
    adapter_dtype: str = "fp32"  # fp32: PEFT's default; bf16: the QLoRA repo's recipe (adapters/head/embeddings)
    malloc_retention: float | None = None  # CPU only: share of activations glibc keeps after freeing (table default)

    def resolved_ckpt(self) -> bool:
        return self.method == "qlora" if self.grad_checkpointing is None else bool(self.grad_checkpointing)


def _norm_targets(targets: str | list[str] | tuple[str, ...], shape: ModelShape) -> tuple[str, ...]:
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    names = [n for n, *_ in shape.linears()]
    out: list[str] = []
    for t in targets:
        if t in {"all-linear", "all"}:
            out.extend(names)
            continue
        canon = TARGET_ALIASES.get(t, TARGET_ALIASES.get(t.split(".")[-1], ""))
        if canon == "qkv" and "qkv" not in names:
            out.extend(["q", "k", "v"])
            continue
        if canon in {"q", "k", "v"} and "qkv" in names:
            canon = "qkv"
        if canon not in names:
            raise AdaptError(f"LoRA target {t!r} does not match a projection of this {shape.family} model; "
                             f"use some of {', '.join(names)} (or q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,"
                             "down_proj / all-linear).")
        out.append(canon)
    if not out:
        raise AdaptError("--lora-targets is empty; pass e.g. q_proj,v_proj or all-linear.")
    return tuple(dict.fromkeys(out))


def _validate(shape: ModelShape, s: Settings) -> None:
    if s.method not in METHODS:
        raise AdaptError(f"method {s.method!r} is not one of {', '.join(METHODS)}.")
    dts = INFER_DTYPES if s.method == "inference" else TRAIN_DTYPES
    if s.dtype not in dts:
        raise AdaptError(f"dtype {s.dtype!r} is not valid for {s.method}; use one of {', '.join(dts)}.")
    if s.optimizer not in OPTIMIZERS:
        raise AdaptError(f"optimizer {s.optimizer!r} is not one of {', '.join(OPTIMIZERS)}.")
    for label, v in (("seq_len", s.seq_len), ("batch", s.batch), ("lora_r", s.lora_r), ("grad_accum", s.grad_accum)):
        if not isinstance(v, int) or v < 1:
            raise AdaptError(f"{label} must be a positive integer, got {v!r}.")
    if s.adapter_dtype not in {"fp32", "bf16", "fp16"}:
        raise AdaptError(f"adapter dtype {s.adapter_dtype!r} must be fp32, bf16 or fp16.")
    if s.device not in {"cuda", "cpu"}:
        raise AdaptError(f"device {s.device!r} must be cuda or cpu.")
    if s.method == "qlora" and s.device != "cuda":
        raise AdaptError("QLoRA (bitsandbytes 4-bit) needs a CUDA GPU; estimate it with device cuda.")
    if s.attention not in {"auto", "flash", "eager"}:
        raise AdaptError(f"attention {s.attention!r} must be auto, flash or eager.")
    if shape.max_positions and s.seq_len + (s.num_virtual_tokens if s.method == "prompt-tuning" else 0) > \
            shape.max_positions:
        raise AdaptError(f"seq_len {s.seq_len} exceeds this model's {shape.max_positions} learned positions; "
                         "lower --seq-len.")


# ----------------------------------------------------------------------------- activations
def _layer_saved(shape: ModelShape, s: Settings, *, trainable_base: bool, lora: set[str], seq: int,
                 eager: bool, input_grad: bool = True) -> dict[str, float]:
    """Bytes autograd saves per token in one layer, keyed by tensor (a tensor saved twice counts once).

    ``trainable_base``: the layer's own weights are trained (full FT). ``lora``: projections with
    an adapter. ``input_grad``: the layer input needs a gradient (false for the first layer
    when the embeddings are frozen and no adapter sits before it).
    """
    a = 4.0 if s.dtype == "fp32" else 2.0
    h, i, H, kv, q = shape.hidden, shape.intermediate, shape.n_heads, shape.kv_dim, shape.q_dim
    hd = shape.hidden_dropout if s.dropout_on else 0.0
    ad = shape.attention_dropout if s.dropout_on else 0.0
    mask_b = 1.0 if s.device == "cuda" else 4.0  # dropout mask: bool on CUDA, an fp32 scale tensor on CPU
    adapter_b = DTYPE_BYTES[s.adapter_dtype]  # PEFT casts an adapter's input to the adapter's dtype
    saved: dict[str, float] = {}
    grad_flowing = {"v": input_grad}  # mutable flag: does the residual stream need a gradient yet

    def norm(in_key: str, out_key: str) -> None:
        if shape.family == "llama":  # RMSNorm upcasts to fp32: saves x (fp32) and 1/rms; y only if weight trains
            if grad_flowing["v"]:
                saved[in_key + "_fp32"] = 4 * h
                saved[in_key + "_rstd"] = 4
            if trainable_base:
                saved[out_key + "_pre"] = a * h
        elif grad_flowing["v"]:  # LayerNorm saves its input and mean/rstd
            saved[in_key] = a * h
            saved[in_key + "_stats"] = 8

    def linear_inputs(keys: tuple[str, ...]) -> None:
        for name, fan_in, _out, _b, key in shape.linears():
            if key not in keys:
                continue
            if trainable_base:
                saved[key] = a * fan_in
            if name in lora:
                copy = a != adapter_b or s.lora_dropout > 0
                if copy:
                    saved[f"lora_{name}_in"] = adapter_b * fan_in
                    if s.lora_dropout > 0 and grad_flowing["v"]:
                        saved[f"lora_{name}_mask"] = mask_b * fan_in
                else:
                    saved[key] = a * fan_in
                saved[f"lora_{name}_mid"] = adapter_b * s.lora_r
        if lora & {n for n, *_ in shape.linears() if _[-1] in keys}:
            grad_flowing["v"] = True

    def dropout(key: str, p: float, width: int) -> None:
        if p > 0 and grad_flowing["v"]:
            saved[key] = mask_b * width

    def attention(k_grad: bool) -> None:
        if not grad_flowing["v"]:
            return
        if eager:
            # math path: scaled q and k, fp32 softmax output, dropout mask and dropped probabilities, v;
            # keys/values are expanded to all heads (repeat_kv). q is kept only if k needs a gradient.
            if k_grad:
                saved["q"] = a * q
            saved["k"] = a * q
            saved["v"] = a * q
            saved["probs_fp32"] = 4.0 * H * seq
            if ad > 0:
                saved["probs_mask"] = mask_b * H * seq
                saved["probs_dropped"] = a * H * seq
            elif a != 4:
                saved["probs"] = a * H * seq
        else:  # flash / memory-efficient SDPA: q, k, v, output, log-sum-exp per head
            saved["q"] = a * q
            saved["k"] = a * (3 * shape.hidden - q if shape.family == "gpt2" else kv)
            saved["v"] = a * (shape.hidden if shape.family == "gpt2" else kv)
            saved["attn_out"] = a * q
            saved["lse"] = 4.0 * H

    k_grad = input_grad or trainable_base or bool(lora & {"k", "qkv"})
    if shape.family == "bert":  # post-LN: x -> attn -> dropout -> LN(x + .) -> MLP -> dropout -> LN(x + .)
        linear_inputs(("attn_in",))
        attention(k_grad)
        linear_inputs(("attn_out",))
        dropout("attn_drop", hd, h)
        norm("ln1_in", "mlp_in")
        linear_inputs(("mlp_in",))
        saved["gelu_in"] = a * i  # exact GELU saves its input
        linear_inputs(("mlp_mid",))
        dropout("mlp_drop", hd, h)
        norm("ln2_in", "out")
        return saved
    norm("attn_res", "attn_in")
    linear_inputs(("attn_in",))
    attention(k_grad)
    linear_inputs(("attn_out",))
    dropout("attn_drop", hd, h)
    grad_flowing["v"] = True
    norm("mlp_res", "mlp_in")
    linear_inputs(("mlp_in",))
    if shape.family == "llama":  # down(silu(gate) * up): silu saves gate, the product saves both factors
        saved["gate"] = a * i
        saved["silu_out"] = a * i
        saved["up"] = a * i
    else:  # GPT-2's tanh-GELU written out in Python saves about four tensors of the MLP width
        saved["gelu_terms"] = 4 * a * i
    linear_inputs(("mlp_mid",))
    dropout("mlp_drop", hd, h)
    return saved


@dataclass
class Estimate:
    """One estimate: parameters, memory terms (bytes), peak, fitting devices, time and cost."""

    model: dict[str, Any]
    settings: dict[str, Any]
    params: dict[str, int]
    memory: dict[str, Any]
    peak_bytes: float
    peak_phase: str
    fits: list[dict[str, Any]] = field(default_factory=list)
    compute: dict[str, Any] | None = None
    assumptions: list[str] = field(default_factory=list)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: bytes also given in GiB, rounded for reading."""
        def gib(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: gib(v) for k, v in x.items()}
            return round(x / GIB, 4) if isinstance(x, int | float) and not isinstance(x, bool) else x

        return {"model": self.model, "settings": self.settings, "params": self.params,
                "memory_gib": gib(self.memory), "peak_gib": round(self.peak_gib, 3), "peak_bytes": int(self.peak_bytes),
                "peak_phase": self.peak_phase, "fits": self.fits, "compute": self.compute,
                "assumptions": self.assumptions}


def _settings_from(method: str, kw: dict[str, Any]) -> Settings:
    unknown = set(kw) - set(Settings.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown estimate option(s): {', '.join(sorted(unknown))}")
    return Settings(method=method, **kw)


def estimate_training(model: str | dict[str, Any] | ModelShape, method: str = "lora", *,
                      examples: int | None = None, epochs: float = 1.0, tokens_per_example: int | None = None,
                      gpu: str | None = None, mfu: float | None = None, **kw: Any) -> Estimate:
    """Estimate peak memory (and, with ``examples``, time and cost) of fine-tuning ``model``.

    ``method``: full | lora | qlora | prompt-tuning | inference. Keyword options are the fields
    of :class:`Settings` (seq_len, batch, dtype, optimizer, grad_checkpointing, lora_r,
    lora_targets, device, ...). Raises :class:`AdaptError` on bad input.
    """
    shape = resolve_model(model)
    s = _settings_from(method, kw)
    s.lora_targets = _norm_targets(s.lora_targets, shape)
    _validate(shape, s)
    if s.method == "inference":
        return _estimate_inference(shape, s, gpu=gpu, mfu=mfu)
    est = _estimate_train_memory(shape, s)
    if examples is not None:
        est.compute = training_compute(shape, s, examples=examples, epochs=epochs,
                                       tokens_per_example=tokens_per_example, gpu=gpu, mfu=mfu,
                                       trainable=est.params["trainable"])
    return est


def _lora_params(shape: ModelShape, s: Settings) -> int:
    per = sum(s.lora_r * (fi + fo) for n, fi, fo, _b, _k in shape.linears() if n in s.lora_targets)
    return per * shape.n_layers


def _estimate_train_memory(shape: ModelShape, s: Settings) -> Estimate:
    m = s.method
    wb = DTYPE_BYTES[s.dtype]
    a = 4.0 if s.dtype == "fp32" else 2.0
    lm = s.head == "lm" or (s.head == "auto" and shape.family != "bert")
    groups = shape.param_groups("lm" if lm else "classifier", s.num_labels)
    n = sum(groups.values())
    head_params = 0 if lm else groups["head"]  # a new classification head is always trained
    ckpt = s.resolved_ckpt()
    seq = s.seq_len + (s.num_virtual_tokens if m == "prompt-tuning" else 0)
    tokens = s.batch * seq
    notes: list[str] = []

    # ---- parameters, weights, gradients, optimizer
    weights: dict[str, float] = {}
    if m == "full":
        trainable = n
        weights[s.dtype] = wb * n
        grad_b = wb
        master = 4.0 * n if s.dtype != "fp32" else 0.0
        if master:
            notes.append("full FT in bf16/fp16 keeps fp32 master weights (4 bytes/param) for the optimizer update")
    else:
        master = 0.0
        grad_b = DTYPE_BYTES[s.adapter_dtype]
        if m in {"lora", "qlora"}:
            trainable = _lora_params(shape, s) + head_params
        else:
            trainable = s.num_virtual_tokens * shape.hidden + head_params
        if m == "qlora":
            nq = groups["layer_linears"]
            weights["nf4"] = 0.5 * nq
            consts = (nq / NF4_BLOCK) * (1 + 4 / NF4_DQ_BLOCK) if s.double_quant else nq / NF4_BLOCK * 4
            weights["nf4_quant_constants"] = consts
            rest = n - nq - head_params
            if s.adapter_dtype == "fp32":
                weights["fp32 (embeddings, head, norms)"] = 4.0 * rest
            else:
                weights["bf16 (embeddings, head, norms)"] = 2.0 * rest
            notes.append("QLoRA: layer projections in NF4 (0.5 byte) with one absmax per 64 weights "
                         + ("double-quantised to 8 bit (+ fp32 per 256 blocks)" if s.double_quant else "in fp32")
                         + "; the rest (embeddings, head, norms) stays unquantised"
                         + (" in fp32 (peft's prepare_model_for_kbit_training upcasts it)"
                            if s.adapter_dtype == "fp32" else " in bf16"))
        else:
            weights[s.dtype] = wb * (n - head_params)
        weights[f"{s.adapter_dtype} (trainable)"] = grad_b * trainable
    if s.optimizer == "adamw":
        opt = 8.0 * trainable
    elif s.optimizer == "adamw-8bit":
        opt = 2.0 * trainable + 2 * 4.0 * trainable / ADAM8_BLOCK
    else:
        opt = 4.0 * trainable
        notes.append("sgd counts one fp32 momentum buffer per trainable parameter")
    grads = grad_b * trainable

    # ---- activations
    trainable_base = m == "full"
    lora = set(s.lora_targets) if m in {"lora", "qlora"} else set()
    eager = s.attention == "eager" or (s.attention == "auto" and s.device == "cpu"
                                       and shape.attention_dropout > 0 and s.dropout_on)
    per_layer = _layer_saved(shape, s, trainable_base=trainable_base, lora=lora, seq=seq, eager=eager)
    layer_tok = sum(per_layer.values())
    first_input_grad = m in {"full", "prompt-tuning"} or ckpt
    first = _layer_saved(shape, s, trainable_base=trainable_base, lora=lora, seq=seq, eager=eager,
                         input_grad=first_input_grad)
    first_tok = sum(first.values())
    h, V = shape.hidden, shape.vocab

    # model-level saved tensors outside the layers (per token)
    outer: dict[str, float] = {}
    if shape.family == "llama":
        outer["rope_cos_sin"] = 2 * a * shape.d_head / s.batch  # one (1, seq, d) pair shared by all layers
        outer["final_norm"] = (4 * h + 4) + (a * h if trainable_base else 0)
    elif shape.family == "gpt2":
        outer["final_norm"] = a * h + 8
    else:
        outer["embedding_norm"] = (a * h + 8) if trainable_base or m == "prompt-tuning" else 0
        if trainable_base and shape.hidden_dropout > 0 and s.dropout_on:
            outer["embedding_dropout"] = (1.0 if s.device == "cuda" else 4.0) * h
    if trainable_base:
        outer["token_ids"] = 8.0
    if lm:
        head_trainable = trainable_base
        if head_trainable:
            outer["head_in"] = a * h
        head_b = 4.0 if m == "qlora" and s.adapter_dtype == "fp32" else a  # an upcast head gives fp32 logits
        outer["log_softmax_fp32"] = 4.0 * V
        loss_work = max(8.0 * V, head_b * V + (4.0 * V if head_b < 4 else 0.0))
        notes.append("causal-LM loss: logits upcast to fp32, log-softmax saved (4 bytes x vocab per token); "
                     "its backward briefly holds two more such tensors")
    else:
        loss_work = 0.0
    outer_tok = sum(outer.values())

    # QLoRA with peft's kbit preparation upcasts the embeddings (and norms) to fp32, so the
    # residual stream between layers is fp32: 4 bytes per checkpointed layer input (measured on
    # an H200, BENCHMARKS.md "Estimator on CUDA")
    a_res = 4.0 if m == "qlora" and s.adapter_dtype == "fp32" else a
    if ckpt:
        i_ = shape.intermediate
        saved_layers = shape.n_layers * a_res * h * tokens
        recompute = layer_tok * tokens
        saved_total = saved_layers + outer_tok * tokens
        act_detail = {"checkpointed_layer_inputs": saved_layers, "outside_layers": outer_tok * tokens}
    else:
        i_ = shape.intermediate
        saved_layers = (layer_tok * (shape.n_layers - 1) + first_tok) * tokens
        recompute = 0.0
        saved_total = saved_layers + outer_tok * tokens
        act_detail = {"layers": saved_layers, "outside_layers": outer_tok * tokens}
    # working set while one layer runs backward: the residual-stream gradient and the MLP gradients
    gated = 3 if shape.family == "llama" else 2
    bwd_work = (2 * h + gated * i_) * a * tokens
    if eager:
        bwd_work += 2 * 4.0 * shape.n_heads * seq * tokens
    working = max(loss_work * tokens, recompute + bwd_work)
    act_detail["backward_working_set"] = working

    # ---- other transients
    largest_trainable = 0.0
    if m == "full":
        largest_trainable = max(shape.vocab * h, shape.hidden * shape.intermediate)
    elif m != "prompt-tuning":
        largest_trainable = max(s.lora_r * max(fi, fo) for nme, fi, fo, _b, _k in shape.linears()
                                if nme in s.lora_targets)
    else:
        largest_trainable = trainable
    if s.device == "cpu" and s.optimizer == "adamw":
        opt_work = 4.0 * largest_trainable  # single-tensor AdamW: one temporary (denominator) per parameter
    else:
        opt_work = 0.0  # fused AdamW (CUDA) / bitsandbytes kernels update in place
    dequant = 0.0
    if m == "qlora":
        dequant = 2.0 * max(fi * fo for _n, fi, fo, _b, _k in shape.linears())  # one layer dequantised to bf16
    head_grad = 0.0
    if m == "full":
        head_grad = grad_b * shape.vocab * h if lm else 0.0

    static = sum(weights.values()) + master + opt
    if s.grad_accum > 1:
        phase_a = static + grads + saved_total + working + dequant
    else:
        phase_a = static + head_grad + saved_total + working + dequant
    phase_b = static + grads + opt_work
    ov = gpu_table()["overhead"][s.device]
    retention = float(s.malloc_retention if s.malloc_retention is not None else ov.get("activation_retention", 0.0))
    retained = retention * saved_total
    phase_a += retained  # RSS only: retained blocks can be reused by the gradients later
    peak_tensors = max(phase_a, phase_b)
    overhead = ov["fixed_gib"] * GIB + ov["fraction"] * peak_tensors
    peak = peak_tensors + overhead
    phase = "backward start (activations)" if phase_a >= phase_b else "optimizer step (gradients)"

    memory = {
        "weights": weights,
        "gradients": grads,
        "optimizer": {"states": opt, "fp32_master_weights": master},
        "activations": {"saved": saved_total, **act_detail, "per_token_per_layer": layer_tok},
        "transients": {"optimizer_step": opt_work, "dequantised_layer": dequant, "first_head_gradient": head_grad},
        "overhead": overhead,
        "allocator_retention": retained,
        "phase_backward_start": phase_a + overhead,
        "phase_optimizer_step": phase_b + overhead,
        "sum_of_all_terms": static + grads + saved_total + working + opt_work + dequant + head_grad + retained
        + overhead,
    }
    if ckpt:
        notes.append("gradient checkpointing: each layer keeps only its input; one layer is recomputed at a time")
    if eager:
        notes.append("attention via the math/eager path (saves heads x seq x seq probabilities): "
                     + ("CPU SDPA falls back to it when attention dropout is on" if s.attention == "auto" else
                        "as requested"))
    notes.append(f"overhead: {ov['fixed_gib']} GiB fixed + {ov['fraction']:.0%} of tensors "
                 f"({s.device}; data/gpus.yaml)")
    if retained:
        notes.append(f"CPU: glibc malloc keeps memory freed during the forward pass; {retention:.0%} of the saved "
                     "activations added (0 with jemalloc or MALLOC_MMAP_THRESHOLD_=131072)")
    if s.grad_accum > 1:
        notes.append("gradient accumulation keeps gradients alive during the forward pass")
    settings = asdict(s)
    settings["grad_checkpointing"] = ckpt
    settings["attention"] = "eager" if eager else "flash"
    settings["head"] = "lm" if lm else "classifier"
    return Estimate(model=shape.to_dict() | {"n_params": n}, settings=settings,
                    params={"total": n + (trainable - head_params if m != "full" else 0), "trainable": trainable,
                            "base": n},
                    memory=memory, peak_bytes=peak, peak_phase=phase, fits=fitting_gpus(peak),
                    assumptions=notes)


def rung_estimate(model: str | dict[str, Any] | ModelShape, method: str = "qlora", **kw: Any) -> dict[str, Any]:
    """A compact, JSON-ready estimate for a rung that cannot run here (e.g. QLoRA without CUDA).

    Returns ``{"method", "model", "peak_gib", "smallest_gpu", "fits", "breakdown_gib", "settings",
    "assumptions"}``; pass the rung's own settings (seq_len, batch, lora_r, lora_targets, head,
    num_labels...). Never raises for an unknown model: returns ``{"error": ...}`` instead, so a
    skipped rung's report is not lost to an estimate problem.
    """
    try:
        est = estimate_training(model, method, **kw)
    except AdaptError as e:
        return {"method": method, "model": str(model), "error": str(e)}
    d = est.to_dict()
    fits = sorted((f for f in est.fits if f["fits"]), key=lambda f: f["memory_gib"])
    mem = d["memory_gib"]
    breakdown = {"weights": round(sum(mem["weights"].values()), 3), "gradients": mem["gradients"],
                 "optimizer": round(mem["optimizer"]["states"] + mem["optimizer"]["fp32_master_weights"], 3),
                 "activations": mem["activations"]["saved"],
                 "working_set": mem["activations"]["backward_working_set"], "overhead": mem["overhead"]}
    out = {"method": method, "model": est.model["name"], "peak_gib": round(est.peak_gib, 2),
           "peak_bytes": est.peak_bytes, "smallest_gpu": fits[0]["gpu"] if fits else None,
           "fits": [f["gpu"] for f in fits], "breakdown_gib": breakdown, "params": est.params,
           "settings": d["settings"], "assumptions": est.assumptions}
    if est.compute:  # ``examples=`` given: hours and dollars on the default (or ``gpu=``) device
        out["compute"] = {k: est.compute.get(k) for k in ("gpu", "hours", "cost_usd")}
    return out


def fitting_gpus(peak_bytes: float) -> list[dict[str, Any]]:
    """Every accelerator in the table with its memory and whether ``peak_bytes`` fits on one."""
    out = []
    for name, spec in gpu_table()["devices"].items():
        if spec.get("kind") != "cuda":
            continue
        mem = float(spec["memory_gib"]) * GIB
        out.append({"gpu": name, "memory_gib": spec["memory_gib"], "fits": peak_bytes <= mem,
                    "headroom_gib": round((mem - peak_bytes) / GIB, 2)})
    return out


# ----------------------------------------------------------------------------- time and money
def _device_spec(gpu: str | None) -> tuple[str, dict[str, Any]]:
    table = gpu_table()
    name = gpu or table["default_training_gpu"]
    devices = table["devices"]
    if name not in devices:
        raise AdaptError(f"unknown GPU {name!r}; use one of {', '.join(devices)} (or add it to data/gpus.yaml).")
    return name, devices[name]


def _price(gpu: str) -> float | None:
    from adaptladder.pricing import load_prices

    table = load_prices()["compute_per_hour_usd"]
    return float(table[gpu]) if gpu in table else None


def training_flops(shape: ModelShape, s: Settings, tokens: float, trainable: int) -> dict[str, float]:
    """FLOPs to train on ``tokens`` tokens: matmuls (2 per weight forward, 2 input-grad, 2 weight-grad) + attention."""
    lm = s.head == "lm" or (s.head == "auto" and shape.family != "bert")
    groups = shape.param_groups("lm" if lm else "classifier", s.num_labels)
    # embeddings are lookups (no FLOPs); an LM head is a (vocab x hidden) matmul even when tied
    n_mm = groups["layer_linears"] + (shape.vocab * shape.hidden if lm else groups["head"])
    seq = s.seq_len + (s.num_virtual_tokens if s.method == "prompt-tuning" else 0)
    causal = shape.family != "bert"
    attn_fwd = 4 * shape.n_layers * seq * shape.q_dim * (0.5 if causal else 1.0)  # QK^T and PV per token
    fwd = 2 * n_mm + attn_fwd
    if s.method == "full":
        per_tok = 3 * fwd  # forward + input gradients + weight gradients
    else:  # frozen weights: forward + input gradients only, plus the adapters' own 6 FLOPs/param
        per_tok = 2 * 2 * n_mm + 3 * attn_fwd + 6 * trainable
    if s.resolved_ckpt():
        per_tok += fwd  # one extra forward to recompute activations
    return {"per_token": per_tok, "total": per_tok * tokens, "matmul_params": n_mm,
            "per_token_over_n": per_tok / shape.n_params}


def training_compute(shape: ModelShape, s: Settings, *, examples: int, epochs: float = 1.0,
                     tokens_per_example: int | None = None, gpu: str | None = None, mfu: float | None = None,
                     trainable: int = 0) -> dict[str, Any]:
    """Hours and dollars to train: FLOPs / (peak x utilisation), x $/hour from prices.yaml."""
    if examples < 1 or epochs <= 0:
        raise AdaptError("--examples must be >= 1 and --epochs > 0.")
    tpe = tokens_per_example or s.seq_len
    if tpe < 1:
        raise AdaptError("--tokens-per-example must be >= 1.")
    name, spec = _device_spec(gpu)
    table = gpu_table()
    util = float(mfu if mfu is not None else table["mfu"])
    if not 0 < util <= 1:
        raise AdaptError(f"--mfu {util} must be in (0, 1].")
    tokens = examples * epochs * (tpe + (s.num_virtual_tokens if s.method == "prompt-tuning" else 0))
    fl = training_flops(shape, s, tokens, trainable)
    peak_key = {"bf16": "bf16_tflops", "fp16": "fp16_tflops", "fp32": "fp32_tflops"}[s.dtype]
    peak = float(spec[peak_key]) * 1e12
    slow = float(table.get("qlora_dequant_slowdown", 1.0)) if s.method == "qlora" else 1.0
    hours = fl["total"] / (peak * util) / 3600 * slow
    rate = _price(name)
    return {"gpu": name, "tokens": tokens, "flops": fl["total"], "flops_per_token": fl["per_token"],
            "flops_per_token_over_params": round(fl["per_token_over_n"], 3), "peak_tflops": spec[peak_key],
            "mfu": util, "slowdown": slow, "hours": hours, "usd_per_hour": rate,
            "cost_usd": None if rate is None else hours * rate}


def _estimate_inference(shape: ModelShape, s: Settings, *, gpu: str | None, mfu: float | None) -> Estimate:
    wb = DTYPE_BYTES[s.dtype]
    a = 2.0 if s.dtype != "fp32" else 4.0
    n = shape.n_params
    groups = shape.param_groups()
    weights: dict[str, float] = {}
    if s.dtype in {"int8", "nf4"}:
        nq = groups["layer_linears"]
        weights[s.dtype] = wb * nq
        weights["quant_constants"] = (nq / NF4_BLOCK) * (1 + 4 / NF4_DQ_BLOCK) if s.dtype == "nf4" else 4.0 * nq / 4096
        weights["bf16 (embeddings, head, norms)"] = 2.0 * (n - nq)
    else:
        weights[s.dtype] = wb * n
    tokens = s.batch * s.seq_len
    kv_cache = 2 * shape.n_layers * shape.kv_dim * a * tokens if shape.family != "bert" else 0.0
    work = (2 * shape.hidden + 2 * shape.intermediate + shape.q_dim + 2 * shape.kv_dim) * a * tokens
    logits = 4.0 * shape.vocab * s.batch if shape.family != "bert" else 0.0  # last position only when generating
    tensors = sum(weights.values()) + kv_cache + work + logits
    ov = gpu_table()["overhead"][s.device]
    overhead = ov["fixed_gib"] * GIB + ov["fraction"] * tensors
    peak = tensors + overhead
    memory = {"weights": weights, "kv_cache": kv_cache, "activations": {"working_set": work, "logits": logits},
              "overhead": overhead}
    settings = asdict(s)
    notes = ["inference: weights + KV cache for batch x seq_len tokens + one layer's working set",
             f"overhead: {ov['fixed_gib']} GiB fixed + {ov['fraction']:.0%} of tensors ({s.device})"]
    return Estimate(model=shape.to_dict() | {"n_params": n}, settings=settings,
                    params={"total": n, "trainable": 0, "base": n}, memory=memory, peak_bytes=peak,
                    peak_phase="generation", fits=fitting_gpus(peak), assumptions=notes)


def inference_cost(model: str | dict[str, Any] | ModelShape, *, prompt_tokens: int = 500, output_tokens: int = 50,
                   gpu: str | None = None, dtype: str = "bf16", concurrency: int = 16, mfu: float | None = None,
                   api_models: list[str] | None = None) -> dict[str, Any]:
    """$ per 1,000 requests: self-hosted (prefill compute-bound, decode bandwidth-bound) vs API prices."""
    from adaptladder.pricing import api_price, load_prices

    shape = resolve_model(model)
    if prompt_tokens < 1 or output_tokens < 0 or concurrency < 1:
        raise AdaptError("--prompt-tokens and --concurrency must be >= 1, --output-tokens >= 0.")
    name, spec = _device_spec(gpu)
    util = float(mfu if mfu is not None else gpu_table()["mfu"])
    n = shape.n_params
    est = estimate_training(shape, "inference", dtype=dtype, seq_len=prompt_tokens + output_tokens,
                            batch=concurrency, device="cuda" if spec.get("kind") == "cuda" else "cpu")
    weight_bytes = sum(est.memory["weights"].values())
    peak_key = "fp32_tflops" if dtype == "fp32" else "bf16_tflops"
    flops_s = float(spec[peak_key]) * 1e12 * util
    bw = float(spec["bandwidth_gbs"]) * 1e9 * 0.8  # ~80% of peak bandwidth is reachable
    prefill_s = 2 * n * prompt_tokens / flops_s
    kv_per_req = est.memory["kv_cache"] / concurrency
    step_s = max((weight_bytes + concurrency * kv_per_req / 2) / bw, 2 * n * concurrency / flops_s)
    decode_s = output_tokens * step_s / concurrency
    sec_per_req = prefill_s + decode_s
    rate = _price(name)
    self_hosted = None if rate is None else sec_per_req * 1000 / 3600 * rate
    models = api_models or list(load_prices()["api_per_million_tokens"])
    api = {}
    for m in models:
        p = api_price(m)
        if p is None:
            raise AdaptError(f"no API price for {m!r}; add it under api_per_million_tokens in prices.yaml.")
        api[m] = (prompt_tokens * p["input"] + output_tokens * p["output"]) * 1000 / 1e6
    return {"model": shape.name, "gpu": name, "dtype": dtype, "prompt_tokens": prompt_tokens,
            "output_tokens": output_tokens, "concurrency": concurrency, "seconds_per_request": sec_per_req,
            "usd_per_hour": rate, "self_hosted_usd_per_1k": self_hosted, "api_usd_per_1k": api,
            "fits": est.peak_bytes <= float(spec["memory_gib"]) * GIB, "peak_gib": round(est.peak_gib, 2),
            "assumptions": [f"prefill at {util:.0%} of peak {peak_key}; decode limited by reading the weights once "
                            f"per step at 80% of {spec['bandwidth_gbs']} GB/s, shared by {concurrency} concurrent "
                            "requests; GPU billed only while busy"]}


def comparison_table(models: tuple[str, ...] = ("7B", "13B", "70B"),
                     methods: tuple[str, ...] = ("full", "lora", "qlora", "prompt-tuning"),
                     **kw: Any) -> list[Estimate]:
    """The classic size x method grid, same settings for every cell."""
    return [estimate_training(m, meth, **kw) for m in models for meth in methods]


def fmt_gib(x: float) -> str:
    g = x / GIB
    return f"{g:,.1f}" if g >= 10 else f"{g:,.2f}" if g >= 0.01 else f"{g:.4f}"


def human_params(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.{2 if n / div < 10 else 1}f}{unit}"
    return str(int(n))


__all__ = ["METHODS", "Estimate", "ModelShape", "Settings", "comparison_table", "estimate_training",
           "fitting_gpus", "gpu_table", "inference_cost", "presets", "resolve_model", "rung_estimate",
           "shape_from_config", "shape_from_gguf",
           "training_compute", "training_flops"]

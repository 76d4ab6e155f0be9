"""LM precision: bf16 weights where the hardware computes bf16 natively, kept only when faithful.

bf16 matmuls run in hardware on CPUs with AVX512-BF16 or AMX (2.6x fp32's rate measured on an
AVX512-BF16 EPYC) and on CUDA GPUs from Ampere on; elsewhere torch emulates them, slower than
fp32, so ``auto`` never picks bf16 there. Where it is native, bf16 is kept only when it passes a
fidelity rule measured on the task's own validation data:
  - label scoring (classification): >= 99% identical label choices;
  - generation: the bf16 outputs' primary metric lies inside the fp32 outputs' 95% bootstrap CI
    on the same validation pairs (the share of identical outputs is reported beside it).
The record says which precision was used and why (``precision`` in the rung's info).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: the settings' values
PRECISIONS = ("auto", "fp32", "bf16")
#: torch dtype names the HF backend takes
DTYPE = {"fp32": "float32", "bf16": "bfloat16"}
#: label scoring: the least share of identical label choices bf16 must reach
MIN_IDENTICAL_CHOICES = 0.99
#: validation pairs generated twice (fp32 and bf16) for the generation rule; texts scored for labels
GENERATION_CHECK_PAIRS = 16
CHOICE_CHECK_TEXTS = 100


def check_setting(value: Any, rung: str) -> str:
    from adaptladder.errors import AdaptError

    if value not in PRECISIONS:
        raise AdaptError(f"precision={value!r} is not valid for the {rung} rung: use auto, fp32 or bf16.")
    return str(value)


def native_bf16(device: str = "cpu") -> tuple[bool, str]:
    """Whether bf16 runs natively on ``device``, and the reason in words."""
    if str(device).startswith("cuda"):
        try:
            import torch

            ok = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        except Exception:  # pragma: no cover - broken CUDA install
            ok = False
        return ok, ("the GPU computes bf16 natively" if ok else "this GPU has no native bf16")
    from adaptladder.encode import cpu_flags, cpu_has_native_bf16

    if cpu_has_native_bf16():
        flags = [f for f in cpu_flags() if "bf16" in f or "amx" in f]
        return True, f"the CPU computes bf16 natively ({', '.join(flags) or 'oneDNN bf16'})"
    return False, "this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 would be emulated, slower than fp32"


def sample_rows(n_rows: int, n: int, seed: int) -> list[int]:
    """A seeded sample of ``n`` row indices (sorted), or every row."""
    if n_rows <= n:
        return list(range(n_rows))
    return sorted(np.random.default_rng(seed).choice(n_rows, n, replace=False).tolist())


def decide(setting: str, device: str, check: Callable[[], dict[str, Any]] | None) -> dict[str, Any]:
    """The precision record: ``setting`` fp32/bf16 is obeyed; ``auto`` takes bf16 only where it is
    native and ``check()`` (the fidelity measurement; None: nothing to measure on) passes."""
    native, why = native_bf16(device)
    rec: dict[str, Any] = {"requested": setting, "native_bf16": native, "hardware": why}
    if setting in ("fp32", "bf16"):
        rec.update(used=setting, reason="set" + ("" if setting == "fp32" or native else
                                                 " (emulated here: slower than fp32)"))
        return rec
    if not native:
        rec.update(used="fp32", reason=why)
        return rec
    if check is None:
        rec.update(used="fp32", reason="no validation data to check bf16's fidelity on")
        return rec
    fid = check()
    rec["fidelity"] = fid
    rec.update(used="bf16" if fid["passed"] else "fp32",
               reason=("bf16 passed the fidelity rule" if fid["passed"] else "bf16 failed the fidelity rule"))
    return rec


def choice_fidelity(fp32_choices: Sequence[int], bf16_choices: Sequence[int]) -> dict[str, Any]:
    """Label scoring's rule: >= 99% identical label choices on the same validation texts."""
    a, b = np.asarray(fp32_choices), np.asarray(bf16_choices)
    share = float((a == b).mean()) if len(a) else 0.0
    return {"rule": f"identical label choices >= {MIN_IDENTICAL_CHOICES:.0%}", "n": len(a),
            "identical_share": round(share, 4), "passed": bool(len(a) and share >= MIN_IDENTICAL_CHOICES)}


def generation_fidelity(fp32_outputs: Sequence[str], bf16_outputs: Sequence[str], fp32_scores: Sequence[float],
                        bf16_scores: Sequence[float], metric: str, seed: int = 0) -> dict[str, Any]:
    """Generation's rule: bf16's mean ``metric`` inside fp32's 95% bootstrap CI on the same pairs."""
    from adaptladder.generation.metrics import summarise

    s32 = summarise(fp32_scores, seed=seed)
    m16 = float(np.mean(bf16_scores)) if len(bf16_scores) else float("nan")
    lo, hi = s32["ci"]
    same = sum(a == b for a, b in zip(fp32_outputs, bf16_outputs, strict=True))
    return {"rule": f"bf16's mean {metric} inside fp32's 95% CI on the same validation pairs", "metric": metric,
            "n": len(fp32_outputs), "fp32_mean": round(s32["mean"], 4), "fp32_ci": [round(lo, 4), round(hi, 4)],
            "bf16_mean": round(m16, 4), "identical_share": round(same / max(1, len(fp32_outputs)), 4),
            "passed": bool(lo - 1e-12 <= m16 <= hi + 1e-12)}


def training_precision(setting: str, device: str) -> tuple[str, str]:
    """``(used, why)`` for training: bf16 autocast of the forward pass where the hardware computes bf16
    natively (master weights and optimizer stay fp32, as ``Trainer(bf16=True)`` does), else fp32. No
    fidelity check: autocast is the standard mixed-precision recipe, and the rung's validation score
    is its evidence either way."""
    from adaptladder.errors import AdaptError

    if setting not in PRECISIONS:
        raise AdaptError(f"precision={setting!r} is not valid for training: use auto, fp32 or bf16.")
    native, why = native_bf16(device)
    if setting != "auto":
        return setting, "set" + ("" if setting == "fp32" or native else " (emulated here: slower than fp32)")
    return ("bf16" if native else "fp32"), why

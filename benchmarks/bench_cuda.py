"""CUDA checks: the memory/time estimator against measured training steps, and the fine-tuning
rungs (LoRA, full FT, QLoRA) running end to end on a GPU.

Needs a CUDA machine (and bitsandbytes for QLoRA); on a machine without one it says so and exits 2.
Models are built from their published shapes with random weights (memory and step time do not
depend on the weights' values), so nothing is downloaded.

    PYTHONPATH=src python benchmarks/bench_cuda.py memory --out results.json   # estimator vs measured
    PYTHONPATH=src python benchmarks/bench_cuda.py rungs --assets DIR          # rungs on CUDA

``memory``: for each configuration, three optimiser steps (the first allocates AdamW's states, so
both peak moments the estimator models occur) on random token ids; measured
``torch.cuda.max_memory_allocated`` (live tensors) is compared with the estimator's tensor peak
(its peak less the fixed CUDA overhead), and ``max_memory_reserved`` + the CUDA context with its
whole peak. The third step is timed and compared with the estimator's time for the same tokens on
an H200 (whose time model assumes 40% model-FLOPs utilisation).

``rungs``: fit, predict, save, reload and re-predict with ``lora``, ``full-ft`` (MiniLM shape) and
``qlora``, ``lora`` (SmolLM2-135M shape), on a small synthetic two-class task.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

GIB = 1024**3

LLAMA_1B = dict(family="llama", name="llama-3.2-1b-shape", n_layers=16, hidden=2048, n_heads=32, n_kv_heads=8,
                intermediate=8192, vocab=128256, tied_embeddings=True)
# (shape, method, batch, seq, grad_checkpointing, lora r, lora targets)
CONFIGS: list[tuple[str, str, int, int, bool, int, str]] = [
    ("1B", "full", 4, 512, False, 0, ""),
    ("1B", "lora", 8, 512, False, 8, "q_proj,v_proj"),
    ("1B", "lora", 8, 1024, True, 8, "q_proj,v_proj"),
    ("1B", "qlora", 8, 512, True, 16, "all-linear"),
    ("7B", "lora", 4, 1024, False, 8, "q_proj,v_proj"),
    ("7B", "lora", 4, 1024, True, 8, "q_proj,v_proj"),
    ("7B", "qlora", 4, 1024, True, 16, "all-linear"),
]


def _shape(name: str) -> dict[str, Any]:
    if name == "1B":
        return dict(LLAMA_1B)
    from adaptladder.estimate import presets

    return {**presets()[name], "name": name}


def _hf_config(shape: dict[str, Any]) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"],
                       intermediate_size=shape["intermediate"], num_hidden_layers=shape["n_layers"],
                       num_attention_heads=shape["n_heads"], num_key_value_heads=shape["n_kv_heads"],
                       tie_word_embeddings=bool(shape.get("tied_embeddings")), max_position_embeddings=4096,
                       attention_dropout=0.0, use_cache=False)


def _free() -> None:
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def _build(shape: dict[str, Any], method: str, ckpt: bool, r: int, targets: str, tmp: Path) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    cfg = _hf_config(shape)
    if method == "qlora":
        from peft import prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        path = tmp / f"rand-{shape['name']}"
        if not (path / "config.json").is_file():
            with torch.device("cuda"):
                m = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
            m.save_pretrained(path)
            del m
            _free()
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(path, quantization_config=bnb, device_map={"": 0},
                                                     dtype=torch.bfloat16)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        # full FT: fp32 weights + bf16 autocast (what Trainer(bf16=True) does); LoRA: bf16 base
        dtype = torch.float32 if method == "full" else torch.bfloat16
        with torch.device("cuda"):
            model = LlamaForCausalLM._from_config(cfg, dtype=dtype)
        if ckpt:
            model.gradient_checkpointing_enable()
    if method in ("lora", "qlora"):
        tl: Any = "all-linear" if targets == "all-linear" else targets.split(",")
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=tl, lora_dropout=0.05,
                                                 task_type="CAUSAL_LM"))
        if ckpt and method == "lora":
            model.enable_input_require_grads()
    model.train()
    return model


def measure(spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    import torch

    shape = _shape(spec["model"])
    _free()
    base_alloc = torch.cuda.memory_allocated()
    model = _build(shape, spec["method"], spec["ckpt"], spec["r"], spec["targets"], tmp)
    if spec["method"] == "qlora":
        _free()  # loading leaves conversion buffers behind
    torch.cuda.reset_peak_memory_stats()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    b, s = spec["batch"], spec["seq"]
    times = []
    for _ in range(3):
        ids = torch.randint(1, shape["vocab"], (b, s), generator=g, device="cuda")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=spec["method"] == "full"):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        del loss
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    out = {"alloc_peak_gib": (torch.cuda.max_memory_allocated() - base_alloc) / GIB,
           "reserved_peak_gib": torch.cuda.max_memory_reserved() / GIB, "step_seconds": times,
           "trainable": sum(p.numel() for p in params)}
    del model, opt, params
    _free()
    return out


def predict(spec: dict[str, Any]) -> dict[str, Any]:
    from adaptladder.estimate import estimate_training

    shape = _shape(spec["model"])
    kw: dict[str, Any] = {}
    if spec["method"] != "full":
        kw = {"lora_r": spec["r"], "lora_targets": spec["targets"], "lora_dropout": 0.05}
    est = estimate_training(shape, spec["method"], seq_len=spec["seq"], batch=spec["batch"], dtype="bf16",
                            optimizer="adamw", grad_checkpointing=spec["ckpt"], head="lm", device="cuda",
                            examples=spec["batch"], epochs=1, tokens_per_example=spec["seq"], gpu="H200-141GB", **kw)
    tensors = est.peak_bytes - est.memory["overhead"]
    return {"pred_peak_gib": est.peak_bytes / GIB, "pred_tensors_gib": tensors / GIB, "phase": est.peak_phase,
            "pred_step_seconds": est.compute["hours"] * 3600, "pred_trainable": est.params["trainable"],
            "flops_per_step": est.compute["flops"]}


def cmd_memory(args: argparse.Namespace) -> None:
    import torch

    torch.ones(1, device="cuda")
    free, total = torch.cuda.mem_get_info()
    context = (total - free - torch.cuda.memory_reserved()) / GIB  # driver context, kernels, cuBLAS handles
    print(f"GPU {torch.cuda.get_device_name()} | torch {torch.__version__} | CUDA context {context:.2f} GiB",
          flush=True)
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    t_start = time.time()
    for model, method, b, s, ckpt, r, targets in CONFIGS:
        spec = {"model": model, "method": method, "batch": b, "seq": s, "ckpt": ckpt, "r": r, "targets": targets}
        if time.time() - t_start > args.max_seconds:
            print(f"skipped (time): {spec}", flush=True)
            continue
        try:
            meas = measure(spec, tmp)
        except Exception as e:  # record and go on: one failure must not lose the other rows
            rows.append({**spec, "error": f"{type(e).__name__}: {e}"})
            print(f"FAILED {spec}: {type(e).__name__}: {e}", flush=True)
            _free()
            continue
        pred = predict(spec)
        step = sorted(meas["step_seconds"][1:])[0]
        row = {**spec, **meas, **pred, "context_gib": context,
               "tensor_error_pct": 100 * (pred["pred_tensors_gib"] - meas["alloc_peak_gib"]) / meas["alloc_peak_gib"],
               "total_error_pct": 100 * (pred["pred_peak_gib"] - (meas["reserved_peak_gib"] + context))
               / (meas["reserved_peak_gib"] + context),
               "measured_mfu": pred["flops_per_step"] / step / 989e12,
               "time_ratio_pred_over_measured": pred["pred_step_seconds"] / step}
        rows.append(row)
        print(f"{model:3s} {method:5s} b={b:<2d} s={s:<5d} ckpt={ckpt!s:5s} | tensors measured "
              f"{meas['alloc_peak_gib']:6.2f} predicted {pred['pred_tensors_gib']:6.2f} "
              f"({row['tensor_error_pct']:+5.1f}%) | with reserve+context measured "
              f"{meas['reserved_peak_gib'] + context:6.2f} predicted {pred['pred_peak_gib']:6.2f} "
              f"({row['total_error_pct']:+5.1f}%) | step {step * 1000:7.1f} ms, predicted "
              f"{pred['pred_step_seconds'] * 1000:7.1f} ms, MFU {row['measured_mfu']:.2f} | trainable "
              f"{meas['trainable']:,} (est. {pred['pred_trainable']:,})", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


def _synthetic(n: int, seed: int) -> tuple[list[str], Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    pos = ["wonderful", "great", "loved", "excellent", "superb", "delightful"]
    neg = ["awful", "terrible", "hated", "boring", "dreadful", "poor"]
    filler = ["the", "film", "was", "plot", "acting", "really", "quite", "and", "story", "ending"]
    texts, y = [], []
    for _ in range(n):
        label = int(rng.integers(0, 2))
        words = list(rng.choice(filler, size=8)) + list(rng.choice(pos if label else neg, size=2))
        rng.shuffle(words)
        texts.append(" ".join(words))
        y.append(label)
    return texts, np.array(y)


def cmd_rungs(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from adaptladder.rungs import get_rung_class, load_rung, make_rung

    assets, tmp = Path(args.assets), Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    models = {}
    for name, cls in (("minilm", AutoModel), ("smollm2", AutoModelForCausalLM)):
        dst = tmp / f"{name}-random"
        shutil.copytree(assets / name, dst, dirs_exist_ok=True)
        torch.manual_seed(0)
        cls.from_config(AutoConfig.from_pretrained(dst)).save_pretrained(dst)
        models[name] = str(dst)
    small = not torch.cuda.is_available()  # the --allow-cpu dry run
    tx, ty = _synthetic(32 if small else 256, 0)
    vx, vy = _synthetic(16 if small else 64, 1)
    sx, sy = _synthetic(16 if small else 128, 2)
    print("qlora unavailable_reason on this machine:", get_rung_class("qlora").unavailable_reason({}), flush=True)
    rows = []
    for rung, model in (("lora", "minilm"), ("full-ft", "minilm"), ("qlora", "smollm2"), ("lora", "smollm2")):
        t0 = time.time()
        try:
            r = make_rung(rung, model=models[model], progress=False, max_epochs=1 if small else 3, budget_minutes=2.0,
                          batch_size=16).fit(tx, ty, label_names=["neg", "pos"], val_texts=vx, val_y=vy)
            p = r.predict_proba(sx)
            d = tmp / f"saved-{rung}-{model}"
            r.save(d)
            p2 = load_rung(d).predict_proba(sx)
            info = r.extra_info()
            row = {"rung": rung, "model": model, "seconds": round(time.time() - t0, 1),
                   "test_accuracy": float((p.argmax(1) == sy).mean()),
                   "reload_max_abs_diff": float(np.abs(p - p2).max()),
                   "reload_same_predictions": bool((p.argmax(1) == p2.argmax(1)).all()),
                   **{k: info.get(k) for k in ("device", "trainable_params", "trainable_pct", "epochs_run",
                                               "steps", "train_examples_per_s", "train_tokens_per_s",
                                               "peak_gpu_mb", "peak_rss_mb", "stopped_by", "max_length")}}
        except Exception as e:
            import traceback

            traceback.print_exc()
            row = {"rung": rung, "model": model, "error": f"{type(e).__name__}: {e}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--out")
    m.add_argument("--tmp", default="/tmp/adaptladder-bench-cuda")
    m.add_argument("--max-seconds", type=float, default=240.0, help="start no new configuration after this")
    r = sub.add_parser("rungs")
    r.add_argument("--assets", required=True, help="folders minilm/ and smollm2/ with config + tokenizer files")
    r.add_argument("--out")
    r.add_argument("--tmp", default="/tmp/adaptladder-rungs-cuda")
    r.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)  # dry run of the script itself
    args = ap.parse_args()
    try:
        import torch

        ok = torch.cuda.is_available()
    except ImportError:
        ok = False
    if not ok and not getattr(args, "allow_cpu", False):
        print("bench_cuda: needs CUDA (no CUDA GPU on this machine); CPU figures: bench_estimate_memory.py",
              file=sys.stderr)
        raise SystemExit(2)
    cmd_memory(args) if args.cmd == "memory" else cmd_rungs(args)


if __name__ == "__main__":
    main()

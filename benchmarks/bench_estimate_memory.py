"""Check the memory estimator against the real peak memory of training small models on CPU.

Each configuration runs in a fresh Python process (so the allocator and page cache of one run
cannot flatter the next). The child imports torch/transformers/peft, records its resident set
size (RSS) as the baseline, resets the kernel's peak-RSS counter (``echo 5 >
/proc/self/clear_refs``), builds the model, runs two optimiser steps (the first allocates the
AdamW states, the second runs forward/backward with them in place, so both peak moments the
estimator models occur) and reads the peak back from ``VmHWM`` in ``/proc/self/status``.

Why peak RSS via VmHWM, not a sampling thread or torch's profiler: VmHWM is the kernel's exact
high-water mark, so a short spike cannot fall between samples, and it counts everything the
process really holds (tensors, allocator slack, oneDNN scratch), which is what runs out when a
job is killed. torch's CPU memory profiler sees only tensor allocations. A 1 ms sampling
thread is kept as a cross-check where ``clear_refs`` is unavailable.

    PYTHONPATH=src python benchmarks/bench_estimate_memory.py            # all configurations
    PYTHONPATH=src python benchmarks/bench_estimate_memory.py --quick    # three of them
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

MIB = 1024**2

# (model, method, batch, seq_len, grad_checkpointing, head)
CONFIGS: list[tuple[str, str, int, int, bool, str]] = [
    ("minilm", "full", 16, 128, False, "classifier"),
    ("minilm", "full", 32, 128, False, "classifier"),
    ("minilm", "lora", 16, 128, False, "classifier"),
    ("minilm", "lora", 32, 256, False, "classifier"),
    ("smollm2", "full", 2, 128, False, "lm"),
    ("smollm2", "full", 4, 256, True, "lm"),
    ("smollm2", "lora", 4, 256, False, "lm"),
    ("smollm2", "lora", 8, 256, True, "lm"),
    ("smollm2", "lora", 16, 64, False, "classifier"),
]
QUICK = [0, 2, 6]
# Each configuration runs twice: with glibc's defaults (what a user sees) and with a fixed mmap
# threshold, under which freed blocks go straight back to the OS so the peak RSS is the peak of
# live tensors; the second isolates the estimator's tensor accounting from allocator behaviour.
MALLOC_MODES = {"default": {}, "mmap": {"MALLOC_MMAP_THRESHOLD_": "131072"}}

SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True, rms_norm_eps=1e-5,
               rope_theta=100000.0, max_position_embeddings=8192)
LORA = {"minilm": dict(r=8, targets=["query", "value"], dropout=0.1),
        "smollm2": dict(r=8, targets=["q_proj", "v_proj"], dropout=0.05)}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def child(spec: dict) -> dict:
    """Run one configuration in this (fresh) process and return its measured peak."""
    import gc

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForCausalLM

    from adaptladder.models import resolve_encoder

    torch.manual_seed(0)
    torch.set_num_threads(2)
    model_name, method, b, s, ckpt, head = (spec[k] for k in ("model", "method", "batch", "seq", "ckpt", "head"))
    gc.collect()
    base = _rss()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm_ok = True
    except OSError:
        hwm_ok = False
    peak_sampled = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak_sampled[0] = max(peak_sampled[0], _rss())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    if model_name == "minilm":
        model = AutoModelForSequenceClassification.from_pretrained(resolve_encoder("minilm"), num_labels=2)
        vocab = model.config.vocab_size
    else:
        cfg = LlamaConfig(**SMOLLM2, num_labels=2)
        if head == "lm":
            model = LlamaForCausalLM(cfg)
        else:
            from transformers import LlamaForSequenceClassification

            cfg.pad_token_id = 0
            model = LlamaForSequenceClassification(cfg)
        vocab = cfg.vocab_size
    if ckpt:
        model.gradient_checkpointing_enable()
    if method == "lora":
        lc = LORA[model_name]
        task = "SEQ_CLS" if head == "classifier" else "CAUSAL_LM"
        model = get_peft_model(model, LoraConfig(r=lc["r"], lora_alpha=2 * lc["r"], target_modules=lc["targets"],
                                                 lora_dropout=lc["dropout"], task_type=task))
        if ckpt:
            model.enable_input_require_grads()
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        ids = torch.randint(1, vocab, (b, s), generator=g)
        batch = {"input_ids": ids, "attention_mask": torch.ones(b, s, dtype=torch.long)}
        batch["labels"] = ids if head == "lm" else torch.randint(0, 2, (b,), generator=g)
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        del loss
    seconds = time.perf_counter() - t0
    stop.set()
    t.join()
    peak = _hwm() if hwm_ok else peak_sampled[0]
    return {"peak_mib": (peak - base) / MIB, "sampled_mib": (peak_sampled[0] - base) / MIB,
            "method_used": "VmHWM" if hwm_ok else "sampling", "seconds": seconds, "baseline_mib": base / MIB}


def predict(spec: dict, retention: float | None = None) -> dict:
    from adaptladder.estimate import estimate_training

    lc = LORA[spec["model"]]
    est = estimate_training("minilm-l6" if spec["model"] == "minilm" else "smollm2-135m", spec["method"],
                            seq_len=spec["seq"], batch=spec["batch"], dtype="fp32", device="cpu", optimizer="adamw",
                            grad_checkpointing=spec["ckpt"], lora_r=lc["r"], lora_targets=lc["targets"],
                            lora_dropout=lc["dropout"], head=spec["head"], num_labels=2,
                            malloc_retention=retention)
    mem = est.memory
    return {"pred_mib": est.peak_bytes / MIB, "phase": est.peak_phase,
            "naive_mib": (sum(mem["weights"].values()) + mem["gradients"] + mem["optimizer"]["states"]) / MIB,
            "activations_mib": mem["activations"]["saved"] / MIB}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="three configurations only")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "2"}
    rows = []
    todo = [CONFIGS[i] for i in QUICK] if args.quick else CONFIGS
    for model, method, b, s, ckpt, head in todo:
        spec = {"model": model, "method": method, "batch": b, "seq": s, "ckpt": ckpt, "head": head}
        row: dict = dict(spec)
        for mode, extra in MALLOC_MODES.items():
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env={**env, **extra},
                                 capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"configuration {spec} failed")
            meas = json.loads(out.stdout.strip().splitlines()[-1])
            pred = predict(spec, None if mode == "default" else 0.0)
            row[mode] = {**meas, **pred, "error_pct": 100 * (pred["pred_mib"] - meas["peak_mib"]) / meas["peak_mib"],
                         "naive_error_pct": 100 * (pred["naive_mib"] - meas["peak_mib"]) / meas["peak_mib"]}
        rows.append(row)
        d, m = row["default"], row["mmap"]
        print(f"{model:8s} {method:5s} {head:10s} b={b:<3d} s={s:<4d} ckpt={ckpt!s:5s} | default: measured "
              f"{d['peak_mib']:6.0f} predicted {d['pred_mib']:6.0f} ({d['error_pct']:+5.1f}%) | fixed mmap: measured "
              f"{m['peak_mib']:6.0f} predicted {m['pred_mib']:6.0f} ({m['error_pct']:+5.1f}%) | naive "
              f"{d['naive_error_pct']:+5.1f}% [{d['seconds']:.0f}s]", flush=True)
    for mode in MALLOC_MODES:
        errs = sorted(abs(r[mode]["error_pct"]) for r in rows)
        within = sum(e <= 25 for e in errs)
        print(f"{mode}: within 25%: {within}/{len(rows)}; median |error| {errs[len(errs) // 2]:.1f}%; "
              f"max {errs[-1]:.1f}%")
    print("\n| model | method | head | batch | seq | grad ckpt | peak MiB (glibc default) | predicted | error "
          "| peak MiB (fixed mmap threshold) | predicted (no retention) | error | weights+grads+Adam only |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        d, m = r["default"], r["mmap"]
        print(f"| {r['model']} | {r['method']} | {r['head']} | {r['batch']} | {r['seq']} | "
              f"{'yes' if r['ckpt'] else 'no'} | {d['peak_mib']:.0f} | {d['pred_mib']:.0f} | {d['error_pct']:+.1f}% "
              f"| {m['peak_mib']:.0f} | {m['pred_mib']:.0f} | {m['error_pct']:+.1f}% | {d['naive_error_pct']:+.1f}% |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

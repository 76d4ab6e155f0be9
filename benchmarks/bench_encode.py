"""Fast encoding: SentenceTransformer.encode (defaults) vs the adaptladder engine, side by side.

For each built-in data set, on a seeded sample of its test split, in one process and
interleaved round by round (the machine is shared, so only same-round ratios and medians
mean anything):

* texts/s (wall clock) of ``SentenceTransformer.encode`` with its defaults (batch 32, fp32)
  and of the engine in each setting (fp32, bf16, int8 via ONNX Runtime, int8 via PyTorch
  dynamic quantization), plus the ratio to the baseline of the same round;
* achieved GFLOP/s of the transformer (FLOPs counted on the padded batches each method
  actually runs) against the machine's matmul peak measured in the same round (fp32 and
  bf16 ``torch.mm`` of a 4096x384 @ 384x1536 product, the shape of MiniLM's FFN);
* mean / min cosine of each setting's embeddings to the fp32 reference;
* downstream quality: test macro-F1 of the features rung's logistic-regression head trained
  on embeddings of a training sample made with the same setting;
* what ``precision="auto"`` picks for that data set (its calibration record).

Run:  PYTHONPATH=src python benchmarks/bench_encode.py [--n 1000] [--n-long 400] [--repeats 3]
Writes benchmarks/results/encode.json and prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SETS = ("trec6", "sms-spam", "rotten-tomatoes", "news20")
LONG = {"news20"}
SETTINGS = ("fp32", "bf16", "int8-onnx", "int8-torch")


def matmul_peak(dtype: Any, reps: int = 5) -> float:
    """GFLOP/s of a cache-friendly torch.mm with MiniLM's FFN shape (best of ``reps``)."""
    import torch

    a = torch.randn(4096, 384).to(dtype)
    b = torch.randn(384, 1536).to(dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        dt = time.perf_counter() - t0
        best = max(best, 4 * 2 * 4096 * 384 * 1536 / dt / 1e9)
    return best


def st_flops(eng: Any, texts: list[str], batch_size: int = 32) -> float:
    """FLOPs of SentenceTransformer.encode's own batching: sorted by character length, fixed batches."""
    from adaptladder.encode_engine import Batch, batch_flops, tokenize

    ids = tokenize(eng.tokenizer, texts, eng.max_length)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    cfg = eng.transformer.config
    total = 0.0
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        width = max(len(ids[j]) for j in idx)
        fake = Batch(idx, np.zeros((len(idx), width), np.int64), np.zeros((len(idx), width), np.int64))
        total += batch_flops(fake, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers)
    return total


def logreg_f1(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray, k: int) -> float:
    from adaptladder.measure import fast_macro_f1
    from adaptladder.rungs.features import make_head

    head = make_head("logreg", 0, k).fit(Xtr, ytr)
    return fast_macro_f1(np.asarray(yte), head.predict(Xte), k)


def profile_ops(eng: Any, texts: list[str], precision: str, top: int = 8) -> list[dict[str, Any]]:
    """Where the time goes: the top operators by self CPU time for one encode of ``texts``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        eng.encode(texts, precision)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    return [{"op": e.key, "self_cpu_share": round(e.self_cpu_time_total / total, 3)} for e in rows[:top]]


def run_set(name: str, n: int, n_train: int, repeats: int, do_profile: bool) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    from adaptladder.encode import Encoder
    from adaptladder.encode_engine import Engine, tokenize
    from adaptladder.models import MINILM_INT8_ONNX, packaged_path, resolve_encoder
    from adaptladder.task import load_builtin

    task = load_builtin(name)
    rng = np.random.default_rng(0)
    te_texts, te_y = task.part("test")
    tr_texts, tr_y = task.part("train")
    te_i = np.sort(rng.permutation(len(te_texts))[:n])
    tr_i = np.sort(rng.permutation(len(tr_texts))[:n_train])
    texts = [te_texts[i] for i in te_i]
    y_te = np.asarray(te_y)[te_i]
    train = [tr_texts[i] for i in tr_i]
    y_tr = np.asarray(tr_y)[tr_i]
    k = len(task.label_names)

    path = resolve_encoder("minilm")
    st = SentenceTransformer(path, device="cpu")  # the baseline: its defaults, nothing tuned
    st_engine = SentenceTransformer(path, device="cpu")
    st_engine.max_seq_length = 256
    eng = Engine(st_engine, 256, onnx_int8_path=str(packaged_path(*MINILM_INT8_ONNX)))
    eng_torch = Engine(st_engine, 256, onnx_int8_path=None)  # int8 via PyTorch dynamic quantization
    runners = {
        "sentence-transformers": lambda t: st.encode(t, show_progress_bar=False, convert_to_numpy=True),
        "fp32": lambda t: eng.encode(t, "fp32"),
        "bf16": lambda t: eng.encode(t, "bf16"),
        "int8-onnx": lambda t: eng.encode(t, "int8"),
        "int8-torch": lambda t: eng_torch.encode(t, "int8"),
    }
    lens = [len(x) for x in tokenize(eng.tokenizer, texts, 256)]
    flops = {m: eng.flops(texts) for m in SETTINGS}
    flops["sentence-transformers"] = st_flops(eng, texts)

    # warm-up (first-call allocations, oneDNN kernel creation), untimed
    for fn in runners.values():
        fn(texts[:64])

    rounds: list[dict[str, Any]] = []
    emb: dict[str, np.ndarray] = {}
    for r in range(repeats):
        row: dict[str, Any] = {"peak_fp32_gflops": matmul_peak(torch.float32),
                               "peak_bf16_gflops": matmul_peak(torch.bfloat16)}
        for m, fn in runners.items():
            c0, t0 = time.process_time(), time.perf_counter()
            e = fn(texts)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            row[m] = {"texts_per_s": len(texts) / dt, "cpu_s": cpu, "gflops": flops[m] / dt / 1e9}
            if r == 0:
                emb[m] = np.asarray(e, dtype=np.float32)
        for m in runners:
            row[m]["speedup"] = row[m]["texts_per_s"] / row["sentence-transformers"]["texts_per_s"]
        rounds.append(row)
        print(f"  {name} round {r + 1}: " + ", ".join(f"{m} {row[m]['texts_per_s']:.0f}/s" for m in runners),
              file=sys.stderr, flush=True)

    ref = emb["fp32"]
    out: dict[str, Any] = {"n_texts": len(texts), "n_train": len(train), "mean_tokens": float(np.mean(lens)),
                           "max_tokens": int(max(lens)), "rounds": rounds, "methods": {}}
    peak32 = statistics.median(r["peak_fp32_gflops"] for r in rounds)
    peak16 = statistics.median(r["peak_bf16_gflops"] for r in rounds)
    out["peak_fp32_gflops"], out["peak_bf16_gflops"] = peak32, peak16
    for m in runners:
        cos = np.sum(emb[m] * ref, axis=1)
        out["methods"][m] = {
            "texts_per_s": statistics.median(r[m]["texts_per_s"] for r in rounds),
            "speedup": statistics.median(r[m]["speedup"] for r in rounds),
            "cpu_s_per_1k": statistics.median(r[m]["cpu_s"] for r in rounds) / len(texts) * 1000,
            "gflops": statistics.median(r[m]["gflops"] for r in rounds),
            "gflop_total": flops[m] / 1e9,
            "mean_cosine_to_fp32": float(cos.mean()),
            "min_cosine_to_fp32": float(cos.min()),
        }
    out["methods"]["sentence-transformers"]["fraction_of_fp32_peak"] = \
        out["methods"]["sentence-transformers"]["gflops"] / peak32
    out["methods"]["fp32"]["fraction_of_fp32_peak"] = out["methods"]["fp32"]["gflops"] / peak32
    out["methods"]["bf16"]["fraction_of_bf16_peak"] = out["methods"]["bf16"]["gflops"] / peak16

    # downstream quality: the features rung's logistic-regression head, train and test in the same setting
    t0 = time.perf_counter()
    for m in SETTINGS:
        Xtr = np.asarray(runners[m](train), dtype=np.float32)
        out["methods"][m]["test_macro_f1"] = logreg_f1(Xtr, y_tr, emb[m], y_te, k)
    # sentence-transformers computes the fp32 vectors (cosine 1.000000 to the fp32 engine, checked
    # above), so its head is the fp32 one; not encoding the training sample a fifth time saves minutes
    out["methods"]["sentence-transformers"]["test_macro_f1"] = out["methods"]["fp32"]["test_macro_f1"]
    f1_ref = out["methods"]["fp32"]["test_macro_f1"]
    for m in out["methods"]:
        out["methods"][m]["f1_delta_vs_fp32"] = out["methods"][m]["test_macro_f1"] - f1_ref
    out["f1_seconds"] = time.perf_counter() - t0

    # what precision="auto" picks on this data (labels: training sample + validation sample)
    va_texts, va_y = task.part("validation")
    enc = Encoder("minilm", precision="auto", cache=False)
    out["auto"] = enc.calibrate(train, y_tr, va_texts, va_y, sample_size=min(512, len(train)))
    if do_profile:
        out["profile"] = {p: profile_ops(eng, texts[: min(len(texts), 96)], p) for p in ("fp32", "bf16")}
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = ["| data set (texts, mean tokens) | method | texts/s | speed-up vs ST | CPU-s / 1k texts | GFLOP/s "
             "| % of peak | cosine to fp32 (mean / min) | test macro-F1 (delta vs fp32) |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for name, r in res["sets"].items():
        for m, v in r["methods"].items():
            peak = r["peak_bf16_gflops"] if m == "bf16" else r["peak_fp32_gflops"]
            pct = f"{100 * v['gflops'] / peak:.0f}% of {'bf16' if m == 'bf16' else 'fp32'}"
            lines.append(
                f"| {name} ({r['n_texts']}, {r['mean_tokens']:.0f}) | {m} | {v['texts_per_s']:.0f} | "
                f"{v['speedup']:.2f}x | {v['cpu_s_per_1k']:.0f} | {v['gflops']:.0f} | {pct} | "
                f"{v['mean_cosine_to_fp32']:.5f} / "
                f"{v['min_cosine_to_fp32']:.4f} | {v['test_macro_f1']:.4f} ({v['f1_delta_vs_fp32']:+.4f}) |")
    lines.append("")
    lines.append("| data set | matmul peak fp32 / bf16 GFLOP/s | auto picks | auto's check |")
    lines.append("|---|---|---|---|")
    for name, r in res["sets"].items():
        a = r["auto"]
        cands = "; ".join(f"{c['precision']}: cos {c['mean_cosine']:.4f}, F1 delta {c.get('macro_f1_delta', 'n/a')}, "
                          f"{'pass' if c['passed'] else 'fail'}" for c in a["candidates"])
        lines.append(f"| {name} | {r['peak_fp32_gflops']:.0f} / {r['peak_bf16_gflops']:.0f} | {a['chosen']} "
                     f"({a['backend']}) | {cands} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--n", type=int, default=1000, help="test texts timed per short-text set")
    ap.add_argument("--n-long", type=int, default=400, help="test texts timed for news20")
    ap.add_argument("--n-train", type=int, default=2000, help="training texts for the downstream head")
    ap.add_argument("--n-train-long", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="add a torch.profiler breakdown per set")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "encode.json"))
    ap.add_argument("--render", metavar="JSON", help="only print the tables of an earlier run's JSON")
    args = ap.parse_args()
    if args.render:
        print(markdown(json.loads(Path(args.render).read_text())))
        return

    import torch

    from adaptladder.encode_engine import cpu_flags, set_threads

    threads = set_threads()
    res: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_flags": cpu_flags(), "threads": threads,
                    "torch": torch.__version__, "load_avg_start": os.getloadavg(),
                    "note": "shared machine: other agents ran at the same time; compare same-round ratios"},
        "args": vars(args), "sets": {},
    }
    t0 = time.time()
    for name in args.sets.split(","):
        long = name in LONG
        print(f"{name} ...", file=sys.stderr, flush=True)
        res["sets"][name] = run_set(name, args.n_long if long else args.n, args.n_train_long if long else args.n_train,
                                    args.repeats, args.profile)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        res["machine"]["load_avg_end"] = os.getloadavg()
        res["seconds"] = time.time() - t0
        Path(args.out).write_text(json.dumps(res, indent=1))
    print(markdown(res))


if __name__ == "__main__":
    main()

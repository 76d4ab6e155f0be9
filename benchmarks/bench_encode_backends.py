"""The encoder decision: sentence-transformers' backends, ONNX Runtime, OpenVINO and the library's encoder.

For each data set, on a seeded sample of its test split, in one process and interleaved round
by round (the machine is shared: only same-round ratios and medians mean anything):

* ``st-fp32``: ``SentenceTransformer.encode`` (batch 32, fp32, max_seq_length 256) - the baseline;
* ``st-bf16``: the same with ``model_kwargs={"torch_dtype": torch.bfloat16}``;
* ``onnx-fp32``: the packaged MiniLM exported here with ``torch.onnx.export`` and run by ONNX
  Runtime, with sentence-transformers' batching (32, sorted by length) and mean pooling
  (sentence-transformers' own ``backend="onnx"`` needs ``optimum``, which cannot be installed
  next to transformers 5: pip would downgrade it to 4.57);
* ``openvino-fp32``: that ONNX graph compiled by OpenVINO (``openvino`` runtime, no optimum);
* ``onnx-int8-static``: that graph quantised by ONNX Runtime's static QDQ quantiser, weights
  per channel (int8), activations (uint8) calibrated on the task's own training texts;
* ``adaptladder-onnx-fp32`` / ``adaptladder-int8``: :class:`adaptladder.encode.Encoder` itself with
  ``precision="onnx-fp32"`` (the graph exported into the cache directory) and ``precision="int8"``
  (the packaged int8 ONNX graph), cache off: what the features rung runs.

The ``engine-fp32`` / ``engine-int8`` rows of the 2026-11-30 results (BENCHMARKS.md, "Embeddings")
were measured with the project's former length-bucketing engine, ``adaptladder/encode_engine.py``,
deleted after that table (``git log -- src/adaptladder/encode_engine.py``).

Fidelity: mean / min cosine of each method's embeddings to ``st-fp32``, and the test macro-F1
of a logistic-regression head trained on embeddings of a training sample made the same way
(the features rung's head).

Run:  PYTHONPATH=src python benchmarks/bench_encode_backends.py [--sets trec6,news20] [--n 300]
Writes benchmarks/results/encode_backends.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LONG = {"news20"}
MAX_LEN = 256


def logreg_f1(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray, k: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    clf = LogisticRegression(C=4.0, max_iter=3000, class_weight="balanced", random_state=0).fit(Xtr, ytr)
    return float(f1_score(yte, clf.predict(Xte), average="macro", labels=list(range(k)), zero_division=0))


class OnnxRunner:
    """A MiniLM ONNX graph + sentence-transformers' batching, mean pooling and normalisation."""

    def __init__(self, tokenizer: Any, run: Any, batch_size: int = 32) -> None:
        self.tok, self.run, self.bs = tokenizer, run, batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")  # as sentence-transformers sorts
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for s in range(0, len(texts), self.bs):
            idx = order[s:s + self.bs]
            enc = self.tok([texts[i] for i in idx], padding=True, truncation=True, max_length=MAX_LEN,
                           return_tensors="np")
            ids = enc["input_ids"].astype(np.int64)
            mask = enc["attention_mask"].astype(np.int64)
            tt = np.zeros_like(ids)
            hidden = self.run(ids, mask, tt)
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            out[idx] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out


def export_onnx(st: Any, where: Path) -> Path:
    """The transformer of a SentenceTransformer as an ONNX graph: the library's own exporter."""
    from adaptladder.encode import export_onnx as export

    return export(st, where / "minilm.onnx")


def ort_runner(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run(ids: np.ndarray, mask: np.ndarray, tt: np.ndarray) -> np.ndarray:
        feed = dict(zip(("input_ids", "attention_mask", "token_type_ids"), (ids, mask, tt), strict=True))
        return sess.run(None, {k: feed[k] for k in names})[0]

    return run


def openvino_runner(path: Path, threads: int) -> Any:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                      "PERFORMANCE_HINT": "LATENCY"})
    req = compiled.create_infer_request()
    names = [i.get_any_name() for i in compiled.inputs]

    def run(ids: np.ndarray, mask: np.ndarray, tt: np.ndarray) -> np.ndarray:
        feed = dict(zip(("input_ids", "attention_mask", "token_type_ids"), (ids, mask, tt), strict=True))
        res = req.infer({k: feed[k] for k in names})
        return np.asarray(res[compiled.outputs[0]])

    return run


def quantize_static(fp32: Path, tokenizer: Any, calib_texts: list[str], where: Path) -> Path:
    """ONNX Runtime static QDQ quantisation: int8 per-channel weights, uint8 activations calibrated
    (min-max) on ``calib_texts`` (the task's own training texts)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
    )
    from onnxruntime.quantization import quantize_static as qs

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = []
            for s in range(0, len(calib_texts), 16):
                enc = tokenizer(calib_texts[s:s + 16], padding=True, truncation=True, max_length=MAX_LEN,
                                return_tensors="np")
                ids = enc["input_ids"].astype(np.int64)
                self.batches.append({"input_ids": ids, "attention_mask": enc["attention_mask"].astype(np.int64),
                                     "token_type_ids": np.zeros_like(ids)})
            self.it = iter(self.batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    pre = where / "minilm.pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    out = where / "minilm.int8.onnx"
    qs(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
       activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
       extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    return out


def run_set(name: str, n: int, n_train: int, repeats: int, threads: int, work: Path) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    from adaptladder.encode import Encoder
    from adaptladder.models import resolve_encoder
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
    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = MAX_LEN
    st_bf16 = SentenceTransformer(path, device="cpu", model_kwargs={"torch_dtype": torch.bfloat16})
    st_bf16.max_seq_length = MAX_LEN
    tok = st.tokenizer
    onnx_path = export_onnx(st, work)
    runners: dict[str, Any] = {
        "st-fp32": lambda t: st.encode(t, show_progress_bar=False, convert_to_numpy=True, batch_size=32),
        "st-bf16": lambda t: np.asarray(st_bf16.encode(t, show_progress_bar=False, convert_to_numpy=True,
                                                       batch_size=32), dtype=np.float32),
        "onnx-fp32": OnnxRunner(tok, ort_runner(onnx_path, threads)).encode,
    }
    notes: dict[str, str] = {"st-onnx / st-openvino": "sentence-transformers' own backends need optimum; "
                             "`pip install optimum[onnxruntime,openvino]` would downgrade transformers 5.23.0 to "
                             "4.57.6, so the same graph is run here without it"}
    try:
        runners["openvino-fp32"] = OnnxRunner(tok, openvino_runner(onnx_path, threads)).encode
    except Exception as e:  # not installed / cannot compile: say so in the table
        notes["openvino-fp32"] = f"{type(e).__name__}: {e}"
    try:
        q = quantize_static(onnx_path, tok, train[: min(len(train), 256)], work)
        runners["onnx-int8-static"] = OnnxRunner(tok, ort_runner(q, threads)).encode
    except Exception as e:
        notes["onnx-int8-static"] = f"{type(e).__name__}: {e}"
    for p in ("onnx-fp32", "int8"):
        enc = Encoder("minilm", precision=p, max_length=MAX_LEN, batch_size=32, cache=False)
        enc.encode(texts[:2])
        if enc.fallback_:
            notes[f"adaptladder-{p}"] = enc.fallback_["reason"]
        else:
            runners[f"adaptladder-{p}"] = lambda t, enc=enc: enc.encode(t)

    for fn in runners.values():  # warm-up, untimed
        fn(texts[:32])
    rounds: list[dict[str, float]] = []
    emb: dict[str, np.ndarray] = {}
    for r in range(repeats):
        row: dict[str, float] = {}
        names = list(runners)
        if r % 2:
            names.reverse()  # alternate the order so drift in the load hits every method alike
        for m in names:
            t0 = time.perf_counter()
            e = np.asarray(runners[m](texts), dtype=np.float32)
            row[m] = len(texts) / (time.perf_counter() - t0)
            emb[m] = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        rounds.append(row)
        print(f"  {name} round {r + 1}: " + ", ".join(f"{m} {v:.1f}/s" for m, v in row.items()),
              file=sys.stderr, flush=True)
    out: dict[str, Any] = {"n": len(texts), "n_train": len(train), "rounds": rounds, "notes": notes, "methods": {}}
    ref = emb["st-fp32"]
    f1_ref = None
    for m in runners:
        speeds = [rd[m] for rd in rounds]
        ratios = [rd[m] / rd["st-fp32"] for rd in rounds]
        cos = (emb[m] * ref).sum(1)
        Xtr = np.asarray(runners[m](train), dtype=np.float32)
        f1 = logreg_f1(Xtr, y_tr, emb[m], y_te, k)
        if m == "st-fp32":
            f1_ref = f1
        out["methods"][m] = {"texts_per_s": statistics.median(speeds), "vs_st_fp32": statistics.median(ratios),
                             "cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "macro_f1": f1,
                             "f1_delta": None if f1_ref is None else f1 - f1_ref}
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = ["| data set (test texts) | method | texts/s (median) | vs st-fp32 | cosine to st-fp32 mean / min | "
             "test macro-F1 (delta) |", "|---|---|---:|---:|---|---|"]
    for name, s in res["sets"].items():
        first = True
        for m, v in s["methods"].items():
            d = v["f1_delta"]
            label = f"{name} ({s['n']})" if first else ""
            lines.append(f"| {label} | {m} | {v['texts_per_s']:.1f} | "
                         f"{v['vs_st_fp32']:.2f}x | {v['cos_mean']:.5f} / {v['cos_min']:.4f} | {v['macro_f1']:.4f}"
                         + (f" ({d:+.4f})" if d is not None else "") + " |")
            first = False
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", default="trec6,news20")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--n-long", type=int, default=100)
    ap.add_argument("--n-train", type=int, default=800)
    ap.add_argument("--n-train-long", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "encode_backends.json"))
    args = ap.parse_args()
    import torch

    from adaptladder.encode import cpu_flags, set_threads

    threads = set_threads()
    res: dict[str, Any] = {"machine": {"cpu_flags": cpu_flags(), "threads": threads, "torch": torch.__version__,
                                       "load_avg_start": os.getloadavg()}, "args": vars(args), "sets": {}}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            long = name in LONG
            print(f"{name} ...", file=sys.stderr, flush=True)
            res["sets"][name] = run_set(name, args.n_long if long else args.n,
                                        args.n_train_long if long else args.n_train, args.repeats, threads, Path(tmp))
            res["machine"]["load_avg_end"] = os.getloadavg()
            res["seconds"] = time.time() - t0
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(res, indent=1))
    print(markdown(res))


if __name__ == "__main__":
    main()

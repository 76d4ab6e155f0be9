"""Ray Data jobs: batch prediction over a large file (``predict --executor ray``).

``predict --executor ray`` reads the table on the driver (the same reader and checks as the local
path), sends the texts through ``map_batches`` to a pool of actors that each load the saved rung
once (its files travel through the object store, so workers need no shared disk), and writes the
SAME output file as the local path: rows come back tagged with their position and are put back in
input order before the driver writes the file atomically.

Ray is imported only inside these functions (``adaptladder --help`` stays fast).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptladder.errors import AdaptError

#: Rows per ``map_batches`` call (the rung predicts this many texts at once).
BATCH_SIZE = 4096


def _quiet_data() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def _model_files(model_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(model_dir)): p.read_bytes() for p in sorted(model_dir.rglob("*")) if p.is_file()}


class _Predictor:
    """A Ray Data actor: writes the shipped model files to a private folder and loads the rung once."""

    def __init__(self, files_ref: Any) -> None:
        import tempfile

        import ray

        from adaptladder.winner import load_saved_rung

        files = ray.get(files_ref[0])
        self._dir = tempfile.mkdtemp(prefix="adaptladder-model-")
        for rel, data in files.items():
            path = Path(self._dir) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.model = load_saved_rung(self._dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        proba = np.asarray(self.model.predict_proba([str(t) for t in batch["text"]]), dtype=np.float64)
        return {"row": batch["row"], "proba": proba}


def _workers(concurrency: int | None) -> int:
    import ray

    if concurrency:
        return max(1, int(concurrency))
    return max(1, int(ray.available_resources().get("CPU", 1)))


def predict_proba_ray(model_dir: Path, texts: Sequence[str], *, batch_size: int = BATCH_SIZE,
                      concurrency: int | None = None) -> np.ndarray:
    """``load_rung(model_dir).predict_proba(texts)`` computed by a pool of Ray Data actors, in input order."""
    import pandas as pd
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    _quiet_data()
    n = len(texts)
    workers = _workers(concurrency)
    files_ref = [ray.put(_model_files(model_dir))]  # in a list: passed to the actors as a reference
    frame = pd.DataFrame({"row": np.arange(n, dtype=np.int64), "text": list(texts)})
    blocks = max(workers, min(workers * 8, -(-n // batch_size)))
    chunks = [frame.iloc[i:i + -(-n // blocks)] for i in range(0, n, -(-n // blocks))] or [frame]
    ds = ray.data.from_pandas(chunks)
    out = ds.map_batches(_Predictor, fn_constructor_args=(files_ref,), batch_size=batch_size,
                         batch_format="numpy", compute=ActorPoolStrategy(size=workers), num_cpus=1)
    parts = list(out.iter_batches(batch_size=None, batch_format="numpy"))
    if not parts:
        return np.zeros((0, 0))
    rows = np.concatenate([p["row"] for p in parts])
    proba = np.concatenate([p["proba"] for p in parts])
    if len(rows) != n or not np.array_equal(np.sort(rows), np.arange(n)):
        raise RuntimeError(f"Ray Data returned {len(rows)} predictions for {n} rows")
    out_proba = np.empty_like(proba)
    out_proba[rows] = proba  # back in input order
    return out_proba


def predict_file_ray(run_dir: str | Path, input_path: str | Path, output_path: str | Path, *,
                     text_col: str | None = None, rung: str | None = None, overwrite: bool = False,
                     address: str | None = None, batch_size: int = BATCH_SIZE,
                     concurrency: int | None = None) -> dict[str, Any]:
    """:func:`adaptladder.winner.predict_file` with the predictions computed as a Ray Data job: the same
    output file (the input's columns + label + per-class probabilities, rows in input order)."""
    import pandas as pd

    from adaptladder.winner import _results, _rung_result, frame_from_proba, read_texts, write_table

    run_dir = Path(run_dir)
    out = Path(output_path)
    if out.exists() and not overwrite:  # fail before the (possibly slow) predictions
        raise AdaptError(f"{out} already exists; pass --overwrite to replace it or choose another --output.")
    doc = _results(run_dir)
    from adaptladder.kinds import GENERATION, kind_of

    if kind_of(doc) == GENERATION:
        raise AdaptError(f"{run_dir} is a generation run: predict --executor ray covers classification runs only; "
                         "drop --executor ray to generate locally.")
    res = _rung_result(doc, rung, run_dir)
    model_dir = run_dir / "rungs" / res["name"] / "model"
    import json

    names = list(json.loads((model_dir / "rung.json").read_text(encoding="utf-8")).get("label_names") or [])
    df, texts, col = read_texts(input_path, text_col, run_dir)
    from adaptladder.executors.ray_cluster import ray_init

    with ray_init(address):  # shut down afterwards only if this call started a local instance
        t0 = time.perf_counter()
        proba = predict_proba_ray(model_dir, texts, batch_size=batch_size, concurrency=concurrency)
    if not len(texts):
        proba = np.zeros((0, len(names)))
    preds = frame_from_proba(names, proba, len(texts))
    seconds = time.perf_counter() - t0
    taken = [c for c in preds.columns if c in df.columns]
    preds = preds.rename(columns={c: f"predicted_{c}" for c in taken})
    write_table(pd.concat([df.reset_index(drop=True), preds], axis=1), out, overwrite=overwrite)
    label_col = "predicted_label" if "label" in taken else "label"
    return {"rung": res["name"], "n": len(texts), "text_col": col, "output": str(out), "seconds": seconds,
            "counts": preds[label_col].value_counts().to_dict(), "executor": "ray"}

"""The encoder step as a Ray Data job: texts missing from the embedding cache are encoded by a pool of
actors (``map_batches``, each loading the encoder once), and the driver writes them into the same
SQLite cache as a local run (:mod:`adaptladder.encode`; workers never touch the cache file).

Inside :func:`encoding_on_ray` every :meth:`adaptladder.encode.Encoder.encode` call of this process
(the features rung, k-NN shots, the audit's near-duplicate search) that has at least
:data:`adaptladder.encode.REMOTE_MIN_TEXTS` uncached texts goes through Ray; smaller calls, and the
latency/throughput measurements (cache disabled: the model must be timed where it runs), stay local.
Each actor encodes at the precision the driver chose, so the cache keys are the driver's.
The encoder must load on the workers: a packaged alias or Hugging Face name (a local folder must be
at the same path on every node).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

#: Texts per ``map_batches`` call.
BATCH_SIZE = 512


class _EncodeActor:
    def __init__(self, spec: dict[str, Any]) -> None:
        from adaptladder.encode import Encoder

        self.precision = spec["precision"]
        self.encoder = Encoder(spec["model"], precision=self.precision, max_length=spec["max_length"],
                               batch_size=spec["batch_size"], cache=False)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        emb = self.encoder._encode_uncached([str(t) for t in batch["text"]], False, self.precision)
        return {"row": batch["row"], "emb": np.asarray(emb, dtype=np.float32)}


def encode_on_ray(encoder: Any, texts: list[str], precision: str, *, concurrency: int | None = None,
                  batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Embeddings of ``texts`` at ``precision`` computed by Ray Data actors, in input order."""
    import pandas as pd
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    n = len(texts)
    workers = max(1, int(concurrency or ray.available_resources().get("CPU", 1)))
    spec = {"model": encoder.model, "precision": precision, "max_length": encoder.max_length,
            "batch_size": encoder.batch_size}
    frame = pd.DataFrame({"row": np.arange(n, dtype=np.int64), "text": list(texts)})
    step = -(-n // max(workers, min(workers * 8, -(-n // batch_size))))
    ds = ray.data.from_pandas([frame.iloc[i:i + step] for i in range(0, n, step)])
    out = ds.map_batches(_EncodeActor, fn_constructor_args=(spec,), batch_size=batch_size, batch_format="numpy",
                         compute=ActorPoolStrategy(size=workers), num_cpus=1)
    parts = list(out.iter_batches(batch_size=None, batch_format="numpy"))
    rows = np.concatenate([p["row"] for p in parts])
    emb = np.concatenate([p["emb"] for p in parts])
    if len(rows) != n:
        raise RuntimeError(f"Ray Data returned {len(rows)} embeddings for {n} texts")
    ordered = np.empty_like(emb)
    ordered[rows] = emb
    return ordered


@contextmanager
def encoding_on_ray(address: str | None = None, *, concurrency: int | None = None) -> Iterator[None]:
    """Within the block, large encoder calls of this process run as Ray Data jobs (see the module doc).

    Joins ``address`` or the Ray session already running, else starts a local instance (left running
    for the rest of the process, so a following ``--executor ray`` step reuses it).
    """
    from adaptladder import encode
    from adaptladder.executors.ray_cluster import ray_init

    ray_init(address)
    previous = encode.REMOTE_ENCODE
    encode.REMOTE_ENCODE = lambda enc, texts, precision: encode_on_ray(enc, texts, precision,
                                                                       concurrency=concurrency)
    try:
        yield
    finally:
        encode.REMOTE_ENCODE = previous

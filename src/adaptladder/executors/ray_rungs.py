"""Rungs as Ray tasks: resources per rung family, results and model files shipped home, retries, cancel.

Each rung is one Ray task running the same per-rung code as a local run (``ladder.run_rung``) in
a worker with its own temporary run directory. The task returns the result record, the worker's
log lines and the rung's ``model/`` folder as a tar archive (through Ray's object store, or
written to ``--storage`` when one is given); the driver checks the files against the content
hashes in ``rung.json`` and installs them atomically into its own run directory
(:meth:`adaptladder.store.RunStore.install_model`). Workers never need the driver's disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import socket
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adaptladder.config import RunConfig
from adaptladder.errors import AdaptError
from adaptladder.executors.ray_cluster import ray_init
from adaptladder.store import config_hash

#: How often Ray re-runs a rung whose worker process or node died (a rung's own exception is not retried:
#: the ladder records it as ``failed``, as a local run does).
MAX_RETRIES = 2
#: Fine-tuning rungs on a GPU node take this many CPUs beside the GPU (data loading, tokenising).
GPU_RUNG_CPUS = 4
GIB = 2**30


# ----------------------------------------------------------------------------------------- resources
def _estimated_peak_bytes(cls: Any, params: dict[str, Any], *, gpu: bool) -> float | None:
    """Peak memory of a fine-tuning rung from :mod:`adaptladder.estimate`, or None (no estimate)."""
    method = {"full-ft": "full", "lora": "lora", "qlora": "qlora", "prompt-tuning": "prompt-tuning"}.get(
        getattr(cls, "method", "") or "")
    if cls.family != "finetune" or not method:
        return None
    try:
        from adaptladder import models
        from adaptladder.estimate import estimate_training

        model = params.get("model") or (models.DEFAULT_LM if method == "qlora"
                                        else params.get("encoder") or models.DEFAULT_ENCODER)
        seq = params.get("max_length") if isinstance(params.get("max_length"), int) else 128
        kw: dict[str, Any] = {"seq_len": seq, "batch": int(params.get("batch_size") or 8),
                              "device": "cuda" if gpu else "cpu"}
        if method in ("lora", "qlora") and params.get("r"):
            kw["lora_r"] = int(params["r"])
        return float(estimate_training(model, method, **kw).peak_bytes)
    except Exception:  # no estimate (unknown model shape...): the rung is scheduled without the check
        return None


def _gpu_memory_bytes(node: dict[str, float]) -> float | None:
    """A GPU node's per-device memory from its ``accelerator_type:X`` resource and data/gpus.yaml, if known."""
    kinds = [k.split(":", 1)[1] for k in node if k.startswith("accelerator_type:")]
    if not kinds:
        return None
    try:
        from adaptladder.estimate import gpu_table

        devices = gpu_table()["devices"]
    except Exception:
        return None
    for kind in kinds:
        for name, spec in devices.items():
            if name.lower().split("-")[0] == kind.lower() or name.lower().startswith(kind.lower()):
                return float(spec["memory_gib"]) * GIB
    return None


def rung_request(cls: Any, params: dict[str, Any], nodes: list[dict[str, float]]
                 ) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """The Ray resource request of a rung on a cluster with ``nodes`` (each node's resources), or why
    no node can run it.

    floor rungs (majority, tfidf): 1 CPU. Prompting and features: all CPUs of the largest node
    (they use every core for the LM / encoder). Fine-tuning and distillation: a GPU plus
    :data:`GPU_RUNG_CPUS` CPUs when the cluster has GPUs, else the CPUs of the largest node. A
    fine-tuning rung whose estimated peak memory (:mod:`adaptladder.estimate`) fits on no node
    (GPU memory for a GPU task, the node's Ray ``memory`` otherwise) is not submitted.
    Returns ``(request, skip_reason, details)``.
    """
    node_cpus = max((n.get("CPU", 0.0) for n in nodes), default=1.0) or 1.0
    gpu_nodes = [n for n in nodes if n.get("GPU", 0.0) >= 1]
    family = getattr(cls, "family", "")
    if family == "floor":
        request: dict[str, Any] = {"num_cpus": 1}
    elif family in ("finetune", "distill") and gpu_nodes:
        request = {"num_cpus": min(GPU_RUNG_CPUS, max(n.get("CPU", 1.0) for n in gpu_nodes)), "num_gpus": 1}
    else:
        request = {"num_cpus": node_cpus}
    request["num_cpus"] = max(1, int(request["num_cpus"]))
    on_gpu = bool(request.get("num_gpus"))
    need = _estimated_peak_bytes(cls, params, gpu=on_gpu)
    details: dict[str, Any] = {}
    if need is not None:
        if on_gpu:
            caps = [c for n in gpu_nodes if (c := _gpu_memory_bytes(n)) is not None]
        else:
            caps = [float(n["memory"]) for n in nodes if n.get("memory")]
        details = {"estimated_peak_gib": round(need / GIB, 2),
                   "largest_node_gib": round(max(caps) / GIB, 2) if caps else None,
                   "memory_kind": "GPU" if on_gpu else "RAM (Ray node memory)",
                   "estimator": "adaptladder.estimate (see docs/estimator.md)"}
        if caps and need > max(caps):
            what = "GPU memory" if on_gpu else "memory"
            return request, (f"no node of the Ray cluster can hold it: est. {need / GIB:.1f} GiB peak {what} "
                             f"(adaptladder.estimate), the largest node offers {max(caps) / GIB:.1f} GiB"), details
    return request, None, details


# ----------------------------------------------------------------------------------------- the task
def _tar_dir(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(folder), arcname=".")
    return buf.getvalue()


def _untar_into(blob: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(dest, filter="data")  # no absolute paths, links out or devices


def _storage_fs(storage: str) -> tuple[Any, str]:
    """(pyarrow filesystem, root path) for a ``--storage`` path or URI (s3://, gs://, file://...)."""
    from pyarrow import fs

    if "://" in storage:
        try:
            return fs.FileSystem.from_uri(storage)
        except Exception as e:
            raise AdaptError(f"--storage {storage}: not a storage URI this machine can open ({e}); pass a folder "
                             "every node can reach, or an s3:// / gs:// URI.") from None
    return fs.LocalFileSystem(), os.path.abspath(storage)


def _rung_task(rung_fn: Callable[..., dict[str, Any]], name: str, task: Any, cfg: RunConfig,
               registry: dict[str, str], storage: str | None, key: str) -> dict[str, Any]:
    """Runs in a Ray worker: the rung in a temporary run directory; its model comes home as a tar."""
    from adaptladder.errors import AdaptError as _AdaptError
    from adaptladder.rungs import RUNGS
    from adaptladder.store import RunStore

    RUNGS.update(registry)  # rungs the driver registered at run time (plugins, tests) resolve here too
    lines: list[str] = []
    out: dict[str, Any] = {"node": socket.gethostname(), "pid": os.getpid(), "log": lines}
    with tempfile.TemporaryDirectory(prefix="adaptladder-rung-") as tmp:
        store = RunStore(Path(tmp))
        try:
            res = rung_fn(name, task, cfg, store, log=lines.append)
        except _AdaptError as e:
            out["adapt_error"] = str(e)
            return out
        out["result"] = res
        model = store.model_dir(name)
        if res.get("status") == "done" and model.is_dir():
            blob = _tar_dir(model)
            out["model_bytes"] = len(blob)
            if storage:
                fsys, root = _storage_fs(storage)
                path = f"{root.rstrip('/')}/{key}/{name}/model-{uuid.uuid4().hex[:12]}.tar"
                fsys.create_dir(path.rsplit("/", 1)[0], recursive=True)
                with fsys.open_output_stream(path) as f:
                    f.write(blob)
                out["model_path"] = path
            else:
                out["model_tar"] = blob
    return out


# ----------------------------------------------------------------------------------------- the executor
class RayExecutor:
    """Submits every rung this command runs as a Ray task at once; the ladder collects them in order."""

    kind = "ray"

    def __init__(self, cfg: RunConfig, task: Any, store: Any, log: Callable[[str], None],
                 rung_fn: Callable[..., dict[str, Any]]) -> None:
        self.cfg, self.task, self.store, self.log, self.rung_fn = cfg, task, store, log, rung_fn
        if cfg.storage:
            fsys, root = _storage_fs(cfg.storage)
            try:
                fsys.create_dir(root, recursive=True)
            except Exception as e:
                raise AdaptError(f"--storage {cfg.storage}: cannot be created or written ({e}); pass a folder or "
                                 "URI every node can write to.") from None
        self.ctx = ray_init(cfg.ray_address)
        self.refs: dict[str, Any] = {}
        self.requests: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, dict[str, Any]] = {}
        self.submitted_at: dict[str, float] = {}
        self.params: dict[str, dict[str, Any]] = {}
        self.in_driver: set[str] = set()
        self.key = f"{Path(store.root).name}-{uuid.uuid4().hex[:8]}"

    def start(self, jobs: dict[str, dict[str, Any]]) -> None:
        from adaptladder.rungs import RUNGS, get_rung_class

        nodes = self.ctx.nodes() if jobs else []
        submit: dict[str, dict[str, Any]] = {}
        for name, params in jobs.items():
            self.params[name] = params
            if (getattr(self.cfg, "sweep", None) or {}).get(name):
                # a swept rung stays in the driver: its trials are the Ray tasks (Ray Tune, adaptladder.sweep)
                self.in_driver.add(name)
                continue
            cls = get_rung_class(name)
            request, why, details = rung_request(cls, params, nodes)
            if why is None and cls.unavailable_reason(params) is None and not self._fits_some_node(request, nodes):
                why = (f"no node of the Ray cluster has {request.get('num_cpus')} CPUs"
                       + (f" and {request['num_gpus']} GPU" if request.get("num_gpus") else ""))
            if why:
                self.skipped[name] = self._record(name, params, "skipped", why, skip_details=details)
                self.log(f"ray: {name} not submitted: {why}")
                continue
            self.requests[name] = request
            submit[name] = params
        if not submit:
            return
        import ray

        self.log(f"ray: {self.ctx.describe()}; submitting {', '.join(submit)}")
        task_ref = ray.put(self.task)
        remote = ray.remote(_rung_task)
        # inside its task a rung runs as locally (swept rungs are not sent: see above)
        worker_cfg = dataclasses.replace(self.cfg, executor="local", ray_address=None, storage=None)
        for name in submit:
            self.refs[name] = remote.options(max_retries=MAX_RETRIES, retry_exceptions=False,
                                             name=f"adaptladder:{name}", **self.requests[name]).remote(
                self.rung_fn, name, task_ref, worker_cfg, {name: RUNGS[name]}, self.cfg.storage, self.key)
            self.submitted_at[name] = time.perf_counter()

    @staticmethod
    def _fits_some_node(request: dict[str, Any], nodes: list[dict[str, float]]) -> bool:
        return any(n.get("CPU", 0) >= request.get("num_cpus", 1) and n.get("GPU", 0) >= request.get("num_gpus", 0)
                   for n in nodes)

    def _record(self, name: str, params: dict[str, Any], status: str, reason: str, **extra: Any) -> dict[str, Any]:
        from adaptladder.rungs import get_rung_class

        cls = get_rung_class(name)
        return {"name": name, "family": cls.family, "cost_rank": cls.cost_rank, "description": cls.description,
                "params": params, "params_hash": config_hash(params), "status": status, "reason": reason, **extra}

    def run_rung(self, name: str) -> dict[str, Any]:
        if name in self.skipped:
            return self.skipped.pop(name)
        if name in self.in_driver:
            self.log(f"{name}: its --sweep runs from the driver, each trial a Ray Tune task on the cluster")
            res = self.rung_fn(name, self.task, self.cfg, self.store, log=self.log)
            res["executor"] = {"kind": "ray", "where": "driver; sweep trials as Ray Tune tasks"}
            return res
        if name not in self.refs:  # the ladder submits every rung it will collect in start()
            raise AdaptError(f"internal error: rung {name} was not submitted to Ray; re-run without --executor ray.")
        import ray

        ref = self.refs.pop(name)
        request = self.requests.pop(name, {})
        from adaptladder import progress

        try:
            with progress.step(f"{name}: Ray task"):  # heartbeat lines while the driver waits for it
                out = ray.get(ref)
        except ray.exceptions.RayError as e:  # the worker or node died MAX_RETRIES + 1 times, or Ray failed
            first = (str(e).strip().splitlines() or [""])[0]
            self.log(f"[red]rung {name} failed on Ray[/red]: {type(e).__name__}: {first}")
            why = f"{type(e).__name__} on Ray after up to {MAX_RETRIES} retries: {first}"
            rec = self._record(name, self.params.get(name, {}), "failed", why)
            rec["executor"] = {"kind": "ray", **request}
            return rec
        for line in out.get("log", []):
            self.log(f"{line} [dim](ray worker {out.get('node')}:{out.get('pid')})[/dim]")
        if out.get("adapt_error"):
            raise AdaptError(out["adapt_error"])
        res = out["result"]
        via = "object store"
        if res.get("status") == "done":
            if out.get("model_path"):
                via = f"storage {out['model_path']}"
                fsys, _ = _storage_fs(self.cfg.storage or "")
                with fsys.open_input_stream(out["model_path"]) as f:
                    blob = f.read()
            else:
                blob = out.get("model_tar") or b""
            self.store.install_model(name, lambda tmp: _install_checked(blob, tmp))
        res["executor"] = {"kind": "ray", **request, "node": out.get("node"), "pid": out.get("pid"),
                           "model_bytes": out.get("model_bytes"), "model_via": via,
                           "wall_seconds": round(time.perf_counter() - self.submitted_at.get(name, 0.0), 3)}
        return res

    def cancel_outstanding(self, by: str) -> list[dict[str, Any]]:
        """Cancel (``force``: the worker is killed) every submitted rung not collected yet."""
        import ray

        out = []
        for name, ref in list(self.refs.items()):
            ready, _ = ray.wait([ref], timeout=0)
            state = "it had finished; its result is not used, as a local climb would not have run it" if ready \
                else "it was running or queued"
            with contextlib.suppress(Exception):  # already finished or gone
                ray.cancel(ref, force=True)
            rec = self._record(name, self.params.get(name, {}), "cancelled", f"cancelled: {by} cleared the bar")
            rec["executor"] = {"kind": "ray", **self.requests.get(name, {})}
            self.log(f"{name}: cancelled ({by} cleared the bar; {state})")
            out.append(rec)
        self.refs.clear()
        return out

    def abort(self) -> None:
        try:
            import ray

            for ref in self.refs.values():
                ray.cancel(ref, force=True)
        except Exception:
            pass
        self.refs.clear()

    def close(self) -> None:
        self.abort()
        self.ctx.shutdown()


def _install_checked(blob: bytes, dest: Path) -> None:
    """Unpack a rung's model folder shipped from a worker and check every file against ``rung.json``."""
    import json

    from adaptladder.artifacts import verify_files

    if not blob:
        raise AdaptError("a Ray worker returned no model files for a finished rung; re-run to redo it.")
    _untar_into(blob, dest)
    meta_file = dest / "rung.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    verify_files(dest, meta.get("files"), meta_file)

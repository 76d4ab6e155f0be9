"""MLflow tracking of a finished run: ``adaptladder run ... --track [URI]`` (or ``adaptladder track RUN_DIR``).

The ladder run becomes one MLflow run (its configuration as parameters, the recommendation as
tags, the report files as artifacts) with one nested child run per rung (its settings, its
validation/test metrics with the 95% CI bounds, times, cost, its result.json). The recommended
rung is logged as an MLflow pyfunc model (``models from code``: :mod:`adaptladder.mlflow_model`
plus the rung's safe model directory), so ``mlflow.pyfunc.load_model`` and ``mlflow models
serve --env-manager local`` answer the same labels as ``adaptladder predict``.

Tracking runs after the run directory is complete, so a tracking store that is down or broken
costs a one-line warning, never the run. Nothing is logged (and mlflow is not imported)
without ``--track``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adaptladder.errors import AdaptError

#: ``--track`` given without a value
DEFAULT_FLAG = "DEFAULT"
DEFAULT_STORE = Path("runs") / "mlflow.db"
EXPERIMENT_PREFIX = "adaptladder"
REPORT_FILES = ("report.html", "report.md", "results.json", "summary.md", "provenance.json", "config.json",
                "task.json", "audit.json")
METRIC_KEYS = ("macro_f1", "accuracy")
MAX_PARAM_CHARS = 500


def expand_track_flag(argv: list[str]) -> list[str]:
    """Let ``--track`` take an optional value: alone (or before another option or DATA) it means the default store.

    The token after ``--track`` is its URI only when it looks like one (``scheme://...`` or a
    ``.db`` / ``.sqlite`` path), so ``run --track sms-spam`` still reads sms-spam as the data.
    """
    out: list[str] = []
    for i, a in enumerate(argv):
        out.append(a)
        if a == "--track":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is None or not ("://" in nxt or nxt.endswith((".db", ".sqlite"))):
                out.append(DEFAULT_FLAG)
    return out


def resolve_uri(value: str | None) -> str:
    """``--track`` alone: a SQLite store at ``runs/mlflow.db``; a path ending in .db: SQLite there; else as given."""
    if value in (None, "", DEFAULT_FLAG):
        path = DEFAULT_STORE.resolve()
    elif "://" not in str(value) and str(value).endswith((".db", ".sqlite")):
        path = Path(str(value)).resolve()
    else:
        return str(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _check_reachable(uri: str) -> None:
    """An HTTP tracking server that does not answer fails here in seconds, not after MLflow's retries."""
    if not uri.startswith(("http://", "https://")):
        return
    import httpx

    try:
        httpx.get(uri.rstrip("/") + "/health", timeout=5.0)
    except httpx.HTTPError as e:
        raise AdaptError(f"the MLflow tracking server {uri} does not answer ({type(e).__name__})") from e


def _flat(prefix: str, obj: Any, out: dict[str, str]) -> dict[str, str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        text = obj if isinstance(obj, str) else json.dumps(obj, default=str)
        out[prefix] = text[:MAX_PARAM_CHARS]
    return out


def rung_metrics(r: dict[str, Any]) -> dict[str, float]:
    """The numbers of one rung's result: validation/test metrics with CI bounds, times, cost."""
    out: dict[str, float] = {}
    for part in ("validation", "test"):
        d = r.get(part) or {}
        for m in METRIC_KEYS:
            if isinstance(d.get(m), (int, float)):
                out[f"{part}_{m}"] = float(d[m])
                ci = d.get(f"{m}_ci")
                if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
                    out[f"{part}_{m}_ci_low"], out[f"{part}_{m}_ci_high"] = float(ci[0]), float(ci[1])
        if isinstance(d.get("n"), int):
            out[f"{part}_n"] = float(d["n"])
    for key in ("fit_seconds", "cost_per_1k_usd"):
        if isinstance(r.get(key), (int, float)):
            out[key] = float(r[key])
    for key, v in (r.get("predict") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"predict_{key}"] = float(v)
    for key, v in (r.get("peak_memory_mb") or {}).items():
        if isinstance(v, (int, float)):
            out[f"peak_memory_mb_{key}"] = float(v)
    return out


def pip_requirements() -> list[str]:
    from adaptladder.store import package_versions

    return [f"{k}=={v}" for k, v in package_versions().items() if k != "adaptladder" and v != "not installed"]


def log_run(run_dir: str | Path, uri: str | None = None) -> dict[str, Any]:
    """Log a finished run directory into MLflow; returns the run id, experiment and the model URI.

    Raises :class:`AdaptError` (one line) when the store cannot be reached or written;
    :func:`track` turns that into a warning.
    """
    try:
        return _log_run(run_dir, uri)
    except AdaptError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise AdaptError(f"MLflow could not log {run_dir} to {resolve_uri(uri)} ({type(e).__name__}: "
                         f"{first[:300]})") from e


def _log_run(run_dir: str | Path, uri: str | None) -> dict[str, Any]:
    from adaptladder.store import read_json
    from adaptladder.winner import _results

    run_dir = Path(run_dir).resolve()
    doc = _results(run_dir)
    # a run directory is untrusted input: every check passes before a store is created or written
    from adaptladder.kinds import GENERATION, kind_of
    from adaptladder.winner import rung_records

    records = rung_records(doc, run_dir)
    rec0 = doc.get("recommendation")
    winner0 = rec0.get("rung") if isinstance(rec0, dict) else None
    preloaded = None
    if winner0 in {r["name"] for r in records} and kind_of(doc) != GENERATION:
        from adaptladder.rungs import load_rung

        preloaded = load_rung(run_dir / "rungs" / winner0 / "model", run_root=run_dir)
    uri = resolve_uri(uri)
    _check_reachable(uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import logging

    import mlflow

    for name in ("mlflow", "alembic"):  # database migrations and "creating experiment" notes are not for the user
        logging.getLogger(name).setLevel(logging.WARNING)

    mlflow.set_tracking_uri(uri)
    task = doc.get("task") or {}
    rec = doc.get("recommendation") or {}
    winner = rec.get("rung")
    experiment = f"{EXPERIMENT_PREFIX}/{task.get('name', run_dir.name)}"
    mlflow.set_experiment(experiment)
    prov = read_json(run_dir / "provenance.json") if (run_dir / "provenance.json").is_file() else {}
    out: dict[str, Any] = {"tracking_uri": uri, "experiment": experiment, "children": {}}
    with mlflow.start_run(run_name=f"{task.get('name', run_dir.name)} ladder") as parent:
        out["run_id"] = parent.info.run_id
        mlflow.log_params(_flat("", {k: v for k, v in (doc.get("config") or {}).items() if v not in (None, {}, [])},
                                {}))
        tags = {"adaptladder.run_dir": str(run_dir), "adaptladder.recommended_rung": str(winner),
                "adaptladder.metric": str(doc.get("metric")), "adaptladder.bar": str(doc.get("bar")),
                "adaptladder.task": str(task.get("name")), "adaptladder.n_classes": str(task.get("n_classes")),
                "adaptladder.partial": str(bool(doc.get("partial")))}
        for i, reason in enumerate(rec.get("reasons") or []):
            tags[f"adaptladder.reason.{i}"] = str(reason)[:5000]
        if prov:
            tags.update({"adaptladder.python": str(prov.get("python")),
                         "adaptladder.cpu": str((prov.get("cpu") or {}).get("model")),
                         "adaptladder.gpus": json.dumps(prov.get("gpus") or [])})
            git = (prov.get("git") or {}).get("adaptladder") or {}
            if git.get("commit"):
                tags["mlflow.source.git.commit"] = git["commit"]
        mlflow.set_tags(tags)
        by_name = {r["name"]: r for r in doc.get("rungs") or []}
        if winner in by_name:
            mlflow.log_metrics({f"recommended_{k}": v for k, v in rung_metrics(by_name[winner]).items()})
        for f in REPORT_FILES:
            if (run_dir / f).is_file():
                mlflow.log_artifact(str(run_dir / f))
        for r in doc.get("rungs") or []:
            with mlflow.start_run(run_name=r["name"], nested=True) as child:
                out["children"][r["name"]] = child.info.run_id
                mlflow.set_tags({"adaptladder.rung": r["name"], "adaptladder.status": str(r.get("status")),
                                 "adaptladder.family": str(r.get("family")),
                                 "adaptladder.reason": str(r.get("reason") or "")[:5000],
                                 "adaptladder.recommended": str(r["name"] == winner),
                                 "adaptladder.meets_bar": str(r.get("meets_bar"))})
                params = _flat("", r.get("params") or {}, {})
                if params:
                    mlflow.log_params(params)
                metrics = rung_metrics(r)
                if metrics:
                    mlflow.log_metrics(metrics)
                result_file = run_dir / "rungs" / r["name"] / "result.json"
                if result_file.is_file():
                    mlflow.log_artifact(str(result_file))
        if winner in by_name and preloaded is not None:
            out["model_uri"] = _log_model(run_dir, winner, preloaded)
    return out


def _log_model(run_dir: Path, rung: str, model: Any) -> str:
    """Log the recommended rung (``model``: loaded, and so checked, before anything was logged)."""
    import mlflow
    import pandas as pd

    from adaptladder.winner import _prediction_frame

    model_dir = run_dir / "rungs" / rung / "model"
    example = pd.DataFrame({"text": ["an example text"]})
    signature = mlflow.models.infer_signature(example, _prediction_frame(model, ["an example text"]))
    code = Path(__file__).with_name("mlflow_model.py")
    info = mlflow.pyfunc.log_model(name="model", python_model=str(code), artifacts={"model_dir": str(model_dir)},
                                   signature=signature, input_example=example, pip_requirements=pip_requirements())
    mlflow.set_tag("adaptladder.model_uri", info.model_uri)
    return str(info.model_uri)


def track(run_dir: str | Path, uri: str | None, warn: Callable[[str], None]) -> dict[str, Any] | None:
    """:func:`log_run`, with any failure reduced to one warning line (the run directory is already complete)."""
    try:
        return log_run(run_dir, uri)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        warn(f"MLflow tracking did not log this run: {first[:400]}"
             f"; the run itself is complete in {run_dir}: log it later with `adaptladder track {run_dir} --uri URI`.")
        return None

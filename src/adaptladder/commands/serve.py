"""`adaptladder serve RUN_DIR`: the run's chosen rung over HTTP (see :mod:`adaptladder.serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adaptladder.commands import ApiKeyEnvOpt, BaseUrlOpt, TrustOpt, apply_trust

RunDirArg = Annotated[Path, typer.Argument(help="Run directory written by `adaptladder run` (e.g. runs/sms-spam).",
                                            show_default=False)]


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
    app.command("track")(track_cmd)
    app.command("export")(export_cmd)


def export_cmd(
    run_dir: RunDirArg,
    out: Annotated[Path, typer.Argument(help="Folder to write (must not exist, or be empty).", show_default=False)],
    rung: Annotated[str | None, typer.Option("--rung", help="Export this rung instead of the recommended one.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was exported as JSON.")] = False,
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    trust_run_dir: TrustOpt = False,
) -> None:
    """Write the chosen rung as a shippable folder: model files, README.md model card, loading example."""
    apply_trust(base_url, api_key_env, trust_run_dir)
    from rich.console import Console

    from adaptladder.bundle import export_run
    from adaptladder.commands import print_json

    info = export_run(run_dir, out, rung)
    if as_json:
        print_json(info)
        return
    Console().print(f"{info['rung']}: exported to {info['out']} ({info['files']} model files, README.md model card, "
                    "requirements.txt)", highlight=False, markup=False, soft_wrap=True)


def track_cmd(
    run_dir: RunDirArg,
    uri: Annotated[str | None, typer.Option("--uri", help="MLflow tracking URI (default: SQLite store "
                                            "runs/mlflow.db).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the MLflow run id, experiment and URIs as JSON.")]
    = False,
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    trust_run_dir: TrustOpt = False,
) -> None:
    """Log a finished run directory to MLflow (as `run --track` does): child run per rung, recommended model."""
    apply_trust(base_url, api_key_env, trust_run_dir)
    from rich.console import Console

    from adaptladder.commands import print_json
    from adaptladder.tracking import log_run

    out = log_run(run_dir, uri)
    if as_json:
        print_json(out)
        return
    Console().print(f"MLflow: run {out['run_id']} in {out['experiment']} at {out['tracking_uri']}"
                    + (f"; model {out['model_uri']}" if out.get("model_uri") else ""), highlight=False, markup=False,
                    soft_wrap=True)


def serve_cmd(
    run_dir: RunDirArg,
    rung: Annotated[str | None, typer.Option("--rung", help="Serve this rung instead of the recommended one.")] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (0.0.0.0 for all).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes (each loads the model).")] = 1,
    batching: Annotated[bool, typer.Option("--batching/--no-batching",
                                           help="Merge concurrent requests into one model call.")] = True,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", help="Most texts per merged model call.")] = 64,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", help="How long the first request of a batch waits "
                                               "for others (ms).")] = 5.0,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", help="Largest request body (413 above).")]
    = 1_000_000,
    max_texts: Annotated[int, typer.Option("--max-texts", help="Most texts per request (413 above).")] = 256,
    max_text_chars: Annotated[int, typer.Option("--max-text-chars", help="Longest text in characters (422 above).")]
    = 20_000,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds a request may take (504 after).")] = 30.0,
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    trust_run_dir: TrustOpt = False,
) -> None:
    """Serve the run's recommended (or --rung) model: POST /predict, GET /health, /metrics, /docs."""
    apply_trust(base_url, api_key_env, trust_run_dir)
    from adaptladder.errors import AdaptError

    if not 1 <= port <= 65535:
        raise AdaptError(f"--port {port} is not a TCP port: use 1-65535 (e.g. 8000).")
    from adaptladder.serve import ServeSettings, serve

    settings = ServeSettings(run_dir=str(run_dir), rung=rung, batching=batching, max_batch_size=max_batch_size,
                             max_wait_ms=max_wait_ms, max_body_bytes=max_body_bytes, max_texts=max_texts,
                             max_text_chars=max_text_chars, timeout_s=timeout)
    serve(settings, host=host, port=port, workers=workers)

"""`adaptladder report | predict | evaluate`: redraw a run's report, use its winner, check for drift."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adaptladder.commands import ApiKeyEnvOpt, BaseUrlOpt, RunDirArg, TrustOpt, apply_trust, print_json

console = Console()
if not console.is_terminal:
    console.width = max(console.width, 160)



def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        run_dir: RunDirArg,
        as_json: Annotated[bool, typer.Option("--json", help="Print the written files' paths as JSON.")] = False,
    ) -> None:
        """Rebuild report.html and report.md from a run directory's results.json (a killed run gets a partial one)."""
        from adaptladder.ladder import ensure_results
        from adaptladder.report import rebuild

        try:
            ensure_results(run_dir)
            paths = rebuild(run_dir)
        except OSError as e:  # disk full / read-only: say what was not written
            from adaptladder.errors import AdaptError

            raise AdaptError(f"could not write the report (report.html, report.md) in {run_dir} "
                             f"({e.strerror or e}); free space and run `adaptladder report {run_dir}` again.") from e
        if as_json:
            print_json({kind: str(path) for kind, path in paths.items()})
            return
        for kind, path in paths.items():
            console.print(f"{kind}: {path}", highlight=False, markup=False)

    @app.command("predict")
    def predict_cmd(
        run_dir: RunDirArg,
        input: Annotated[Path, typer.Option("--input", "-i", help="CSV/TSV/JSONL/Parquet with a text column.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="Where to write labels + probabilities "
                                             "(.csv/.tsv/.jsonl/.parquet).")],
        text_col: Annotated[str | None, typer.Option(help="Column holding the text (default: the run's, or "
                                                     "auto-detected).")] = None,
        rung: Annotated[str | None, typer.Option(help="Use this rung instead of the recommended one.")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")] = False,
        executor: Annotated[str, typer.Option(help="local, or ray: predict as a Ray Data job (same output "
                                              "file, rows in input order).")] = "local",
        ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (HOST:PORT) for --executor "
                                                        "ray; default: start a local Ray instance.")] = None,
        base_url: BaseUrlOpt = None,
        api_key_env: ApiKeyEnvOpt = None,
        trust_run_dir: TrustOpt = False,
    ) -> None:
        """Label new texts with the run's recommended (or named) rung; adds label and per-class probabilities
        (a generation run: one generated text per row, column ``generation``, row order kept)."""
        from adaptladder.errors import AdaptError
        from adaptladder.winner import predict_file

        apply_trust(base_url, api_key_env, trust_run_dir)
        if executor not in ("local", "ray"):
            raise AdaptError(f"--executor {executor!r} is unknown: use local or ray.")
        if ray_address and executor != "ray":
            raise AdaptError("--ray-address is for --executor ray; add --executor ray or drop --ray-address.")
        if executor == "ray":
            from adaptladder.ray_data import predict_file_ray

            info = predict_file_ray(run_dir, input, output, text_col=text_col, rung=rung, overwrite=overwrite,
                                    address=ray_address)
        else:
            info = predict_file(run_dir, input, output, text_col=text_col, rung=rung, overwrite=overwrite)
        if as_json:
            print_json(info)
            return
        if info.get("task") == "generation":
            empty = f"; {info['empty']:,} empty" if info.get("empty") else ""
            console.print(f"{info['rung']}: generated for {info['n']:,} rows of column {info['text_col']!r} in "
                          f"{info['seconds']:.2f}s (column {info['column']!r}{empty}) -> {info['output']}",
                          highlight=False, markup=False)
            return
        counts = ", ".join(f"{k} {v:,}" for k, v in list(info["counts"].items())[:10])
        console.print(f"{info['rung']}: labelled {info['n']:,} rows of column {info['text_col']!r} in "
                      f"{info['seconds']:.2f}s ({counts}) -> {info['output']}", highlight=False, markup=False)

    @app.command("evaluate")
    def evaluate_cmd(
        run_dir: RunDirArg,
        data: Annotated[Path, typer.Option("--data", help="New labelled data (same label names as the run; for a "
                                           "generation run, (input, target) pairs).")],
        rung: Annotated[str | None, typer.Option(help="Evaluate this rung (default: the recommended one).")] = None,
        all_rungs: Annotated[bool, typer.Option("--all-rungs", help="Evaluate every saved rung.")] = False,
        tolerance: Annotated[float, typer.Option(help="Exit 1 when the score drops significantly by more than "
                                                 "this.")] = 0.02,
        text_col: Annotated[str | None, typer.Option(help="Text column (default: the run's / auto).")] = None,
        label_col: Annotated[str | None, typer.Option(help="Label column (default: the run's / auto).")] = None,
        target_col: Annotated[str | None, typer.Option(
            help="Generation runs: the reference output column (default: the run's / auto).")] = None,
        metric: Annotated[str | None, typer.Option(help="macro_f1 or accuracy; for a generation run one of its "
                                                   "metrics (default: the run's).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the evaluation as JSON.")] = False,
        base_url: BaseUrlOpt = None,
        api_key_env: ApiKeyEnvOpt = None,
        trust_run_dir: TrustOpt = False,
    ) -> None:
        """Score saved rungs on new labelled data against the run's test score (drift / before-after check).

        Exit code 1 when the deployed rung (--rung, else the recommended one) is significantly worse by
        more than --tolerance; 0 otherwise.
        """
        from adaptladder.store import load_results
        from adaptladder.winner import evaluate, gate_failed

        apply_trust(base_url, api_key_env, trust_run_dir)
        evals = evaluate(run_dir, data, rung=rung, all_rungs=all_rungs, tolerance=tolerance, text_col=text_col,
                         label_col=label_col, metric=metric, target_col=target_col)
        deployed = rung or (load_results(run_dir).get("recommendation") or {}).get("rung")
        failed = gate_failed(evals, deployed)
        if as_json:
            print_json({"evaluations": [e.to_dict() for e in evals], "gate_failed": failed})
        else:
            m = evals[0].metric
            table = Table(title=escape(f"{data}: {m} on new data vs the run's test split"))
            for col in ("rung", "n new", f"new {m}", f"run test {m}", "difference [95% CI]", "verdict"):
                table.add_column(col, justify="right" if col not in ("rung", "verdict") else "left")
            for e in evals:
                color = {"degraded": "red", "improved": "green"}.get(e.verdict, "white")
                verdict = e.verdict + (" (beyond tolerance)" if e.beyond_tolerance else "")
                table.add_row(e.rung, f"{e.n_new:,}", f"{e.new[m]:.3f} [{e.new[m + '_ci'][0]:.3f}, "
                              f"{e.new[m + '_ci'][1]:.3f}]", f"{e.run_test[m]:.3f}",
                              f"{e.diff:+.3f} [{e.diff_ci[0]:+.3f}, {e.diff_ci[1]:+.3f}]",
                              f"[{color}]{verdict}[/{color}]")
            console.print(table)
            for e in evals:
                console.print(e.sentence(), highlight=False, markup=False)
                for n in e.notes:
                    console.print(f"  note: {n}", highlight=False, markup=False)
            console.print(("FAIL: " if failed else "OK: ") + f"tolerance {tolerance:.3f} on the deployed rung "
                          f"({deployed}).", highlight=False, markup=False)
        if failed:
            raise typer.Exit(1)

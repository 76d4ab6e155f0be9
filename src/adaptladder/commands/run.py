"""`adaptladder run`: climb the ladder on a data set and print the evidence."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from adaptladder.commands import print_json
from adaptladder.errors import AdaptError

console = Console()
if not console.is_terminal:  # piped / CI output: do not squeeze the tables into 80 columns
    console.width = max(console.width, 160)
err_console = Console(stderr=True)  # progress and logs: stdout holds only the results (or the --json document)

DataArg = Annotated[str | None, typer.Argument(help="Built-in data set name (see `adaptladder datasets`) or a "
                                               "CSV/TSV/JSONL/Parquet file.", show_default=False)]


def parse_set(values: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--set lora.r=16 --set features.heads=[logreg]`` -> ``{"lora": {"r": 16}, ...}`` (values parsed as YAML)."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in values or []:
        key, eq, raw = item.partition("=")
        rung, dot, param = key.partition(".")
        if not eq or not dot or not rung or not param:
            raise AdaptError(f"--set {item!r} is not of the form RUNG.PARAM=VALUE (e.g. --set lora.r=16).")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        out.setdefault(rung, {})[param] = value
    return out


def parse_sample(value: str | None) -> int | dict[str, int] | None:
    """``--sample 500`` -> 500 (every split); ``--sample train=2000,test=1000`` -> per-split caps."""
    if value is None:
        return None
    text = value.strip()
    if "=" not in text:
        try:
            return int(text)
        except ValueError:
            raise AdaptError(f"--sample {value!r} is not a number of rows; give N (per split) or "
                             "train=N,validation=N,test=N.") from None
    from adaptladder.task import SPLIT_ALIASES

    out: dict[str, int] = {}
    for part in text.split(","):
        key, _, num = part.partition("=")
        split = SPLIT_ALIASES.get(key.strip().lower())
        try:
            n = int(num)
        except ValueError:
            n = None
        if split is None or n is None:
            raise AdaptError(f"--sample {value!r}: {part.strip()!r} is not SPLIT=N (splits: train, validation, "
                             "test); e.g. --sample train=2000,validation=1000,test=1000.")
        out[split] = n
    return out


def split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise AdaptError("--rungs is empty; give a comma-separated list such as tfidf,features.")
    return items


def print_results(results: list[dict[str, Any]], metric: str, bar: float | None,
                  recommended: str | None = None) -> None:
    """The results table on the terminal: the same columns and cells as summary.md and report.md."""
    from rich.text import Text

    from adaptladder.report.table import TEXT_COLUMNS, ladder_table

    headers, rows = ladder_table(results, metric, recommended)
    table = Table(title=f"adaptladder: validation and test {metric} (95% CI)"
                  + (f", bar {bar:.2f}" if bar is not None else ""))
    for col in headers:
        table.add_column(col, justify="left" if col in TEXT_COLUMNS else "right")
    for cells in rows:
        table.add_row(*(Text(c) for c in cells))  # data text (label names, errors) is never read as markup
    console.print(table)


def print_generation_results(results: list[dict[str, Any]], metric: str, bar: float | None,
                             recommended: str | None = None) -> None:
    """A generation run's table on the terminal (the same cells as its summary.md)."""
    from rich.text import Text

    from adaptladder.generation.ladder import gen_ladder_table

    headers, rows = gen_ladder_table(results, metric, recommended)
    table = Table(title=f"adaptladder (generation): validation and test {metric} (95% CI)"
                  + (f", bar {bar:.2f}" if bar is not None else ""))
    for col in headers:
        table.add_column(col, justify="left" if col in ("rung", "status") else "right")
    for cells in rows:
        table.add_row(*(Text(c) for c in cells))
    console.print(table)


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        data: DataArg = None,
        data_opt: Annotated[str | None, typer.Option("--data", help="Same as the DATA argument.")] = None,
        text_col: Annotated[str | None, typer.Option(help="Column holding the text.")] = None,
        label_col: Annotated[str | None, typer.Option(help="Column holding the label.")] = None,
        target_col: Annotated[str | None, typer.Option(help="Generation: column holding the target text "
                                                       "(the text column is the input).")] = None,
        task: Annotated[str | None, typer.Option(help="classification or generation [default: detected: a target "
                                                 "column of mostly distinct, multi-word values is generation].")
                        ] = None,
        schema: Annotated[str | None, typer.Option(help="Generation: JSON Schema file every target must validate "
                                                   "against (an extraction-to-JSON task).")] = None,
        instruction: Annotated[str | None, typer.Option(help="Generation: the task description prompting rungs "
                                                        "use.")] = None,
        split_col: Annotated[str | None, typer.Option(help="Column with train/validation/test per row.")] = None,
        train: Annotated[str | None, typer.Option(help="Training file (with --test).")] = None,
        validation: Annotated[str | None, typer.Option(help="Validation file (optional with --train).")] = None,
        test: Annotated[str | None, typer.Option(help="Test file (with --train).")] = None,
        rungs: Annotated[str | None, typer.Option(help="Comma-separated rungs to climb (default: all).")] = None,
        order: Annotated[str | None, typer.Option(help="Comma-separated climbing order overriding costs.")] = None,
        bar: Annotated[float | None, typer.Option(help="Stop at the first rung whose validation score reaches "
                                                       "this (0-1).")] = None,
        metric: Annotated[str | None, typer.Option(help="macro_f1 or accuracy [default: macro_f1]; generation: "
                                                   "exact_match, token_f1, rouge_l, chrf, embedding_sim, json_parse, "
                                                   "schema_valid, field_f1, json_exact_match [default: per task "
                                                   "kind].")] = None,
        margin: Annotated[float | None, typer.Option(help="Non-inferiority margin: a rung within this of the bar "
                                                     "and not significantly below it meets the bar "
                                                     "(default 0.005).")] = None,
        run_all: Annotated[bool, typer.Option("--all", help="Run every rung even after the bar is met.")] = False,
        lower_bound: Annotated[bool, typer.Option("--lower-bound", help="Require the lower 95% confidence bound "
                                                  "to clear the bar.")] = False,
        seed: Annotated[int | None, typer.Option(help="Seed for splits, sampling and training [default: 13].")] = None,
        sample: Annotated[str | None, typer.Option(help="Use at most N rows per split (stratified); per split: "
                                                       "train=2000,validation=1000,test=1000 (a split not named "
                                                       "keeps all its rows).")] = None,
        encoder: Annotated[str | None, typer.Option(help="Sentence encoder: alias, HF id or path [default: minilm].")
                           ] = None,
        lm: Annotated[str | None, typer.Option(help="Language model for prompting rungs.")] = None,
        budget_minutes: Annotated[float | None, typer.Option(help="Time budget per rung in minutes: "
                                                                   "fine-tuning trains to it; every rung's "
                                                                   "evaluation is sized to fit it.")] = None,
        audit_budget_minutes: Annotated[float | None, typer.Option(
            help="Time budget of the data audit in minutes (default: --budget-minutes); its costly stages "
                 "check a stratified sample that fits, stated in the audit report.")] = None,
        set_: Annotated[list[str] | None, typer.Option("--set", help="Rung setting RUNG.PARAM=VALUE "
                                                       "(repeatable).")] = None,
        sweep: Annotated[list[str] | None, typer.Option("--sweep", help="Search a rung setting on validation: "
                                                        "RUNG.KEY=V1,V2,... (repeatable; a grid; the best is "
                                                        "used).")] = None,
        config: Annotated[str | None, typer.Option(help="YAML run config; options given here override it.")] = None,
        out: Annotated[str | None, typer.Option(help="Run directory (default runs/<data name>).")] = None,
        no_audit: Annotated[bool, typer.Option("--no-audit", help="Skip the data audit.")] = False,
        force: Annotated[bool, typer.Option("--force", help="Run despite audit errors.")] = False,
        fresh: Annotated[bool, typer.Option("--fresh", help="Move an existing run aside and start over.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout (run directory, "
                                                     "recommendation, rungs); progress goes to stderr.")] = False,
        track: Annotated[str | None, typer.Option(
            "--track", metavar="[URI]",
            help="Log the run to MLflow (tracking URI; alone: SQLite store runs/mlflow.db).")] = None,
        executor: Annotated[str | None, typer.Option(
            help="Where rungs run: local (this process) or ray (Ray tasks, concurrently; see docs/scaling.md) "
                 "[default: local].")] = None,
        ray_address: Annotated[str | None, typer.Option(
            help="Ray cluster to use with --executor ray (HOST:PORT from `ray start --head`, ray://HOST:PORT or "
                 "auto); default: start a local Ray instance.")] = None,
        storage: Annotated[str | None, typer.Option(
            help="With --executor ray: folder or URI (s3://...) every node can reach, where workers put model "
                 "files for the driver (default: they travel through Ray's object store).")] = None,
    ) -> None:
        """Audit the data, climb the ladder in order of cost and recommend the cheapest rung good enough."""
        from adaptladder.ladder import RunConfig, run

        if data and data_opt and data != data_opt:
            raise AdaptError("give the data once: either as the DATA argument or with --data.")
        values: dict[str, Any] = dict(
            data=data or data_opt, text_col=text_col, label_col=label_col, target_col=target_col, task=task,
            schema=schema, instruction=instruction, split_col=split_col, train=train,
            validation=validation, test=test, rungs=split_list(rungs), order=split_list(order), bar=bar,
            metric=metric, margin=margin, run_all=run_all or None, require_lower_bound=lower_bound or None,
            seed=seed,
            sample=parse_sample(sample), encoder=encoder, lm=lm, budget_minutes=budget_minutes,
            audit_budget_minutes=audit_budget_minutes, out=out,
            no_audit=no_audit or None, force=force or None, fresh=fresh or None,
            executor=executor, ray_address=ray_address, storage=storage,
        )
        overrides = parse_set(set_)
        if config:
            cfg = RunConfig.from_yaml(config, **values)
        else:
            cfg = RunConfig(**{k: v for k, v in values.items() if v is not None})
        if metric is not None:  # given on the command line: a classification metric is then never swapped
            cfg.metric_given = True  # type: ignore[attr-defined]
        for rung, params in overrides.items():
            cfg.rung_params.setdefault(rung, {}).update(params)
        if sweep:
            from adaptladder.sweep import parse_sweep

            for rung, spec in parse_sweep(sweep).items():
                cfg.sweep.setdefault(rung, {}).update(spec)
        t0 = time.perf_counter()

        def log(msg: str) -> None:
            err_console.print(f"[dim]{time.perf_counter() - t0:6.1f}s[/dim] {msg}")

        def on_rung(res: dict[str, Any]) -> None:
            if res.get("task") == "generation":
                if res.get("status") == "done":
                    from adaptladder.generation.ladder import on_rung_line

                    err_console.print(on_rung_line(res), highlight=False, markup=False)
                return
            if res.get("status") == "done":
                v = res["validation"]
                cv = f", cross-validated {res['cv'][cfg.metric]:.3f}" if isinstance(res.get("cv"), dict) else ""
                err_console.print(f"        {res['name']}: validation {cfg.metric} {v[cfg.metric]:.3f}{cv}, "
                              f"fit {res['fit_seconds']:.1f}s")

        result = run(cfg, log=log, on_rung=on_rung)
        if track is not None:  # after the run directory is complete: a tracking failure is a warning only
            from adaptladder.tracking import track as track_run

            tracked = track_run(result.run_dir, track, lambda msg: err_console.print(
                f"warning: {msg}", highlight=False, markup=False, soft_wrap=True))
            if tracked:
                err_console.print(f"MLflow: run {tracked['run_id']} in {tracked['experiment']} at "
                                  f"{tracked['tracking_uri']}" + (f"; model {tracked['model_uri']}"
                                                                  if tracked.get("model_uri") else ""),
                                  highlight=False, markup=False, soft_wrap=True)
        if as_json:
            print_json({"run_dir": str(result.run_dir), "recommendation": result.recommendation,
                        "rungs": [{k: r.get(k) for k in ("name", "status", "meets_bar")} for r in result.results]})
            return
        rec = result.recommendation
        from adaptladder.kinds import GENERATION, kind_of

        if kind_of(result.task) == GENERATION:
            print_generation_results(result.results, rec.get("metric") or cfg.metric, cfg.bar, rec.get("rung"))
        else:
            print_results(result.results, cfg.metric, cfg.bar, rec.get("rung"))
        console.print(f"[bold]Recommendation:[/bold] {rec.get('rung')}")
        for reason in rec.get("reasons", []):
            console.print(f"  - {reason}", markup=False)
        console.print(f"Run directory: {result.run_dir} (report.html, report.md, results.json)", markup=False,
                      highlight=False)

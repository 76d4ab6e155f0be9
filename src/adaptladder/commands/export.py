"""`export-jsonl` and `validate-jsonl`: chat fine-tuning files for managed services."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adaptladder.commands import one_run_dir, print_json, renamed
from adaptladder.errors import AdaptError

console = Console()
MAX_PROBLEMS_SHOWN = 200


def register(app: typer.Typer) -> None:
    app.command("export-jsonl")(export_jsonl_cmd)
    app.command("validate-jsonl")(validate_jsonl_cmd)


def export_jsonl_cmd(
    data: Annotated[str, typer.Argument(
        help="A built-in data set name (trec6, sms-spam, ...) or a CSV/TSV/JSONL/Parquet file.")],
    run_dir: Annotated[Path | None, typer.Argument(
        help="A run directory: use the system prompt its prompting rung used (its system_prompt.txt).",
        show_default=False)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Training file to write (JSONL).",
                                                show_default=False)] = None,
    system: Annotated[str | None, typer.Option("--system", help="System prompt on every line (\"\" for none).")] = None,
    rung: Annotated[str | None, typer.Option(
        "--rung", help="With RUN_DIR: which prompting rung's prompt, when they differ.")] = None,
    template_from_run: Annotated[bool, typer.Option(
        "--template-from-run", help="With RUN_DIR: wrap each text in the rung's user-message template too "
        "(prompt_template.j2, rendered without shots).")] = False,
    fmt: Annotated[str, typer.Option("--format", help="Output format.")] = "openai-chat",
    val_output: Annotated[Path | None, typer.Option("--val-output", help="Also write the validation split to this "
                                                    "file.")] = None,
    test_output: Annotated[Path | None, typer.Option(
        "--test-output", help="Also write the test split to this file (held out by default: export it only to "
        "evaluate).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")] = False,
    text_col: Annotated[str | None, typer.Option("--text-col", help="Text column of DATA.")] = None,
    label_col: Annotated[str | None, typer.Option("--label-col", help="Label column of DATA.")] = None,
    target_col: Annotated[str | None, typer.Option(
        "--target-col", help="Generation data: the target (output text) column of DATA; it becomes the assistant "
        "turn.")] = None,
    task_type: Annotated[str | None, typer.Option(
        "--task", help="classification or generation (default: detected from DATA, as `run` does).")] = None,
    split_col: Annotated[str | None, typer.Option(
        "--split-col", help="Split column of DATA (train/validation/test).")] = None,
    seed: Annotated[int, typer.Option(
        "--seed", help="Seed of the train/validation/test split and the line order.")] = 13,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")] = False,
    old_from_run: Annotated[Path | None, typer.Option("--from-run", hidden=True)] = None,
    old_out: Annotated[Path | None, typer.Option("--out", hidden=True)] = None,
    old_val_out: Annotated[Path | None, typer.Option("--val-out", hidden=True)] = None,
    old_test_out: Annotated[Path | None, typer.Option("--test-out", hidden=True)] = None,
) -> None:
    """Write a task in chat fine-tuning format (one {"messages": [...]} per line); test is held out.

    Generation data (input -> target text): the instruction (--system, the run's, or the task's own)
    is the system message, the input the user turn and the target the assistant turn.
    """
    from adaptladder.export import export_jsonl, system_prompt_from_run, user_template_from_run
    from adaptladder.task import load_task

    from_run = one_run_dir(run_dir, old_from_run, "--from-run")
    out = renamed(output, old_out, "--output", "--out")
    val_out = renamed(val_output, old_val_out, "--val-output", "--val-out")
    test_out = renamed(test_output, old_test_out, "--test-output", "--test-out")
    if out is None:
        raise AdaptError("pass the training file to write with -o/--output FILE.jsonl.")
    if _is_generation_data(data, text_col, label_col, target_col, task_type):
        _export_generation(data, from_run, out, val_out, test_out, system=system, rung=rung,
                           template_from_run=template_from_run, fmt=fmt, overwrite=overwrite, text_col=text_col,
                           target_col=target_col if target_col is not None else label_col, split_col=split_col,
                           seed=seed, as_json=as_json)
        return
    if target_col is not None:
        raise AdaptError("--target-col is for generation data; for labels use --label-col (or pass --task "
                         "generation).")
    if (system is None) == (from_run is None):
        raise AdaptError("pass exactly one of --system \"...\" and a RUN_DIR argument (--system \"\" for no system "
                         "message).")
    if (rung is not None or template_from_run) and from_run is None:
        raise AdaptError("--rung and --template-from-run only apply with a RUN_DIR argument; pass the run directory "
                         "too.")
    source = "--system"
    template = None
    if from_run is not None:
        system, used = system_prompt_from_run(from_run, rung)
        source = f"{from_run}/rungs/{used}/model/system_prompt.txt"
        if template_from_run:
            template = user_template_from_run(from_run, used)
    task = load_task(data, text_col=text_col, label_col=label_col, split_col=split_col, seed=seed)
    res = export_jsonl(task, system=system, out=out, val_out=val_out, test_out=test_out, fmt=fmt,
                       overwrite=overwrite, seed=seed, system_source=source, user_template=template)
    _print_export(res, f"{task.name} -> {res.format} JSONL", as_json=as_json, labels=True)


def _print_export(res: Any, title: str, *, as_json: bool, labels: bool) -> None:
    """What export-jsonl prints: the result as JSON, or a table of the files written (with the label
    counts of a classification export), the system prompt, the notes and the validate command."""
    if as_json:
        print_json(res.to_dict())
        return
    table = Table(title=title)
    for col in ("split", "file", "examples", "duplicates dropped", *(["labels"] if labels else [])):
        table.add_column(col)
    for f in res.files:
        cells = [f.split, escape(str(f.path)), f"{f.examples:,}", str(f.dropped_duplicates)]
        if labels:
            shown = ", ".join(f"{k} {v:,}" for k, v in list(f.labels.items())[:8])
            if len(f.labels) > 8:
                shown += f", ... ({len(f.labels)} labels)"
            cells.append(escape(shown))
        table.add_row(*cells)
    console.print(table)
    shown = (res.system_prompt or "")[:200] + ("…" if res.system_prompt and len(res.system_prompt) > 200 else "")
    console.print(f"system prompt (from {res.system_source}): {shown!r}", highlight=False, markup=False)
    for note in res.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    console.print(f"check it with: adaptladder validate-jsonl {res.files[0].path}", highlight=False, markup=False)


def _is_generation_data(data: str, text_col: str | None, label_col: str | None, target_col: str | None,
                        task_type: str | None) -> bool:
    from types import SimpleNamespace

    from adaptladder.kinds import GENERATION, KINDS
    from adaptladder.kinds.detect import detect_kind

    if task_type is not None and task_type not in KINDS:
        raise AdaptError(f"--task {task_type!r}: use classification or generation.")
    cfg = SimpleNamespace(task=task_type, data=data, schema=None, text_col=text_col, label_col=label_col,
                          target_col=target_col, train=None)
    return detect_kind(cfg) == GENERATION


def _export_generation(data: str, from_run: Path | None, out: Path, val_out: Path | None, test_out: Path | None, *,
                       system: str | None, rung: str | None, template_from_run: bool, fmt: str, overwrite: bool,
                       text_col: str | None, target_col: str | None, split_col: str | None, seed: int,
                       as_json: bool) -> None:
    from adaptladder.export import export_gen_jsonl, instruction_from_run
    from adaptladder.generation.loaders import load_generation_data

    if system is not None and from_run is not None:
        raise AdaptError("pass at most one of --system \"...\" and a RUN_DIR argument.")
    if rung is not None or template_from_run:
        raise AdaptError("--rung and --template-from-run are for classification runs; a generation export uses "
                         "the run's instruction as the system message.")
    task = load_generation_data(data, text_col=text_col, target_col=target_col, split_col=split_col, seed=seed)
    if from_run is not None:
        system, source = instruction_from_run(from_run), f"the instruction of the run in {from_run}"
    elif system is not None:
        source = "--system"
    else:
        system, source = task.instruction, "the task's instruction"
    res = export_gen_jsonl(task, system=system, out=out, val_out=val_out, test_out=test_out, fmt=fmt,
                           overwrite=overwrite, seed=seed, system_source=source)
    _print_export(res, escape(f"{task.name} ({task.kind}) -> {res.format} JSONL"), as_json=as_json, labels=False)


def validate_jsonl_cmd(
    file: Annotated[Path, typer.Argument(help="The chat JSONL file to check.")],
    run_dir: Annotated[Path | None, typer.Argument(
        help="A run directory: every line's system prompt must equal its prompting rung's.", show_default=False)]
    = None,
    rung: Annotated[str | None, typer.Option(
        "--rung", help="With RUN_DIR: which prompting rung's prompt, when they differ.")] = None,
    price_model: Annotated[str | None, typer.Option(
        "--price-model", help="Price-table model for the training-cost estimate [default: gpt-4o-mini].")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs for the cost estimate.")] = 3,
    tokenizer: Annotated[str, typer.Option(
        "--tokenizer", help="Token counter: smollm2 (BPE, default), minilm or chars4 (approximations).")] = "smollm2",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the report to this JSON "
                                                "file.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output file.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (problems still exit 2).")]
    = False,
    old_system_from: Annotated[Path | None, typer.Option("--system-from", hidden=True)] = None,
    old_model: Annotated[str | None, typer.Option("--model", hidden=True)] = None,
    old_report: Annotated[Path | None, typer.Option("--report", hidden=True)] = None,
) -> None:
    """Check a chat fine-tuning JSONL file line by line and estimate its training cost; exit 2 on problems."""
    from adaptladder.export import system_prompt_from_run, validate_jsonl

    system_from = one_run_dir(run_dir, old_system_from, "--system-from")
    model = renamed(price_model, old_model, "--price-model", "--model") or "gpt-4o-mini"
    report = renamed(output, old_report, "--output", "--report")
    if report is not None:
        from adaptladder.store import check_output_file

        check_output_file(report, overwrite=overwrite)
    expected = expected_from = None
    if system_from is not None:
        expected, used = system_prompt_from_run(system_from, rung)
        expected_from = f"the {used} rung's prompt in {system_from}"
    elif rung is not None:
        raise AdaptError("--rung only applies with a RUN_DIR argument; pass the run directory too.")
    rep = validate_jsonl(file, expected_system=expected, expected_from=expected_from, model=model, epochs=epochs,
                         tokenizer=tokenizer)
    if report is not None:
        report.write_text(json.dumps(rep.to_dict(), indent=2, ensure_ascii=False))
    if as_json:
        print_json(rep.to_dict())
        if rep.problems:
            first = rep.problems[0]
            raise AdaptError(f"{file} {first.where()}: {first.message} ({len(rep.problems)} problem(s) in all, "
                             "listed in the JSON); fix the file and validate it again.")
        return

    table = Table(title=escape(f"{file}"), show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("lines / valid examples", f"{rep.lines:,} / {rep.examples:,}")
    table.add_row("problems", f"[red]{len(rep.problems)}[/red]" if rep.problems else "[green]none[/green]")
    sys_shown = "(none)" if rep.system_prompt is None else repr(rep.system_prompt[:120] + (
        "…" if len(rep.system_prompt) > 120 else ""))
    table.add_row("system prompt", escape(sys_shown + (f" (checked against {rep.system_reference})"
                                                       if rep.system_reference else "")))
    answers = ", ".join(f"{k} {v:,}" for k, v in list(rep.assistant_answers.items())[:8])
    if len(rep.assistant_answers) > 8:
        answers += f", ... ({len(rep.assistant_answers)} distinct)"
    table.add_row("assistant answers", escape(answers) or "-")
    table.add_row("tokens (approx.)", f"{rep.tokens_total:,} total, {rep.tokens_mean:,} mean, {rep.tokens_max:,} max "
                  f"per example")
    table.add_row("token counter", rep.tokenizer_note)
    if rep.cost is not None:
        c = rep.cost
        table.add_row("est. training cost", f"${c['usd']:.4f} for {c['epochs']} epoch(s) on {c['model']} "
                      f"({c['billed_tokens']:,} billed tokens at ${c['training_per_1m_usd']}/1M)")
    console.print(table, highlight=False)
    if rep.longest:
        lt = Table(title="longest examples")
        for col in ("line", "tokens", "user message"):
            lt.add_column(col)
        for r in rep.longest:
            lt.add_row(str(r["line"]), f"{r['tokens']:,}", escape(str(r["user"])))
        console.print(lt, highlight=False)
    if rep.problems:
        console.print(f"[bold red]{len(rep.problems)} problem(s):[/bold red]")
        for p in rep.problems[:MAX_PROBLEMS_SHOWN]:
            console.print(f"  {file}:{p.where()}: {p.kind}: {p.message}", highlight=False, soft_wrap=True, markup=False)
        if len(rep.problems) > MAX_PROBLEMS_SHOWN:
            console.print(f"  ... {len(rep.problems) - MAX_PROBLEMS_SHOWN} more (all in --output FILE.json)")
        first = rep.problems[0]
        raise AdaptError(f"{file} {first.where()}: {first.message} ({len(rep.problems)} problem(s) in all, "
                         "listed above); fix the file and validate it again.")
    console.print("[green]ok[/green]: the file is valid chat fine-tuning JSONL.")

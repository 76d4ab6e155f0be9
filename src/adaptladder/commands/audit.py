"""`adaptladder audit`: the data audit on its own (``run`` calls the same function first).

Exit codes: 0 no errors (warnings allowed), 1 the audit found errors, 2 bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_cmd)


def audit_cmd(
    data: Annotated[str | None, typer.Argument(help="A built-in data set name or a CSV/TSV/JSONL/Parquet file.")]
    = None,
    text_col: Annotated[str | None, typer.Option("--text-col", help="Column holding the texts.")] = None,
    label_col: Annotated[str | None, typer.Option("--label-col", help="Column holding the labels.")] = None,
    split_col: Annotated[str | None, typer.Option("--split-col", help="Column with train/validation/test.")] = None,
    train: Annotated[Path | None, typer.Option("--train", help="Training file (with --test).")] = None,
    validation: Annotated[Path | None, typer.Option("--validation", help="Validation file.")] = None,
    test: Annotated[Path | None, typer.Option("--test", help="Test file.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the automatic split and the audit's models.")] = 13,
    near_dup_threshold: Annotated[float, typer.Option("--near-dup-threshold",
                                                      help="Cosine similarity at or above which two texts are "
                                                           "near-duplicates.")] = 0.95,
    task_type: Annotated[str, typer.Option("--task-type",
                                           help="auto | text-classification | sentiment (sets size rules).")] = "auto",
    requirements: Annotated[Path | None, typer.Option("--requirements",
                                                      help="Your own requirements YAML, merged over the default.")]
    = None,
    no_label_errors: Annotated[bool, typer.Option("--no-label-errors", help="Skip the cleanlab label-error search.")]
    = False,
    label_error_model: Annotated[str, typer.Option("--label-error-model",
                                                   help="auto (the more accurate of the two), tfidf or features "
                                                        "(embeddings + LR).")] = "auto",
    no_near_dups: Annotated[bool, typer.Option("--no-near-dups", help="Skip the embedding near-duplicate search.")]
    = False,
    encoder: Annotated[str, typer.Option("--encoder", help="Encoder for near-duplicates (alias or path).")]
    = "minilm",
    max_test_leak: Annotated[float | None, typer.Option("--max-test-leak",
                                                        help="Share of test rows copied exactly from train "
                                                             "above which the audit reports an error (default 0.01; "
                                                             "exact + near copies: 0.10, set in the requirements "
                                                             "YAML).")] = None,
    dedupe: Annotated[Path | None, typer.Option("--dedupe", help="Write clean train/validation/test CSVs to this "
                                                                 "new folder (inputs are never modified).")] = None,
    drop_from: Annotated[str, typer.Option("--drop-from", help="Resolve leaks by dropping rows from train "
                                                               "(default; keeps test intact) or test.")] = "train",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the JSON report to this file (e.g. "
                                                "audit.json).")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Write the Markdown section to this file.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report on stdout (the tables go to "
                                                         "stderr).")] = False,
    old_out: Annotated[Path | None, typer.Option("--out", hidden=True)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing --output / --markdown files.")]
    = False,
    task: Annotated[str | None, typer.Option("--task", help="classification or generation [default: detected, as "
                                             "in `run`].")] = None,
    target_col: Annotated[str | None, typer.Option("--target-col", help="Generation: column holding the target "
                                                   "text.")] = None,
    schema: Annotated[Path | None, typer.Option("--schema", help="Generation: JSON Schema the targets must "
                                                "validate against.")] = None,
) -> None:
    """Audit a data set before training: size, balance, duplicates, leakage, label conflicts and errors, hygiene."""
    from rich.console import Console
    from rich.markup import escape

    from adaptladder.audit import audit_source, write_clean_splits
    from adaptladder.commands import print_json, renamed
    from adaptladder.errors import AdaptError

    out = renamed(output, old_out, "--output", "--out")
    from adaptladder.store import check_output_file

    for opt, path in (("--output", out), ("--markdown", markdown)):  # checked before any work: nothing is lost
        if path is not None:
            check_output_file(path, overwrite=overwrite, option=opt, make_parent=True)
    console = Console(stderr=as_json)  # with --json, stdout holds the JSON document only
    if dedupe is not None and drop_from not in ("train", "test"):
        raise AdaptError(f"--drop-from {drop_from!r}: use train or test.")
    if dedupe is not None:
        clash = [n for n in ("train.csv", "validation.csv", "test.csv", "removed.csv") if (dedupe / n).exists()]
        if clash:  # refuse before spending time on the audit
            raise AdaptError(f"{dedupe} already holds {', '.join(clash)}; pass a new or empty folder to --dedupe "
                             "(nothing is overwritten).")
    from adaptladder.config import RunConfig
    from adaptladder.kinds import GENERATION
    from adaptladder.kinds.detect import detect_kind

    probe = RunConfig(data=data, text_col=text_col, label_col=label_col, target_col=target_col, task=task,
                      schema=None if schema is None else str(schema), split_col=split_col,
                      train=None if train is None else str(train), seed=seed)
    probe.validate()
    if detect_kind(probe, lambda msg: console.print(escape(msg), style="dim", highlight=False)) == GENERATION:
        _audit_generation(probe, validation, test, requirements, out, markdown, as_json, dedupe, console)
        return
    task_, report = audit_source(
        data, text_col=text_col, label_col=label_col, split_col=split_col, train=train, validation=validation,
        test=test, seed=seed, encoder=None if no_near_dups else encoder, near_dup_threshold=near_dup_threshold,
        task_type=task_type, requirements=requirements, label_errors=not no_label_errors,
        label_error_model=label_error_model, max_test_leak_share=max_test_leak, progress=True,
        log=lambda msg: console.print(escape(msg), style="dim", highlight=False),
    )
    report.render(console)
    console.print(f"[dim]audit took {report.timings['total']:.1f} s[/]")
    if out is not None:
        report.write_json(out)
        console.print(f"wrote {out}", markup=False, highlight=False)
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(report.to_markdown())
        console.print(f"wrote {markdown}", markup=False, highlight=False)
    if dedupe is not None:
        res = write_clean_splits(task_, report, dedupe, drop_from=drop_from)
        why = ", ".join(f"{k} {v:,}" for k, v in res["removed_by_reason"].items()) or "nothing to remove"
        console.print(f"wrote clean splits to {dedupe}: train {res['kept']['train']:,}, validation "
                      f"{res['kept']['validation']:,}, test {res['kept']['test']:,}; removed {res['removed']:,} "
                      f"({why}); see removed.csv. Use them with: adaptladder run --train {dedupe}/train.csv "
                      f"--validation {dedupe}/validation.csv --test {dedupe}/test.csv", markup=False, highlight=False)
        if no_near_dups:
            console.print("[yellow]near-duplicate leaks were not searched (--no-near-dups); only exact copies "
                          "were removed.[/]")
        if task_.source.get("kind") == "lenient":
            console.print("[yellow]the input could not be loaded strictly: rows without a text or label are left "
                          "out of the clean files, and the split is the audit's approximation.[/]")
    if as_json:
        print_json(report.to_dict())
    if report.has_errors:
        raise typer.Exit(1)


def _audit_generation(cfg: Any, validation: Path | None, test: Path | None, requirements: Path | None,
                      out: Path | None, markdown: Path | None, as_json: bool, dedupe: Path | None,
                      console: Any) -> None:
    """``adaptladder audit`` on generation data: the generation audit (exit 1 on errors)."""
    from adaptladder.audit.generation import audit_generation, generation_audit_markdown, render_generation_audit
    from adaptladder.commands import print_json
    from adaptladder.errors import AdaptError
    from adaptladder.generation.loaders import load_generation_data

    if dedupe is not None:
        raise AdaptError("--dedupe writes clean splits for classification data only; for a generation task drop the "
                         "rows the audit lists.")
    gen = load_generation_data(cfg.data, text_col=cfg.text_col, target_col=cfg.target_col, split_col=cfg.split_col,
                               train=cfg.train, validation=validation, test=test, schema=cfg.schema, seed=cfg.seed,
                               log=lambda msg: console.print(msg, style="dim", highlight=False, markup=False))
    doc = audit_generation(gen, None, requirements=requirements)
    assert doc is not None  # only cfg.no_audit gives None
    render_generation_audit(doc, console)
    if out is not None:
        import json

        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2, ensure_ascii=False))
        console.print(f"wrote {out}", markup=False, highlight=False)
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(generation_audit_markdown(doc))
        console.print(f"wrote {markdown}", markup=False, highlight=False)
    if as_json:
        print_json(doc)
    if doc["has_errors"]:
        raise typer.Exit(1)

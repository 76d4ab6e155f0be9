"""The `adaptladder` command line: parse, call the API, render with rich; no logic of its own.

Every :class:`AdaptError` becomes one line on stderr and exit code 2 (``--debug`` shows the
traceback). Feature areas add their commands from their own module under
``adaptladder.commands`` (each exposes ``register(app)``), listed in ``COMMAND_MODULES``.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from adaptladder.errors import AdaptError

app = typer.Typer(
    name="adaptladder",
    help="Prompting, feature extraction or fine-tuning: measure the cheapest strategy good enough for your task.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

# Modules under adaptladder.commands that add commands to the app (``register(app)``).
COMMAND_MODULES: list[str] = ["run", "audit", "plan", "prompting", "export", "report", "rungs", "serve"]


def _show_version(value: bool) -> None:
    if value:
        from adaptladder import __version__

        typer.echo(f"adaptladder {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    if debug:
        os.environ["ADAPTLADDER_DEBUG"] = "1"


@app.command("datasets")
def datasets_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List the built-in data sets, classification and generation (read from installed packages, no network)."""
    from adaptladder.commands import print_json
    from adaptladder.datasets import describe_builtins
    from adaptladder.generation.datasets import describe_generation_builtins

    cls_rows = [{"task": "classification", "kind": "classification", **r} for r in describe_builtins()]
    gen_rows = describe_generation_builtins()
    if as_json:
        print_json(cls_rows + gen_rows)
        return
    table = Table(title="Built-in data sets")
    for col in ("name", "kind", "rows", "labels / output", "description", "package"):
        table.add_column(col)
    for row in cls_rows:
        labels = row.get("labels") or {}
        shown = ", ".join(f"{k} {v:,}" for k, v in list(labels.items())[:6])  # type: ignore[union-attr]
        if len(labels) > 6:  # type: ignore[arg-type]
            shown += f", ... ({len(labels)} labels)"  # type: ignore[arg-type]
        rows = f"{row['rows']:,}" if row.get("rows") else f"[red]{row.get('error')}[/red]"
        table.add_row(str(row["name"]), "classification", rows, shown, str(row["description"]), str(row["package"]))
    for row in gen_rows:
        rows = f"{row['rows']:,}" if row.get("rows") else f"[red]{row.get('error')}[/red]"
        shown = (f"{row['output']}; median words in/out {row['input_words_p50']:.0f}/{row['target_words_p50']:.0f}"
                 if row.get("rows") else "")
        table.add_row(str(row["name"]), f"generation: {row['kind']}", rows, shown, str(row["description"]),
                      str(row["package"]))
    console.print(table)


_registered: list[str] = []


def _register_commands() -> None:
    for mod in COMMAND_MODULES:
        if mod not in _registered:  # main() may be called many times in one process (tests): register once
            importlib.import_module(f"adaptladder.commands.{mod}").register(app)
            _registered.append(mod)


def _quiet_libraries() -> None:
    """Keep library chatter (weight-loading bars, hub warnings) out of the user's terminal."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _one_line_usage_errors(argv: list[str]) -> None:
    """A bad option value or a missing argument is one line (exit 2, click's code for usage errors),
    not typer's boxed usage panel: the same shape as every other user error."""
    from typer import rich_utils

    cmd = f"adaptladder {argv[0]} --help" if argv and not argv[0].startswith("-") else "adaptladder --help"

    original = getattr(rich_utils, "_adaptladder_original_format_error", rich_utils.rich_format_error)
    rich_utils._adaptladder_original_format_error = original  # type: ignore[attr-defined]

    def one_line(e: Any) -> None:
        from rich.markup import escape

        if type(e).__name__ == "NoArgsIsHelpError" or not e.format_message().strip():
            original(e)  # `adaptladder` alone: the help, as before
            return
        err_console.print(f"[bold red]error:[/bold red] {escape(e.format_message())} (see `{escape(cmd)}`)",
                          highlight=False, soft_wrap=True)

    rich_utils.rich_format_error = one_line


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one line and exit 2 for user errors."""
    _quiet_libraries()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or os.environ.get("ADAPTLADDER_DEBUG") == "1"
    _register_commands()
    from adaptladder.tracking import expand_track_flag

    argv = expand_track_flag(list(sys.argv[1:] if argv is None else argv))  # `--track` with an optional URI
    _one_line_usage_errors(argv)
    try:
        app(args=argv, standalone_mode=True)
    except AdaptError as e:
        if debug:
            raise
        from rich.markup import escape

        err_console.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as e:  # disk full, read-only or forbidden place: the user's environment, one line
        if debug or e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        from rich.markup import escape

        where = escape(f" {e.filename}" if e.filename else "")
        why = escape(e.strerror or str(e))
        err_console.print(f"[bold red]error:[/bold red] could not write{where} ({why}); "
                          "free space or fix the permissions and re-run (finished rungs are kept).",
                          highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished rungs are saved and a re-run resumes from them.")
        sys.exit(130)
    except SystemExit as e:  # typer turns Ctrl-C into a silent exit 130: say what was kept
        if e.code == 130:
            err_console.print("interrupted; finished rungs are saved and a re-run resumes from them.")
        raise


if __name__ == "__main__":  # pragma: no cover
    main()

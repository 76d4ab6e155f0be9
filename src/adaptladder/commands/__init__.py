"""CLI command modules; each exposes ``register(app)`` and is listed in ``cli.COMMAND_MODULES``.

The grammar every command follows (README "Command line"):

* a run directory is a positional argument (``adaptladder advise runs/sms-spam``);
* ``--out`` is always a directory, ``-o/--output`` always a file;
* ``--lm`` is a language model, ``--arch`` a model architecture (shape preset or config.json),
  ``--price-model`` a row of the price table;
* ``--json`` prints one JSON document on stdout; progress and logs go to stderr.

Renamed options stay accepted under their old name (hidden from ``--help``), via :func:`renamed`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from adaptladder.errors import AdaptError

T = TypeVar("T")

RunDirArg = Annotated[Path, typer.Argument(help="Run directory written by `adaptladder run` (e.g. runs/sms-spam).",
                                            show_default=False)]


def print_json(obj: Any) -> None:
    """One JSON document on stdout (everything else a command says goes to stderr)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def renamed(value: T | None, old_value: T | None, new: str, old: str) -> T | None:
    """The value of an option renamed from ``old`` to ``new`` (the old, hidden name still works)."""
    if old_value is None:
        return value
    if value is not None and value != old_value:
        raise AdaptError(f"{old} is the old name of {new}; give the value once.")
    print(f"note: {old} is deprecated; use {new}.", file=sys.stderr)
    return old_value


def one_run_dir(arg: Path | None, old_value: Path | None, old: str) -> Path | None:
    """A run directory given as the positional argument, or with the old ``old`` option."""
    return renamed(arg, old_value, "the RUN_DIR argument", old)

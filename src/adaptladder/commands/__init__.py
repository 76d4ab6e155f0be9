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


# A run directory chooses no endpoint, credential or outside path (adaptladder.trust): the person running
# a command that loads a saved rung gives them, or confirms the saved ones.
BaseUrlOpt = Annotated[str | None, typer.Option(
    "--base-url", help="OpenAI-compatible server for a saved prompting rung with backend openai (a run directory "
    "never chooses it; also ADAPTLADDER_BASE_URL).")]
ApiKeyEnvOpt = Annotated[str | None, typer.Option(
    "--api-key-env", help="Environment variable holding that server's API key (default OPENAI_API_KEY; also "
    "ADAPTLADDER_API_KEY_ENV).")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-run-dir", help="Use the run directory's saved server, key variable and model paths outside it (only "
    "for a run directory you trust; also ADAPTLADDER_TRUST_RUN_DIR=1).")]


def apply_trust(base_url: str | None, api_key_env: str | None, trust_run_dir: bool) -> None:
    from adaptladder.trust import set_policy

    set_policy(base_url=base_url, api_key_env=api_key_env, trust_run_dir=trust_run_dir)


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

"""`adaptladder rungs`: the registered rungs in climbing order, with their declared settings."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer


def describe_rungs(names: list[str] | None = None) -> list[dict[str, Any]]:
    """name, cost rank, family, description and settings (name, type, default, help) of each rung."""
    from adaptladder.rungs import get_rung_class, rungs_in_cost_order

    out = []
    for name in rungs_in_cost_order(names):
        cls = get_rung_class(name)
        out.append({"name": name, "kind": "classification", "cost_rank": cls.cost_rank, "family": cls.family,
                    "description": cls.description,
                    "run_values": dict(cls.Settings.run_values), "settings": cls.Settings.describe()})
    return out


def register(app: typer.Typer) -> None:
    @app.command("rungs")
    def rungs_cmd(
        names: Annotated[list[str] | None, typer.Argument(help="Rungs to show (default: all).",
                                                          show_default=False)] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the listing as JSON.")] = False,
        kind: Annotated[str, typer.Option("--kind", help="classification, generation or all.")] = "all",
    ) -> None:
        """List the rungs in climbing order (cost rank, family) and every setting they take (--set RUNG.KEY=VALUE)."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from adaptladder.errors import AdaptError
        from adaptladder.generation.rungs import GEN_RUNGS, describe_gen_rungs
        from adaptladder.rungs import RUNGS

        if kind not in ("classification", "generation", "all"):
            raise AdaptError(f"--kind {kind!r} is unknown: use classification, generation or all.")
        known = {**(RUNGS if kind != "generation" else {}), **(GEN_RUNGS if kind != "classification" else {})}
        unknown = [n for n in names or [] if n not in known]
        if unknown:
            raise AdaptError(f"unknown rung {unknown[0]!r}: choose from {', '.join(known)}.")
        rows = []
        if kind != "generation":
            want = [n for n in names or RUNGS if n in RUNGS]
            rows += describe_rungs(want) if want else []
        if kind != "classification":
            want = [n for n in names or GEN_RUNGS if n in GEN_RUNGS]
            rows += describe_gen_rungs(want) if want else []
        if as_json:
            print(json.dumps(rows, indent=2, default=str))
            return
        console = Console()
        for r in rows:
            console.print(f"[bold]{escape(r['name'])}[/bold] ({r['kind']})  cost rank {r['cost_rank']}, family "
                          f"{r['family']}: "
                          f"{escape(r['description'])}", highlight=False)
            if not r["settings"]:
                console.print("  (no settings)")
                continue
            table = Table(show_header=True, box=None, padding=(0, 1), pad_edge=False)
            for col in ("setting", "type", "default", "help"):
                table.add_column(col, overflow="fold")
            for s in r["settings"]:
                default = "unset" if s["default"] is None else json.dumps(s["default"], default=str)
                table.add_row(escape(s["name"]), escape(s["type"]), escape(default), escape(s["help"]))
            console.print(table)
            console.print()
        console.print("Set one with --set RUNG.KEY=VALUE (or rung_params in a --config file); the run's --encoder, "
                      "--seed, --lm and --budget-minutes reach the rungs that take them.")

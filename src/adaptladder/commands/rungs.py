"""`adaptladder rungs`: the registered rungs of every task kind in climbing order, with their declared settings."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer


def describe_rungs(names: list[str] | None = None, kinds: list[str] | None = None) -> list[dict[str, Any]]:
    """kind, name, cost rank, family, description and settings (name, type, default, help) of each rung,
    kind by kind (classification first), each kind in climbing order."""
    from adaptladder.rungs import KINDS, get_rung_class, rung_table, rungs_in_cost_order

    out = []
    for kind in kinds or KINDS:
        table = rung_table(kind)
        chosen = [n for n in table if names is None or n in names]
        for name in rungs_in_cost_order(chosen, kind):
            cls = get_rung_class(name, kind)
            out.append({"kind": kind, "name": name, "cost_rank": cls.cost_rank, "family": cls.family,
                        "description": cls.description, "run_values": dict(cls.Settings.run_values),
                        "settings": cls.Settings.describe()})
    return out


def register(app: typer.Typer) -> None:
    @app.command("rungs")
    def rungs_cmd(
        names: Annotated[list[str] | None, typer.Argument(help="Rungs to show (default: all).",
                                                          show_default=False)] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the listing as JSON.")] = False,
        kind: Annotated[str, typer.Option("--kind", help="Only the rungs of this task kind: classification, "
                                          "generation, or all.")] = "all",
    ) -> None:
        """List the rungs of each task kind in climbing order (cost rank, family) and every setting they take
        (--set RUNG.KEY=VALUE)."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from adaptladder.errors import AdaptError
        from adaptladder.rungs import KINDS, rung_table

        if kind != "all" and kind not in KINDS:
            raise AdaptError(f"--kind {kind!r} is not a task kind: use {', '.join(KINDS)} or all.")
        kinds = list(KINDS) if kind == "all" else [kind]
        known = {n for k in kinds for n in rung_table(k)}
        unknown = [n for n in names or [] if n not in known]
        if unknown:
            raise AdaptError(f"unknown rung {unknown[0]!r}: choose from {', '.join(sorted(known))}.")
        rows = describe_rungs(names or None, kinds)
        if as_json:
            print(json.dumps(rows, indent=2, default=str))
            return
        console = Console()
        shown_kind = None
        for r in rows:
            if r["kind"] != shown_kind:
                shown_kind = r["kind"]
                console.rule(f"[bold]{escape(shown_kind)} rungs[/bold]")
            console.print(f"[bold]{escape(r['name'])}[/bold]  cost rank {r['cost_rank']}, family {r['family']}: "
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
                      "--seed, --lm and --budget-minutes reach the rungs that take them. A name both kinds have "
                      "(zero-shot) takes the settings of the kind the data is.")

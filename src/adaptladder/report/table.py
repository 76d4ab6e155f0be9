"""The ladder's results table: one set of columns and cells for the terminal, summary.md and report.md.

Cells are plain strings built from :func:`adaptladder.report.view.rung_row`; each front end only
escapes and draws them (rich on the terminal, Markdown in summary.md / report.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adaptladder.report.view import rung_row


def ladder_headers(metric: str) -> list[str]:
    return ["rung", "status", f"decision estimate {metric} [95% CI] (kind, n)", f"test {metric} [95% CI]",
            "test acc", "train time",
            "latency p50/p95 ms", "throughput/s", "peak MB fit/predict", "$ per 1k", "bar"]


#: headers whose cells are text (left-aligned); the rest are numbers
TEXT_COLUMNS = {"rung", "status"}


def row_cells(row: dict[str, Any], escape: Callable[[Any], str] = str) -> list[str]:
    """The table's cells for one :func:`rung_row` (``escape`` applied to text taken from the data)."""
    name = escape(row["name"]) + (" ★" if row["recommended"] else "")
    status = row["status"] + (" (reused)" if row["resumed"] else "")
    if not row["done"]:
        status += f": {escape(row['reason'])}"
    test = row["test"] + (f" (n={row['test_n']}, sample)" if row["sampled"] else "")
    dec = (f"{row['dec_point']} {row['dec_ci']} ({row['dec_label']}, n={row['dec_n']})"
           if row["done"] and row.get("dec_n") else row["val"])
    return [name, status, dec, test, row["test_acc"], row["fit"], f"{row['p50']} / {row['p95']}",
            row["throughput"], f"{row['mem_fit']} / {row['mem_predict']}", row["cost"], row["bar"]]


def ladder_table(rungs: list[dict[str, Any]], metric: str, recommended: str | None = None,
                 escape: Callable[[Any], str] = str) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the results table for the rung records of a run (results.json ``rungs``)."""
    return ladder_headers(metric), [row_cells(rung_row(r, metric, recommended), escape) for r in rungs]


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(cells) + " |" for cells in rows])

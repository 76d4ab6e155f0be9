"""The run report: report.html (self-contained), report.md and the comparisons in results.json.

``write_report(run_dir, doc)`` is called by the ladder at the end of every run;
``rebuild(run_dir)`` (``adaptladder report RUN_DIR``) redraws it from results.json alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adaptladder.report.html import render_html
from adaptladder.report.markdown import render_markdown
from adaptladder.report.view import build_view

__all__ = ["build_view", "rebuild", "render_html", "render_markdown", "write_report"]


def write_report(run_dir: str | Path, doc: dict[str, Any]) -> dict[str, Path]:
    """Write report.html and report.md into ``run_dir`` (atomically) and return their paths."""
    from adaptladder.store import atomic_write_text

    run_dir = Path(run_dir)
    view = build_view(doc, run_dir)
    paths = {"html": run_dir / "report.html", "md": run_dir / "report.md"}
    atomic_write_text(paths["html"], render_html(view))
    atomic_write_text(paths["md"], render_markdown(view))
    return paths


def rebuild(run_dir: str | Path) -> dict[str, Path]:
    """Redraw the report of an existing run directory; adds missing comparisons to results.json."""
    from adaptladder.ladder import load_results
    from adaptladder.report.view import ensure_comparisons
    from adaptladder.store import atomic_write_json

    run_dir = Path(run_dir)
    doc = load_results(run_dir)
    if not isinstance(doc.get("comparisons"), dict):
        doc["comparisons"] = ensure_comparisons(doc, run_dir)
        atomic_write_json(run_dir / "results.json", doc)
    paths = write_report(run_dir, doc)
    paths["json"] = run_dir / "results.json"
    return paths

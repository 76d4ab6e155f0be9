"""The run report: report.html (self-contained) and report.md, drawn from results.json (read only).

``write_report(run_dir, doc)`` is called by the ladder at the end of every run;
``rebuild(run_dir)`` (``adaptladder report RUN_DIR``) redraws it from results.json alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adaptladder.kinds import GENERATION, kind_of
from adaptladder.report.html import render_html
from adaptladder.report.markdown import render_markdown
from adaptladder.report.view import build_view

__all__ = ["build_view", "rebuild", "render_html", "render_markdown", "write_report"]


def write_report(run_dir: str | Path, doc: dict[str, Any]) -> dict[str, Path]:
    """Write report.html and report.md into ``run_dir`` (atomically) and return their paths."""
    from adaptladder.store import atomic_write_text

    run_dir = Path(run_dir)
    paths = {"html": run_dir / "report.html", "md": run_dir / "report.md"}
    if kind_of(doc) == GENERATION:  # a generation run (issue #17): its own view and templates
        from adaptladder.report.generation import build_gen_view, render_gen_html, render_gen_markdown

        gview = build_gen_view(doc, run_dir)
        atomic_write_text(paths["html"], render_gen_html(gview))
        atomic_write_text(paths["md"], render_gen_markdown(gview))
        return paths
    view = build_view(doc, run_dir)
    atomic_write_text(paths["html"], render_html(view))
    atomic_write_text(paths["md"], render_markdown(view))
    return paths


def rebuild(run_dir: str | Path) -> dict[str, Path]:
    """Redraw report.html and report.md of an existing run directory from its results.json.

    The report only reads the record: it never writes results.json (comparisons missing from an
    older record are computed for the view). A run killed before writing results.json gets a
    partial one from :func:`adaptladder.ladder.ensure_results` first (the ``report`` command does it).
    """
    from adaptladder.store import load_results

    run_dir = Path(run_dir)
    doc = load_results(run_dir)
    paths = write_report(run_dir, doc)
    paths["json"] = run_dir / "results.json"
    return paths

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
    """Redraw the report of an existing run directory; adds missing comparisons to results.json.

    A run that was killed before it finished has no results.json yet: its finished rungs'
    result files are assembled into a partial one (flagged ``"partial": true``), so the
    evidence gathered so far can be read, and ``predict`` can use the best rung so far.
    """
    from adaptladder.ladder import load_results
    from adaptladder.report.view import ensure_comparisons
    from adaptladder.store import atomic_write_json

    run_dir = Path(run_dir)
    if not (run_dir / "results.json").is_file() and (run_dir / "config.json").is_file():
        doc = assemble_partial(run_dir)
        atomic_write_json(run_dir / "results.json", doc)
    doc = load_results(run_dir)
    if not isinstance(doc.get("comparisons"), dict):
        doc["comparisons"] = ensure_comparisons(doc, run_dir)
        atomic_write_json(run_dir / "results.json", doc)
    paths = write_report(run_dir, doc)
    paths["json"] = run_dir / "results.json"
    return paths


def assemble_partial(run_dir: Path) -> dict[str, Any]:
    """results.json content rebuilt from the per-rung files of an unfinished run."""
    import time
    from dataclasses import asdict, fields

    from adaptladder.compare import labels_from_split_csv, pairwise
    from adaptladder.config import RunConfig
    from adaptladder.errors import AdaptError
    from adaptladder.ladder import meets_bar, recommend
    from adaptladder.store import SCHEMA_VERSION, RunStore, read_json

    record = read_json(run_dir / "config.json")
    task = read_json(run_dir / "task.json")
    store = RunStore(run_dir)
    known = {f.name for f in fields(RunConfig)}
    cfg = RunConfig(**{k: v for k, v in record.items() if k in known})
    order = list(record.get("climbing_order") or [])
    order += sorted(p.parent.name for p in (run_dir / "rungs").glob("*/result.json") if p.parent.name not in order)
    results = [r for r in (store.load_result(n) for n in order) if r is not None]
    if not results:
        raise AdaptError(f"{run_dir} has no finished rung yet; nothing to report (re-run the ladder to resume).")
    for r in results:
        r["meets_bar"] = meets_bar(r, cfg)
    labels = labels_from_split_csv(run_dir, task["label_names"])
    rec = recommend(results, cfg, all_labels=labels)
    missing = [n for n in order if n not in {r["name"] for r in results}]
    rec["reasons"].append("This run did not finish" + (f" ({', '.join(missing)} not run yet)" if missing else "")
                          + "; re-run the same command to resume it.")
    rec["stopped_at"] = None
    audit = None
    if (run_dir / "audit.json").is_file():
        audit = read_json(run_dir / "audit.json")
    return {"schema_version": SCHEMA_VERSION, "task": task, "config": asdict(cfg), "bar": cfg.bar,
            "metric": cfg.metric, "rungs": results, "recommendation": rec, "audit": audit, "partial": True,
            "comparisons": {part: pairwise(results, part, cfg.metric, all_labels=labels, seed=cfg.seed)
                            for part in ("validation", "test")},
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

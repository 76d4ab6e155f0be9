"""`adaptladder export RUN_DIR OUT`: the chosen rung as a folder a user can ship.

``OUT/model/`` is the rung's saved model directory unchanged (safe format, content hashes in
its ``rung.json``); ``OUT/README.md`` is a model card (task, labels, data sizes, scores with
CIs, the decision, limits, a two-line loading example); ``OUT/card.json`` holds the same facts
as data; ``OUT/requirements.txt`` pins what loading it needs; ``OUT/provenance.json`` says
where the run was made. The folder is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from adaptladder.errors import AdaptError

MODEL_DIR = "model"


def _fmt_ci(part: dict[str, Any], m: str) -> str:
    v = part.get(m)
    ci = part.get(f"{m}_ci") or [None, None]
    if not isinstance(v, (int, float)):
        return "-"
    if all(isinstance(x, (int, float)) for x in ci):
        return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{v:.3f}"


def _requirements(model: Any) -> list[str]:
    from adaptladder.store import package_versions

    reqs = [f"{k}=={v}" for k, v in package_versions().items() if v != "not installed"]
    src = getattr(model, "encoder_source_", None) or {}
    if src.get("kind") == "packaged":
        reqs.append(str(src.get("pip")))
        if src.get("int8_onnx"):
            reqs.append(str(src["int8_onnx"].get("pip")))
    return reqs


def _limits(doc: dict[str, Any], res: dict[str, Any], model: Any) -> list[str]:
    task = doc.get("task") or {}
    cfg = doc.get("config") or {}
    sizes = task.get("split_sizes") or {}
    out = [f"Trained on {sizes.get('train', '?'):,} examples of {task.get('name')}; it has only been measured on "
           f"this data's distribution ({sizes.get('test', '?'):,} test examples). Check it on your own traffic "
           "(`adaptladder evaluate`) before relying on it.",
           f"It can only answer one of the {task.get('n_classes')} labels it was trained on; out-of-scope texts "
           "still get one of them.",
           "Probabilities are the model's own scores, not calibrated guarantees."]
    t = res.get("test") or {}
    if t.get("macro_f1_ci"):
        lo, hi = t["macro_f1_ci"]
        out.append(f"The test macro-F1 is uncertain: its 95% bootstrap CI spans {lo:.3f}-{hi:.3f}.")
    if t.get("sampled"):
        out.append(f"The test scores come from a stratified sample of {t.get('n')} test examples.")
    if cfg.get("sample"):
        out.append(f"This was a quick run on at most {cfg['sample']} examples per split (--sample).")
    counts = (task.get("counts") or {}).get("train") or {}
    if counts:
        small = [k for k, v in counts.items() if v < 20]
        if small:
            out.append(f"Classes with fewer than 20 training examples ({', '.join(map(str, small[:10]))}) are "
                       "the least reliable.")
    ml = (getattr(model, "params", {}) or {}).get("max_length")
    if ml:
        out.append(f"Texts are truncated to {ml} tokens.")
    audit = doc.get("audit") or {}
    for f in (audit.get("findings") or [])[:5]:
        if f.get("severity") in ("error", "warning"):
            out.append(f"Data audit ({f['severity']}): {f.get('message')}")
    return out


def model_card(doc: dict[str, Any], res: dict[str, Any], model: Any, prov: dict[str, Any] | None,
               files: dict[str, str], folder: str = ".") -> tuple[str, dict[str, Any]]:
    """README.md text and the same facts as a dict."""
    from adaptladder.store import provenance_rows

    task = doc.get("task") or {}
    rec = doc.get("recommendation") or {}
    metric = doc.get("metric") or "macro_f1"
    name = res["name"]
    v, t, p = res.get("validation") or {}, res.get("test") or {}, res.get("predict") or {}
    labels = list(task.get("label_names") or [])
    counts = task.get("counts") or {}
    limits = _limits(doc, res, model)
    card = {"task": task.get("name"), "rung": name, "family": res.get("family"), "labels": labels,
            "split_sizes": task.get("split_sizes"), "metric": metric, "bar": doc.get("bar"),
            "recommended": rec.get("rung") == name, "recommendation": rec.get("rung"),
            "reasons": rec.get("reasons") or [], "validation": {k: v.get(k) for k in
                                                                ("n", "macro_f1", "macro_f1_ci", "accuracy",
                                                                 "accuracy_ci")},
            "test": {k: t.get(k) for k in ("n", "macro_f1", "macro_f1_ci", "accuracy", "accuracy_ci", "per_class")},
            "params": res.get("params"), "predict": p, "cost_per_1k_usd": res.get("cost_per_1k_usd"),
            "limits": limits, "files": files, "requirements": _requirements(model)}
    L = [f"# {task.get('name')} classifier: `{name}` (exported by adaptladder)", "",
         f"{res.get('description') or ''}. Chosen by the adaptladder run of {task.get('name')} "
         f"({'the recommended rung' if card['recommended'] else 'not the recommended rung: ' + str(rec.get('rung'))}"
         ").", "", "## Load it", "", "```python",
         "from adaptladder import load_rung",
         f'model = load_rung("{folder}/{MODEL_DIR}")  # checks the SHA-256 of every file; runs no pickle',
         'print(model.predict(["some text"]).tolist())  # labels; model.predict_proba(...) gives probabilities',
         "```", "",
         f"(`{folder}` is this folder: give its path from where Python runs.) "
         "`model.predict_proba(texts)` gives the per-class probabilities (columns in the label order below). "
         "Loading checks every file against the SHA-256 recorded in `model/rung.json` and never unpickles "
         "anything. Needs the packages in `requirements.txt` (`pip install -r requirements.txt` and adaptladder).",
         "", "## Task", "",
         f"- data: {task.get('name')} ({(task.get('source') or {}).get('kind', '?')})",
         f"- labels ({len(labels)}): " + ", ".join(f"`{x}`" for x in labels),
         "- examples: " + ", ".join(f"{k} {n:,}" for k, n in (task.get("split_sizes") or {}).items())]
    if counts.get("train"):
        L.append("- training examples per label: " + ", ".join(f"{k} {n:,}" for k, n in counts["train"].items()))
    L += ["", "## Scores (95% bootstrap CIs)", "", "| split | n | macro-F1 | accuracy |", "|---|---|---|---|",
          f"| validation (chooses) | {v.get('n', '-')} | {_fmt_ci(v, 'macro_f1')} | {_fmt_ci(v, 'accuracy')} |",
          f"| test (reports) | {t.get('n', '-')} | {_fmt_ci(t, 'macro_f1')} | {_fmt_ci(t, 'accuracy')} |"]
    if t.get("per_class"):
        L += ["", "Per class on test:", "", "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        L += [f"| {k} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
              for k, c in t["per_class"].items()]
    L += ["", "Speed and cost on the machine of the run: "
          + (f"latency p50 {p['latency_ms_p50']:.1f} ms per text, " if p.get("latency_ms_p50") is not None else "")
          + (f"{p['throughput_per_s']:.0f} texts/s in batches, " if p.get("throughput_per_s") else "")
          + (f"${res['cost_per_1k_usd']:.4f} per 1,000 predictions." if isinstance(res.get("cost_per_1k_usd"),
                                                                                  (int, float)) else "")]
    L += ["", "## The decision", "",
          f"Metric {metric}" + (f", bar {doc['bar']} on validation" if doc.get("bar") is not None else ", no bar")
          + f"; recommended rung: {rec.get('rung')}.", ""]
    L += [f"- {r}" for r in card["reasons"]] or ["- (no reasons recorded)"]
    others = [r for r in doc.get("rungs") or [] if r.get("status") == "done" and r["name"] != name]
    if others:
        L += ["", "Other rungs measured (validation / test " + metric + "):", ""]
        L += [f"- {r['name']}: {_fmt_ci(r.get('validation') or {}, metric)} / {_fmt_ci(r.get('test') or {}, metric)}"
              for r in others]
    L += ["", "## Limits", ""] + [f"- {x}" for x in limits]
    L += ["", "## Settings", "", "```json", json.dumps(res.get("params") or {}, indent=2, default=str), "```"]
    rows = provenance_rows(prov)
    if rows:
        L += ["", "## Provenance", "", "| | |", "|---|---|"] + [f"| {k} | {val} |" for k, val in rows]
    L += ["", "## Files", "", "| file | SHA-256 |", "|---|---|"]
    L += [f"| `{MODEL_DIR}/{k}` | `{h[:16]}…` |" for k, h in files.items()]
    return "\n".join(L) + "\n", card


def export_run(run_dir: str | Path, out: str | Path, rung: str | None = None) -> dict[str, Any]:
    """Write the shippable folder ``out`` for ``rung`` (default: the recommended one) of ``run_dir``."""
    from adaptladder.artifacts import file_hashes
    from adaptladder.rungs import load_rung
    from adaptladder.store import DIR_MODE, PROVENANCE_FILE, atomic_write_json, read_json
    from adaptladder.winner import _results, _rung_result

    run_dir, out = Path(run_dir), Path(out)
    doc = _results(run_dir)
    res = _rung_result(doc, rung, run_dir)
    src = run_dir / "rungs" / res["name"] / "model"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AdaptError(f"{out} already exists and is not an empty folder; choose another OUT (nothing was "
                         "written).")
    if not out.parent.is_dir():
        raise AdaptError(f"{out.parent} does not exist; create it first or choose another OUT.")
    model = load_rung(src, run_root=run_dir)  # refuses a tampered or old model before anything is copied
    prov = read_json(run_dir / PROVENANCE_FILE) if (run_dir / PROVENANCE_FILE).is_file() else None
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
    try:
        tmp.chmod(DIR_MODE)
        shutil.copytree(src, tmp / MODEL_DIR)
        files = file_hashes(tmp / MODEL_DIR, exclude=("rung.json",))
        readme, card = model_card(doc, res, model, prov, files, folder=out.name)
        (tmp / "README.md").write_text(readme, encoding="utf-8")
        atomic_write_json(tmp / "card.json", card)
        (tmp / "requirements.txt").write_text("\n".join(card["requirements"]) + "\n", encoding="utf-8")
        if prov:
            atomic_write_json(tmp / PROVENANCE_FILE, prov)
        load_rung(tmp / MODEL_DIR)  # the copy loads (hashes intact) before it is put in place
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "rung": res["name"], "files": len(files), "requirements": card["requirements"]}

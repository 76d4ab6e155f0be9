"""Using a finished run: predict with its saved (recommended) rung, and re-evaluate on new data.

``predict`` turns new texts into labels and per-class probabilities with exactly the model the
ladder measured. ``evaluate`` scores saved rungs on new labelled data and compares with the
run's own test score, so a deployment can be gated on "did it get worse?" (drift).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptladder.errors import AdaptError

DEFAULT_TOLERANCE = 0.02


def _results(run_dir: str | Path) -> dict[str, Any]:
    from adaptladder.store import load_results

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AdaptError(f"{run_dir} is not a directory; pass a run directory written by `adaptladder run`.")
    return load_results(run_dir)


def rung_records(doc: Any, run_dir: Path) -> list[dict[str, Any]]:
    """``results.json``'s rung records, each naming a registered rung of the run's kind (a run directory is
    untrusted input: a name never becomes a path unchecked, :mod:`adaptladder.trust`)."""
    from adaptladder.trust import check_rung_name

    where = Path(run_dir) / "results.json"
    rungs = doc.get("rungs") if isinstance(doc, dict) else None
    if not isinstance(rungs, list) or not all(isinstance(r, dict) for r in rungs):
        raise AdaptError(f"{where} holds no list of rung records; the run directory is damaged: re-run the ladder.")
    registry = _registry(doc)
    for r in rungs:
        check_rung_name(r.get("name"), registry, where)
    return rungs


def _registry(doc: dict[str, Any]) -> Any:
    if _is_generation(doc):
        from adaptladder.generation.rungs import GEN_RUNGS

        return GEN_RUNGS
    from adaptladder.rungs import RUNGS

    return RUNGS


def _rung_result(doc: dict[str, Any], name: str | None, run_dir: Path) -> dict[str, Any]:
    rungs = {r["name"]: r for r in rung_records(doc, run_dir)}
    if name is None:
        rec = doc.get("recommendation")
        name = rec.get("rung") if isinstance(rec, dict) else None
        if name is None:
            raise AdaptError(f"{run_dir} has no recommended rung (none finished); pass --rung NAME.")
    if not isinstance(name, str) or name not in rungs:
        raise AdaptError(f"rung {name!r} did not run in {run_dir} (it has: {', '.join(rungs) or 'none'}); "
                         "pass one of those with --rung.")
    res = rungs[name]
    if res.get("status") != "done":
        raise AdaptError(f"rung {name!r} in {run_dir} did not finish ({res.get('status')}: {res.get('reason')}); "
                         "pick a finished rung with --rung.")
    if not (run_dir / "rungs" / name / "model" / "rung.json").is_file():
        raise AdaptError(f"{run_dir / 'rungs' / name / 'model' / 'rung.json'} is missing: no saved model for "
                         f"{name}; re-run the ladder.")
    return res


def load_saved_rung(model_dir: str | Path, run_root: str | Path | None = None) -> Any:
    """:func:`adaptladder.rungs.load_rung` with one line naming the file when a saved model is damaged.

    ``rung.json`` is checked by :func:`adaptladder.artifacts.read_rung_meta` (missing, not JSON, no
    known rung, keys missing, file hashes); a deleted or garbled model file would otherwise surface
    as whatever the reading library raises (EOFError, a skops or safetensors error, ...).
    """
    from adaptladder.rungs import load_rung
    from adaptladder.rungs.base import RUNG_FILE

    model_dir = Path(model_dir)
    try:
        return load_rung(model_dir, run_root=run_root)
    except AdaptError:
        raise
    except FileNotFoundError as e:
        missing = e.filename or "a file"
        raise AdaptError(f"{missing} is missing; the saved model in {model_dir} is incomplete: re-run the ladder "
                         "for this rung.") from e
    except Exception as e:  # a garbled model file: name the files it could be
        files = sorted(p.name for p in model_dir.iterdir() if p.is_file() and p.name != RUNG_FILE)
        which = (f"{model_dir / files[0]}" if len(files) == 1
                 else f"one of the files in {model_dir} ({', '.join(files[:6])})")
        raise AdaptError(f"{which} is damaged or unreadable ({type(e).__name__}: {_first_line(e)}); re-run the "
                         "ladder for this rung.") from e


def _verdict_notes(ci: Sequence[float], diff: float, tolerance: float, test: dict[str, Any], rung: str, *,
                   sample: str, n_new: str, more: str) -> tuple[str, list[str]]:
    """An evaluation's verdict from the 95% CI of the score change, and the notes both kinds of run give
    (the run's test score came from a sample; a drop beyond the tolerance that is not significant)."""
    verdict = "degraded" if ci[1] < 0 else "improved" if ci[0] > 0 else "no significant change"
    notes = []
    if test.get("sampled"):
        notes.append(f"the run's test score of {rung} came from a {sample} sample of {test.get('n')}.")
    if verdict == "no significant change" and -diff > tolerance:
        notes.append(f"the point estimate dropped by {-diff:.3f} (more than the tolerance) but the drop is not "
                     f"significant with {n_new}; {more} to be sure.")
    return verdict, notes


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:120] if text else type(e).__name__)


def load_model(run_dir: str | Path, rung: str | None = None) -> Any:
    """The saved, fitted rung of a run (default: the recommended one)."""
    run_dir = Path(run_dir)
    doc = _results(run_dir)
    res = _rung_result(doc, rung, run_dir)
    if _is_generation(doc):
        return load_gen_model(run_dir, res)
    return load_saved_rung(run_dir / "rungs" / res["name"] / "model", run_dir)


def _is_generation(doc: dict[str, Any]) -> bool:
    from adaptladder.kinds import GENERATION, kind_of

    return kind_of(doc) == GENERATION


def predict(run_dir: str | Path, texts: Sequence[str], rung: str | None = None) -> pd.DataFrame:
    """Labels and per-class probabilities for ``texts`` from a run's recommended (or named) rung.

    Returns a DataFrame with ``label`` and one ``proba_<label name>`` column per class; for a
    generation run, one ``generation`` column (one output per text, in order).
    """
    from adaptladder.rungs.base import check_inputs

    texts, _ = check_inputs(texts)
    doc = _results(run_dir)
    if _is_generation(doc):
        return predict_gen_texts(Path(run_dir), _rung_result(doc, rung, Path(run_dir)), texts)
    model = load_model(run_dir, rung)
    return _prediction_frame(model, texts)


def _prediction_frame(model: Any, texts: list[str]) -> pd.DataFrame:
    names = list(model.label_names_)
    proba = np.asarray(model.predict_proba(texts)) if texts else np.zeros((0, len(names)))
    return frame_from_proba(names, proba, len(texts))


def frame_from_proba(names: Sequence[str], proba: np.ndarray, n: int) -> pd.DataFrame:
    """``label`` + one ``proba_<label name>`` column per class (shared by the local and Ray predict paths)."""
    frame = pd.DataFrame({"label": [names[k] for k in proba.argmax(axis=1)] if n else []})
    for k, name in enumerate(names):
        frame[f"proba_{name}"] = proba[:, k]
    return frame


# ------------------------------------------------------------------ files
def _source_col(run_dir: Path, key: str) -> str | None:
    import json

    try:
        src = json.loads((run_dir / "task.json").read_text()).get("source") or {}
    except (OSError, ValueError):
        return None
    return src.get(key)


def _column(df: pd.DataFrame, wanted: str | None, fallback: str | None, candidates: Sequence[str], what: str,
            path: Path, flag: str) -> str:
    from adaptladder.task import pick_column

    if wanted is None and fallback is not None and fallback in df.columns:
        return fallback
    return pick_column(df, wanted, candidates, what, path, flag)


def read_texts(path: str | Path, text_col: str | None, run_dir: Path) -> tuple[pd.DataFrame, list[str], str]:
    """The input table and its texts; one clear error when the text column is missing or a text is empty."""
    from adaptladder.task import TEXT_CANDIDATES, clean_texts, read_table

    path = Path(path)
    df = read_table(path)
    col = _column(df, text_col, _source_col(run_dir, "text_col"), TEXT_CANDIDATES, "text", path, "--text-col")
    return df, clean_texts(df[col], path, col), col


def write_table(df: pd.DataFrame, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write by suffix (.csv/.tsv/.jsonl/.parquet) atomically; refuse to clobber unless ``overwrite``."""
    from adaptladder.store import check_output_file

    path = check_output_file(path, overwrite=overwrite)
    kind = path.suffix.lower()
    if kind not in (".csv", ".tsv", ".jsonl", ".parquet"):
        raise AdaptError(f"{path}: unknown output type {path.suffix!r}; use .csv, .tsv, .jsonl or .parquet.")
    tmp = path.with_name(f".{path.name}.tmp")
    if kind == ".csv":
        df.to_csv(tmp, index=False)
    elif kind == ".tsv":
        df.to_csv(tmp, index=False, sep="\t")
    elif kind == ".jsonl":
        df.to_json(tmp, orient="records", lines=True, force_ascii=False)
    else:
        df.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def predict_file(run_dir: str | Path, input_path: str | Path, output_path: str | Path, *,
                 text_col: str | None = None, rung: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Predict every row of a table; the output keeps the input's columns and adds label + probabilities."""
    run_dir = Path(run_dir)
    out = Path(output_path)
    if out.exists() and not overwrite:  # fail before the (possibly slow) predictions
        raise AdaptError(f"{out} already exists; pass --overwrite to replace it or choose another --output.")
    doc = _results(run_dir)
    if _is_generation(doc):  # one generation per row, in order, beside the input's columns
        return predict_gen_file(run_dir, _rung_result(doc, rung, run_dir), input_path, out, text_col=text_col,
                                overwrite=overwrite)
    model = load_model(run_dir, rung)
    df, texts, col = read_texts(input_path, text_col, run_dir)
    t0 = time.perf_counter()
    preds = _prediction_frame(model, texts)
    seconds = time.perf_counter() - t0
    taken = [c for c in preds.columns if c in df.columns]
    preds = preds.rename(columns={c: f"predicted_{c}" for c in taken})
    write_table(pd.concat([df.reset_index(drop=True), preds], axis=1), out, overwrite=overwrite)
    label_col = "predicted_label" if "label" in taken else "label"
    return {"rung": model.name, "n": len(texts), "text_col": col, "output": str(out), "seconds": seconds,
            "counts": preds[label_col].value_counts().to_dict()}


# ------------------------------------------------------------------ drift
@dataclass
class Evaluation:
    """One saved rung scored on new labelled data, compared with its test score in the run."""

    rung: str
    metric: str
    n_new: int
    new: dict[str, Any]
    run_test: dict[str, Any]
    diff: float
    diff_ci: list[float]
    verdict: str  # "degraded" | "no significant change" | "improved"
    beyond_tolerance: bool
    tolerance: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def sentence(self) -> str:
        m = self.metric
        lo, hi = self.diff_ci
        s = (f"{self.rung}: {m} {self.new[m]:.3f} on {self.n_new} new examples vs {self.run_test[m]:.3f} on the "
             f"run's test split; difference {self.diff:+.3f} (95% CI [{lo:+.3f}, {hi:+.3f}]): {self.verdict}")
        if self.verdict == "degraded":
            s += (f", beyond the tolerance {self.tolerance:.3f}" if self.beyond_tolerance
                  else f", within the tolerance {self.tolerance:.3f}")
        return s + "."


def read_labelled(path: str | Path, run_dir: Path, label_names: Sequence[str], text_col: str | None,
                  label_col: str | None) -> tuple[list[str], np.ndarray]:
    """Texts and label codes of new labelled data, mapped onto the run's label names."""
    from adaptladder.task import LABEL_CANDIDATES, clean_labels

    df, texts, tcol = read_texts(path, text_col, run_dir)
    path = Path(path)
    lcol = _column(df, label_col, _source_col(run_dir, "label_col"), LABEL_CANDIDATES, "labels", path,
                   "--label-col")
    if lcol == tcol:
        raise AdaptError(f"{path}: the text and label columns are both {tcol!r}; pass --text-col and --label-col.")
    strs = clean_labels(df[lcol], path, lcol)
    index = {str(n): k for k, n in enumerate(label_names)}
    unknown = sorted({s for s in strs if s not in index})
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise AdaptError(f"{path}: label(s) {shown} in column {lcol!r} are not labels of this run "
                         f"(known: {', '.join(map(repr, label_names))}); rename or drop those rows.")
    return texts, np.array([index[s] for s in strs], dtype=np.int64)


def _independent_diff_ci(y_new: np.ndarray, p_new: np.ndarray, y_old: np.ndarray, p_old: np.ndarray, k: int,
                         metric: str, seed: int, n_boot: int = 1000) -> list[float]:
    """95% CI of score(new) - score(old) for two independent samples (each resampled on its own)."""
    from adaptladder.compare import bootstrap_rows, metric_rows

    rng = np.random.default_rng(seed)
    new = np.concatenate([metric_rows(y_new[i], p_new[i], k, metric) for i in bootstrap_rows(len(y_new), n_boot, rng)])
    old = np.concatenate([metric_rows(y_old[j], p_old[j], k, metric) for j in bootstrap_rows(len(y_old), n_boot, rng)])
    boots = new - old
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return [float(lo), float(hi)]


def evaluate(run_dir: str | Path, data: str | Path, *, rung: str | None = None, all_rungs: bool = False,
             tolerance: float = DEFAULT_TOLERANCE, text_col: str | None = None, label_col: str | None = None,
             metric: str | None = None, save: bool = True, target_col: str | None = None) -> list[Evaluation]:
    """Score saved rungs on new labelled data and compare with the run's own test scores.

    Verdict per rung: "degraded" when the 95% CI of (new - run test) lies below zero,
    "improved" when above, else "no significant change"; ``beyond_tolerance`` when degraded
    and the drop exceeds ``tolerance``. Written to ``run_dir/evaluations/``.

    A generation run scores new (input, target) pairs (``text_col`` / ``target_col``, or
    ``label_col`` as the target) with its generation metrics; ``metric`` defaults to the run's.
    """
    from adaptladder.compare import part_labels
    from adaptladder.measure import score

    run_dir = Path(run_dir)
    if tolerance < 0:
        raise AdaptError(f"--tolerance {tolerance} is negative; give a score drop such as 0.02.")
    doc = _results(run_dir)
    generation = _is_generation(doc)
    if generation:
        chosen = _chosen(doc, rung, all_rungs, run_dir)
        return evaluate_gen(run_dir, doc, chosen, data, tolerance=tolerance, text_col=text_col,
                            target_col=target_col if target_col is not None else label_col, metric=metric, save=save)
    if target_col is not None:
        raise AdaptError("--target-col is for generation runs; this run classifies: pass --label-col.")
    metric = metric or doc["metric"]
    if metric not in ("macro_f1", "accuracy"):
        raise AdaptError(f"unknown metric {metric!r}: use macro_f1 or accuracy.")
    names = doc["task"]["label_names"]
    chosen = _chosen(doc, rung, all_rungs, run_dir)
    texts, y = read_labelled(data, run_dir, names, text_col, label_col)
    seed = (doc.get("config") or {}).get("seed", 0)
    split_labels = None
    out: list[Evaluation] = []
    for res in chosen:
        model = load_saved_rung(run_dir / "rungs" / res["name"] / "model", run_dir)
        proba = np.asarray(model.predict_proba(texts))
        new = score(y, proba, names, seed=seed)
        test = res["test"]
        if "labels" not in test and split_labels is None:
            from adaptladder.compare import labels_from_split_csv

            split_labels = labels_from_split_csv(run_dir, names)
        y_old = part_labels(test, split_labels)
        p_old = np.asarray(test["predictions"], dtype=np.int64)
        diff = new[metric] - test[metric]
        ci = _independent_diff_ci(y, proba.argmax(axis=1), y_old, p_old, len(names), metric, seed)
        verdict, notes = _verdict_notes(ci, diff, tolerance, test, res["name"], sample="stratified",
                                        n_new=f"{len(y)} new examples", more="label more data")
        missing = [names[k] for k in range(len(names)) if not (y == k).any()]
        if missing and metric == "macro_f1":
            notes.append(f"the new data has no example of {', '.join(missing)}; macro-F1 averages over all "
                         "classes, so compare accuracy too.")
        out.append(_evaluation(res["name"], metric, len(y), {k: v for k, v in new.items()},
                               {k: test[k] for k in ("n", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci",
                                                     "sampled") if k in test},
                               diff, ci, verdict, tolerance, notes))
    if save:
        _save_evaluations(run_dir, data, metric, tolerance, out)
    return out


def _evaluation(rung: str, metric: str, n_new: int, new: dict[str, Any], run_test: dict[str, Any], diff: float,
                ci: Any, verdict: str, tolerance: float, notes: list[str]) -> Evaluation:
    return Evaluation(rung=rung, metric=metric, n_new=n_new, new=new, run_test=run_test, diff=float(diff), diff_ci=ci,
                      verdict=verdict, beyond_tolerance=bool(verdict == "degraded" and -diff > tolerance),
                      tolerance=tolerance, notes=notes)


def _save_evaluations(run_dir: Path, data: str | Path, metric: str, tolerance: float, out: list[Evaluation],
                      **extra: Any) -> None:
    """evaluations/<time>-<data>.json in the run directory (``extra`` keys after the tolerance)."""
    from adaptladder.store import atomic_write_json

    stamp = time.strftime("%Y%m%dT%H%M%S")
    atomic_write_json(run_dir / "evaluations" / f"{stamp}-{Path(data).stem[:40]}.json",
                      {"data": str(Path(data).resolve()), "metric": metric, "tolerance": tolerance, **extra,
                       "evaluations": [e.to_dict() for e in out],
                       "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def _chosen(doc: dict[str, Any], rung: str | None, all_rungs: bool, run_dir: Path) -> list[dict[str, Any]]:
    """The rung records to evaluate: every finished one with a saved model, or the named / recommended one."""
    if all_rungs:
        if rung is not None:
            raise AdaptError("pass either --rung NAME or --all-rungs, not both.")
        chosen = [r for r in rung_records(doc, run_dir) if r.get("status") == "done"
                  and (run_dir / "rungs" / r["name"] / "model" / "rung.json").is_file()]
        if not chosen:
            raise AdaptError(f"{run_dir} has no finished rung with a saved model; re-run the ladder.")
        return chosen
    return [_rung_result(doc, rung, run_dir)]


def gate_failed(evals: Sequence[Evaluation], deployed: str | None) -> bool:
    """Exit-code rule: the deployed rung (or, if it was not evaluated, any rung) degraded beyond tolerance."""
    names = {e.rung for e in evals}
    pool = [e for e in evals if e.rung == deployed] if deployed in names else list(evals)
    return any(e.beyond_tolerance for e in pool)


# ------------------------------------------------------------------ generation runs (issue #17)
# A generation run (results.json ``task.task == "generation"``): ``predict`` writes one generation per
# input row (row order kept, the input's columns beside it); ``evaluate`` generates for new (input,
# target) pairs, scores them with the run's generation metrics (mean + 95% bootstrap CI each) and
# compares the primary metric with the run's own test score (independent bootstrap of the difference),
# with the same verdicts and exit rule as for classification.
#: inputs per generate() call (bounded memory; the rung batches inside)
GEN_CHUNK = 64


def load_gen_model(run_dir: Path, res: dict[str, Any]) -> Any:
    """The saved generation rung of a finished rung record; a damaged save is one line naming it."""
    from adaptladder.generation.rungs import load_gen_rung

    model_dir = run_dir / "rungs" / res["name"] / "model"
    try:
        return load_gen_rung(model_dir, run_root=run_dir)
    except AdaptError:
        raise
    except FileNotFoundError as e:
        raise AdaptError(f"{e.filename or 'a file'} is missing; the saved model in {model_dir} is incomplete: re-run "
                         "the ladder for this rung.") from e
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise AdaptError(f"the saved model in {model_dir} could not be loaded ({type(e).__name__}: {first}); re-run "
                         "the ladder for this rung.") from e


def generate_all(model: Any, inputs: Sequence[str]) -> list[str]:
    """One output per input, in order (chunked)."""
    out: list[str] = []
    for s in range(0, len(inputs), GEN_CHUNK):
        batch = list(inputs[s:s + GEN_CHUNK])
        got = model.generate(batch)
        if len(got) != len(batch):
            raise AdaptError(f"the {model.name} rung returned {len(got)} outputs for {len(batch)} inputs; its saved "
                             "model is broken: re-run the ladder for it.")
        out.extend("" if g is None else str(g) for g in got)
    return out


def _render_chat(raw: Sequence[Any], path: Path, col: str) -> list[str]:
    """Inputs from a ``messages`` column for predict: the turns as the run's loader renders them
    (a lone user turn as it is, several as ``Role: text`` lines); a final assistant turn, if any,
    is dropped (it is what the model is asked to write)."""
    from adaptladder.generation.loaders import as_turn_list, render_turns

    out = []
    for i, cell in enumerate(raw):
        msgs = as_turn_list(cell)
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
            raise AdaptError(f"{path}: record {i + 1}: {col!r} is not a list of {{\"role\": ..., \"content\": ...}} "
                             "turns.")
        turns = [m for m in msgs if str(m["role"]).lower() != "system"]
        if turns and str(turns[-1]["role"]).lower() == "assistant":
            turns = turns[:-1]
        if not turns:
            raise AdaptError(f"{path}: record {i + 1} has no user turn in {col!r}; nothing to reply to.")
        out.append(render_turns(turns))
    return out


def read_inputs(path: str | Path, text_col: str | None, run_dir: Path) -> tuple[pd.DataFrame, list[str], str]:
    """The table and its input texts: ``--text-col``, else the run's input column, else the usual names
    (a chat file's ``messages``)."""
    from adaptladder.generation.loaders import GEN_INPUT_CANDIDATES, _has_messages
    from adaptladder.task import clean_texts, read_table

    path = Path(path)
    df = read_table(path)
    mcol = _has_messages(df)
    if text_col is None and mcol and (_source_col(run_dir, "text_col") not in df.columns):
        return df, _render_chat(df[mcol].tolist(), path, mcol), mcol
    col = _column(df, text_col, _source_col(run_dir, "text_col"), GEN_INPUT_CANDIDATES, "input text", path,
                  "--text-col")
    return df, clean_texts(df[col], path, col), col


def read_pairs(path: str | Path, text_col: str | None, target_col: str | None, run_dir: Path
               ) -> tuple[list[str], list[str], str, str]:
    """New (input, target) pairs: the columns named, else the run's, else the usual names; a chat file
    gives its last assistant turns as targets. Bad values are one line each (empty target, ...)."""
    from adaptladder.generation.loaders import _read_pairs
    from adaptladder.task import read_table

    path = Path(path)
    df = read_table(path)
    if text_col is None and _source_col(run_dir, "text_col") in df.columns:
        text_col = _source_col(run_dir, "text_col")
    if target_col is None and _source_col(run_dir, "target_col") in df.columns:
        target_col = _source_col(run_dir, "target_col")
    _, inputs, targets, meta = _read_pairs(path, text_col, target_col)
    return inputs, targets, meta.get("text_col") or meta.get("messages_col", "messages"), \
        meta.get("target_col") or "last assistant turn"


def predict_gen_texts(run_dir: Path, res: dict[str, Any], texts: Sequence[str]) -> pd.DataFrame:
    model = load_gen_model(run_dir, res)
    return pd.DataFrame({"generation": generate_all(model, list(texts))})


def predict_gen_file(run_dir: Path, res: dict[str, Any], input_path: str | Path, out: Path, *,
                     text_col: str | None, overwrite: bool) -> dict[str, Any]:
    model = load_gen_model(run_dir, res)
    df, texts, col = read_inputs(input_path, text_col, run_dir)
    t0 = time.perf_counter()
    outputs = generate_all(model, texts)
    seconds = time.perf_counter() - t0
    name = "generation" if "generation" not in df.columns else "predicted_generation"
    frame = df.reset_index(drop=True).copy()
    frame[name] = outputs
    write_table(frame, out, overwrite=overwrite)
    return {"task": "generation", "rung": model.name, "n": len(texts), "text_col": col, "output": str(out),
            "column": name, "seconds": seconds, "empty": sum(1 for o in outputs if not o.strip())}


def _gen_diff_ci(new: np.ndarray, old: np.ndarray, seed: int, n_boot: int = 1000) -> list[float]:
    """95% CI of mean(new) - mean(old) for two independent samples (each resampled on its own)."""
    from adaptladder.generation.metrics import bootstrap_means

    boots = bootstrap_means(new, n_boot, seed) - bootstrap_means(old, n_boot, seed + 1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return [float(lo), float(hi)]


def evaluate_gen(run_dir: Path, doc: dict[str, Any], chosen: list[dict[str, Any]], data: str | Path, *,
                 tolerance: float, text_col: str | None, target_col: str | None, metric: str | None,
                 save: bool) -> list[Any]:
    """Score saved generation rungs on new (input, target) pairs against the run's test scores."""
    from adaptladder.generation.metrics import per_example_scores, summarise
    from adaptladder.generation.task import GENERATION_METRICS

    task = doc.get("task") or {}
    output = task.get("output") or "text"
    metric = metric or doc["metric"]
    if metric not in GENERATION_METRICS:
        raise AdaptError(f"unknown metric {metric!r} for a generation run: use one of "
                         f"{', '.join(GENERATION_METRICS)} (default: the run's, {doc['metric']}).")
    inputs, targets, tcol, ycol = read_pairs(data, text_col, target_col, run_dir)
    if not inputs:
        raise AdaptError(f"{data} has no rows; give at least one (input, target) pair.")
    schema = task.get("schema")
    if output == "json":
        from adaptladder.generation.metrics import parse_json

        refs: list[Any] = []
        for i, t in enumerate(targets):
            ok, v = parse_json(t)
            if not ok:
                raise AdaptError(f"{data}: the target of row {i + 1} in column {ycol!r} is not JSON; this run extracts "
                                 "JSON, so every target must be a JSON value.")
            refs.append(v)
    else:
        refs = list(targets)
    seed = (doc.get("config") or {}).get("seed", 0) or 0
    encoder = None
    out = []
    for res in chosen:
        model = load_gen_model(run_dir, res)
        outputs = generate_all(model, inputs)
        test = res.get("test") or {}
        want_sim = output == "text" and ("embedding_sim" in test or metric == "embedding_sim")
        per, _ = per_example_scores(outputs, refs, kind=output, schema=schema)
        if want_sim:
            if encoder is None:
                from adaptladder.encode import get_encoder

                encoder = get_encoder((doc.get("config") or {}).get("encoder") or "minilm")
            sim, _ = per_example_scores(outputs, refs, kind="text", metrics=["embedding_sim"], encode=encoder.encode)
            per.update(sim)
        if metric not in per:
            raise AdaptError(f"metric {metric!r} does not apply to this run's {output} output; use one of "
                             f"{', '.join(per)}.")
        new: dict[str, Any] = {}
        for m, v in per.items():
            s = summarise(v, seed=seed)
            new[m], new[m + "_ci"] = s["mean"], s["ci"]
        old = (test.get("per_example") or {}).get(metric)
        if old is None or metric not in test:
            raise AdaptError(f"the run's test record of {res['name']} has no per-example {metric}; re-run the ladder "
                             "for it or pick another --metric.")
        diff = new[metric] - float(test[metric])
        ci = _gen_diff_ci(np.asarray(per[metric]), np.asarray(old, dtype=float), seed)
        verdict, notes = _verdict_notes(ci, diff, tolerance, test, res["name"], sample="seeded",
                                        n_new=f"{len(inputs)} new pairs", more="score more pairs")
        empty = sum(1 for o in outputs if not o.strip())
        if empty:
            notes.append(f"{empty} of {len(outputs)} generations were empty.")
        out.append(_evaluation(res["name"], metric, len(inputs), new,
                               {k: test[k] for k in test
                                if k in per or k.removesuffix("_ci") in per or k in ("n", "sampled")},
                               diff, ci, verdict, tolerance, notes))
    if save:
        _save_evaluations(run_dir, data, metric, tolerance, out, task="generation", text_col=tcol, target_col=ycol)
    return out

"""Distillation: a large, slow teacher labels texts; a small, fast student learns from them.

This is how teams get most of a big model's quality at a small model's latency and cost. Any
rung can be the teacher (a prompted LM, a fine-tuned model, or a rung already saved by an
earlier run, via ``teacher_path``) and any rung the student (by default ``features``: a frozen
MiniLM + a classical head). Only the student is needed to predict, so only the student is saved.

What the rung reports (``extra_info``) is what the distillation bought: teacher and student
scores on the same validation examples, their latency and cost per 1,000 predictions measured
side by side on the same texts, how many teacher labels were kept and how accurate they were
where a gold label is known, and, when teacher labels were used, a student trained on the gold
labels alone for comparison.

Note on the default pool: with no ``unlabelled`` file the teacher labels the training texts
themselves, and since gold labels win wherever they exist the student then learns from gold
labels only; the rung still measures teacher vs. student. To measure what teacher labels add,
give ``unlabelled=extra_texts.txt`` or keep only part of the gold labels (``gold_labels=300``:
the other training texts become the unlabelled pool, their gold labels used only to report the
teacher's label accuracy).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from adaptladder.encode import cache_disabled
from adaptladder.errors import AdaptError
from adaptladder.rungs.base import Rung, check_inputs, load_rung
from adaptladder.rungs.settings import RungSettings, SettingError, positive_int, setting

META_FILE = "distill.json"
STUDENT_DIR = "student"

@dataclass
class DistillSettings(RungSettings):
    run_values: ClassVar[dict[str, str]] = {"encoder": "encoder", "seed": "seed"}

    teacher: str = setting("few-shot", help="the teacher rung, fitted here on the gold labels")
    teacher_params: dict[str, Any] | str | None = setting(None, help="the teacher's settings (a mapping or a JSON "
                                                                    "object string)")
    teacher_path: str | None = setting(None, help="a saved rung directory (runs/x/rungs/few-shot/model) used as "
                                                  "the teacher instead")
    student: str = setting("features", help="the student rung (only the student is saved and predicts)")
    student_params: dict[str, Any] | str | None = setting(None, help="the student's settings (a mapping or a "
                                                                    "JSON object string)")
    unlabelled: str | None = setting(None, help="file of extra texts for the teacher to label (.txt one per "
                                                "line, or a table with a text column)")
    unlabelled_col: str | None = setting(None, help="the text column of the unlabelled table")
    gold_labels: int | float | str | None = setting(None, help="training labels kept: all (unset), a count, or "
                                                               "a fraction; the rest become unlabelled texts")
    min_confidence: float = setting(0.0, help="keep a teacher label only when its top probability reaches this")
    max_unlabelled: int | None = setting(1000, help="cap on texts the teacher labels")
    batch_size: int = setting(32, help="texts per prediction call while labelling and scoring")
    val_max: int = setting(300, help="validation examples teacher and student are both scored on")
    latency_probe: int = setting(64, help="validation texts both are timed on (caches off)")
    baseline: bool = setting(True, help="also train the student on the gold labels alone, for comparison")
    encoder: str | None = setting(None, help="passed on to a teacher / student that takes an encoder (the run's "
                                             "--encoder)")
    seed: int = setting(13, help="seed of the gold subset and pool, passed on likewise (the run's --seed)")
    progress: bool = setting(True, help="show progress while the teacher labels")

    def check(self) -> None:
        if self.min_confidence < 0:  # above 1 keeps no teacher label (gold labels only)
            raise SettingError("min_confidence", self.min_confidence, "a number >= 0 (a probability)")
        positive_int(self, "max_unlabelled", allow_none=True)
        positive_int(self, "batch_size", "val_max", "latency_probe")
        gl = self.gold_labels
        if isinstance(gl, str) and gl.strip() not in ("", "all"):
            try:
                float(gl)
            except ValueError:
                raise SettingError("gold_labels", gl, "'all', a count or a fraction in (0, 1]") from None
        from adaptladder.rungs import RUNGS

        for role in ("teacher", "student"):
            given = _as_dict(getattr(self, f"{role}_params"), f"{role}_params")
            rung = getattr(self, role)
            if given and rung in RUNGS and rung != "distill":  # an unknown rung is a skip reason, said at run time
                from adaptladder.rungs.settings import resolve_params

                try:
                    resolve_params(rung, None, given)
                except AdaptError as e:
                    raise AdaptError(f"distill {role}_params: {e}") from None


class DistillRung(Rung):
    name: ClassVar[str] = "distill"
    family: ClassVar[str] = "distill"
    cost_rank: ClassVar[int] = 90
    description: ClassVar[str] = "a teacher rung labels texts; a small fast student rung learns from gold + its labels"

    Settings = DistillSettings

    def _p(self, key: str) -> Any:
        return getattr(self.settings, key)

    # ------------------------------------------------------------------ availability
    @classmethod
    def unavailable_reason(cls, params: dict[str, Any]) -> str | None:
        from adaptladder.rungs import RUNGS, get_rung_class

        p = {**DistillSettings.build(cls.name, {}).values(), **params}
        roles = [("student", p["student"], p["student_params"])]
        if not p["teacher_path"]:
            roles.insert(0, ("teacher", p["teacher"], p["teacher_params"]))
        for role, rung, rparams in roles:
            if rung not in RUNGS:
                return (f"the {role} rung {rung!r} is not available here (rungs: {', '.join(RUNGS)}); "
                        f"pass {role}=<rung>" + (" or teacher_path=<saved rung dir>" if role == "teacher" else ""))
            if rung == cls.name:
                return f"the {role} cannot itself be a distill rung"
            try:
                reason = get_rung_class(rung).unavailable_reason(_as_dict(rparams, f"{role}_params"))
            except AdaptError as e:
                return str(e)
            if reason:
                return f"{role} {rung}: {reason}"
        return None

    @classmethod
    def params_from_run(cls, params: dict[str, Any], finished: dict[str, str | Path]) -> dict[str, Any]:
        """Reuse a teacher the same run already fitted (``finished``: rung name -> saved model dir).

        A ladder that ran ``few-shot`` before ``distill`` should not fit (or pay for) the same
        teacher twice. Not when only part of the gold labels is kept: the saved teacher saw them all.
        """
        p = {**DistillSettings.build(cls.name, {}).values(), **params}
        teacher = p["teacher"]
        if (not p["teacher_path"] and not p["teacher_params"] and teacher in finished
                and p["gold_labels"] in (None, "all")):
            return {**params, "teacher_path": str(finished[teacher])}
        return dict(params)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        texts: Sequence[str],
        y: np.ndarray,
        *,
        label_names: Sequence[str],
        val_texts: Sequence[str] | None = None,
        val_y: np.ndarray | None = None,
    ) -> DistillRung:
        from adaptladder.rungs import make_rung

        texts, y = check_inputs(texts, y)
        assert y is not None
        label_names = list(label_names)
        if val_texts is not None:
            val_texts, val_y = check_inputs(val_texts, val_y)
        seed = int(self._p("seed"))
        reason = self.unavailable_reason(self.params)
        if reason:
            raise AdaptError(f"distill cannot run: {reason}.")
        notes: list[str] = []

        # 1. which gold labels the teacher and student may see
        gold_idx = _gold_subset(y, self._p("gold_labels"), seed)
        gold_texts = [texts[i] for i in gold_idx]
        gold_y = y[gold_idx]
        hidden = np.setdiff1d(np.arange(len(texts)), gold_idx)
        gold_of = _first_label(gold_texts, gold_y)
        hidden_of = {t: lab for t, lab in _first_label([texts[i] for i in hidden], y[hidden]).items()
                     if t not in gold_of}

        # 2. the teacher: loaded as saved, or fitted on the gold labels
        teacher, teacher_info = self._teacher(gold_texts, gold_y, label_names, val_texts, val_y, notes)

        # 3. the pool the teacher labels
        pool, pool_source = self._pool(texts, gold_of)
        with cache_disabled():  # time the teacher as it would run on new texts
            probs, label_seconds = _predict_batched(teacher, pool, int(self._p("batch_size")),
                                                    bool(self._p("progress")), f"teacher {teacher.name} labelling")
        conf = probs.max(axis=1) if len(pool) else np.zeros(0)
        pred = probs.argmax(axis=1) if len(pool) else np.zeros(0, dtype=np.int64)
        min_conf = float(self._p("min_confidence"))
        keep = conf >= min_conf
        extra_texts, extra_y = [], []
        overridden = 0
        for t, k, ok in zip(pool, pred.tolist(), keep.tolist(), strict=True):
            if t in gold_of:
                overridden += 1
            elif ok:
                extra_texts.append(t)
                extra_y.append(k)
        known = [(gold_of.get(t, hidden_of.get(t)), k) for t, k in zip(pool, pred.tolist(), strict=True)]
        known = [(g, k) for g, k in known if g is not None]
        hidden_known = [(hidden_of[t], k, ok) for t, k, ok in zip(pool, pred.tolist(), keep.tolist(), strict=True)
                        if t in hidden_of]
        labelling = {
            "pool": pool_source,
            "pool_size": len(pool),
            "labelled": len(pool),
            "min_confidence": min_conf,
            "kept": int(keep.sum()),
            "used_for_student": len(extra_texts),
            "gold_wins": overridden,
            "mean_confidence": _r(float(conf.mean())) if len(pool) else None,
            "teacher_label_counts": {label_names[k]: int(v) for k, v in sorted(Counter(extra_y).items())},
            "agreement_with_gold": ({"n": len(known), "accuracy": _r(np.mean([g == k for g, k in known]))}
                                    if known else None),
            "accuracy_of_used_labels": (
                {"n": sum(ok for *_, ok in hidden_known),
                 "accuracy": _r(np.mean([g == k for g, k, ok in hidden_known if ok]))}
                if any(ok for *_, ok in hidden_known) else None),
            "seconds": _r(label_seconds),
            "throughput_per_s": _r(len(pool) / label_seconds) if label_seconds > 0 and pool else None,
        }
        if not extra_texts:
            notes.append("no teacher label reached the student (gold labels win on every pooled text"
                         + (" or none reached min_confidence" if min_conf > 0 else "")
                         + "): the student learned from gold labels only; pass unlabelled= or gold_labels= "
                         "to let the teacher's labels count.")

        # 4. the student, on gold + teacher labels
        student_name = self._p("student")
        student_params = self._inherit(student_name, _as_dict(self._p("student_params"), "student_params"))
        train_texts = gold_texts + extra_texts
        train_y = np.concatenate([gold_y, np.asarray(extra_y, dtype=np.int64)])
        t0 = time.perf_counter()
        student = make_rung(student_name, **student_params).fit(
            train_texts, train_y, label_names=label_names, val_texts=val_texts, val_y=val_y)
        student_fit = time.perf_counter() - t0
        student_info: dict[str, Any] = {
            "rung": student_name, "params": student_params, "fit_seconds": _r(student_fit),
            "trained_on": {"gold": len(gold_texts), "teacher": len(extra_texts)},
        }
        baseline = None
        if extra_texts and self._p("baseline"):
            t0 = time.perf_counter()
            baseline = make_rung(student_name, **student_params).fit(
                gold_texts, gold_y, label_names=label_names, val_texts=val_texts, val_y=val_y)
            baseline_info: dict[str, Any] | None = {"rung": student_name, "trained_on": {"gold": len(gold_texts)},
                                                    "fit_seconds": _r(time.perf_counter() - t0)}
        else:
            baseline_info = None

        # 5. scores on the same validation examples, latency on the same texts
        if val_texts is not None and val_y is not None and len(val_texts):
            vidx = _val_subset(val_y, teacher, int(self._p("val_max")), seed)
            vt, vy = [val_texts[i] for i in vidx], val_y[vidx]
            teacher_info["validation"] = _score(teacher, vt, vy, len(label_names), int(self._p("batch_size")))
            student_info["validation"] = _score(student, vt, vy, len(label_names), int(self._p("batch_size")))
            if baseline is not None and baseline_info is not None:
                baseline_info["validation"] = _score(baseline, vt, vy, len(label_names), int(self._p("batch_size")))
            probe_src = vt
        else:
            notes.append("no validation split given: teacher and student were not scored.")
            probe_src = pool or train_texts
        probe = _spread(probe_src, int(self._p("latency_probe")))
        batch = int(self._p("batch_size"))
        slow = getattr(teacher, "eval_cap", None) is not None
        teacher_info.update(_speed(teacher, probe, batch, repeats=1, n_single=5 if slow else 20, seed=seed))
        student_info.update(_speed(student, probe, batch, repeats=3, n_single=20, seed=seed))
        for info, rung in ((teacher_info, teacher), (student_info, student)):
            info["cost_per_1k_usd"], info["cost_basis"] = _cost_per_1k(rung, info["batch_ms_per_example"] / 1000)
        if teacher_info["cost_per_1k_usd"] is not None:
            labelling["cost_usd"] = _r(teacher_info["cost_per_1k_usd"] * len(pool) / 1000)

        self.teacher_info_, self.student_info_, self.labelling_ = teacher_info, student_info, labelling
        self.baseline_info_, self.notes_ = baseline_info, notes
        self.latency_probe_ = {
            "n": len(probe), "batch_size": batch,
            "note": "teacher and student timed on the same texts with the embedding cache off: batched time per "
                    "example (student: median of 3 passes, teacher: 1) and single-example p50 latency"}
        self.student_ = student
        self.label_names_ = label_names
        self.extra_ = self._build_extra()
        return self

    # ------------------------------------------------------------------ parts of fit
    def _teacher(self, gold_texts: list[str], gold_y: np.ndarray, label_names: list[str],
                 val_texts: list[str] | None, val_y: np.ndarray | None,
                 notes: list[str]) -> tuple[Rung, dict[str, Any]]:
        from adaptladder.rungs import make_rung

        path = self._p("teacher_path")
        if path:
            path = Path(path)
            teacher = load_rung(path)
            have = list(getattr(teacher, "label_names_", []))
            if have != label_names:
                raise AdaptError(f"the teacher saved in {path} predicts labels {have}, but this task has "
                                 f"{label_names}; pass a teacher trained on the same task.")
            if self._p("gold_labels") not in (None, "all"):
                notes.append(f"the saved teacher in {path} may have seen all training labels, not only the "
                             f"{len(gold_texts)} gold labels kept here.")
            return teacher, {"rung": teacher.name, "from": f"loaded from {path}", "params": teacher.get_params(),
                             "fit_seconds": 0.0}
        name = self._p("teacher")
        tparams = self._inherit(name, _as_dict(self._p("teacher_params"), "teacher_params"))
        t0 = time.perf_counter()
        teacher = make_rung(name, **tparams).fit(gold_texts, gold_y, label_names=label_names,
                                                 val_texts=val_texts, val_y=val_y)
        return teacher, {"rung": name, "from": f"fitted on {len(gold_texts)} gold labels", "params": tparams,
                         "fit_seconds": _r(time.perf_counter() - t0)}

    def _inherit(self, rung: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run-wide settings the ladder gave distill (encoder, seed) reach the rungs that take them."""
        from adaptladder.rungs.settings import resolve_params

        return resolve_params(rung, {"encoder": self._p("encoder"), "seed": self._p("seed")}, params)

    def _pool(self, texts: list[str], gold_of: dict[str, int]) -> tuple[list[str], str]:
        """Texts for the teacher to label: the unlabelled file or the training texts, capped.

        Under the cap, texts without a gold label come first: only their teacher labels can
        reach the student; gold-labelled ones measure the teacher's agreement with gold.
        """
        src = self._p("unlabelled")
        if src:
            cand = read_unlabelled(src, self._p("unlabelled_col"))
            source = f"file {src}"
        else:
            cand = texts
            source = "the training texts"
        cand = list(dict.fromkeys(cand))
        cap = self._p("max_unlabelled")
        cap = len(cand) if cap in (None, 0) else int(cap)
        rng = np.random.default_rng(int(self._p("seed")))
        order = rng.permutation(len(cand))
        order = sorted(order.tolist(), key=lambda i: cand[i] in gold_of)  # stable: random within each group
        if len(cand) > cap:
            source += f" ({cap:,} of {len(cand):,}, capped by max_unlabelled)"
        return [cand[i] for i in order[:cap]], source

    def _build_extra(self) -> dict[str, Any]:
        t, s = self.teacher_info_, self.student_info_
        bought: dict[str, Any] = {}
        for key, what in (("batch_ms_per_example", "speedup"), ("latency_ms_p50", "latency_speedup")):
            if _pos(t.get(key)) and _pos(s.get(key)):
                bought[what] = _r(t[key] / s[key])
        if t.get("cost_per_1k_usd") and s.get("cost_per_1k_usd"):
            bought["cost_ratio"] = _r(t["cost_per_1k_usd"] / s["cost_per_1k_usd"])
        if "validation" in t and "validation" in s:
            bought["macro_f1_student_minus_teacher"] = _r(s["validation"]["macro_f1"] - t["validation"]["macro_f1"])
            bought["accuracy_student_minus_teacher"] = _r(s["validation"]["accuracy"] - t["validation"]["accuracy"])
        b = self.baseline_info_
        if b and "validation" in b and "validation" in s:
            bought["macro_f1_gain_from_teacher_labels"] = _r(s["validation"]["macro_f1"] - b["validation"]["macro_f1"])
        summary = (f"student {s['rung']} vs teacher {t['rung']}: {s['latency_ms_p50']:.3g} vs "
                   f"{t['latency_ms_p50']:.3g} ms single-example latency, {s['batch_ms_per_example']:.3g} vs "
                   f"{t['batch_ms_per_example']:.3g} ms per example batched")
        if "speedup" in bought:
            summary += f" ({bought['speedup']:.3g}x faster)"
        if _pos(t.get("cost_per_1k_usd")) and _pos(s.get("cost_per_1k_usd")):
            summary += f"; ${s['cost_per_1k_usd']:.2g} vs ${t['cost_per_1k_usd']:.2g} per 1,000 predictions"
        if "validation" in t and "validation" in s:
            summary += (f"; macro-F1 {s['validation']['macro_f1']:.3f} vs {t['validation']['macro_f1']:.3f} on "
                        f"{s['validation']['n']} validation examples")
        extra = {
            "summary": summary, "teacher": t, "student": s, "gold_only_student": b,
            "labelling": self.labelling_, "teacher_labels_kept": self.labelling_["kept"],
            "teacher_labelling_throughput_per_s": self.labelling_["throughput_per_s"],
            "bought": bought, "latency_probe": self.latency_probe_, "notes": self.notes_,
        }
        if "API" in s.get("cost_basis", ""):
            # the student is what predicts: an API student's token price prices the rung; a local
            # one is priced by the ladder from its own throughput measurement
            extra["cost_per_1k_usd"] = s["cost_per_1k_usd"]
        return extra

    # ------------------------------------------------------------------ predict / save
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        texts, _ = check_inputs(texts)
        return self.student_.predict_proba(texts)

    def extra_info(self) -> dict[str, Any]:
        return dict(getattr(self, "extra_", {}))

    def _save(self, path: Path) -> None:
        self.student_.save(path / STUDENT_DIR)
        tmp = path / (META_FILE + ".tmp")
        tmp.write_text(json.dumps({"label_names": self.label_names_, "extra": self.extra_}, indent=2))
        tmp.replace(path / META_FILE)

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> DistillRung:
        info = json.loads((path / META_FILE).read_text())
        rung = cls(**meta.get("params", {}))
        rung.student_ = load_rung(path / STUDENT_DIR)
        rung.label_names_ = list(info["label_names"])
        rung.extra_ = info.get("extra", {})
        return rung


# ====================================================================== helpers
def read_unlabelled(path: str | Path, col: str | None = None) -> list[str]:
    """Texts from a ``.txt`` file (one per non-empty line) or a table with a text column."""
    from adaptladder.io.tables import pick_column, read_table
    from adaptladder.task import TEXT_CANDIDATES

    path = Path(path)
    if not path.is_file():
        raise AdaptError(f"unlabelled texts file {path} not found; fix the distill rung's unlabelled= path.")
    if path.suffix.lower() == ".txt":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise AdaptError(f"{path}: bytes at position {e.start} are not valid UTF-8; re-save it as UTF-8.") from e
        texts = [ln.strip() for ln in lines if ln.strip()]
    else:
        df = read_table(path)
        c = pick_column(df, col, TEXT_CANDIDATES, "text", path, "unlabelled_col=")
        texts = [str(t).strip() for t in df[c].tolist() if str(t).strip()]
    if not texts:
        raise AdaptError(f"unlabelled texts file {path} holds no texts; add one text per line.")
    return texts


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise AdaptError(f"{what} must be a mapping or a JSON object string, got {value!r}.") from e
    if not isinstance(value, dict):
        raise AdaptError(f"{what} must be a mapping of parameter names to values, got {type(value).__name__}.")
    return dict(value)


def _gold_subset(y: np.ndarray, spec: Any, seed: int) -> np.ndarray:
    from adaptladder.task import stratified_subset

    n = len(y)
    if spec in (None, "all", ""):
        return np.arange(n)
    text = str(spec).strip()
    try:
        value = float(text)
    except ValueError as e:
        raise AdaptError(f"gold_labels must be 'all', a count or a fraction in (0, 1), got {spec!r}.") from e
    is_fraction = isinstance(spec, float) or "." in text
    if is_fraction and not 0 < value <= 1:
        raise AdaptError(f"gold_labels={spec!r}: a fraction must lie in (0, 1]; pass a whole number for a count.")
    k = round(value * n) if is_fraction else int(value)
    if k <= 0:
        raise AdaptError(f"gold_labels={spec!r} keeps no training labels; keep at least one per class.")
    if k < len(np.unique(y)):
        raise AdaptError(f"gold_labels={spec!r} keeps {k} labels, fewer than the {len(np.unique(y))} classes; "
                         "keep at least one per class.")
    return stratified_subset(y, min(k, n), seed)


def _first_label(texts: list[str], y: np.ndarray) -> dict[str, int]:
    out: dict[str, int] = {}
    for t, k in zip(texts, y.tolist(), strict=True):
        out.setdefault(t, int(k))
    return out


def _predict_batched(rung: Rung, texts: list[str], batch: int, progress: bool, desc: str) -> tuple[np.ndarray, float]:
    if not texts:
        return np.zeros((0, len(rung.label_names_))), 0.0
    parts = []
    t0 = time.perf_counter()
    if progress and len(texts) > batch:
        from adaptladder import progress as prog

        with prog.task(desc, len(texts)) as advance:
            for i in range(0, len(texts), batch):
                parts.append(np.asarray(rung.predict_proba(texts[i:i + batch])))
                advance(len(texts[i:i + batch]))
    else:
        for i in range(0, len(texts), batch):
            parts.append(np.asarray(rung.predict_proba(texts[i:i + batch])))
    return np.concatenate(parts), time.perf_counter() - t0


def _val_subset(val_y: np.ndarray, teacher: Rung, val_max: int, seed: int) -> np.ndarray:
    from adaptladder.task import stratified_subset

    cap = min(c for c in (val_max or None, getattr(teacher, "eval_cap", None), len(val_y)) if c)
    return stratified_subset(val_y, cap, seed)


def _score(rung: Rung, texts: list[str], y: np.ndarray, k: int, batch: int) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score

    probs, _ = _predict_batched(rung, texts, batch, progress=False, desc="")
    pred = probs.argmax(axis=1)
    return {"n": len(texts), "accuracy": _r(accuracy_score(y, pred)),
            "macro_f1": _r(f1_score(y, pred, average="macro", labels=list(range(k)), zero_division=0))}


def _spread(texts: Sequence[str], n: int) -> list[str]:
    if len(texts) <= n:
        return list(texts)
    idx = np.linspace(0, len(texts) - 1, n).round().astype(int)
    return [texts[i] for i in idx]


def _speed(rung: Rung, probe: list[str], batch: int, repeats: int, n_single: int, seed: int) -> dict[str, Any]:
    """Batched ms per example (median of ``repeats`` passes) and single-example p50 latency, cache off."""
    from adaptladder.measure import time_predictions

    if not probe:
        return {"batch_ms_per_example": float("nan"), "latency_ms_p50": float("nan")}
    times = []
    with cache_disabled():
        rung.predict_proba(probe[:2])  # warm-up: lazy loads, thread pools
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, len(probe), batch):
                rung.predict_proba(probe[i:i + batch])
            times.append((time.perf_counter() - t0) / len(probe))
        single = time_predictions(rung.predict_proba, probe, n_single=n_single, seed=seed)
    return {"batch_ms_per_example": _r(1000 * statistics.median(times)),
            "latency_ms_p50": _r(single["latency_ms_p50"]), "n_latency": single["n_latency"]}


def _cost_per_1k(rung: Rung, seconds_per_example: float) -> tuple[float | None, str]:
    """API rungs report their own per-token price; local ones are priced by measured compute time."""
    from adaptladder.pricing import compute_per_hour, load_prices, local_cost_per_1k

    own = rung.extra_info().get("cost_per_1k_usd") if hasattr(rung, "extra_info") else None
    if isinstance(own, (int, float)):
        return float(own), "the rung's own API token prices"
    if not np.isfinite(seconds_per_example):
        return None, "not measured"
    device = load_prices()["local_device"]
    return local_cost_per_1k(seconds_per_example), f"measured latency x ${compute_per_hour():g}/hour ({device})"


def _pos(x: Any) -> bool:
    return isinstance(x, (int, float)) and bool(np.isfinite(x)) and x > 0


def _r(x: float) -> float:
    """Round for the report: 4 significant digits are plenty and keep JSON readable."""
    return float(f"{float(x):.4g}")

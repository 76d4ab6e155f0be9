"""A labelled text-classification task: texts, integer labels, label names and splits.

Everything downstream (audit, rungs, measurement) takes a :class:`Task`; every problem with
the user's files is caught here and raised as one :class:`AdaptError` sentence.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptladder.errors import AdaptError
from adaptladder.io.tables import pick_column, read_table, row_offset
from adaptladder.kinds import SPLITS  # the splits every task kind shares (re-exported here)

SPLIT_ALIASES = {
    "train": "train", "training": "train", "trn": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "test": "test", "testing": "test", "tst": "test",
}
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


@dataclass
class Task:
    """A labelled data set with a train / validation / test split.

    ``labels`` are integer codes into ``label_names``; ``split`` holds one of
    ``train`` / ``validation`` / ``test`` per row.
    """

    name: str
    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    split: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.split = np.asarray(self.split, dtype=object)
        if not (len(self.texts) == len(self.labels) == len(self.split)):
            raise AdaptError("texts, labels and split must have the same length.")

    # ---------------------------------------------------------------- access
    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def indices(self, part: str) -> np.ndarray:
        if part not in SPLITS:
            raise AdaptError(f"unknown split {part!r}: use one of {', '.join(SPLITS)}.")
        return np.flatnonzero(self.split == part)

    def part(self, part: str) -> tuple[list[str], np.ndarray]:
        """Texts and label codes of one split."""
        idx = self.indices(part)
        return [self.texts[i] for i in idx], self.labels[idx]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split, per label name: number of rows."""
        out: dict[str, dict[str, int]] = {}
        for part in SPLITS:
            idx = self.indices(part)
            c = np.bincount(self.labels[idx], minlength=self.n_classes)
            out[part] = {self.label_names[k]: int(c[k]) for k in range(self.n_classes)}
        return out

    def fingerprint(self) -> str:
        """A hash of texts, labels, label names and split: changes when the data changes."""
        h = hashlib.sha256()
        h.update(json.dumps(self.label_names).encode())
        for t, y, s in zip(self.texts, self.labels.tolist(), self.split.tolist(), strict=True):
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\x00%d\x00%s\x01" % (y, s.encode()))
        return h.hexdigest()[:16]

    def sample(self, max_per_split: dict[str, int] | int, seed: int = 0) -> Task:
        """A stratified subsample with at most ``max_per_split`` rows per split (for quick runs)."""
        if isinstance(max_per_split, int):
            max_per_split = {p: max_per_split for p in SPLITS}
        keep: list[np.ndarray] = []
        for part in SPLITS:
            idx = self.indices(part)
            cap = max_per_split.get(part)
            if cap is None or len(idx) <= cap:
                keep.append(idx)
            else:
                keep.append(idx[stratified_subset(self.labels[idx], cap, seed)])
        sel = np.sort(np.concatenate(keep))
        src = dict(self.source, sampled=max_per_split, sample_seed=seed)
        return Task(self.name, [self.texts[i] for i in sel], self.labels[sel], list(self.label_names),
                    self.split[sel], src)

    def split_frame(self) -> pd.DataFrame:
        """One row per example: its row number in the source, split, label (for the run directory)."""
        rows = self.source.get("row_ids")
        return pd.DataFrame({
            "row": rows if rows is not None else np.arange(len(self.texts)),
            "split": self.split,
            "label": [self.label_names[k] for k in self.labels],
        })

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task_type": "classification",  # the kind, decided once (adaptladder.kinds.kind_of reads it)
            "n": len(self.texts),
            "n_classes": self.n_classes,
            "label_names": list(self.label_names),
            "split_sizes": {p: int((self.split == p).sum()) for p in SPLITS},
            "counts": self.counts(),
            "fingerprint": self.fingerprint(),
            "source": {k: v for k, v in self.source.items() if k != "row_ids"},
        }


# -------------------------------------------------------------------- splitting
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    """The key for exact-duplicate detection: NFKC, case-folded, punctuation -> space, whitespace collapsed.

    A text that is all punctuation keeps its stripped, case-folded form so that distinct symbol
    strings do not all collapse into one empty key. The audit and the splitter share it, so
    a split made here never puts the same text on both sides.
    """
    s = unicodedata.normalize("NFKC", str(text)).casefold()
    norm = " ".join(_NON_WORD.sub(" ", s).split())
    return norm if norm else "\x00" + " ".join(s.split())


def duplicate_groups(texts: Sequence[str]) -> np.ndarray:
    """A group id per text; texts equal after :func:`normalize_text` share one."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(normalize_text(t), len(ids)) for t in texts], dtype=np.int64)


def stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Positions of a seeded, stratified subset of size ``n`` (every class kept when possible)."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(y)
    if n >= len(y):
        return np.arange(len(y))
    counts = np.bincount(y)
    k = int((counts > 0).sum())
    # stratifying needs room for every class on both sides (else scikit-learn refuses)
    strat = y if (counts[counts > 0].min() >= 2 and n >= k and len(y) - n >= k) else None
    pos, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=seed, stratify=strat)
    return np.sort(pos)


def stratified_split(
    labels: np.ndarray,
    label_names: Sequence[str],
    seed: int = 13,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    where: str = "the data",
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Seeded, stratified train / validation / test assignment for each row.

    Each class is shuffled and cut by the fractions on its own, so every split has every
    class (at least one example each) and the proportions hold up to rounding. With
    ``groups`` (e.g. :func:`duplicate_groups`), all rows of a group land in the same split,
    so duplicated texts cannot leak from train into test.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=len(label_names))
    need = 1 + int(fractions[1] > 0) + int(fractions[2] > 0)  # one example in each split, at least
    for k, c in enumerate(counts):
        if c < need:
            raise AdaptError(
                f"class {label_names[k]!r} in {where} has {c} example(s), fewer than the {need} a "
                "train/validation/test split needs: add examples, drop the class, or give a split column."
            )
    _, f_val, f_test = fractions
    rng = np.random.default_rng(seed)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    # one unit per duplicate group, labelled by its first row: duplicates never straddle splits
    _, first = np.unique(groups, return_index=True)
    first = np.sort(first)
    unit_label = labels[first]
    unit_split = np.empty(len(first), dtype=object)
    for k in range(len(label_names)):
        units = np.flatnonzero(unit_label == k)
        rng.shuffle(units)
        c = len(units)
        n_val = max(1, round(c * f_val)) if c >= 3 and f_val > 0 else 0
        n_test = max(1, round(c * f_test)) if c >= 2 and f_test > 0 else 0
        while n_val + n_test > c - 1 and (n_val or n_test):  # keep at least one training unit
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
        unit_split[units[:n_val]] = "validation"
        unit_split[units[n_val:n_val + n_test]] = "test"
        unit_split[units[n_val + n_test:]] = "train"
    unit_of_group = dict(zip(groups[first].tolist(), unit_split.tolist(), strict=True))
    return np.array([unit_of_group[g] for g in groups.tolist()], dtype=object)


# -------------------------------------------------------------------- file loading
# (reading tables and naming positions in them: adaptladder.io.tables, shared by every task kind)
TEXT_CANDIDATES = ("text", "sentence", "content", "message", "review", "question", "document", "input")
LABEL_CANDIDATES = ("label", "labels", "category", "class", "target", "sentiment", "y", "intent")


def clean_labels(raw: pd.Series, path: Path, col: str, offset: int = 2) -> list[str]:
    """Validate a label column and return its values as strings."""
    values = raw.tolist()
    out: list[str] = []
    kinds: set[str] = set()
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            raise AdaptError(
                f"{path}: row {i + offset} has no label in column {col!r}; fill it in or drop the row."
            )
        if isinstance(v, (list, tuple, dict, set, np.ndarray)):
            kind = "mapping" if isinstance(v, dict) else "list"
            raise AdaptError(f"{path}: row {i + offset} has a {kind} label in {col!r}; labels must be scalars "
                             "(one class per text, e.g. a word or a number).")
        s = str(v).strip()
        if isinstance(v, bool):
            kinds.add("bool")
        elif isinstance(v, (int, np.integer)) or (isinstance(v, float) and float(v).is_integer()):
            kinds.add("number")
            s = str(int(v))
        elif isinstance(v, (float, np.floating)):
            kinds.add("number")
        else:
            kinds.add("number" if is_number(s) else "string")
        out.append(s)
    if kinds == {"number", "string"}:
        nums = [v for v in out if is_number(v)][:3]
        strs = [v for v in out if not is_number(v)][:3]
        raise AdaptError(
            f"{path}: label column {col!r} mixes numbers ({', '.join(nums)}) and words ({', '.join(strs)}); "
            "use one kind of label throughout."
        )
    if kinds == {"number"}:
        # '1.0' and '1' (a float column) are one number: normalise, but only when that merges no two
        # distinct strings ('007' and '7' stay two classes: then every label stays as written)
        distinct = set(out)
        norm = {v: str(int(float(v))) if float(v).is_integer() and abs(float(v)) < 2 ** 63 else v
                for v in distinct}
        if len(set(norm.values())) == len(distinct):
            out = [norm[v] for v in out]
    return out


def is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def clean_texts(raw: pd.Series, path: Path, col: str, offset: int = 2) -> list[str]:
    texts: list[str] = []
    for i, v in enumerate(raw.tolist()):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            raise AdaptError(f"{path}: row {i + offset} has no text in column {col!r}; fill it in or drop the row.")
        if isinstance(v, (list, tuple, dict, set, np.ndarray)):
            raise AdaptError(f"{path}: row {i + offset} has a {'mapping' if isinstance(v, dict) else 'list'} "
                             f"in the text column {col!r}; texts must be single strings.")
        s = v if isinstance(v, str) else str(v)
        if not s.strip():
            raise AdaptError(
                f"{path}: row {i + offset} has an empty text in column {col!r}; fill it in or drop the row."
            )
        texts.append(s)
    return texts


def encode_labels(label_strs: list[str], label_order: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    names = list(label_order) if label_order is not None else sorted(set(label_strs), key=label_sort_key)
    index = {n: k for k, n in enumerate(names)}
    return np.array([index[s] for s in label_strs], dtype=np.int64), names


def label_sort_key(s: str) -> tuple[int, float, str]:
    return (0, float(s), s) if is_number(s) else (1, 0.0, s)


def load_task(
    data: str | Path | None = None,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    split_col: str | None = None,
    train: str | Path | None = None,
    validation: str | Path | None = None,
    test: str | Path | None = None,
    seed: int = 13,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    name: str | None = None,
) -> Task:
    """Load a task from a built-in name, one file (optionally with a split column), or split files.

    With no split given, a seeded stratified train / validation / test split is made
    (``fractions``); with ``train`` + ``test`` files and no validation file, validation is carved
    from train, stratified.
    """
    from adaptladder.datasets import BUILTIN

    if data is not None and train is not None:
        raise AdaptError("pass either one data file (or built-in name) or --train/--test files, not both.")
    if data is None and train is None:
        raise AdaptError("no data given: pass a built-in data set name, a file, or --train and --test files.")
    if data is not None and str(data) in BUILTIN and not Path(str(data)).exists():
        for opt, given, has in (("--text-col", text_col, "text"), ("--label-col", label_col, "label"),
                                ("--split-col", split_col, None)):
            if given is not None and given != has:
                raise AdaptError(f"{data} is a built-in set with the columns text and label; {opt} {given!r} is for "
                                 "your own files: drop it, or pass a file.")
        return load_builtin(str(data), seed=seed, fractions=fractions)

    if data is not None:
        path = Path(data)
        df = read_table(path)
        tcol = pick_column(df, text_col, TEXT_CANDIDATES, "text", path, "--text-col")
        lcol = pick_column(df, label_col, LABEL_CANDIDATES, "labels", path, "--label-col")
        if tcol == lcol:
            raise AdaptError(f"{path}: the text and label columns are both {tcol!r}; pass --text-col and --label-col.")
        texts = clean_texts(df[tcol], path, tcol, row_offset(path))
        label_strs = clean_labels(df[lcol], path, lcol, row_offset(path))
        codes, names = encode_labels(label_strs)
        check_classes(names, path, lcol)
        source: dict[str, Any] = {"kind": "file", "path": str(path.resolve()), "text_col": tcol, "label_col": lcol,
                                  "seed": seed}
        if split_col is not None:
            if split_col not in df.columns:
                raise AdaptError(
                    f"{path} has no column {split_col!r} (columns: {', '.join(df.columns)}); fix --split-col."
                )
            split = parse_split_column(df[split_col], path, split_col)
            source["split"] = f"column {split_col}"
            if not (split == "validation").any():
                split = carve_validation(split, codes, names, seed, where=str(path), texts=texts)
                source["split"] += " (validation carved from train, stratified)"
            check_split_has(split, path, ("train", "test"))
        else:
            split = stratified_split(codes, names, seed, fractions, where=str(path), groups=duplicate_groups(texts))
            source["split"] = f"seeded stratified {fractions[0]:.0%}/{fractions[1]:.0%}/{fractions[2]:.0%}"
        return Task(name or path.stem, texts, codes, names, split, source)

    # separate files
    if test is None:
        raise AdaptError("--train needs a --test file too (or pass one data file and let adaptladder split it).")
    parts: list[tuple[str, Path]] = [("train", Path(train)), ("test", Path(test))]
    if validation is not None:
        parts.insert(1, ("validation", Path(validation)))
    all_texts: list[str] = []
    all_labels: list[str] = []
    all_split: list[str] = []
    tcol = lcol = None
    for part, path in parts:
        df = read_table(path)
        tcol_p = pick_column(df, text_col, TEXT_CANDIDATES, "text", path, "--text-col")
        lcol_p = pick_column(df, label_col, LABEL_CANDIDATES, "labels", path, "--label-col")
        tcol, lcol = tcol or tcol_p, lcol or lcol_p
        all_texts += clean_texts(df[tcol_p], path, tcol_p, row_offset(path))
        all_labels += clean_labels(df[lcol_p], path, lcol_p, row_offset(path))
        all_split += [part] * len(df)
    train_labels = {s for s, p in zip(all_labels, all_split, strict=True) if p == "train"}
    unseen = sorted({s for s, p in zip(all_labels, all_split, strict=True) if p != "train"} - train_labels)
    if unseen:
        raise AdaptError(
            f"labels {', '.join(map(repr, unseen[:5]))} appear in the test/validation file but never in {train}; "
            "add training examples for them."
        )
    codes, names = encode_labels(all_labels)
    check_classes(names, Path(train), lcol or "label")
    split = np.array(all_split, dtype=object)
    source = {"kind": "files", "train": str(Path(train).resolve()), "test": str(Path(test).resolve()),
              "text_col": tcol, "label_col": lcol, "seed": seed, "split": "given files"}
    if validation is None:
        split = carve_validation(split, codes, names, seed, where=str(train), texts=all_texts)
        source["split"] = "given train/test files; validation carved from train, stratified"
    else:
        source["validation"] = str(Path(validation).resolve())
    return Task(name or Path(train).stem, all_texts, codes, names, split, source)


def load_builtin(name: str, seed: int = 13, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> Task:
    """A built-in data set (see :mod:`adaptladder.datasets`) as a Task: labels encoded, split made (seeded)."""
    from adaptladder.datasets import BUILTIN

    if name not in BUILTIN:
        raise AdaptError(f"unknown built-in data set {name!r}: choose from {', '.join(BUILTIN)}.")
    info = BUILTIN[name]
    texts, label_strs, given_split = info.loader()
    codes, names = encode_labels(label_strs)
    source = {"kind": "builtin", "builtin": name, "package": info.pip_spec, "seed": seed}
    if given_split is None:
        split = stratified_split(codes, names, seed, fractions, where=name, groups=duplicate_groups(texts))
        source["split"] = (f"seeded stratified {fractions[0]:.0%}/{fractions[1]:.0%}/{fractions[2]:.0%}, "
                           "duplicate texts kept in one split")
    else:
        split = carve_validation(np.array(given_split, dtype=object), codes, names, seed, where=name,
                                 texts=texts)
        source["split"] = "official train/test; validation carved from train (15%, stratified)"
    return Task(name, texts, codes, names, split, source)


def check_no_empty_split(task: Any, items: Sequence[str], *, rows: str = "rows", item: str = "text",
                         an_item: str = "a text") -> None:
    """One line naming the first empty split of ``task`` (a classification or generation task), with the
    duplicates of ``items`` (texts / inputs) that may explain it."""
    where = task.source.get("path") or task.source.get("train") or task.name
    for part in SPLITS:
        if not (task.split == part).any():
            n_distinct = len(set(duplicate_groups(items).tolist()))
            why = (f" (the data has {len(items):,} {rows} but only {n_distinct:,} distinct {item}s, and copies "
                   f"of {an_item} stay in one split)" if n_distinct < len(items) else "")
            raise AdaptError(f"{where}: the {part} split is empty{why}; add examples, remove duplicates, or give "
                             "a split column / split files with rows in every split.")


def check_split_sanity(task: Task) -> None:
    """Every split has examples and every class has training examples (checked with or without the audit).

    A rung cannot learn a class it never saw, and an empty validation split leaves nothing to
    choose a rung on; both would otherwise give a run that "succeeds" with a meaningless result.
    """
    check_no_empty_split(task, task.texts)
    where = task.source.get("path") or task.source.get("train") or task.name
    train_counts = np.bincount(task.labels[task.split == "train"], minlength=task.n_classes)
    missing = [task.label_names[k] for k in range(task.n_classes) if train_counts[k] == 0]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise AdaptError(f"{where}: class(es) {shown} have no training examples (only in validation/test); "
                         "add training examples for them or drop those rows.")


def check_classes(names: list[str], path: Path, col: str) -> None:
    if len(names) < 2:
        raise AdaptError(
            f"{path}: column {col!r} holds a single class ({names[0]!r}); classification needs at least two."
        )


def parse_split_column(raw: pd.Series, path: Path, col: str) -> np.ndarray:
    out = []
    for i, v in enumerate(raw.tolist()):
        key = str(v).strip().lower()
        if key not in SPLIT_ALIASES:
            raise AdaptError(
                f"{path}: row {i + row_offset(path)} has split value {v!r} in {col!r}; use train, validation or "
                "test."
            )
        out.append(SPLIT_ALIASES[key])
    return np.array(out, dtype=object)


def check_split_has(split: np.ndarray, path: Path, parts: Sequence[str]) -> None:
    for p in parts:
        if not (split == p).any():
            raise AdaptError(f"{path}: the split column has no {p!r} rows; every split needs examples.")


def carve_validation(split: np.ndarray, codes: np.ndarray, names: list[str], seed: int, where: str,
                      frac: float = 0.15, texts: Sequence[str] | None = None) -> np.ndarray:
    """Move a stratified ``frac`` of the training rows to validation (duplicates kept together)."""
    split = split.copy()
    tr = np.flatnonzero(split == "train")
    counts = np.bincount(codes[tr], minlength=len(names))
    for k, c in enumerate(counts):
        if 0 < c < 2:
            raise AdaptError(
                f"class {names[k]!r} has {c} training example in {where}, too few to carve a validation split; "
                "add examples or give a validation file."
            )
    groups = duplicate_groups([texts[i] for i in tr]) if texts is not None else None
    sub = stratified_split(codes[tr], names, seed, (1 - frac, frac, 0.0), where=where, groups=groups)
    split[tr[sub == "validation"]] = "validation"
    return split

"""Loading tasks from files, splitting, and every bad-input case (one clear AdaptError)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adaptladder.errors import AdaptError
from adaptladder.task import load_task, stratified_split


def _write(tmp_path: Path, name: str, df: pd.DataFrame) -> Path:
    p = tmp_path / name
    if name.endswith(".csv"):
        df.to_csv(p, index=False)
    elif name.endswith(".tsv"):
        df.to_csv(p, sep="\t", index=False)
    elif name.endswith(".jsonl"):
        p.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")) + "\n")
    elif name.endswith(".parquet"):
        df.to_parquet(p)
    return p


def _frame(n_per_class: int = 10, labels: tuple[str, ...] = ("pos", "neg")) -> pd.DataFrame:
    rows = [{"text": f"example {lab} number {i}", "label": lab} for lab in labels for i in range(n_per_class)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_every_format_loads_the_same_task(tmp_path: Path, fmt: str) -> None:
    task = load_task(_write(tmp_path, f"d.{fmt}", _frame()))
    assert len(task.texts) == 20
    assert task.label_names == ["neg", "pos"]
    assert sorted(np.bincount(task.labels).tolist()) == [10, 10]
    assert {"train", "validation", "test"} == set(task.split.tolist())


def test_split_is_stratified_and_deterministic(tmp_path: Path) -> None:
    df = _frame(40, ("a", "b", "c"))
    p = _write(tmp_path, "d.csv", df)
    t1, t2, t3 = load_task(p, seed=1), load_task(p, seed=1), load_task(p, seed=2)
    assert (t1.split == t2.split).all()
    assert not (t1.split == t3.split).all()
    for part, share in (("train", 0.7), ("validation", 0.15), ("test", 0.15)):
        counts = np.bincount(t1.labels[t1.indices(part)], minlength=3)
        assert (np.abs(counts - 40 * share) <= 1).all(), (part, counts)


def test_named_columns_and_split_column(tmp_path: Path) -> None:
    df = pd.DataFrame({"msg": [f"t{i}" for i in range(12)], "y": ["x", "y"] * 6,
                       "part": ["train"] * 6 + ["dev"] * 2 + ["test"] * 4})
    task = load_task(_write(tmp_path, "d.csv", df), text_col="msg", label_col="y", split_col="part")
    assert task.split.tolist().count("validation") == 2
    assert task.part("test")[0] == ["t8", "t9", "t10", "t11"]


def test_train_and_test_files_carve_validation(tmp_path: Path) -> None:
    tr = _write(tmp_path, "train.csv", _frame(20))
    te = _write(tmp_path, "test.csv", _frame(5))
    task = load_task(train=tr, test=te)
    assert (task.split == "test").sum() == 10
    assert (task.split == "validation").sum() == 6
    assert "validation carved" in task.source["split"]


def test_numeric_labels_are_normalised(tmp_path: Path) -> None:
    df = pd.DataFrame({"text": [f"t{i}" for i in range(12)], "label": [0, 1.0, 2] * 4})
    task = load_task(_write(tmp_path, "d.csv", df))
    assert task.label_names == ["0", "1", "2"]


def _plus(tp: Path, text: str, label: str) -> Path:
    return _write(tp, "d.csv", pd.concat([_frame(), pd.DataFrame([{"text": text, "label": label}])]))


def _raw(tp: Path, name: str, content: str | bytes) -> Path:
    p = tp / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return p


BAD_CASES = {
    "missing file": (lambda tp: tp / "missing.csv", {}, "not found"),
    "empty file": (lambda tp: _raw(tp, "e.csv", ""), {}, "is empty"),
    "header only": (lambda tp: _raw(tp, "h.csv", "text,label\n"), {}, "no rows"),
    "missing column": (lambda tp: _write(tp, "d.csv", _frame()), {"text_col": "body"}, "no column 'body'"),
    "empty text": (lambda tp: _plus(tp, "  ", "pos"),
                   {}, "empty text"),
    "missing label": (lambda tp: _plus(tp, "x", ""),
                      {}, "has no label"),
    "single class": (lambda tp: _write(tp, "d.csv", _frame(10, ("only",))), {}, "single class"),
    "tiny class": (lambda tp: _plus(tp, "x", "rare"),
                   {}, "'rare'"),
    "undecodable": (lambda tp: _raw(tp, "b.csv", b"text,label\n\xff\xfe bad,pos\nok,neg\n"),
                    {}, "not valid UTF-8"),
    "mixed labels": (lambda tp: _write(tp, "d.csv", pd.DataFrame({"text": [f"t{i}" for i in range(8)],
                                                                 "label": ["1", "2", "spam", "ham"] * 2})),
                     {}, "mixes numbers"),
    "unknown type": (lambda tp: _raw(tp, "d.xlsx", "x"), {}, "unknown file type"),
    "unquoted comma": (lambda tp: _raw(tp, "c.csv", "text,label\n" + "a, b c,pos\nd e,neg\n" * 6),
                       {}, "more fields than the header"),
    "no text column guess": (lambda tp: _write(tp, "d.csv", pd.DataFrame({"a": ["x", "y"] * 6, "b": ["p", "q"] * 6})),
                             {}, "--text-col"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_gives_one_clear_error(tmp_path: Path, case: str) -> None:
    make, kwargs, expected = BAD_CASES[case]
    path = make(tmp_path)
    with pytest.raises(AdaptError) as err:
        load_task(path, **kwargs)
    msg = str(err.value)
    assert expected in msg
    assert "\n" not in msg
    if case != "missing file":
        assert path.name in msg or "rare" in msg


def test_unseen_test_label_is_refused(tmp_path: Path) -> None:
    tr = _write(tmp_path, "train.csv", _frame(10))
    te = _write(tmp_path, "test.csv", _frame(3, ("pos", "other")))
    with pytest.raises(AdaptError, match="'other'"):
        load_task(train=tr, test=te)


def test_split_needs_three_per_class() -> None:
    with pytest.raises(AdaptError, match="fewer than the 3"):
        stratified_split(np.array([0] * 10 + [1] * 2), ["a", "b"])


def test_sample_keeps_splits_and_classes(toy_csv: Path) -> None:
    task = load_task(toy_csv)
    small = task.sample(4, seed=0)
    for part in ("train", "validation", "test"):
        assert len(small.indices(part)) == min(4, len(task.indices(part)))
    assert set(small.labels[small.indices("train")].tolist()) == {0, 1}


def test_auto_split_keeps_duplicate_texts_together(tmp_path: Path) -> None:
    """Our own split must not leak: texts equal after normalisation share one split."""
    rows = [{"text": f"message number {i}", "label": "a" if i % 2 else "b"} for i in range(60)]
    rows += [{"text": f"MESSAGE number {i}!!", "label": "a" if i % 2 else "b"} for i in range(0, 60, 3)]
    task = load_task(_write(tmp_path, "d.csv", pd.DataFrame(rows)), seed=3)
    from adaptladder.task import normalize_text

    where: dict[str, set[str]] = {}
    for t, s in zip(task.texts, task.split.tolist(), strict=True):
        where.setdefault(normalize_text(t), set()).add(s)
    assert all(len(v) == 1 for v in where.values())
    assert {"train", "validation", "test"} == set(task.split.tolist())


def test_builtin_sms_spam_split_has_no_exact_leak() -> None:
    from adaptladder.task import load_builtin, normalize_text

    task = load_builtin("sms-spam")
    train = {normalize_text(t) for t in task.part("train")[0]}
    assert not any(normalize_text(t) in train for t in task.part("test")[0])

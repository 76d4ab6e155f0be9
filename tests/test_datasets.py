"""The built-in data sets come from installed packages, repaired as OFFLINE_ASSETS.md describes."""

from __future__ import annotations

import numpy as np
import pytest

from adaptladder.datasets import BUILTIN, describe_builtins
from adaptladder.task import load_builtin


@pytest.mark.parametrize(
    ("name", "rows", "counts"),
    [
        ("sms-spam", 5574, {"ham": 4827, "spam": 747}),
        ("trec6", 5452, {"ABBR": 86, "DESC": 1162, "ENTY": 1250, "HUM": 1223, "LOC": 835, "NUM": 896}),
        ("rotten-tomatoes", 12808, {"fresh": 7403, "rotten": 5405}),
    ],
)
def test_builtin_sizes_and_labels(name: str, rows: int, counts: dict[str, int]) -> None:
    task = load_builtin(name)
    assert len(task.texts) == rows
    got = dict(zip(task.label_names, np.bincount(task.labels).tolist(), strict=True))
    assert got == counts
    assert all(t.strip() for t in task.texts)


def test_sms_spam_repair_recovers_swallowed_messages() -> None:
    task = load_builtin("sms-spam")
    assert not any("\nham\t" in t or "\nspam\t" in t or t.startswith(("ham\t", "spam\t")) for t in task.texts)


def test_trec6_uses_only_the_real_training_set() -> None:
    task = load_builtin("trec6")
    assert task.texts[-1] == "What currency is used in Australia ?"
    assert len(set(task.texts)) > 5300  # the stacked nested sets would repeat questions


def test_news20_keeps_the_official_test_split() -> None:
    task = load_builtin("news20")
    assert task.n_classes == 20
    assert (task.split == "test").sum() == 7528
    assert ((task.split == "train") | (task.split == "validation")).sum() == 11293


def test_split_is_seeded() -> None:
    a, b = load_builtin("trec6", seed=1), load_builtin("trec6", seed=1)
    assert (a.split == b.split).all()
    assert a.fingerprint() == b.fingerprint()
    assert load_builtin("trec6", seed=2).fingerprint() != a.fingerprint()


def test_describe_lists_every_builtin() -> None:
    rows = describe_builtins()
    assert [r["name"] for r in rows] == list(BUILTIN)
    assert all(r["rows"] for r in rows)

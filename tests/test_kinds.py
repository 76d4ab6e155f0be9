"""The kind of a task is decided once and recorded (``task_type``); ``kinds.kind_of`` reads it everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from adaptladder.kinds import CLASSIFICATION, GENERATION, kind_of


def test_kind_of_reads_the_recorded_task_type_and_older_records() -> None:
    assert kind_of({"task": {"task_type": "generation"}}) == GENERATION  # results.json
    assert kind_of({"task_type": "classification", "task": "generation"}) == CLASSIFICATION  # recorded wins
    assert kind_of({"task": {"task": "generation", "kind": "rewrite"}}) == GENERATION  # results.json before task_type
    assert kind_of({"name": "x", "task": "generation"}) == GENERATION  # task.json before task_type
    assert kind_of({"task": {"name": "sms-spam", "n_classes": 2}}) == CLASSIFICATION  # classification never said
    assert kind_of({"task": "nonsense", "task_type": "poetry"}) == CLASSIFICATION
    assert kind_of({}) == CLASSIFICATION


def test_kind_of_a_run_directory(tmp_path: Path) -> None:
    gen, cls, old, broken, empty = (tmp_path / n for n in ("gen", "cls", "old", "broken", "empty"))
    for d in (gen, cls, old, broken, empty):
        d.mkdir()
    (gen / "task.json").write_text(json.dumps({"name": "g", "task": "generation", "task_type": "generation"}))
    (cls / "task.json").write_text(json.dumps({"name": "c", "task_type": "classification"}))
    (old / "results.json").write_text(json.dumps({"task": {"task": "generation"}}))  # no task.json
    (broken / "task.json").write_text("[" * 100_000)  # untrusted input: no traceback
    assert [kind_of(d) for d in (gen, cls, old, broken, empty)] == [GENERATION, CLASSIFICATION, GENERATION,
                                                                   CLASSIFICATION, CLASSIFICATION]
    assert kind_of(str(gen)) == GENERATION


def test_tasks_record_their_kind() -> None:
    from adaptladder.generation.task import GenTask
    from adaptladder.task import Task

    split = np.array(["train", "validation", "test"], dtype=object)
    gen = GenTask("g", ["a b", "c d", "e f"], ["x y", "z w", "v u"], split, "rewrite", "", None, {})
    assert gen.summary()["task_type"] == GENERATION and kind_of(gen) == GENERATION
    cls = Task("c", ["a", "b", "c"], np.array([0, 1, 0]), ["no", "yes"], split, {})
    assert cls.summary()["task_type"] == CLASSIFICATION and kind_of(cls) == CLASSIFICATION


def test_the_old_predicates_ask_kind_of(tmp_path: Path) -> None:
    from adaptladder.generation.ladder import is_generation_run
    from adaptladder.report.generation import is_generation
    from adaptladder.winner import _is_generation

    doc = {"task": {"task_type": "generation"}}
    assert is_generation(doc) and _is_generation(doc)
    assert not is_generation({"task": {"task_type": "classification"}})
    (tmp_path / "results.json").write_text(json.dumps(doc))
    assert is_generation_run(tmp_path)

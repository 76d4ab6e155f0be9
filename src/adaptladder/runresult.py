"""What a run returns (:class:`RunResult`), for both ladders: ``adaptladder.ladder.run`` (classification)
and ``adaptladder.generation.ladder.run_generation`` (generation). Its own module so neither ladder
imports the other to build one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class RunResult:
    run_dir: Path
    task: Any  # adaptladder.task.Task, or generation.task.GenTask for a generation run
    results: list[dict[str, Any]]
    recommendation: dict[str, Any]
    stopped_at: str | None

    def result(self, name: str) -> dict[str, Any]:
        for r in self.results:
            if r["name"] == name:
                return r
        raise KeyError(name)

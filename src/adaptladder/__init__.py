"""adaptladder: measure which adaptation strategy is the cheapest one good enough for a task.

The Python API mirrors the CLI::

    import adaptladder
    result = adaptladder.run(data="sms-spam", rungs=["tfidf", "features"], bar=0.9)
    print(result.recommendation, result.run_dir)
    labels = adaptladder.predict(result.run_dir, ["Win a free prize now!"])  # the recommended rung

The public names are imported on first use (PEP 562), so ``import adaptladder`` and
``adaptladder --help`` do not load numpy's heavier neighbours (sklearn, torch, transformers).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from adaptladder.errors import AdaptError

if TYPE_CHECKING:  # pragma: no cover
    from adaptladder.config import RunConfig
    from adaptladder.ladder import RunResult, run
    from adaptladder.rungs import RUNGS, load_rung, make_rung
    from adaptladder.store import load_results
    from adaptladder.task import Task, load_task
    from adaptladder.winner import evaluate, load_model, predict

# public name -> the module that defines it
_LAZY = {
    "RunConfig": "adaptladder.config", "RunResult": "adaptladder.ladder", "run": "adaptladder.ladder",
    "load_results": "adaptladder.store",
    "RUNGS": "adaptladder.rungs", "load_rung": "adaptladder.rungs", "make_rung": "adaptladder.rungs",
    "Task": "adaptladder.task", "load_task": "adaptladder.task",
    "evaluate": "adaptladder.winner", "load_model": "adaptladder.winner", "predict": "adaptladder.winner",
}

__all__ = ["RUNGS", "AdaptError", "RunConfig", "RunResult", "Task", "evaluate", "load_model", "load_results",
           "load_rung", "load_task", "make_rung", "predict", "run"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'adaptladder' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

"""adaptladder: measure which adaptation strategy is the cheapest one good enough for a task.

The Python API mirrors the CLI::

    import adaptladder
    result = adaptladder.run(data="sms-spam", rungs=["tfidf", "features"], bar=0.9)
    print(result.recommendation, result.run_dir)
    labels = adaptladder.predict(result.run_dir, ["Win a free prize now!"])  # the recommended rung
"""

from adaptladder.config import RunConfig
from adaptladder.errors import AdaptError
from adaptladder.ladder import RunResult, load_results, run
from adaptladder.rungs import RUNGS, load_rung, make_rung
from adaptladder.task import Task, load_task
from adaptladder.winner import evaluate, load_model, predict

__all__ = ["RUNGS", "AdaptError", "RunConfig", "RunResult", "Task", "evaluate", "load_model", "load_results",
           "load_rung", "load_task", "make_rung", "predict", "run"]
__version__ = "0.1.0"

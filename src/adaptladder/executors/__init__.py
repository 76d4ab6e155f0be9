"""Where rungs run: in this process (``--executor local``, the default) or as Ray tasks (``--executor ray``).

The ladder (:func:`adaptladder.ladder.run`) keeps the climbing order, resume, the bar and the
decision; an executor only runs the per-rung step (:func:`adaptladder.ladder.run_rung`, passed in
as ``rung_fn`` so this package never imports the ladder). Every executor has the same four calls:

* ``start(jobs)``: the rungs this command will run (name -> resolved params), before the climb;
  the Ray executor submits them all at once here, so they run concurrently as resources allow.
* ``run_rung(name)``: that rung's result record, with its model saved in the run directory.
* ``cancel_outstanding(by)``: records (``status: "cancelled"``) for rungs started but not collected,
  once ``by`` cleared the bar; ``abort()`` cancels them without records (errors, Ctrl-C).
* ``close()``: release what the executor started (a local Ray instance).

Ray is imported only when ``--executor ray`` is used (:mod:`adaptladder.executors.ray_cluster`,
:mod:`adaptladder.executors.ray_rungs`); see docs/scaling.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adaptladder.config import EXECUTORS, RunConfig

__all__ = ["EXECUTORS", "LocalExecutor", "make_executor", "preflight", "ray_init"]

RungFn = Callable[..., dict[str, Any]]


class LocalExecutor:
    """Rungs one after the other in this process: exactly the ladder's behaviour before executors existed."""

    kind = "local"

    def __init__(self, cfg: RunConfig, task: Any, store: Any, log: Callable[[str], None], rung_fn: RungFn) -> None:
        self.cfg, self.task, self.store, self.log, self.rung_fn = cfg, task, store, log, rung_fn

    def start(self, jobs: dict[str, dict[str, Any]]) -> None:
        return None

    def run_rung(self, name: str) -> dict[str, Any]:
        return self.rung_fn(name, self.task, self.cfg, self.store, log=self.log)

    def cancel_outstanding(self, by: str) -> list[dict[str, Any]]:
        return []

    def abort(self) -> None:
        return None

    def close(self) -> None:
        return None


def preflight(cfg: RunConfig) -> None:
    """Checks of the executor options before any data is read or file written (a bad ``--ray-address``)."""
    if cfg.executor == "ray" and cfg.ray_address:
        from adaptladder.executors.ray_cluster import check_address

        check_address(cfg.ray_address)


def make_executor(cfg: RunConfig, task: Any, store: Any, log: Callable[[str], None], rung_fn: RungFn) -> Any:
    """The executor ``cfg.executor`` names (``local`` or ``ray``); ``ray`` connects or starts Ray here."""
    if cfg.executor == "ray":
        from adaptladder.executors.ray_rungs import RayExecutor

        return RayExecutor(cfg, task, store, log, rung_fn)
    return LocalExecutor(cfg, task, store, log, rung_fn)


def ray_init(address: str | None = None, **kwargs: Any) -> Any:
    """Connect to the Ray cluster at ``address`` or start a local instance sized to this machine;
    returns a :class:`adaptladder.executors.ray_cluster.RayContext` (see there)."""
    from adaptladder.executors.ray_cluster import ray_init as _ray_init

    return _ray_init(address, **kwargs)

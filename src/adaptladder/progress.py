"""Progress that works on and off a terminal: a rich bar on a terminal, heartbeat lines elsewhere.

A long step (a rung's fit, its evaluation, the audit's embedding) opens a :func:`step`; code deep
inside it (a scoring loop, an encoder) reports what it has done with :func:`update` without
knowing who listens. Off a terminal (output redirected to a file, CI), a background ticker
writes one line at least every ``interval`` seconds (default 20, env
``ADAPTLADDER_HEARTBEAT_S``) with the step, done/total, elapsed time and an ETA: from the
measured rate of the innermost step that has one, otherwise from the estimate the step was
opened with (the ladder's timing probe or the estimator). On a terminal the same steps drive
one rich progress display (nested steps are rows of it).

Third-party tqdm bars (transformers' weight loading, huggingface_hub) are silenced while
the first step is open, so logs are not filled with carriage returns.

``ADAPTLADDER_PROGRESS=lines|bar|off`` forces a mode.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

DEFAULT_INTERVAL_S = 20.0

_lock = threading.RLock()
_stack: list[Step] = []


def _default_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_seconds(s: float | None) -> str:
    """``75`` -> ``1m15s``; ``None`` -> ``?``."""
    if s is None or s != s or s == float("inf"):
        return "?"
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def interval_from_env() -> float:
    try:
        return max(0.5, float(os.environ.get("ADAPTLADDER_HEARTBEAT_S", DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def mode_from_env(stream: Any = None) -> str:
    forced = os.environ.get("ADAPTLADDER_PROGRESS", "").strip().lower()
    if forced in ("lines", "bar", "off"):
        return forced
    stream = stream or sys.stderr
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):
        return "lines"


def quiet_third_party() -> None:
    """Silence tqdm bars of huggingface_hub / transformers (ours report progress instead)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:
        try:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        except Exception:  # an env var set to 0 by the user has priority there
            pass
    if "transformers" in sys.modules:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except Exception:
            pass


class Step:
    """One unit of progress: a label, optional total and an optional up-front time estimate."""

    def __init__(self, label: str, total: int | None = None, *, eta_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.detail = ""
        self.eta_s = eta_s
        self.clock = clock
        self.started = clock()
        self.bar_task: Any = None

    def elapsed(self, now: float | None = None) -> float:
        return (self.clock() if now is None else now) - self.started

    def rate_eta(self, now: float | None = None) -> float | None:
        """Seconds left from the measured rate (None until something is done)."""
        if not self.total or self.done <= 0:
            return None
        el = self.elapsed(now)
        return max(0.0, (self.total - self.done) * el / self.done)

    def estimate_left(self, now: float | None = None) -> float | None:
        if self.eta_s is None:
            return None
        return max(0.0, self.eta_s - self.elapsed(now))


class Heartbeat:
    """The reporter behind :func:`step`: emits lines (off a terminal) or drives a rich display."""

    def __init__(self, log: Callable[[str], None] | None = None, *, interval: float | None = None,
                 mode: str | None = None, clock: Callable[[], float] = time.monotonic,
                 thread: bool = True) -> None:
        self.log = log or _default_log
        self.interval = interval if interval is not None else interval_from_env()
        self.mode = mode or mode_from_env()
        self.clock = clock
        self.thread = thread
        self.steps: list[Step] = []
        self.last_emit = clock()
        self.lines = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None

    # ---------------------------------------------------------------- lines
    def line(self, now: float | None = None) -> str:
        """``zero-shot: fit > scoring 128/300 | elapsed 1m12s | ETA 2m40s``"""
        now = self.clock() if now is None else now
        with _lock:
            steps = list(self.steps)
        if not steps:
            return ""
        parts = []
        for s in steps:
            p = s.label
            if s.total:
                p += f" {s.done}/{s.total}"
            if s.detail:
                p += f" ({s.detail})"
            parts.append(p)
        # the innermost measured rate; an outer step's up-front estimate (what is left of it)
        # when larger, since the outer step goes on after the inner one
        rates = [r for r in (s.rate_eta(now) for s in reversed(steps)) if r is not None]
        ests = [e for e in (s.estimate_left(now) for s in steps) if e is not None]
        cands = rates[:1] + ests[:1]
        eta = max(cands) if cands else None
        outer = steps[0]
        return (" > ".join(parts) + f" | elapsed {fmt_seconds(outer.elapsed(now))}"
                + f" | ETA {fmt_seconds(eta)}")

    def tick(self, now: float | None = None) -> bool:
        """Emit a heartbeat line if ``interval`` seconds passed since the last one."""
        now = self.clock() if now is None else now
        if self.mode != "lines" or not self.steps:
            return False
        if now - self.last_emit < self.interval:
            return False
        self.emit(now)
        return True

    def emit(self, now: float | None = None, text: str | None = None) -> None:
        now = self.clock() if now is None else now
        msg = text if text is not None else self.line(now)
        if msg:
            self.log(f"progress: {msg}")
            self.lines += 1
        self.last_emit = now

    # ---------------------------------------------------------------- steps
    def push(self, s: Step) -> None:
        with _lock:
            first = not self.steps
            self.steps.append(s)
        if first:
            self.last_emit = self.clock()
            self._start()
        if self._bar is not None:
            s.bar_task = self._bar.add_task(s.label, total=s.total)

    def pop(self, s: Step) -> None:
        with _lock:
            if s in self.steps:
                self.steps.remove(s)
            last = not self.steps
        if self._bar is not None and s.bar_task is not None:
            self._bar.remove_task(s.bar_task)
        if last:
            self._finish()

    def changed(self, s: Step) -> None:
        if self._bar is not None and s.bar_task is not None:
            desc = s.label + (f" ({s.detail})" if s.detail else "")
            self._bar.update(s.bar_task, completed=s.done, total=s.total, description=desc)

    def _start(self) -> None:
        quiet_third_party()
        if self.mode == "bar":
            try:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                    TimeRemainingColumn,
                )

                self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
                                     console=_stderr_console())
                self._bar.start()
            except Exception:  # another live display is active (e.g. a caller's own bar)
                self._bar = None
        elif self.mode == "lines" and self.thread:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="adaptladder-heartbeat", daemon=True)
            self._thread.start()

    def _finish(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=2)
            self._thread = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _run(self) -> None:
        wake = min(self.interval, 5.0) / 2
        while not self._stop.wait(wake):
            with contextlib.suppress(Exception):  # reporting must never break the work it reports on
                self.tick()


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


_reporter: Heartbeat | None = None


def reporter() -> Heartbeat:
    """The process-wide reporter (created on first use, writing to stderr)."""
    global _reporter
    if _reporter is None:
        _reporter = Heartbeat()
    return _reporter


def install(hb: Heartbeat | None) -> Heartbeat | None:
    """Make ``hb`` the reporter (``None``: back to the default); returns the one it replaces."""
    global _reporter
    before = _reporter
    if before is not None and before is not hb:
        before._finish()
    _reporter = hb
    return before


@contextmanager
def use_reporter(hb: Heartbeat) -> Iterator[Heartbeat]:
    """Route progress to ``hb`` (e.g. one writing through the run's log) for the ``with`` block."""
    global _reporter
    before = _reporter
    _reporter = hb
    try:
        yield hb
    finally:
        hb._finish()
        _reporter = before


@contextmanager
def step(label: str, total: int | None = None, *, eta_s: float | None = None) -> Iterator[Step]:
    """A unit of progress; nested steps refine the line (``outer > inner 12/50``).

    When the outermost step took at least one heartbeat interval, a closing line says how long.
    """
    hb = reporter()
    s = Step(label, total, eta_s=eta_s, clock=hb.clock)
    outermost = not hb.steps
    hb.push(s)
    try:
        yield s
    finally:
        hb.pop(s)
        took = s.elapsed()
        if outermost and hb.mode == "lines" and took >= hb.interval:
            hb.emit(text=f"{label}: finished in {fmt_seconds(took)}")


def update(*, advance: int | None = None, done: int | None = None, total: int | None = None,
           detail: str | None = None) -> None:
    """Report progress on the innermost open step (a no-op when none is open)."""
    hb = _reporter
    if hb is None or not hb.steps:
        return
    s = hb.steps[-1]
    if total is not None:
        s.total = total
    if done is not None:
        s.done = done
    if advance:
        s.done += advance
    if detail is not None:
        s.detail = detail
    hb.changed(s)


@contextmanager
def task(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A nested counted step; yields ``advance(n)``. Convenience for loops over batches."""
    with step(label, total):
        yield lambda n=1: update(advance=n)

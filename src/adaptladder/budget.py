"""Time budgets for steps that have no natural stopping point: encode (or fit) as much as fits.

The ladder's rungs and the audit share two small tools:

* :func:`stratified_order` - a seeded order of rows whose every prefix is (proportionally)
  stratified by label, so "the first m rows of the order" is a stratified sample of size m;
* :func:`encode_within` - encode texts in that order, chunk by chunk, and stop before a chunk
  whose estimated time (from the rate measured so far) would pass the deadline. Nothing encoded
  is wasted: the sample is what fitted.

Clocks are injectable (``clock=``) so the decisions can be tested with fake timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Clock = Callable[[], float]


def stratified_order(labels: Sequence[int] | np.ndarray, seed: int) -> np.ndarray:
    """A permutation of ``range(len(labels))`` whose prefixes are proportionally stratified.

    Each class is shuffled on its own; row ``r`` of a class with ``n_c`` rows gets the key
    ``(r + u) / n_c`` (``u`` uniform in [0, 1)), and rows are sorted by key. So the first ``m``
    rows hold about ``m * n_c / n`` of each class (every class appears once ``m`` passes its
    share), whatever ``m`` is.
    """
    y = np.asarray(labels)
    n = len(y)
    if not n:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    keys = np.empty(n, dtype=np.float64)
    for c in np.unique(y):
        pos = np.flatnonzero(y == c)
        pos = pos[rng.permutation(len(pos))]
        keys[pos] = (np.arange(len(pos)) + rng.random(len(pos))) / len(pos)
    return np.argsort(keys, kind="stable").astype(np.int64)


@dataclass
class Budgeted:
    """What a budgeted step did: rows done (positions into the input), its rate and why it stopped."""

    done: np.ndarray
    total: int
    seconds: float
    outputs: list[Any] = field(default_factory=list)
    stopped: str | None = None  # None: everything fitted

    @property
    def sampled(self) -> bool:
        return len(self.done) < self.total

    def record(self) -> dict[str, Any]:
        return {"done": len(self.done), "total": self.total, "seconds": round(self.seconds, 3),
                "sampled": self.sampled, **({"stopped": self.stopped} if self.stopped else {})}


def run_within(fn: Callable[[np.ndarray], Any], order: np.ndarray, *, seconds: float | None,
               chunk: int = 64, first_chunk: int | None = None, min_n: int = 0,
               clock: Clock = time.perf_counter,
               on_chunk: Callable[[int], None] | None = None) -> Budgeted:
    """Call ``fn(positions)`` on consecutive chunks of ``order`` until it is done or the next
    chunk would not fit ``seconds`` (None: no limit).

    The rate is the measured time per row so far; a chunk is started only when its estimate fits
    what is left. The first ``min_n`` rows are done whatever the budget (a floor, so a step
    always has something to work on). Returns the positions done (in ``order``'s order) and
    ``fn``'s outputs per chunk.
    """
    order = np.asarray(order, dtype=np.int64)
    n = len(order)
    t0 = clock()
    outputs: list[Any] = []
    done = 0
    first = first_chunk or chunk
    stopped = None
    while done < n:
        size = min(first if done == 0 else chunk, n - done)
        if seconds is not None and done < min_n:
            size = min(size, min_n - done)  # the floor first, then chunks sized by the rate
        if seconds is not None and done >= min_n and done > 0:
            spent = clock() - t0
            per_row = spent / done
            if spent + per_row * size > seconds:
                # a smaller last chunk may still fit
                size = int((seconds - spent) / per_row) if per_row > 0 else size
                if size <= 0:
                    stopped = (f"time budget: {done:,} of {n:,} done in {spent:.0f} s "
                               f"({per_row * 1000:.0f} ms each), the rest would need ~{per_row * (n - done):.0f} s "
                               f"more than the {seconds:.0f} s allowed")
                    break
        outputs.append(fn(order[done:done + size]))
        done += size
        if on_chunk:
            on_chunk(done)
    return Budgeted(order[:done], n, clock() - t0, outputs, stopped)


def spread_by_length(lengths: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """Positions of ``n`` items at evenly spaced quantiles of ``lengths`` (the middles of ``n`` equal
    bins of the sorted lengths): a timing probe whose mean length tracks the whole set's.

    A few random texts make a noisy probe when lengths spread widely (news20: 190 tokens at the
    median, 556 at the 90th percentile): on a 1,000-text news20 test sample 8 random texts timed
    1.40 s per text, 8 spread ones 3.14 s, 32 random ones 3.07 s.
    """
    lengths = np.asarray(lengths)
    m = len(lengths)
    n = min(int(n), m)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    return order[((np.arange(n) + 0.5) * m / n).astype(np.int64)]

"""One thread policy for the CPU kernels of this process (torch; ONNX Runtime and tokenizers follow).

Why: torch's OpenMP threads spin-wait for siblings. When another process holds one of the
machine's cores, a 2-thread torch job on 2 cores waits on a descheduled sibling at every
kernel and runs many times slower than the same job on 1 thread (measured: BENCHMARKS.md,
"Threads under contention"; benchmarks/bench_threads.py). So the thread count is decided here,
from the cores this process may use (affinity mask and cgroup CPU quota), the compute users
active in this process at once, and the CPU other processes are using right now (read from
/proc/stat against this process's own CPU time, between two calls: no sleep, no sampling
thread). Callers ask again at every batch or step, so the count follows the load.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_LOCK = threading.Lock()
_ACTIVE = 0  # compute users (rungs, encoders) running in this process now
_LAST: dict[str, float] | None = None  # the previous /proc snapshot
_LAST_VALUE: float | None = None  # others' busy cores over the last window
#: the window over which other processes' CPU use is measured; shorter windows are noise
MIN_WINDOW_S = 0.25
#: a core counts as taken by others from this share of it on: a light background load does not
#: cost a thread, a steady competitor does
TAKEN_SHARE = 0.5


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """Cores allowed by the cgroup CPU quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """Cores this process may use: the affinity mask, capped by the cgroup quota (rounded up)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.ceil(limit - 1e-9)))
    return max(1, n)


def _snapshot() -> dict[str, float] | None:
    """Busy CPU seconds of the whole machine and of this process, at a wall time."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(x) for x in fields]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    busy = sum(ticks[:8]) - idle  # user..steal; guest time is already inside user
    # utime, stime are fields 14 and 15 of /proc/self/stat (11 and 12 after the name)
    return {"t": time.monotonic(), "busy": busy / hz, "own": (int(own[11]) + int(own[12])) / hz}


def others_busy_cores(snapshot: dict[str, float] | None = None) -> float | None:
    """Cores that other processes kept busy since the previous measuring call (None before the
    first window). Cheap: two small /proc reads; the window is the time since the last call
    that measured, at least MIN_WINDOW_S (a shorter call returns the last value)."""
    global _LAST, _LAST_VALUE
    now = snapshot if snapshot is not None else _snapshot()
    if now is None:
        return None
    with _LOCK:
        last = _LAST
        if last is None:
            _LAST = now
            return None
        dt = now["t"] - last["t"]
        if dt < MIN_WINDOW_S:
            return _LAST_VALUE
        _LAST_VALUE = max(0.0, ((now["busy"] - last["busy"]) - (now["own"] - last["own"])) / dt)
        _LAST = now
        return _LAST_VALUE




def decide(setting: Any = "auto", *, active: int | None = None, others: float | None = None,
           cores: int | None = None) -> int:
    """Threads for one compute user: a fixed ``setting`` (a positive int) is obeyed; ``auto`` takes
    this process's share of the usable cores, less the cores other processes hold now."""
    if setting not in (None, "auto"):
        return max(1, int(setting))
    cores = usable_cores() if cores is None else cores
    with _LOCK:
        users = max(1, _ACTIVE if active is None else active)
    share = max(1, cores // users)
    if others is None:
        others = others_busy_cores()
    taken = 0 if others is None else int(others + (1 - TAKEN_SHARE))
    return max(1, min(share, cores - taken))


def apply(setting: Any = "auto", **kw: Any) -> int:
    """Set torch's intra-op threads to ``decide(setting)`` (when torch is loaded) and return it."""
    n = decide(setting, **kw)
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def compute(setting: Any = "auto") -> Iterator[int]:
    """A block of CPU compute: counts as one active user while it runs; threads set for it and
    the previous torch thread count restored afterwards."""
    global _ACTIVE
    import torch

    before = torch.get_num_threads()
    with _LOCK:
        _ACTIVE += 1
    try:
        yield apply(setting)
    finally:
        with _LOCK:
            _ACTIVE -= 1
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def active_users() -> int:
    with _LOCK:
        return _ACTIVE

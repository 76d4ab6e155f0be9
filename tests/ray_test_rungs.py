"""Rungs for tests/test_ray_executor.py only (imported by Ray workers by their registry entry, as a
plugin rung would be): one that kills its own worker process on its first attempt, one that is slow."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptladder.rungs.classical import MajorityRung
from adaptladder.rungs.settings import RungSettings, setting


@dataclass
class MarkerSettings(RungSettings):
    marker: str = setting("", help="file created on the first attempt (which then kills its worker)")
    sleep_s: float = setting(0.0, help="seconds the fit sleeps")


class KillOnceRung(MajorityRung):
    """The majority rung, except that its first fit kills the process running it (a crashed worker)."""

    name = "kill-once"
    cost_rank = 5
    description = "test rung: kills its worker process on the first attempt"
    Settings = MarkerSettings

    def fit(self, texts: Any, y: Any, **kw: Any) -> KillOnceRung:
        marker = Path(self.settings.marker)
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)  # as a worker killed by the OOM killer or a lost node would disappear
        super().fit(texts, y, **kw)
        return self


class SlowRung(MajorityRung):
    """A costly rung that takes ``sleep_s`` seconds to fit (to be cancelled)."""

    name = "slow"
    cost_rank = 95
    description = "test rung: sleeps in its fit"
    Settings = MarkerSettings

    def fit(self, texts: Any, y: Any, **kw: Any) -> SlowRung:
        time.sleep(self.settings.sleep_s)
        super().fit(texts, y, **kw)
        return self

"""Periodic jobs of the service (footprint announcements and writes, checkpoints), run between cycles.

They run on the ingest pipeline's engine thread (its `tick` hook), so a job never races the
engine feed and needs no lock of its own; a job that raises is logged and tried again at its
next interval, never stopping ingest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Job:
    name: str
    interval_s: float
    run: Callable[[], None]
    last: float


class PeriodicJobs:
    """Named jobs, each run when its interval has passed since it last ran."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def every(self, interval_s: float, name: str, run: Callable[[], None]) -> None:
        """Run `run` every `interval_s` seconds, the first time one interval from now."""
        self.jobs.append(Job(name, interval_s, run, time.monotonic()))

    def run_due(self) -> None:
        for job in self.jobs:
            now = time.monotonic()
            if now - job.last < job.interval_s:
                continue
            job.last = now
            try:
                job.run()
            except Exception:
                log.exception("periodic job %s failed; next try in %.0f s", job.name, job.interval_s)

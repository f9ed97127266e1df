"""A disk queue of line-protocol bodies that InfluxDB could not take yet.

Ingest acknowledges a message to the broker as soon as its readings are durable, and while
InfluxDB is down "durable" means "in this queue": one file per write, fsynced and renamed
into place, named by a counter so the flusher replays them in the order they were written.
The files outlive the process, so a crash during an outage loses nothing either.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

_SUFFIX = ".lp"


@dataclass(frozen=True, slots=True)
class SpilledWrite:
    path: Path
    precision: str
    body: bytes


class SpillQueue:
    """Ordered, crash-safe, size-bounded; `append` blocks while the queue is over `max_bytes`."""

    def __init__(self, directory: str | Path, max_bytes: int = 2 * 1024**3) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink()  # a write torn by a crash was never acknowledged
        self._files = sorted(self.directory.glob(f"*{_SUFFIX}"))
        self._bytes = sum(p.stat().st_size for p in self._files)
        self._next = int(self._files[-1].name.split(".")[0]) + 1 if self._files else 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._files)

    @property
    def bytes(self) -> int:
        with self._cond:
            return self._bytes

    def append(self, body: bytes, precision: str, timeout_s: float | None = None) -> None:
        """Durably enqueue one write; waits for room (back-pressure on ingest) when full."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._bytes < self.max_bytes, timeout_s):
                raise TimeoutError(f"spill queue {self.directory} is full ({self._bytes} bytes)")
            n = self._next
            self._next += 1
        final = self.directory / f"{n:016d}.{precision}{_SUFFIX}"
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        with self._cond:
            self._files.append(final)
            self._files.sort()
            self._bytes += len(body)
            self._cond.notify_all()

    def head(self, max_bytes: int) -> list[SpilledWrite]:
        """The oldest writes sharing one precision, up to about `max_bytes` (at least one)."""
        with self._cond:
            files = list(self._files)
        out: list[SpilledWrite] = []
        total = 0
        for path in files:
            precision = path.name.split(".")[1]
            if out and (precision != out[0].precision or total >= max_bytes):
                break
            body = path.read_bytes()
            out.append(SpilledWrite(path, precision, body))
            total += len(body)
        return out

    def remove(self, writes: list[SpilledWrite]) -> None:
        """Drop writes InfluxDB has accepted."""
        for w in writes:
            w.path.unlink()
        with self._cond:
            gone = {w.path for w in writes}
            self._files = [p for p in self._files if p not in gone]
            self._bytes -= sum(len(w.body) for w in writes)
            self._cond.notify_all()

    def wait_empty(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._files, timeout_s)

    def wait_nonempty(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._files), timeout_s)

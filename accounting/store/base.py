"""The store interface every adapter implements, and the records that cross it.

Ingest acknowledges an MQTT message to the broker only after `write_readings` has returned,
so an adapter's contract is: when `write_readings` returns, the rows are durable (committed,
or spilled to a local disk queue that survives a crash). Writes must be idempotent on
(site, meter, ts_ms): a message redelivered after a crash is written again, and must not
appear twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, NamedTuple

from tanji.quantities import QUANTITIES

#: The value columns/fields of a stored reading: the whole quantity catalogue, in a fixed order.
VALUE_NAMES: tuple[str, ...] = tuple(QUANTITIES)


class StoredReading(NamedTuple):
    """One validated meter reading, as ingest hands it to a store and a store gives it back."""

    site: str
    gateway: str
    meter: str
    ts_ms: int
    quality: str
    values: dict[str, float | None]
    value_quality: dict[str, str] | None = None


class EncodedReadings(NamedTuple):
    """Rows made ready for one store's write by `ReadingStore.encode_readings`."""

    rows: Sequence[StoredReading]
    payload: Any = None


class QuarantinedMessage(NamedTuple):
    """A message that failed validation: kept verbatim with its reason, never silently dropped."""

    received_ms: int
    topic: str
    reason: str
    detail: str
    payload: bytes
    site: str | None = None


class ReadingStore(ABC):
    """Readings, footprints and quarantine of one or more sites.

    `write_readings` returns how many of the rows were new, when the store can tell (SQLite
    can; InfluxDB silently overwrites a point with the same series and time, so its adapter
    returns the number of rows written). Timestamps are UTC epoch milliseconds; intervals are
    half-open [start_ms, end_ms).
    """

    def write_readings(self, rows: Sequence[StoredReading]) -> int:
        """Durably store rows; idempotent on (site, meter, ts_ms)."""
        return self.write_encoded(self.encode_readings(rows))

    def encode_readings(self, rows: Sequence[StoredReading]) -> EncodedReadings:
        """The CPU part of a write (formatting), split from the I/O so that ingest can do it
        while the previous cycle's write waits on the database. Default: nothing ahead."""
        return EncodedReadings(rows)

    @abstractmethod
    def write_encoded(self, encoded: EncodedReadings) -> int:
        """`write_readings` for rows `encode_readings` prepared, with the same contract."""

    @abstractmethod
    def read_readings(self, site: str, meter: str | None, start_ms: int, end_ms: int) -> list[StoredReading]:
        """Readings of one meter (or every meter when `meter` is None), in timestamp order."""

    @abstractmethod
    def latest(self, site: str) -> dict[str, StoredReading]:
        """The newest reading of each meter of a site, by meter id."""

    @abstractmethod
    def recent_timestamps(self, site: str, meter: str, limit: int) -> list[int]:
        """The newest `limit` timestamps of a meter, oldest first: seeds ingest's dedup index on restart."""

    @abstractmethod
    def write_footprints(self, site: str, start_ms: int, end_ms: int, computed_ms: int,
                         footprints: Sequence[dict[str, Any]]) -> None:
        """Store engine results for a window; a later computation of the same window replaces it."""

    @abstractmethod
    def read_footprints(self, site: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """Stored results whose window lies within [start_ms, end_ms)."""

    @abstractmethod
    def quarantine(self, messages: Sequence[QuarantinedMessage]) -> None:
        """Durably keep rejected messages with their reasons."""

    @abstractmethod
    def quarantined(self, limit: int = 100) -> list[QuarantinedMessage]:
        """The most recent quarantined messages, newest first."""

    @abstractmethod
    def count_readings(self, site: str | None = None) -> int:
        """How many readings are stored (exact; the fault tests compare it with what was sent)."""

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until nothing is pending locally (spilled); True when drained. SQLite never spills."""
        return True

    @abstractmethod
    def close(self) -> None:
        """Release connections and threads; safe to call twice."""

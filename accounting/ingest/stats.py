"""Ingest counters: what the API shows and what the fault tests compare by exact count."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class IngestStats:
    """Counts since this process started (quarantine totals over all time live in the store).

    `received` counts MQTT readings messages; `accepted` readings stored for the first time;
    `duplicates` readings dropped as already seen; `quarantined_by_reason` rejected messages
    (and single readings: `impossible_value`, `clock_backwards`, `conflict`) per reason code, of which
    `quarantine_payloads_dropped` were kept without their payload (rate cap);
    `conflicts` copies per "site/meter" that disagreed with the first (which was kept), and
    `conflict_checks_failed` repeated readings the store could not be asked about;
    `seq_gaps` missing batches per gateway and `seq_anomalies` implausible seq jumps;
    `last_message_ms` the receive time of the newest message; `stage_errors` cycles a stage
    (engine, notify) failed on; `stage_s` seconds spent per cycle stage (admit, store,
    engine, ack, notify), which names the bottleneck; `audit` the batch signatures checked and
    the chain alarms raised (docs/audit.md), for sites that verify signatures.
    """

    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined_by_reason: Counter[str] = field(default_factory=Counter)
    quarantine_payloads_dropped: int = 0
    conflicts: Counter[str] = field(default_factory=Counter)
    conflict_checks_failed: int = 0
    seq_gaps: dict[str, int] = field(default_factory=dict)
    seq_anomalies: dict[str, int] = field(default_factory=dict)
    last_message_ms: int | None = None
    cycles: int = 0
    stage_errors: Counter[str] = field(default_factory=Counter)
    stage_s: Counter[str] = field(default_factory=Counter)
    audit: dict[str, Any] = field(default_factory=dict)  # signatures and chain alarms (AccountingService.audit_status)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def quarantined(self) -> int:
        return sum(self.quarantined_by_reason.values())

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {"received": self.received, "accepted": self.accepted, "duplicates": self.duplicates,
                    "quarantined": self.quarantined,
                    "quarantined_by_reason": dict(self.quarantined_by_reason),
                    "quarantine_payloads_dropped": self.quarantine_payloads_dropped,
                    "conflicts": dict(self.conflicts), "conflict_checks_failed": self.conflict_checks_failed,
                    "seq_gaps": dict(self.seq_gaps), "seq_anomalies": dict(self.seq_anomalies),
                    "last_message_ms": self.last_message_ms, "cycles": self.cycles,
                    "stage_errors": dict(self.stage_errors), "stage_s": dict(self.stage_s),
                    **({"audit": self.audit} if self.audit else {})}

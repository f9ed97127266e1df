"""What a rejected message costs us: bounded, whoever sends it and however fast.

Quarantine keeps every rejected message with its reason, so an operator can see what a
gateway sent and why it was refused. Kept verbatim and without limit, it is also a way to
fill the disk: 200 invalid 1 MiB payloads grew the store by 246 MB in 2.6 s. So a
quarantine record is bounded three ways:

- **size**: the payload is kept up to `payload_max_bytes` (its full length and SHA-256 are
  recorded, so a copy held elsewhere can be matched against it); topic and detail are cut to
  a few hundred characters and made valid UTF-8;
- **rate**: per publisher (site and gateway from the topic), a token bucket of
  `payloads_per_s` with a burst of `payload_burst`; beyond it the record is still written
  (reason, detail, size, digest) but without payload bytes;
- **count**: every quarantined message is counted by reason (`IngestStats`), and those whose
  payload was not kept under `quarantine_payloads_dropped`. Stores keep at most a bounded number of
  quarantine records (`docs/storage.md`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from accounting.store.base import QuarantinedMessage

PAYLOAD_MAX_BYTES = 16 * 1024
TEXT_MAX_CHARS = 500
TOPIC_MAX_CHARS = 256


def clean_text(text: str, limit: int = TEXT_MAX_CHARS) -> str:
    """`text` cut to `limit` characters and made valid UTF-8 (lone surrogates escaped)."""
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text)} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class _Bucket:
    tokens: float
    at: float


class QuarantinePolicy:
    """Builds bounded `QuarantinedMessage`s; one per ingest (the ingest thread calls it)."""

    def __init__(self, *, payload_max_bytes: int = PAYLOAD_MAX_BYTES, payloads_per_s: float = 2.0,
                 payload_burst: int = 200, clock: Callable[[], float] = time.monotonic) -> None:
        self.payload_max_bytes = payload_max_bytes
        self.payloads_per_s = payloads_per_s
        self.payload_burst = payload_burst
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def record(self, received_ms: int, topic: str, reason: str, detail: str, payload: bytes,
               site: str | None, *, whole: bool = False) -> QuarantinedMessage:
        """The quarantine record of one message (or one reading of it). `whole`: keep all of the
        payload whatever the caps (a message that passed admission, so bounded by the wire
        format's size limit and arriving at the plant's data rate, which the store refused)."""
        kept = payload if whole else payload[:self.payload_max_bytes] if self._take(topic) else b""
        return QuarantinedMessage(received_ms, clean_text(topic, TOPIC_MAX_CHARS), reason, clean_text(detail),
                                  kept, site, len(payload), hashlib.sha256(payload).hexdigest())

    def _take(self, topic: str) -> bool:
        """One payload's worth from the publisher's bucket; False when it is empty."""
        key = "/".join(topic.split("/", 4)[2:4])[:200]  # <site>/<gateway>, or whatever the topic has there
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= 10_000:  # topics are attacker-chosen: bound the table too
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(float(self.payload_burst), now)
        bucket.tokens = min(float(self.payload_burst), bucket.tokens + (now - bucket.at) * self.payloads_per_s)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

"""The evidence kept beside the readings: signed batches and the events of their chains.

Every batch ingest admits from a site that verifies signatures is kept as it arrived: its
readings' exact bytes (what the signature covers), its signature and its place in the
gateway's chain (chain, seq, prev, hash). That is what `tanji audit export` hands an auditor
and what a footprint's evidence root names (accounting/audit/evidence.py). Chain events
(a gap, a fork, a replay, a new chain) are kept beside them, so a break found once stays on
record.

Both stores implement `EvidenceStore` (SQLite: `accounting/store/sqlite_evidence.py`,
InfluxDB: `accounting/store/influx_evidence.py`). Writes are idempotent: a batch is identified
by (site, gateway, hash), an event by (site, gateway, chain, kind, seq_lo, detected_ms).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from accounting.store.base import EncodedReadings

#: Chain event kinds. `gap`: batches missing between two the chain links (open until they
#: arrive); `fork`: a batch conflicting with the chain as admitted (same seq, other content, or
#: a `prev` naming another batch); `replay`: a copy of a batch already admitted; `new_chain`: a
#: gateway started a chain (its chain state was lost: batches after the old chain's last one
#: may be missing).
CHAIN_EVENT_KINDS = ("gap", "fork", "replay", "new_chain")


class StoredBatch(NamedTuple):
    """One admitted batch as it arrived: `readings` are the exact bytes its signature covers.

    Unsigned batches (a site with `signatures: preferred`) have `sig`, `key`, `chain` and `prev`
    None, and no `readings` (b""): they are no evidence, only a record that readings of their
    time span are not vouched for; their `hash` is the header hash with `-` for those.
    """

    site: str
    gateway: str
    seq: int
    hash: str
    chain: str | None
    key: str | None
    prev: str | None
    sig: str | None  # base64
    min_ts_ms: int
    max_ts_ms: int
    n: int
    received_ms: int
    readings: bytes | memoryview  # at ingest a view into the message's bytes (batch_decoder.decode_head)


class ChainEvent(NamedTuple):
    """A break (or a notable moment) in a gateway's chain; `resolved_ms` closes a gap."""

    site: str
    gateway: str
    chain: str
    kind: str
    seq_lo: int
    seq_hi: int
    detected_ms: int
    detail: str
    resolved_ms: int | None = None


class Segment(NamedTuple):
    """A run of one chain's batches: seqs `first`..`last`, of which `present` are stored; the
    hash of `last` (the head) vouches, through the `prev` links, for every batch before it."""

    gateway: str
    chain: str
    first: int
    last: int
    head: str
    present: int


class EvidenceStore:
    """What a reading store keeps of batches and chains (implemented by both stores)."""

    def write_batches(self, batches: Sequence[StoredBatch]) -> None:
        """Durably keep admitted batches; idempotent on (site, gateway, hash)."""
        raise NotImplementedError

    def write_chain_events(self, events: Sequence[ChainEvent]) -> None:
        """Durably keep chain events; writing an event again (same key) updates it (a gap resolved)."""
        raise NotImplementedError

    def write_evidence(self, batches: Sequence[StoredBatch], events: Sequence[ChainEvent]) -> None:
        """`write_batches` and `write_chain_events` of one cycle, in one write where the store can."""
        self.write_batches(batches)
        self.write_chain_events(events)

    def write_with_evidence(self, encoded: EncodedReadings, batches: Sequence[StoredBatch],
                            events: Sequence[ChainEvent]) -> int:
        """A cycle's readings (`ReadingStore.write_encoded`, same contract and result) with the
        evidence of their batches: in the same transaction where the store has transactions
        (SQLite), else the evidence first, so no reading is durable before its batch's record."""
        self.write_evidence(batches, events)
        return self.write_encoded(encoded)  # type: ignore[attr-defined]

    def recent_batches(self, site: str, gateway: str, limit: int) -> list[StoredBatch]:
        """The newest `limit` signed batches of a gateway (any chain), without their readings:
        seeds the chain tracker on restart."""
        raise NotImplementedError

    def batch_hashes(self, site: str, gateway: str, chain: str, first: int, last: int) -> dict[int, str]:
        """seq → hash of the stored batches of one chain with first <= seq <= last."""
        raise NotImplementedError

    def chain_heads(self, site: str, before_ms: int, since_ms: int) -> dict[tuple[str, str], tuple[int, str]]:
        """Per (gateway, chain) with a batch whose first reading is in [since_ms, before_ms): the
        (seq, hash) of its last such batch (largest first reading, then largest seq)."""
        raise NotImplementedError

    def chain_tails(self, site: str, before_ms: int, since_ms: int) -> dict[tuple[str, str], int]:
        """Per (gateway, chain): the seq of the last batch whose first reading is before
        `before_ms` (and at or after `since_ms`), i.e. the batch that may straddle `before_ms`."""
        raise NotImplementedError

    def first_batches(self, site: str, since_ms: int, before_ms: int) -> dict[tuple[str, str], int]:
        """Per (gateway, chain): the seq of the first batch whose first reading is in [since_ms, before_ms)."""
        raise NotImplementedError

    def count_batches(self, site: str, gateway: str, chain: str, first: int, last: int) -> int:
        """How many batches of one chain with first <= seq <= last are stored."""
        raise NotImplementedError

    def unsigned_batches(self, site: str, start_ms: int, end_ms: int) -> int:
        """How many unsigned batches hold readings in [start_ms, end_ms)."""
        raise NotImplementedError

    def read_batches(self, site: str, start_ms: int, end_ms: int) -> list[StoredBatch]:
        """Every stored batch (signed or not, readings included) whose first reading is in
        [start_ms, end_ms), ordered by gateway, chain, seq."""
        raise NotImplementedError

    def read_chain_batches(self, site: str, gateway: str, chain: str, first: int, last: int) -> list[StoredBatch]:
        """The stored batches of one chain with first <= seq <= last, readings included, by seq."""
        raise NotImplementedError

    def chain_events(self, site: str | None = None, *, open_only: bool = False,
                     since_ms: int = 0) -> list[ChainEvent]:
        """Recorded chain events (of one site or all) detected since `since_ms`, oldest first;
        `open_only`: unresolved gaps only."""
        raise NotImplementedError


#: The longest a batch's readings are assumed to span when looking for the batches of a window
#: (a backlog batch of readings taken during a long outage): a chain is considered for a window
#: when one of its batches starts at most this long before the window's end.
MAX_BATCH_SPAN_MS = 24 * 3_600_000

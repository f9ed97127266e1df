"""Admission: every message is checked before anything it says reaches the store or the engine.

Checks, in order (each failure is a quarantine reason code):
- topic shape `tanji/v1/<site>/<gateway>/<kind>` (`bad_topic`), a configured site
  (`unknown_site`), a gateway of that site (`unknown_gateway`);
- the wire format via `batch_decoder.decode_batch` (reasons from `tanji.wire`): size limit (`too_large`), JSON (`not_json`),
  schema and types (`schema`, `version`, `unknown_quantity`), finite numbers (`not_finite`),
  timestamps within bounds (`timestamp`), topic ids equal to the payload's (`topic_mismatch`);
- every meter belongs to the publishing gateway (`unknown_meter`). This also bounds the tag
  cardinality of the store to the meters of the site files;
- for a site that verifies signatures (`signatures: required | preferred`), the batch's
  signature and key (`accounting.ingest.signatures`: `unsigned`, `unknown_key`,
  `bad_signature`, `key_expired`, `revoked_key`) and its place in the gateway's chain
  (`accounting.ingest.chain`: a replay is skipped, a fork is `chain_fork`). An admitted batch
  is kept as it arrived (`Admitted.batches`) beside its readings; a batch refused for its
  signature is not confirmed to its gateway, which keeps its own copy and sends it again.

A message is admitted or quarantined whole: a half-stored batch would be hard to explain to
an auditor. Duplicates within the batch and against the dedup index are dropped and counted;
the index learns each admitted reading at once (accounting/ingest/dedup.py says why that is safe).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from accounting.ingest import batch_decoder
from accounting.ingest.chain import ChainTracker
from accounting.ingest.dedup import DedupIndex
from accounting.ingest.sequence import SequenceTracker
from accounting.ingest.signatures import FINAL_REFUSALS, BatchSignatures
from accounting.ingest.subscriber import InboundMessage
from accounting.store.base import QuarantinedMessage, StoredReading
from accounting.store.evidence import ChainEvent, StoredBatch
from tanji import wire
from tanji.errors import WireFormatError
from tanji.site import Site

#: Refusals that leave the batch with its gateway (not confirmed): the genuine batch may still
#: come (a forged or altered copy must not delete it from the spool), or an operator may yet
#: register its key. The others are final (accounting.ingest.signatures.FINAL_REFUSALS).
_SIGNATURE_REFUSALS = frozenset({"unsigned", "unknown_key", "bad_signature"}) - FINAL_REFUSALS


def _row(fields: tuple) -> StoredReading:
    """StoredReading from a tuple of its fields, without the namedtuple's Python-level __new__."""
    return tuple.__new__(StoredReading, fields)


@dataclass
class Admitted:
    """The outcome of one ingest cycle's messages."""

    rows: list[StoredReading] = field(default_factory=list)
    quarantined: list[QuarantinedMessage] = field(default_factory=list)
    statuses: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    readings_messages: int = 0
    duplicates: int = 0
    batches: list[StoredBatch] = field(default_factory=list)  # signed (or unsigned) batches to keep
    chain_events: list[ChainEvent] = field(default_factory=list)
    unconfirmed: set[int] = field(default_factory=set)  # indexes of messages not to confirm to their gateway


class Admission:
    """Validates messages against the wire format and the site files, dedups their readings."""

    def __init__(self, sites: dict[str, Site], dedup: DedupIndex, sequences: SequenceTracker,
                 signatures: BatchSignatures | None = None, chains: ChainTracker | None = None) -> None:
        self.sites = sites
        self.dedup = dedup
        self.sequences = sequences
        self.signatures = signatures
        self.chains = chains
        self._meters = {(s.id, g.id): frozenset(m.id for m in g.meters) for s in sites.values() for g in s.gateways}

    def admit(self, messages: list[InboundMessage], now_ms: int | None = None) -> Admitted:
        """Admit one cycle's messages."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        out = Admitted()
        if self.signatures is not None:
            self.signatures.prepare(messages)
        for index, m in enumerate(messages):
            try:
                self._admit_one(m, now_ms, out, index)
            except WireFormatError as exc:
                site = m.topic.split("/")[2] if m.topic.count("/") >= 2 else None
                out.quarantined.append(QuarantinedMessage(
                    m.received_ms, m.topic, exc.reason, exc.detail, m.payload,
                    site if site in self.sites else None))
                if exc.reason in _SIGNATURE_REFUSALS:
                    out.unconfirmed.add(index)
        if self.chains is not None:
            out.chain_events = self.chains.drain()
        return out

    def _admit_one(self, m: InboundMessage, now_ms: int, out: Admitted, index: int = 0) -> None:
        site_id, gateway_id, kind = wire.parse_topic(m.topic)
        if kind == "status":
            self._status(m, site_id, gateway_id, out)
            return
        out.readings_messages += 1
        if site_id not in self.sites:
            raise WireFormatError("unknown_site", f"site {site_id!r} is not in this service's site files")
        meters = self._meters.get((site_id, gateway_id))
        if meters is None:
            raise WireFormatError("unknown_gateway", f"site {site_id} has no gateway {gateway_id!r}")
        batch = batch_decoder.decode_batch(m.payload, site_id, gateway_id, now_ms)
        readings = batch.readings
        for i, r in enumerate(readings):
            if r.meter not in meters:
                raise WireFormatError("unknown_meter",
                                      f"readings[{i}].meter {r.meter!r} is not a meter of {site_id}/{gateway_id}")
        if self.signatures is not None:
            kept = self.signatures.check(index, m, site_id, gateway_id, batch)
            if kept is not None:
                if self.chains is not None and kept.chain is not None and self.chains.observe(kept) == "replay":
                    out.duplicates += len(readings)  # a copy of a batch already admitted (and kept)
                    return
                out.batches.append(kept)
        self.sequences.observe(site_id, gateway_id, batch.seq)
        fresh = self.dedup.fresh(site_id, readings)
        out.duplicates += len(readings) - len(fresh)
        out.rows.extend([_row((site_id, gateway_id, r.meter, r.ts_ms, r.quality, r.values, r.value_quality))
                         for r in fresh])

    def _status(self, m: InboundMessage, site_id: str, gateway_id: str, out: Admitted) -> None:
        if not m.payload:
            return  # a cleared retained message
        try:
            body = json.loads(m.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise WireFormatError("bad_status", f"status is not JSON: {str(exc)[:200]}") from None
        if not isinstance(body, dict) or body.get("gateway") != gateway_id or body.get("site") != site_id:
            raise WireFormatError("bad_status", "status must be an object naming the topic's site and gateway")
        out.statuses[(site_id, gateway_id)] = body

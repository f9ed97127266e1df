"""Admission: every message is checked before anything it says reaches the store or the engine.

Checks, in order (each failure is a quarantine reason code):
- topic shape `tanji/v1/<site>/<gateway>/<kind>` (`bad_topic`), a configured site
  (`unknown_site`), a gateway of that site (`unknown_gateway`);
- the wire format via `batch_decoder.decode_batch` (reasons from `tanji.wire`): size limit
  (`too_large`) and nesting depth (`too_deep`) before any parser runs, JSON (`not_json`),
  schema and types (`schema`, `version`, `unknown_quantity`), finite numbers (`not_finite`),
  timestamps within bounds (`timestamp`), topic ids equal to the payload's (`topic_mismatch`);
- every meter belongs to the publishing gateway (`unknown_meter`). This also bounds the tag
  cardinality of the store to the meters of the site files;
- for a site that verifies signatures (`signatures: required | preferred`), the batch's
  signature and key (`accounting.ingest.signatures`: `unsigned`, `unknown_key`,
  `bad_signature`, `key_expired`, `revoked_key`) and its place in the gateway's chain
  (`accounting.ingest.chain`: a replay is skipped, a fork is `chain_fork`). An admitted batch
  is kept as it arrived (`Admitted.batches`) beside its readings, and remembered in its chain
  only once its message is admitted whole (a message quarantined after its chain was examined
  leaves no batch record and no link, so its next copy is not a replay); a batch refused for its
  signature is not confirmed to its gateway, which keeps its own copy and sends it again.
Status messages: `tanji.wire.decode_status` (`too_large`, `too_deep`, `bad_status`, `version`).

A message that breaks any of these is quarantined whole: a half-stored batch would be hard to
explain to an auditor. One reading inside a well-formed batch whose value claimed `good` is
physically impossible (outside its quantity's range in `tanji.quantities`: -5 kWh, 1e308 kWh)
is quarantined alone (`impossible_value`): the batch is sound, the other meters' readings are
real, and the bad one would otherwise be stored as good. So is one stamped before a reading of
its meter from an earlier batch of its gateway (`clock_backwards`: the gateway's clock went
back; accounting/ingest/meter_order.py). Any other exception while admitting
one message (a bug, or an input nobody thought of) quarantines that message as
`internal_error` and admission goes on: no input stops ingest. Quarantine records are bounded
by `accounting.ingest.quarantine`.

Duplicates within the batch and against the dedup index are dropped and counted; the index
learns each admitted reading at once (accounting/ingest/dedup.py says why that is safe). A
copy that disagrees with the first is a conflict (accounting/ingest/conflicts.py: the first
value wins in every store).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from accounting.ingest import batch_decoder
from accounting.ingest.batch_decoder import _readings
from accounting.ingest.chain import ChainTracker
from accounting.ingest.conflicts import FirstCopies, Lookup, same_reading
from accounting.ingest.dedup import BEYOND, DedupIndex
from accounting.ingest.meter_order import MeterOrder
from accounting.ingest.quarantine import QuarantinePolicy
from accounting.ingest.sequence import SequenceTracker
from accounting.ingest.signatures import FINAL_REFUSALS, BatchSignatures
from accounting.ingest.subscriber import InboundMessage
from accounting.store.base import QuarantinedMessage, StoredReading
from accounting.store.evidence import ChainEvent, StoredBatch
from tanji import wire
from tanji.errors import WireFormatError
from tanji.quantities import QUANTITIES
from tanji.site import Site

log = logging.getLogger(__name__)

#: Refusals that leave the batch with its gateway (not confirmed): the genuine batch may still
#: come (a forged or altered copy must not delete it from the spool), or an operator may yet
#: register its key. The others are final (accounting.ingest.signatures.FINAL_REFUSALS).
_SIGNATURE_REFUSALS = frozenset({"unsigned", "unknown_key", "bad_signature"}) - FINAL_REFUSALS

#: Per quantity, the physically possible range (`tanji.quantities.Quantity.low/high`), as floats
#: (what the compiled pass compares; each is a float already, so the Python loop's checks are the same).
_BOUNDS = {name: (float(q.low), float(q.high)) for name, q in QUANTITIES.items()}
_encode = msgspec.json.Encoder().encode


def _wire_reading(r: batch_decoder.Reading) -> dict[str, Any]:
    """A reading as the wire format writes it (for a quarantine record of that one reading)."""
    out = {"meter": r.meter, "ts_ms": r.ts_ms, "quality": r.quality, "values": r.values}
    if r.value_quality:
        out["value_quality"] = r.value_quality
    return out


def _row(fields: tuple) -> StoredReading:
    """StoredReading from a tuple of its fields, without the namedtuple's Python-level __new__."""
    return tuple.__new__(StoredReading, fields)


@dataclass
class Admitted:
    """The outcome of one ingest cycle's messages.

    `origins` says which message each run of `rows` came from: (index into the cycle's
    messages, first row, end row), so a store that refuses rows can be answered per message.
    """

    rows: list[StoredReading] = field(default_factory=list)
    quarantined: list[QuarantinedMessage] = field(default_factory=list)
    statuses: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    readings_messages: int = 0
    duplicates: int = 0
    origins: list[tuple[int, int, int]] = field(default_factory=list)
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (site, meter) per conflicting copy
    batches: list[StoredBatch] = field(default_factory=list)  # signed (or unsigned) batches to keep
    chain_events: list[ChainEvent] = field(default_factory=list)
    unconfirmed: set[int] = field(default_factory=set)  # indexes of messages not to confirm to their gateway


@dataclass(frozen=True, slots=True)
class _Doubtful:
    """A reading the dedup index could not decide on alone (accounting.ingest.dedup)."""

    kind: str
    index: int  # its message in the cycle
    site: str
    gateway: str
    seq: int
    reading: batch_decoder.Reading


class Admission:
    """Validates messages against the wire format and the site files, dedups their readings."""

    def __init__(self, sites: dict[str, Site], dedup: DedupIndex, sequences: SequenceTracker,
                 quarantine: QuarantinePolicy | None = None, lookup: Lookup | None = None,
                 signatures: BatchSignatures | None = None, chains: ChainTracker | None = None,
                 order: MeterOrder | None = None) -> None:
        """`lookup` is the store's `find_readings` (first copies of repeated readings); without
        it, a repeated reading counts as a duplicate and one older than the index knows as new.
        `order`: each meter's newest reading and batch (durable when the service keeps state)."""
        self.sites = sites
        self.dedup = dedup
        self.sequences = sequences
        self.quarantine = quarantine or QuarantinePolicy()
        self.first_copies = FirstCopies(lookup)
        self.signatures = signatures
        self.chains = chains
        self.order = order or MeterOrder()
        self._meters = {(s.id, g.id): frozenset(m.id for m in g.meters) for s in sites.values() for g in s.gateways}

    def admit(self, messages: list[InboundMessage], now_ms: int | None = None) -> Admitted:
        """Admit one cycle's messages; never raises for anything a message holds."""
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        out = Admitted()
        doubtful: list[_Doubtful] = []
        if self.signatures is not None:
            self.signatures.prepare(messages, now_ms)
        chains = self.chains
        for index, m in enumerate(messages):
            kept = len(out.batches)
            try:
                self._admit_one(index, m, now_ms, out, doubtful)
            except WireFormatError as exc:
                del out.batches[kept:]  # a quarantined message's batch is neither kept nor in its chain
                out.quarantined.append(self.reject(m, exc.reason, exc.detail))
                if exc.reason in _SIGNATURE_REFUSALS:
                    out.unconfirmed.add(index)
            except Exception as exc:  # noqa: BLE001 - whatever one message does, the others go on
                del out.batches[kept:]
                log.exception("admitting a message on %.200r failed; quarantined as internal_error", m.topic)
                out.quarantined.append(self.reject(m, "internal_error", f"{type(exc).__name__}: {exc}"))
            else:
                if chains is not None and len(out.batches) > kept:
                    chains.admit(out.batches[-1])  # only now: accounting/ingest/chain.py `examine`
        if doubtful:
            try:
                self._resolve(messages, doubtful, out)
            except Exception:  # noqa: BLE001 - a bug here must not stop ingest either
                log.exception("checking %d repeated readings failed; counted as duplicates", len(doubtful))
                out.duplicates += len(doubtful)
        self.first_copies.remember(out.rows)
        try:
            self.order.flush()  # before the cycle is stored and acknowledged (meter_order.py)
        except Exception:  # noqa: BLE001 - a cache that cannot be written must not stop ingest
            log.exception("saving the meters' reading order failed; it is kept in memory")
        if self.chains is not None:
            out.chain_events = self.chains.drain()
        return out

    def reject(self, m: InboundMessage, reason: str, detail: str, *, whole: bool = False) -> QuarantinedMessage:
        """The bounded quarantine record of a whole message (`whole`: see `QuarantinePolicy.record`)."""
        parts = m.topic.split("/", 4)
        site = parts[2] if len(parts) > 2 and parts[2] in self.sites else None
        return self.quarantine.record(m.received_ms, m.topic, reason, detail, m.payload, site, whole=whole)

    def _admit_one(self, index: int, m: InboundMessage, now_ms: int, out: Admitted,
                   doubtful: list[_Doubtful]) -> None:
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
        batch = (self.signatures.decode(index, m.payload, site_id, gateway_id, now_ms) if self.signatures is not None
                 else batch_decoder.decode_batch(m.payload, site_id, gateway_id, now_ms))
        readings = batch.readings
        # One compiled pass (accounting/ingest/_readings.c): meters, bounds and the rows; None when
        # anything needs a closer look, which the Python loops below then take, as without it.
        scan = None if _readings is None else _readings.admit(readings, meters, _BOUNDS, site_id, gateway_id,
                                                               StoredReading)
        if scan is None:
            for i, r in enumerate(readings):
                if r.meter not in meters:
                    raise WireFormatError("unknown_meter",
                                          f"readings[{i}].meter {r.meter!r} is not a meter of {site_id}/{gateway_id}")
        if self.signatures is not None:
            kept = self.signatures.check(index, m, site_id, gateway_id, batch)
            if kept is not None:
                if self.chains is not None and kept.chain is not None and self.chains.examine(kept) == "replay":
                    out.duplicates += len(readings)  # a copy of a batch already admitted (and kept)
                    return
                out.batches.append(kept)
        # scan: every reading possible; its rows, its (meters, stamps) columns and earliest stamp
        scanned_rows, columns, earliest = (None, None, None) if scan is None else (scan[0], scan[1:3], scan[3])
        possible = readings if scan is not None else self._possible(m, batch, out)
        # a backfill (docs/wire-format.md) is older than its meters' readings on purpose
        backwards = [] if batch.backfill else self.order.backwards(site_id, gateway_id, batch.seq, possible,
                                                                   earliest)
        if backwards:
            possible = self._misstamped(m, batch, possible, backwards, out)
            scanned_rows = columns = None  # the batch's, no longer the readings admitted
        # Everything that can fail has been checked: only now learn from the message.
        self.sequences.observe(site_id, gateway_id, batch.seq)
        self.order.learn(site_id, gateway_id, batch.seq, possible, columns)
        repeated: list[tuple[str, batch_decoder.Reading]] = []
        fresh = self.dedup.fresh(site_id, possible, repeated, columns)
        if repeated:
            doubtful.extend([_Doubtful(kind, index, site_id, gateway_id, batch.seq, r) for kind, r in repeated])
        if fresh:
            start = len(out.rows)
            if scanned_rows is not None and fresh is possible:  # as a rule: every reading new
                out.rows.extend(scanned_rows)
            else:
                new, stored = tuple.__new__, StoredReading  # _row, inlined: a call per reading costs
                out.rows.extend([new(stored, (site_id, gateway_id, r.meter, r.ts_ms, r.quality, r.values,
                                              r.value_quality)) for r in fresh])
            out.origins.append((index, start, len(out.rows)))

    def _possible(self, m: InboundMessage, batch: batch_decoder.Batch, out: Admitted) -> list[batch_decoder.Reading]:
        """The batch's readings without those holding a physically impossible value claimed good
        (each quarantined on its own as `impossible_value`)."""
        bounds = _BOUNDS
        readings = batch.readings
        keep: list[batch_decoder.Reading] | None = None
        for i, r in enumerate(readings):
            bad = None
            for name, v in r.values.items():
                if v is not None:
                    lo, hi = bounds[name]
                    if not lo <= v <= hi and (r.value_quality.get(name, "good") if r.value_quality
                                              else r.quality) == "good":
                        bad = name, v, lo, hi
                        break
            if bad is None:
                if keep is not None:
                    keep.append(r)
                continue
            if keep is None:
                keep = list(readings[:i])
            name, v, lo, hi = bad
            body = _encode({"v": batch.v, "site": batch.site, "gateway": batch.gateway, "seq": batch.seq,
                            "readings": [_wire_reading(r)]})
            out.quarantined.append(self.quarantine.record(
                m.received_ms, m.topic, "impossible_value",
                f"readings[{i}] ({r.meter}, ts_ms {r.ts_ms}): {name} = {v!r} claimed good is outside the "
                f"possible range [{lo:g}, {hi:g}] {QUANTITIES[name].unit}", body, batch.site))
        return readings if keep is None else keep

    def _misstamped(self, m: InboundMessage, batch: batch_decoder.Batch, readings: list[batch_decoder.Reading],
                    backwards: list[int], out: Admitted) -> list[batch_decoder.Reading]:
        """The readings without those stamped before their meter's readings of earlier batches
        (each quarantined on its own as `clock_backwards`)."""
        bad = set(backwards)
        for i in backwards:
            r = readings[i]
            body = _encode({"v": batch.v, "site": batch.site, "gateway": batch.gateway, "seq": batch.seq,
                            "readings": [_wire_reading(r)]})
            out.quarantined.append(self.quarantine.record(
                m.received_ms, m.topic, "clock_backwards",
                f"{r.meter} ts_ms {r.ts_ms} in batch {batch.seq} is stamped before a reading of the same meter in an "
                f"earlier batch: the gateway's clock went backwards (the next reading in order carries the energy)",
                body, batch.site))
        return [r for i, r in enumerate(readings) if i not in bad]

    def _resolve(self, messages: list[InboundMessage], doubtful: list[_Doubtful], out: Admitted) -> None:
        """Each doubtful reading is a duplicate (same as its first copy), a conflict (different:
        the first wins), or new after all (older than the index knows, and not stored)."""
        by_site: dict[str, dict[str, list[int]]] = {}
        for d in doubtful:
            by_site.setdefault(d.site, {}).setdefault(d.reading.meter, []).append(d.reading.ts_ms)
        firsts = {site: self.first_copies.find(site, wanted, out.rows) for site, wanted in by_site.items()}
        for d in doubtful:
            r = d.reading
            found = firsts[d.site]
            first = None if found is None else found.get((r.meter, r.ts_ms))
            if first is None:
                if d.kind == BEYOND and self.dedup.fresh(d.site, [r]):
                    row = _row((d.site, d.gateway, r.meter, r.ts_ms, r.quality, r.values, r.value_quality))
                    out.origins.append((d.index, len(out.rows), len(out.rows) + 1))
                    out.rows.append(row)
                    if found is not None:
                        found[(r.meter, r.ts_ms)] = row  # a second copy in this cycle meets this one
                else:
                    out.duplicates += 1  # seen, but its first copy is out of reach: as before, a duplicate
            elif same_reading(r.quality, r.values, r.value_quality, first):
                out.duplicates += 1
            else:
                self._conflict(messages[d.index], d, first, out)

    def _conflict(self, m: InboundMessage, d: _Doubtful, first: StoredReading, out: Admitted) -> None:
        r = d.reading
        out.conflicts.append((d.site, r.meter))
        log.warning("CONFLICT %s/%s at ts_ms %d: a copy says %s %s, the first said %s %s; the first is kept",
                    d.site, r.meter, r.ts_ms, r.quality, r.values, first.quality, first.values)
        body = _encode({"v": 1, "site": d.site, "gateway": d.gateway, "seq": d.seq, "readings": [_wire_reading(r)]})
        out.quarantined.append(self.quarantine.record(
            m.received_ms, m.topic, "conflict",
            f"{r.meter} ts_ms {r.ts_ms}: {r.quality} {r.values} differs from the first copy "
            f"{first.quality} {first.values}, which is kept", body, d.site))

    def _status(self, m: InboundMessage, site_id: str, gateway_id: str, out: Admitted) -> None:
        if not m.payload:
            return  # a cleared retained message
        if site_id not in self.sites:
            raise WireFormatError("unknown_site", f"site {site_id!r} is not in this service's site files")
        if (site_id, gateway_id) not in self._meters:
            raise WireFormatError("unknown_gateway", f"site {site_id} has no gateway {gateway_id!r}")
        out.statuses[(site_id, gateway_id)] = wire.decode_status(m.payload, m.topic)

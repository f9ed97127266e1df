"""What a footprint rests on, named by digests an auditor can recompute (docs/audit.md).

Every footprint record carries:
- `evidence_root`: the RFC 6962 Merkle root over the *segments* of the gateways' chains that hold
  the window's readings. For a window [start, end) and each chain with a batch whose first
  reading lies in [start − 24 h, end), the segment runs from the last batch starting before
  `start` (the one that may straddle it; else the first starting in the window) to the last
  batch starting before `end`, its *head*, in the order (first reading, seq). The head's hash,
  signed by the gateway, vouches through the `prev` links for every batch of the segment, hence
  for every reading in them: the leaf `segment <gateway> <chain> <first> <last> <head hash>` is
  a digest over those readings. Leaves are sorted by gateway, then chain.
- `evidence_batches`: batches of those segments in the store; `evidence_complete`: every seq of
  every segment is there and no unsigned batch holds a reading of the window.
- `dataset_digest`: SHA-256 over the factor dataset's content (`FactorDataset.digest`) beside
  its id and version.
- `instruments_root`: the Merkle root over the certificates and contracts of the site whose
  period overlaps the window, each leaf `certificate <serial> <sha256 of its record>` or
  `contract <id> <sha256 of its record>` (canonical JSON: sorted keys, no spaces), sorted.

The same functions compute them from the store (accounting, live) and from a bundle's batches
(`tanji audit verify`), so the two can only agree when the evidence is the same.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from accounting.audit.merkle import merkle_root
from accounting.store.evidence import MAX_BATCH_SPAN_MS, EvidenceStore, Segment, StoredBatch

#: The record fields this module fills (defined in `accounting.engine.results.ProductFootprint`).
EVIDENCE_FIELDS = ("evidence_root", "evidence_batches", "evidence_complete", "dataset_digest", "instruments_root")


def segment_leaf(s: Segment) -> bytes:
    return f"segment {s.gateway} {s.chain} {s.first} {s.last} {s.head}".encode()


def segments_root(segments: Sequence[Segment]) -> str:
    return merkle_root([segment_leaf(s) for s in sorted(segments, key=lambda s: (s.gateway, s.chain))])


def window_segments(store: EvidenceStore, site: str, start_ms: int, end_ms: int) -> list[Segment]:
    """The chain segments holding the readings of [start_ms, end_ms), from the store."""
    since = start_ms - MAX_BATCH_SPAN_MS
    heads = store.chain_heads(site, before_ms=end_ms, since_ms=since)
    tails = store.chain_tails(site, before_ms=start_ms, since_ms=since)
    firsts = store.first_batches(site, since_ms=start_ms, before_ms=end_ms) if len(tails) < len(heads) else {}
    out = []
    for (gateway, chain), (last, head) in sorted(heads.items()):
        first = min(tails.get((gateway, chain), firsts.get((gateway, chain), last)), last)
        out.append(Segment(gateway, chain, first, last, head,
                           store.count_batches(site, gateway, chain, first, last)))
    return out


def segments_from_batches(batches: Iterable[StoredBatch], start_ms: int, end_ms: int) -> list[Segment]:
    """The same rule over batches in hand (a bundle's): what `window_segments` computes from a store."""
    since = start_ms - MAX_BATCH_SPAN_MS
    chains: dict[tuple[str, str], list[StoredBatch]] = {}
    for b in batches:
        if b.chain is not None:
            chains.setdefault((b.gateway, b.chain), []).append(b)
    out = []
    for (gateway, chain), members in sorted(chains.items()):
        order = sorted(members, key=lambda b: (b.min_ts_ms, b.seq % 1_000_000))
        before_end = [b for b in order if since <= b.min_ts_ms < end_ms]
        if not before_end:
            continue
        head = before_end[-1]
        before_start = [b for b in order if since <= b.min_ts_ms < start_ms]
        in_window = [b for b in order if start_ms <= b.min_ts_ms < end_ms]
        first = before_start[-1].seq if before_start else in_window[0].seq
        first = min(first, head.seq)
        present = len({b.seq for b in members if first <= b.seq <= head.seq})
        out.append(Segment(gateway, chain, first, head.seq, head.hash, present))
    return out


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _month_span(month: str, tz: ZoneInfo) -> tuple[int, int]:
    year, m = int(month[:4]), int(month[5:7])
    start = datetime(year, m, 1, tzinfo=tz)
    end = datetime(year + (m == 12), m % 12 + 1, 1, tzinfo=tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def _period_span(period: Any, tz: ZoneInfo) -> tuple[int, int] | None:
    """The time an instrument's period covers: a year `YYYY`, a month `YYYY-MM`, or an hour (UTC ms)."""
    if isinstance(period, int | float) and not isinstance(period, bool):
        return int(period), int(period) + 3_600_000
    text = str(period)
    try:
        if len(text) == 4:
            year = int(text)
            return (int(datetime(year, 1, 1, tzinfo=tz).timestamp() * 1000),
                    int(datetime(year + 1, 1, 1, tzinfo=tz).timestamp() * 1000))
        if len(text) >= 7:
            return _month_span(text[:7], tz)
    except ValueError:
        return None
    return None


def _overlaps(spans: Iterable[tuple[int, int] | None], start_ms: int, end_ms: int) -> bool:
    return any(s is not None and s[0] < end_ms and start_ms < s[1] for s in spans)


def instrument_leaves(claims: Sequence[Mapping[str, Any]], contracts: Sequence[Mapping[str, Any]],
                      start_ms: int, end_ms: int, timezone: str) -> list[bytes]:
    """The leaves of `instruments_root`: certificates (not bundled with a contract) and contracts
    whose period overlaps the window, each with the SHA-256 of its canonical record."""
    tz = ZoneInfo(timezone)
    leaves = []
    for c in claims:
        if c.get("contract_id"):
            continue  # a bundled certificate is part of its contract's record
        detail = c.get("detail") or {}
        period = detail.get("period") or str(c.get("generation_month", ""))[:4]
        if _overlaps([_period_span(period, tz), _period_span(c.get("generation_month", ""), tz)], start_ms, end_ms):
            leaves.append(f"certificate {c['serial']} {hashlib.sha256(canonical_json(dict(c))).hexdigest()}".encode())
    for k in contracts:
        spans = [_period_span(p, tz) for p, _ in k.get("deliveries") or ()]
        if _overlaps(spans, start_ms, end_ms):
            leaves.append(f"contract {k['contract_id']} {hashlib.sha256(canonical_json(dict(k))).hexdigest()}".encode())
    return sorted(leaves)


def window_evidence(store: EvidenceStore, site: str, start_ms: int, end_ms: int) -> dict[str, Any]:
    """`evidence_root`, `evidence_batches`, `evidence_complete` of a window, from the store."""
    segments = window_segments(store, site, start_ms, end_ms)
    complete = bool(segments) and all(s.present == s.last - s.first + 1 for s in segments) \
        and store.unsigned_batches(site, start_ms, end_ms) == 0
    return {"evidence_root": segments_root(segments) if segments else None,
            "evidence_batches": sum(s.present for s in segments), "evidence_complete": complete}


class FootprintEvidence:
    """Fills the evidence fields of a site's footprint records (`AccountingService.footprints`).

    A window's evidence is a few indexed store queries per chain; it is kept for `ttl_s`, so
    a dashboard asking every second does not ask the store every second.
    """

    def __init__(self, store: Any, ledger: Any, sites: Mapping[str, Any], *, ttl_s: float = 5.0) -> None:
        self.store = store
        self.ledger = ledger
        self.sites = sites
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, int, int], tuple[float, dict[str, Any]]] = {}

    def _window(self, site_id: str, start_ms: int, end_ms: int) -> dict[str, Any]:
        key = (site_id, start_ms, end_ms)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        site = self.sites[site_id]
        out: dict[str, Any] = {"evidence_root": None, "evidence_batches": 0, "evidence_complete": False}
        if site.signatures != "off" and isinstance(self.store, EvidenceStore):
            out = window_evidence(self.store, site_id, start_ms, end_ms)
        leaves = instrument_leaves(self.ledger.claims(site_id), self.ledger.contracts(site_id), start_ms, end_ms,
                                   site.timezone)
        out["instruments_root"] = merkle_root(leaves)
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[key] = (now, out)
        return out

    def annotate(self, site_id: str, dataset_digest: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in records:
            r.update(self._window(site_id, int(r["window_start_ms"]), int(r["window_end_ms"])))
            r["dataset_digest"] = dataset_digest
        return records

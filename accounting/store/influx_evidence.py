"""Signed batches and chain events in the InfluxDB store (`accounting.store.evidence`).

One point per batch in measurement `batch`, tagged by site, gateway and chain (`-` for an
unsigned batch), timed at its first reading with the sequence number in the nanoseconds
(`min_ts_ms × 10⁶ + seq mod 10⁶`), so "the last batch of a chain starting before T" is a
last-point query, and the order is the one the evidence rules use (min_ts, then seq). The point
holds the batch's chain position, hash, key id, `prev` and signature. A copy of a batch writes
the same point again. Chain events go to `chain_event`; resolving a gap writes its point again
with `resolved_ms`. A cycle's batch and chain-event points go to InfluxDB in the request
of its first readings, which is then sent at ns precision (`write_with_evidence`), or in one
request of their own when there are no readings to ride with (`write_evidence`).

Where the readings' exact bytes are: with an evidence log (`evidence_dir`, which the service
always has: `<state-dir>/evidence`, `accounting.store.evidence_log`), in the log, appended and
synced *before* the points are written, and the point's `ref` field names the record. Keeping
them in InfluxDB (the store without an evidence log, and every point written before the log
existed) costs most of what `signatures: required` cost at ingest (docs/audit.md "Figures"):
there they are zlib-compressed (ISA-L, ~3x faster than Python's zlib, same format) and
base64-encoded (`enc="zlib"`) in string fields `r0`, `r1`, … of at most 16,000 characters each
(InfluxDB 1.x caps a string field at 64 KB); a point without `enc` holds them as plain text.
All three kinds of point read back the same way.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Sequence
from typing import Any

from accounting.errors import EvidenceLogError
from accounting.store.base import EncodedReadings
from accounting.store.evidence import MAX_BATCH_SPAN_MS, ChainEvent, EvidenceStore, StoredBatch
from accounting.store.evidence_log import EvidenceLog

try:
    from isal.isal_zlib import compress as _compress  # the zlib format, ~3x faster (docstring)

    _LEVEL = 2
except ImportError:  # pragma: no cover - isal is an accounting dependency; zlib writes the same format
    from zlib import compress as _compress

    _LEVEL = 1

BATCHES = "batch"
CHAIN_EVENTS = "chain_event"
_CHUNK = 16_000
_NONE = "-"


def _escape(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tag(value: str) -> str:
    return value.replace(",", r"\,").replace(" ", r"\ ").replace("=", r"\=")


def ms_to_ns(body: bytes, head: bytes = b"") -> bytes:
    """Line protocol written at ms precision, as ns: every line ends with its timestamp, so six
    zeros appended to each line multiply each by 10⁶ (a newline is never inside a line: the
    protocol escapes it in string fields). `head` (lines already at ns) goes before it, in the
    same join: a cycle's first request is ~1.5 MB, and each copy of it was fresh memory."""
    body = body.rstrip(b"\n")
    return b"".join((head, body.replace(b"\n", b"000000\n"), b"000000")) if body else head


def order_ns(min_ts_ms: int, seq: int) -> int:
    """A batch's point time: its first reading, with its seq in the nanoseconds."""
    return min_ts_ms * 1_000_000 + seq % 1_000_000


def batch_line(b: StoredBatch, ref: str | None = None, *, keep_readings: bool = True) -> bytes:
    """A batch's point: naming its record in the evidence log (`ref`), holding its readings'
    bytes itself (`keep_readings`, the store without a log), or neither (an unsigned batch)."""
    if ref is not None and b.key is not None and b.sig is not None:  # the rule: a signed batch, its bytes in the log
        prev = f",prev={_escape(b.prev)}" if b.prev is not None else ""  # the general path's line, in one format
        return (f"{BATCHES},site={_tag(b.site)},gateway={_tag(b.gateway)},chain={_tag(b.chain or _NONE)} "
                f"seq={b.seq}i,hash={_escape(b.hash)},min_ts={b.min_ts_ms}i,max_ts={b.max_ts_ms}i,n={b.n}i,"
                f"received_ms={b.received_ms}i,ref={_escape(ref)},key={_escape(b.key)}{prev},sig={_escape(b.sig)} "
                f"{order_ns(b.min_ts_ms, b.seq)}").encode()
    fields = [f"seq={b.seq}i", f"hash={_escape(b.hash)}", f"min_ts={b.min_ts_ms}i", f"max_ts={b.max_ts_ms}i",
              f"n={b.n}i", f"received_ms={b.received_ms}i"]
    parts: list[str] = []
    if ref is not None:
        fields.append(f"ref={_escape(ref)}")
    elif keep_readings:
        text = base64.b64encode(_compress(b.readings, _LEVEL)).decode("ascii")
        parts = [text[i:i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]
        fields += [f"parts={len(parts)}i", 'enc="zlib"']
    for name, value in (("key", b.key), ("prev", b.prev), ("sig", b.sig)):
        if value is not None:
            fields.append(f"{name}={_escape(value)}")
    fields += [f"r{i}={_escape(p)}" for i, p in enumerate(parts)]
    return (f"{BATCHES},site={_tag(b.site)},gateway={_tag(b.gateway)},chain={_tag(b.chain or _NONE)} "
            f"{','.join(fields)} {order_ns(b.min_ts_ms, b.seq)}").encode()


def event_line(e: ChainEvent) -> bytes:
    fields = [f"chain={_escape(e.chain)}", f"seq_lo={e.seq_lo}i", f"seq_hi={e.seq_hi}i", f"detail={_escape(e.detail)}"]
    if e.resolved_ms is not None:
        fields.append(f"resolved_ms={e.resolved_ms}i")
    return (f"{CHAIN_EVENTS},site={_tag(e.site)},gateway={_tag(e.gateway)},kind={_tag(e.kind)} "
            f"{','.join(fields)} {order_ns(e.detected_ms, e.seq_lo)}").encode()


def _batch(rec: dict[str, Any], with_readings: bool, log: EvidenceLog | None = None) -> StoredBatch:
    chain = rec.get("chain")
    readings = b""
    if with_readings and rec.get("ref"):
        if log is None:
            raise EvidenceLogError(f"batch {rec['gateway']}#{rec['seq']} keeps its readings in the evidence log "
                                   f"({rec['ref']}): open the store with the service's state directory "
                                   "(--state-dir; its evidence/ directory)")
        readings = log.read(rec["ref"], rec["site"], rec["gateway"], rec["hash"])
    elif with_readings:
        readings = "".join(rec.get(f"r{i}") or "" for i in range(int(rec.get("parts") or 0))).encode()
        if rec.get("enc") == "zlib":
            readings = zlib.decompress(base64.b64decode(readings))
    return StoredBatch(rec["site"], rec["gateway"], int(rec["seq"]), rec["hash"],
                       None if chain in (None, _NONE) else chain, rec.get("key"), rec.get("prev"), rec.get("sig"),
                       int(rec["min_ts"]), int(rec["max_ts"]), int(rec["n"]), int(rec["received_ms"]), readings)


class InfluxEvidence(EvidenceStore):
    """Mixed into `InfluxStore`, which provides `_submit`, `_chunks`, `query`, `_quote` and
    `evidence_log` (None: the readings' bytes stay in InfluxDB)."""

    evidence_log: EvidenceLog | None = None

    def write_batches(self, batches: Sequence[StoredBatch]) -> None:
        self.write_evidence(batches, ())

    def write_chain_events(self, events: Sequence[ChainEvent]) -> None:
        self.write_evidence((), events)

    def write_evidence(self, batches: Sequence[StoredBatch], events: Sequence[ChainEvent]) -> None:
        """Batch and chain-event points in one request (ns precision: a batch's seq is in its time)."""
        lines = self._evidence_lines(batches, events)
        if lines:
            self._submit(self._chunks(lines), "ns")  # type: ignore[attr-defined]

    def write_with_evidence(self, encoded: EncodedReadings, batches: Sequence[StoredBatch],
                            events: Sequence[ChainEvent]) -> int:
        """A cycle's readings with its batch and chain-event points, the points riding in the
        readings' first request: one request fewer per cycle (and one write, one WAL sync fewer
        for influxd) than a request of their own. A request has one precision and the points
        need ns (their seq is in their time), so that request's readings go as ns too: their ms
        timestamps with six zeros appended, the same instants. The points come first in it, and
        the evidence log is durable before it is sent (`_evidence_lines`), so no reading is
        durable before its batch's record, and no record names bytes that are not."""
        lines = self._evidence_lines(batches, events)
        chunks = list(encoded.payload or ())
        if not lines:
            return self.write_encoded(encoded)  # type: ignore[attr-defined]
        if not chunks:
            self._submit(self._chunks(lines), "ns")  # type: ignore[attr-defined]
            return len(encoded.rows)
        self._submit([ms_to_ns(chunks[0], b"\n".join(lines) + b"\n")], "ns")  # type: ignore[attr-defined]
        self._submit(chunks[1:], "ms")  # type: ignore[attr-defined]
        return len(encoded.rows)

    def _evidence_lines(self, batches: Sequence[StoredBatch], events: Sequence[ChainEvent]) -> list[bytes]:
        """The points of a cycle's evidence; with an evidence log, the batches' bytes appended to it
        first, durably (one sync), so the points can name them."""
        log = self.evidence_log
        if log is None:
            lines = [batch_line(b) for b in batches]
        else:
            signed = [b for b in batches if b.readings]
            refs = iter(log.append([(b.site, b.gateway, b.hash, b.readings) for b in signed]))
            lines = [batch_line(b, next(refs) if b.readings else None, keep_readings=False) for b in batches]
        lines += [event_line(e) for e in events]
        return lines

    # -- reading -------------------------------------------------------------------------

    def _records(self, influxql: str) -> list[dict[str, Any]]:
        out = []
        for s in self.query(influxql):  # type: ignore[attr-defined]
            tags = s.get("tags", {})
            for row in s["values"]:
                out.append(dict(zip(s["columns"], row, strict=True)) | tags)
        return out

    def _where(self, site: str, gateway: str | None = None, chain: str | None = None) -> str:
        q = self._quote  # type: ignore[attr-defined]
        where = f"site = {q(site)}"
        if gateway is not None:
            where += f" AND gateway = {q(gateway)}"
        if chain is not None:
            where += f" AND chain = {q(chain)}"
        return where

    @staticmethod
    def _span(since_ms: int, before_ms: int) -> str:
        return f"time >= {order_ns(since_ms, 0)} AND time < {order_ns(before_ms, 0)}"

    _META = 'seq, hash, chain, "key", prev, sig, min_ts, max_ts, n, received_ms'  # KEY is an InfluxQL keyword

    def recent_batches(self, site: str, gateway: str, limit: int) -> list[StoredBatch]:
        recs = self._records(f"SELECT {self._META} FROM {BATCHES} WHERE {self._where(site, gateway)} "
                             f"AND chain != '{_NONE}' GROUP BY chain ORDER BY time DESC LIMIT {int(limit)}")
        return [_batch({**r, "site": site, "gateway": gateway}, False) for r in recs]

    def batch_hashes(self, site: str, gateway: str, chain: str, first: int, last: int) -> dict[int, str]:
        recs = self._records(f"SELECT seq, hash FROM {BATCHES} WHERE {self._where(site, gateway, chain)} "
                             f"AND seq >= {int(first)} AND seq <= {int(last)}")
        return {int(r["seq"]): r["hash"] for r in recs}

    def _last(self, site: str, since_ms: int, before_ms: int, order: str) -> dict[tuple[str, str], dict]:
        recs = self._records(f"SELECT seq, hash FROM {BATCHES} WHERE {self._where(site)} AND chain != '{_NONE}' "
                             f"AND {self._span(since_ms, before_ms)} GROUP BY gateway, chain "
                             f"ORDER BY time {order} LIMIT 1")
        return {(r["gateway"], r["chain"]): r for r in recs}

    def chain_heads(self, site: str, before_ms: int, since_ms: int) -> dict[tuple[str, str], tuple[int, str]]:
        return {k: (int(r["seq"]), r["hash"]) for k, r in self._last(site, since_ms, before_ms, "DESC").items()}

    def chain_tails(self, site: str, before_ms: int, since_ms: int) -> dict[tuple[str, str], int]:
        return {k: int(r["seq"]) for k, r in self._last(site, since_ms, before_ms, "DESC").items()}

    def first_batches(self, site: str, since_ms: int, before_ms: int) -> dict[tuple[str, str], int]:
        return {k: int(r["seq"]) for k, r in self._last(site, since_ms, before_ms, "ASC").items()}

    def count_batches(self, site: str, gateway: str, chain: str, first: int, last: int) -> int:
        return len(self.batch_hashes(site, gateway, chain, first, last))

    def unsigned_batches(self, site: str, start_ms: int, end_ms: int) -> int:
        recs = self._records(f"SELECT max_ts FROM {BATCHES} WHERE {self._where(site)} AND chain = '{_NONE}' "
                             f"AND {self._span(start_ms - MAX_BATCH_SPAN_MS, end_ms)}")
        return sum(1 for r in recs if int(r["max_ts"]) >= start_ms)

    def read_batches(self, site: str, start_ms: int, end_ms: int) -> list[StoredBatch]:
        recs = self._records(f"SELECT * FROM {BATCHES} WHERE {self._where(site)} AND {self._span(start_ms, end_ms)} "
                             "GROUP BY gateway, chain")
        return sorted((_batch(r, True, self.evidence_log) for r in recs),
                      key=lambda b: (b.gateway, b.chain or "", b.seq))

    def read_chain_batches(self, site: str, gateway: str, chain: str, first: int, last: int) -> list[StoredBatch]:
        recs = self._records(f"SELECT * FROM {BATCHES} WHERE {self._where(site, gateway, chain)} "
                             f"AND seq >= {int(first)} AND seq <= {int(last)} GROUP BY gateway, chain")
        return sorted((_batch(r, True, self.evidence_log) for r in recs), key=lambda b: b.seq)

    def chain_events(self, site: str | None = None, *, open_only: bool = False,
                     since_ms: int = 0) -> list[ChainEvent]:
        where = f"time >= {order_ns(since_ms, 0)}"
        if site is not None:
            where += f" AND site = {self._quote(site)}"  # type: ignore[attr-defined]
        recs = self._records(f"SELECT * FROM {CHAIN_EVENTS} WHERE {where} GROUP BY site, gateway, kind")
        out = []
        for r in recs:
            resolved = r.get("resolved_ms")
            event = ChainEvent(r["site"], r["gateway"], r["chain"], r["kind"], int(r["seq_lo"]), int(r["seq_hi"]),
                               int(r["time"]), r["detail"],  # query() asks for epoch ms
                               int(resolved) if resolved is not None else None)
            if open_only and (event.kind != "gap" or event.resolved_ms is not None):
                continue
            out.append(event)
        return sorted(out, key=lambda e: (e.detected_ms, e.gateway, e.seq_lo))

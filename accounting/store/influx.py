"""The production store: InfluxDB 1.8+/2.x/3.x, written through influxdb-client, read with InfluxQL.

Why it is built this way:
- Readings are formatted to line protocol in bulk (`reading_lines`), not as influxdb-client
  `Point`s, which cost ~5x more per reading (docs/storage.md, DESIGN.md); and off the store
  thread: `encode_readings` runs on ingest's admitting thread while the previous cycle's
  `write_encoded` waits on InfluxDB.
- Writes go through the client's synchronous `WriteService.post_write`, one HTTP request per
  `batch_lines` lines, gzipped at `gzip_level`. By default (`None`, `gzip_level_for`) that is
  level 1 when the bytes cross a network (~6x cheaper than the client's built-in level 9 for
  ~10% more bytes) and plain text when InfluxDB is on loopback, where compressing only costs
  CPU on both ends (measured: ~90k against ~124k readings/s). The client's batching mode
  buffers in memory and reports failures in
  a callback, which cannot tell ingest when a reading is durable; ingest acknowledges MQTT
  messages only after `write_readings` returns, so the write must be either accepted by
  InfluxDB or in the on-disk `SpillQueue` by then.
- While InfluxDB fails (connection refused, 5xx, 429), every write goes to the spill queue,
  and a flusher thread replays it in order with exponential backoff when InfluxDB returns.
  Memory stays bounded (one cycle's lines); the disk queue is bounded by `max_spill_bytes`,
  beyond which ingest blocks and the broker holds the messages.
- Exactly once: a point with the same measurement, tag set and timestamp overwrites itself,
  so replays (a redelivered MQTT message, a spilled write sent twice) are harmless as long as
  the tags are stable: they are only site, gateway and meter ids from the site files.
- History is read back with InfluxQL over `/query`, which 1.x, 2.x (bucket mapped to a
  DBRP) and 3.x all serve.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import threading
import urllib.parse
import urllib.request
from collections.abc import Sequence
from itertools import chain, count
from pathlib import Path
from typing import Any

import msgspec
from influxdb_client import InfluxDBClient, WritePrecision, WriteService
from influxdb_client.rest import ApiException

from accounting.errors import StoreRejectedError
from accounting.store.base import (
    ROW_GATEWAY,
    ROW_METER,
    ROW_QUALITY,
    ROW_SITE,
    ROW_TS,
    ROW_VALUE_QUALITY,
    ROW_VALUES,
    VALUE_NAMES,
    Channel,
    ChannelArrays,
    EncodedReadings,
    QuarantinedMessage,
    ReadingStore,
    StoredReading,
    good_columns,
    joined_arrays,
)
from accounting.store.evidence_log import EvidenceLog
from accounting.store.influx_evidence import InfluxEvidence
from accounting.store.spill import SpilledWrite, SpillQueue
from tanji.wire import QUALITY_CODES

try:  # the compiled pass (setup.py; optional: without a C compiler the Python pass runs)
    from accounting.store import _line_protocol
except ImportError:  # pragma: no cover - exercised where no compiler was found
    _line_protocol = None

log = logging.getLogger(__name__)

#: Which pass formats line protocol here: "compiled" or "python" (logged by the service at start).
LINE_PROTOCOL_PASS = "compiled" if _line_protocol is not None else "python"

READINGS = "reading"
FOOTPRINTS = "footprint"
QUARANTINE = "quarantine"
QUARANTINE_PAYLOAD_MAX = 64 * 1024
#: InfluxDB keeps time as int64 nanoseconds: the widest range a query may name, in ms.
#: A bound outside it (the old ``2**62`` ms sentinel) makes InfluxQL silently match nothing.
TIME_MIN_MS = -(2**63) // 1_000_000 + 1
TIME_MAX_MS = (2**63 - 1) // 1_000_000
_TAG_ESCAPE = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\="})
_PRECISIONS = {"ms": WritePrecision.MS, "ns": WritePrecision.NS}


def _tag(value: str) -> str:
    return value.translate(_TAG_ESCAPE)


def _string_field(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


#: site → gateway → meter → `reading,site=…,gateway=…,meter=… `: nested, so a cycle's prefixes are
#: three `map(dict.get)` passes over its rows' site, gateway and meter columns, with no key tuple
#: made and hashed per reading (in-process: 0.73 → 0.32 µs per reading, docs/storage.md "The
#: engine's kernels off the interpreter lock").
_PREFIXES: dict[str, dict[str, dict[str, bytes]]] = {}
_PREFIXES_MAX = 1_000_000  # tags are bounded by the site files; this only guards a misuse
_prefix_count = 0
_QUALITY_FIELDS = {q: f',quality="{q}" '.encode() for q in QUALITY_CODES}
_encode_json = msgspec.json.Encoder().encode
_JSON_TO_FIELDS = bytes.maketrans(b":", b"=")


def _prefix(site: str, gateway: str, meter: str) -> bytes:
    """`reading,site=…,gateway=…,meter=… ` for one meter, escaped once and then reused."""
    global _prefix_count
    if _prefix_count >= _PREFIXES_MAX:
        _PREFIXES.clear()
        _prefix_count = 0
    p = f"{READINGS},site={_tag(site)},gateway={_tag(gateway)},meter={_tag(meter)} ".encode()
    _PREFIXES.setdefault(site, {}).setdefault(gateway, {})[meter] = p
    _prefix_count += 1
    return p


def _prefixes(rows: Sequence[StoredReading]) -> list[bytes]:
    """Each row's line prefix: three C passes over the rows when every meter was seen before."""
    sites, gateways, meters = list(map(ROW_SITE, rows)), list(map(ROW_GATEWAY, rows)), list(map(ROW_METER, rows))
    try:
        found = list(map(dict.get, map(dict.get, map(_PREFIXES.get, sites), gateways), meters))
    except TypeError:  # a site or gateway not seen yet (dict.get of None)
        found = [None] * len(rows)
    if None in found:
        found = [p or _known_prefix(s, g, m) for p, s, g, m in zip(found, sites, gateways, meters, strict=True)]
    return found


def _known_prefix(site: str, gateway: str, meter: str) -> bytes:
    return _PREFIXES.get(site, {}).get(gateway, {}).get(meter) or _prefix(site, gateway, meter)


def reading_lines(rows: Sequence[StoredReading]) -> list[bytes]:
    """Line protocol for readings, ms precision: `reading,site=,gateway=,meter= <values>,quality="" ts`.

    Numbers are written without an `i` suffix, so InfluxDB stores every value as a float and a
    counter that happens to be integral (a PLC's units_total) never conflicts with the field's
    type. One line per reading, in order (`reading_chunks` writes them as request bodies).
    """
    if not rows:
        return []
    lines = reading_chunks(rows, len(rows))[0].split(b"\n")
    return lines if len(lines) == len(rows) else _reading_lines_per_row(rows)  # a newline in a tag


def reading_chunks(rows: Sequence[StoredReading], per_chunk: int) -> list[bytes]:
    """`reading_lines` joined by newlines into request bodies of at most `per_chunk` lines.

    Formatting is the store's hottest loop, and Python's float repr (~350 ns for a 17-digit
    value) was most of it. The common reading (all values numbers, no per-value quality) is
    written by msgspec's JSON encoder instead, whose shortest round-trip digits are also valid
    line protocol: `{"a":1.5,"b":2}` minus `{}"` with `:` as `=` is the field set `a=1.5,b=2`.
    Quantity names are catalogue identifiers, so they need no escaping. Anything else (a null
    value, value_quality, no values, a quality outside the codes) takes the general path,
    `_general_fields`.

    And the whole cycle at once (issue #20: a Python loop per reading, a `%` per line and a
    join per body cost ~1.5 µs of the admitting thread per reading; `_python_chunks` ~0.9):
    every reading's values encoded as one JSON array and cut into field sets. The cutting and
    the lines are one compiled pass (accounting/store/_line_protocol.c; ~0.77 → ~0.26 µs a
    reading in one scratch run, docs/storage.md "Compiled passes"), which copies msgspec's digits, so its output
    is `_python_chunks`' byte for byte; `_reading_lines_per_row` is the loop per row both
    replace (tests compare all three).
    """
    if not rows:
        return []
    values = list(map(ROW_VALUES, rows))
    blob = _encode_json(values)
    if _line_protocol is not None:
        bodies = _line_protocol.bodies(rows, blob, _PREFIXES, _QUALITY_FIELDS, per_chunk, _general_fields)
        if bodies is not None:
            return bodies
    return _python_chunks(rows, values, blob, per_chunk)


def _python_chunks(rows: Sequence[StoredReading], values: list[dict[str, float | None]], blob: bytes,
                   per_chunk: int) -> list[bytes]:
    """`reading_chunks` in Python: where the compiled pass is not built, and for what it leaves
    (a meter met for the first time, whose prefix this caches; anything outside msgspec's shape
    of a list of flat dicts of numbers)."""
    # [{"a":1.5},{},{"b":2}] → a=1.5},},b=2 → a=1.5 | (empty) | b=2
    fields = blob[1:-2].translate(_JSON_TO_FIELDS, b'{"').split(b"},")
    if len(fields) != len(rows):  # a name the catalogue would never allow; format row by row
        return _chunked(_reading_lines_per_row(rows), per_chunk)
    prefixes = _prefixes(rows)
    qualities = list(map(ROW_QUALITY, rows))
    quality_fields = list(map(_QUALITY_FIELDS.get, qualities))
    vqs = list(map(ROW_VALUE_QUALITY, rows))
    if any(vqs) or b"" in fields or None in quality_fields or b"null" in blob:
        for i, (f, vq, q) in enumerate(zip(fields, vqs, quality_fields, strict=True)):
            if vq or not f or q is None or b"null" in f:
                fields[i], quality_fields[i] = _general_fields(qualities[i], values[i], vq), b" "
    stamps = list(map(ROW_TS, rows))
    out = []
    for i in range(0, len(rows), per_chunk):
        j = min(len(rows), i + per_chunk)
        out.append((b"%s%s%s%d\n" * (j - i - 1) + b"%s%s%s%d") % tuple(chain.from_iterable(
            zip(prefixes[i:j], fields[i:j], quality_fields[i:j], stamps[i:j], strict=True))))
    return out


def _chunked(lines: Sequence[bytes], per_chunk: int) -> list[bytes]:
    return [b"\n".join(lines[i:i + per_chunk]) for i in range(0, len(lines), per_chunk)]


def _reading_lines_per_row(rows: Sequence[StoredReading]) -> list[bytes]:
    """`reading_lines`, one reading at a time."""
    qualities = _QUALITY_FIELDS
    encode, table = _encode_json, _JSON_TO_FIELDS
    out: list[bytes] = []
    append = out.append
    for site, gateway, meter, ts_ms, quality, values, vq in rows:
        p = _known_prefix(site, gateway, meter)
        fields = encode(values).translate(table, b'{}"')
        if vq or not fields or b"null" in fields or quality not in qualities:
            append(_general_line(p, quality, values, vq, ts_ms))
        else:
            append(b"%s%s%s%d" % (p, fields, qualities[quality], ts_ms))
    return out


def _general_line(prefix: bytes, quality: str, values: dict[str, float | None], vq: dict[str, str] | None,
                  ts_ms: int) -> bytes:
    return b"%s%s %d" % (prefix, _general_fields(quality, values, vq), ts_ms)


def _general_fields(quality: str, values: dict[str, float | None], vq: dict[str, str] | None) -> bytes:
    """The field set of any reading (`repr` of each number, quality, value_quality)."""
    fields = [f"{name}={float(v)!r}" for name, v in values.items() if v is not None]
    fields.append(f'quality="{quality}"')
    if vq:
        fields.append(f"value_quality={_string_field(json.dumps(vq))}")
    return ",".join(fields).encode()


def gzip_level_for(url: str) -> int:
    """The default compression: 1 across a network, 0 (plain text) to an InfluxDB on this host."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    loopback = host == "localhost" or host == "::1" or host.startswith("127.")
    return 0 if loopback else 1


#: What InfluxDB answers about the content of a write (bad line protocol, field type conflict,
#: points beyond the retention period, too large). Other 4xx (401, 403, 404: token, bucket)
#: are about its configuration and are retried like an outage, so nothing is thrown away.
_REFUSED_STATUS = frozenset({400, 413, 422})


class InfluxWriteError(StoreRejectedError):
    """InfluxDB refused a write for its content (400, 413, 422): retrying cannot help."""


class InfluxStore(InfluxEvidence, ReadingStore):
    """A `ReadingStore` on InfluxDB. `database` (for InfluxQL) defaults to the bucket's db part."""

    def __init__(self, url: str, *, token: str = "", org: str = "-", bucket: str, spill_dir: str | Path,
                 database: str | None = None, batch_lines: int = 10_000, max_spill_bytes: int = 2 * 1024**3,
                 timeout_ms: int = 10_000, max_backoff_s: float = 10.0, gzip_level: int | None = None,
                 evidence_dir: str | Path | None = None, concurrent_writes: int = 2) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.org = org
        self.bucket = bucket
        self.database = database or bucket.split("/")[0]
        self.batch_lines = batch_lines
        self.gzip_level = gzip_level_for(self.url) if gzip_level is None else gzip_level
        self.max_backoff_s = max_backoff_s
        # Cycles whose writes ingest keeps in flight at once (`_submit`, pipeline.py): while one
        # request waits on InfluxDB the next is already on its way, so influxd is never idle
        # between two of ingest's requests (one at a time left it idle ~half the drain).
        self.concurrent_writes = max(1, concurrent_writes)
        self.spill = SpillQueue(spill_dir, max_spill_bytes)
        # Signed batches' bytes: in an append-only log beside the spill queue, not in InfluxDB
        # (accounting/store/influx_evidence.py); opened for writing at the first write or `open_evidence`.
        self.evidence_log = EvidenceLog(evidence_dir) if evidence_dir is not None else None
        self._client = InfluxDBClient(url=self.url, token=token, org=org, enable_gzip=False,
                                      timeout=timeout_ms, retries=False)
        self._write_service = WriteService(self._client.api_client)
        self._failed_lock = threading.Lock()
        self._quarantine_seq = count(1)  # next() is atomic: writers call `quarantine` at once
        self._stop = threading.Event()
        self.writes_failed = 0
        self._flusher = threading.Thread(target=self._flush_loop, name="influx-spill-flusher", daemon=True)
        self._flusher.start()

    # -- writing --------------------------------------------------------------------------

    def open_evidence(self) -> None:
        """Recover, check and open the evidence log for appending (the service, at start: damage
        is named now, not at the first signed cycle; accounting/store/evidence_log.py)."""
        if self.evidence_log is not None:
            self.evidence_log.open()

    def _post(self, body: bytes, precision: str) -> None:
        kwargs = {}
        if self.gzip_level > 0:
            body = gzip.compress(body, self.gzip_level)
            kwargs["content_encoding"] = "gzip"
        try:
            self._write_service.post_write(org=self.org, bucket=self.bucket, body=body,
                                           precision=_PRECISIONS[precision],
                                           content_type="text/plain; charset=utf-8", **kwargs)
        except ApiException as exc:
            if exc.status in _REFUSED_STATUS:
                raise InfluxWriteError(f"InfluxDB refused the write: {exc.status} {str(exc.body)[:500]}") from exc
            if exc.status in (401, 403, 404):
                log.error("InfluxDB answers %s to writes: check the token (TANJI_INFLUX_TOKEN), --influx-org and "
                          "--influx-bucket; retrying", exc.status)
            raise

    def _chunks(self, lines: Sequence[bytes]) -> list[bytes]:
        """Request bodies of at most `batch_lines` lines."""
        return _chunked(lines, self.batch_lines)

    def _submit(self, chunks: list[bytes], precision: str) -> None:
        """Send now, or spill: after this returns the lines are in InfluxDB or on disk.

        Several threads may submit at once (`concurrent_writes` cycles of ingest, the engine
        thread's footprints): no lock spans the requests. Order is kept where it matters: one
        caller's chunks go in order (a chunk that fails spills with every chunk after it), and a
        write that starts while anything is spilled is spilled behind it. What two callers
        have in flight at the same moment may land in either order; that is harmless, because
        they never hold the same point with different values: readings are written only as
        their first copy (conflicts are quarantined, accounting/ingest/conflicts.py), a
        quarantine point's time is unique, and the writes whose points are rewritten (a cycle's
        batches and chain events, footprints) are each written by one thread in order
        (pipeline.py orders the cycles' evidence writes)."""
        if not chunks:
            return
        for i, chunk in enumerate(chunks):
            if len(self.spill) == 0:
                try:
                    self._post(chunk, precision)
                    continue
                except InfluxWriteError:
                    raise
                except Exception as exc:  # connection refused, timeout, 5xx: spill and move on
                    with self._failed_lock:
                        self.writes_failed += 1
                    log.warning("InfluxDB write failed (%s); spilling to %s", exc, self.spill.directory)
            for rest in chunks[i:]:
                self.spill.append(rest, precision)
            return

    def _flush_loop(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            if not self.spill.wait_nonempty(0.5):
                continue
            writes = self.spill.head(4 * 1024 * 1024)
            try:
                self._post(b"\n".join(w.body for w in writes), writes[0].precision)
            except InfluxWriteError as exc:
                self._reject(writes, exc)
                continue
            except Exception as exc:
                log.info("InfluxDB still unavailable (%s); %d spilled writes wait, retry in %.1f s",
                         type(exc).__name__, len(self.spill), backoff)
                self._stop.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = 0.2
            self.spill.remove(writes)
            if not self.spill:
                log.info("spill queue drained into InfluxDB")

    def _reject(self, writes: list[SpilledWrite], exc: Exception) -> None:
        """Move writes InfluxDB will never accept aside (kept for an operator, not retried forever)."""
        rejected = self.spill.directory / "rejected"
        rejected.mkdir(exist_ok=True)
        for w in writes:
            (rejected / w.path.name).write_bytes(w.body)
        self.spill.remove(writes)
        log.error("InfluxDB rejected %d spilled writes for good (%s); kept in %s", len(writes), exc, rejected)

    def encode_readings(self, rows: Sequence[StoredReading]) -> EncodedReadings:
        return EncodedReadings(rows, reading_chunks(rows, self.batch_lines))

    def write_encoded(self, encoded: EncodedReadings) -> int:
        self._submit(encoded.payload, "ms")
        return len(encoded.rows)

    def split_first_write(self, encoded: EncodedReadings) -> tuple[EncodedReadings, EncodedReadings]:
        """The first request's chunk (the one the batch points ride in) and the other chunks;
        the first counts the rows, so the two writes' results add up to `write_encoded`'s."""
        chunks = list(encoded.payload or ())
        return EncodedReadings(encoded.rows, chunks[:1]), EncodedReadings((), chunks[1:])

    def write_footprints(self, site: str, start_ms: int, end_ms: int, computed_ms: int,
                         footprints: Sequence[dict[str, Any]]) -> None:
        lines = []
        for f in footprints:
            numbers = [f"{k}={float(v)!r}" for k, v in f.items()
                       if isinstance(v, int | float) and not isinstance(v, bool) and v == v]
            fields = ",".join([*numbers, f"end_ms={end_ms}i", f"computed_ms={computed_ms}i",
                               f"body={_string_field(json.dumps(f, default=str))}"])
            lines.append(f"{FOOTPRINTS},site={_tag(site)},product={_tag(str(f.get('product_id')))},"
                         f"dataset_version={_tag(str(f.get('dataset_version') or 'none'))} {fields} {start_ms}"
                         .encode())
        self._submit(self._chunks(lines), "ms")

    def quarantine(self, messages: Sequence[QuarantinedMessage]) -> None:
        lines = []
        for m in messages:
            seq = next(self._quarantine_seq) % 1_000_000
            payload = m.payload[:QUARANTINE_PAYLOAD_MAX].decode("utf-8", "backslashreplace")
            size = len(m.payload) if m.payload_bytes is None else m.payload_bytes
            digest = f",sha256={_string_field(m.sha256)}" if m.sha256 else ""
            lines.append(
                f"{QUARANTINE},reason={_tag(m.reason)},site={_tag(m.site or '_unknown')} "
                f"topic={_string_field(m.topic)},detail={_string_field(m.detail)},"
                f"payload={_string_field(payload)},payload_bytes={size}i{digest} "
                f"{m.received_ms * 1_000_000 + seq}".encode("utf-8", "backslashreplace"))
        self._submit(self._chunks(lines), "ns")

    def flush(self, timeout_s: float = 30.0) -> bool:
        return self.spill.wait_empty(timeout_s)

    # -- reading (InfluxQL) ----------------------------------------------------------------

    def query(self, influxql: str) -> list[dict[str, Any]]:
        """Run InfluxQL; returns the series of the first statement as dicts (name, tags, columns, values)."""
        params = urllib.parse.urlencode({"db": self.database, "q": influxql, "epoch": "ms"})
        request = urllib.request.Request(f"{self.url}/query?{params}", method="GET",
                                         headers={"Authorization": f"Token {self.token}",
                                                  "Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            body = json.loads(resp.read())
        result = body.get("results", [{}])[0]
        if "error" in result:
            raise RuntimeError(f"InfluxQL error: {result['error']} in {influxql!r}")
        return result.get("series", [])

    @staticmethod
    def _quote(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def _readings(self, series: list[dict[str, Any]]) -> list[StoredReading]:
        out = []
        for s in series:
            cols = s["columns"]
            tags = s.get("tags", {})
            for row in s["values"]:
                rec = dict(zip(cols, row, strict=True)) | tags
                vq = rec.get("value_quality")
                out.append(StoredReading(
                    rec["site"], rec["gateway"], rec["meter"], int(rec["time"]), rec["quality"],
                    {n: rec[n] for n in VALUE_NAMES if rec.get(n) is not None},
                    json.loads(vq) if vq else None))
        return out

    @staticmethod
    def _time_range(start_ms: int, end_ms: int) -> str:
        """``time >= start AND time < end`` with both bounds inside InfluxDB's time range."""
        lo = min(max(start_ms, TIME_MIN_MS), TIME_MAX_MS)
        hi = min(max(end_ms, TIME_MIN_MS), TIME_MAX_MS)
        return f"time >= {lo}ms AND time < {hi}ms"

    def read_readings(self, site: str, meter: str | None, start_ms: int, end_ms: int) -> list[StoredReading]:
        where = f"site = {self._quote(site)} AND {self._time_range(start_ms, end_ms)}"
        if meter is not None:
            where += f" AND meter = {self._quote(meter)}"
        rows = self._readings(self.query(f"SELECT * FROM {READINGS} WHERE {where}"))
        return sorted(rows, key=lambda r: (r.ts_ms, r.meter))

    def read_channel_arrays(self, site: str, channels: Sequence[Channel], start_ms: int,
                            end_ms: int) -> ChannelArrays:
        """One InfluxQL query per meter for only the fields asked."""
        by_meter: dict[str, list[tuple[int, str]]] = {}
        for i, (meter, quantity) in enumerate(channels):
            if quantity in VALUE_NAMES:
                by_meter.setdefault(meter, []).append((i, quantity))
        parts: list[ChannelArrays] = []
        for meter, wanted in by_meter.items():
            fields = ", ".join(f'"{q}"' for _, q in wanted)
            series = self.query(
                f"SELECT quality, value_quality, {fields} FROM {READINGS} WHERE site = {self._quote(site)} "
                f"AND meter = {self._quote(meter)} AND {self._time_range(start_ms, end_ms)}")
            for s in series:
                cols = s["columns"]
                rows = s["values"]
                if not rows:
                    continue
                columns = list(zip(*rows, strict=True))
                at = {name: k for k, name in enumerate(cols)}
                present = [(i, q) for i, q in wanted if q in at]
                vq_col = columns[at["value_quality"]] if "value_quality" in at else ()
                parts += good_columns(present, columns[at["time"]], columns[at["quality"]], vq_col,
                                      [columns[at[q]] for _, q in present])
        return joined_arrays(parts)

    #: JSON answers are large: stream a site an hour at a time.
    stream_window_ms = 3_600_000

    def reading_span(self, site: str) -> tuple[int, int] | None:
        where = f"WHERE site = {self._quote(site)}"
        first = self.query(f"SELECT FIRST(quality) FROM {READINGS} {where}")
        last = self.query(f"SELECT LAST(quality) FROM {READINGS} {where}")
        if not first or not last:
            return None
        return int(first[0]["values"][0][0]), int(last[0]["values"][0][0])

    def latest(self, site: str) -> dict[str, StoredReading]:
        series = self.query(f"SELECT * FROM {READINGS} WHERE site = {self._quote(site)} "
                            "GROUP BY meter ORDER BY time DESC LIMIT 1")
        return {r.meter: r for r in self._readings(series)}

    def recent_timestamps(self, site: str, meter: str, limit: int) -> list[int]:
        series = self.query(f"SELECT quality FROM {READINGS} WHERE site = {self._quote(site)} AND "
                            f"meter = {self._quote(meter)} ORDER BY time DESC LIMIT {int(limit)}")
        return sorted(int(row[0]) for s in series for row in s["values"])

    def read_footprints(self, site: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        series = self.query(f"SELECT body, end_ms FROM {FOOTPRINTS} WHERE site = {self._quote(site)} "
                            f"AND {self._time_range(start_ms, end_ms)}")
        return [json.loads(row[1]) for s in series for row in s["values"] if row[2] <= end_ms]

    def quarantined(self, limit: int = 100) -> list[QuarantinedMessage]:
        series = self.query(f"SELECT * FROM {QUARANTINE} ORDER BY time DESC LIMIT {int(limit)}")
        out = []
        for s in series:
            cols = s["columns"]
            for row in s["values"]:
                rec = dict(zip(cols, row, strict=True))
                site = rec.get("site")
                out.append(QuarantinedMessage(int(rec["time"]),
                                              rec["topic"], rec["reason"], rec["detail"],
                                              rec["payload"].encode(), None if site == "_unknown" else site,
                                              rec.get("payload_bytes"), rec.get("sha256")))
        return out

    def count_readings(self, site: str | None = None) -> int:
        where = f" WHERE site = {self._quote(site)}" if site is not None else ""
        series = self.query(f"SELECT COUNT(quality) FROM {READINGS}{where}")
        return int(series[0]["values"][0][1]) if series else 0

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._flusher.join(timeout=5)
        self._client.close()
        if self.evidence_log is not None:
            self.evidence_log.close()

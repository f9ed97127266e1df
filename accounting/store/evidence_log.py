"""The signed batches' exact bytes, kept append-only in the accounting service's state directory.

Why not in InfluxDB: a batch of 100 readings carries ~2.6 KB of signed JSON; kept as a
compressed, base64 string field it was most of what `signatures: required` cost at ingest
(accounting compressing, encoding and sending it, influxd parsing and storing it; docs/audit.md
"Figures"). InfluxDB keeps a small `batch` point per batch (chain position, hashes, signature)
whose `ref` field names the record here (`accounting/store/influx_evidence.py`).

Layout: `<state-dir>/evidence/evidence-NNNNNN.log` segment files, appended to in order; a new
segment starts when the current one reaches `segment_bytes`. A record is one frame:

    b"TEv1" | payload length (u32 LE) | CRC-32 of the payload (u32 LE) | payload

and the payload is the line `site<TAB>gateway<TAB>batch hash<LF>` followed by the readings'
exact bytes, so the log names what it holds without InfluxDB and a reference can be checked
against the batch that names it. A reference is `evidence-NNNNNN.log@<offset of the frame>`.

Durability: `append` writes a cycle's frames with one `writev` and one `fdatasync` (never one
per batch), on the store thread, and returns their references only then; the `batch` points
naming them are written after, and the cycle is acknowledged after those: "ack after durable"
holds for the evidence too.

Each batch once: a cycle whose store write is answered again (InfluxDB refusing part of it for
its content, pipeline.py's `_evidence_alone` then writing its batch points alone and one by one;
or a write retried until durable) asks for its batches' records again. The log remembers the
references of the last `REMEMBERED` records it appended to the current segment (by site,
gateway and batch hash, which covers the readings' digest: the same key is the same bytes) and
returns those instead of writing the records again; before, a refused cycle was appended three
times, and a retry loop once per try. Only a restart (or a new segment) forgets: a cycle
appended but never acknowledged comes again after one and is appended again, the earlier copy
then named by no point (harmless: export reads the records the points name, never the log in
order). An append that fails is cut back, so the segment never holds half a cycle before the
next one's records.

Recovery (`open`, at the service's start): the last segment is scanned. An incomplete frame at
its end, or a damaged last frame, is what a crash during an append leaves (that cycle was never
acknowledged, and its messages come again): the bytes are moved to `<segment>.torn-<offset>`
(kept for an operator, never deleted) and the segment is cut there, with a warning. A damaged
frame *followed by* an intact one is not a torn write: the segment is left exactly as it is
(nothing durable is dropped) and appending goes on in a new segment.

Earlier segments are checked at start too, within a bounded time however many years of them
there are: each one's *last* record must end exactly at the file's end with its checksum right
(found from the end, reading the last few KiB, not the segment), its first bytes must be a
frame header, and no segment number may be missing between the first and the last (pruning
removes old segments, never one between two kept). That finds a segment cut short (a copy or
a restore that stopped early, a filesystem repair) or replaced, and a segment lost; a record
altered in the middle of an earlier segment is found where it is read (export checks each
record's checksum and name, and says which batch, file and byte). What is found is damage an
operator must see, never a reason to stop ingest: each finding is logged as an ALARM naming
the segment and the byte (a damaged segment is scanned whole once to find the byte), kept in
`EvidenceLog.damage` (the service reports it in its audit status and raises it as an alarm),
and the service starts and appends as usual; the batches whose records are damaged fail export,
by name, until the segment is restored from a backup.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

from accounting.errors import EvidenceLogError

try:  # the same CRC-32 as zlib's, ~3x faster (1.2 µs against 3.9 for a batch's 13.6 KB)
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - isal is an accounting dependency
    from zlib import crc32 as _crc32

log = logging.getLogger(__name__)

MAGIC = b"TEv1"
_HEADER = struct.Struct("<4sII")
SEGMENT_BYTES = 64 * 1024 * 1024
_SEGMENT = re.compile(r"^evidence-(\d{6})\.log$")
#: Records whose references `append` remembers (a cycle holds at most a few hundred batches, and
#: a few cycles are in flight): a record asked for again within them is not written again.
REMEMBERED = 16_384
#: The largest payload a frame may claim (a batch's readings are far smaller); a larger length
#: is damage, not a record.
MAX_RECORD_BYTES = 64 * 1024 * 1024


def frame(site: str, gateway: str, batch_hash: str, readings: bytes) -> bytes:
    """One record as it is written."""
    return b"".join(frame_parts(site, gateway, batch_hash, readings))


def frame_parts(site: str, gateway: str, batch_hash: str,
                readings: bytes | memoryview) -> tuple[bytes, bytes, bytes | memoryview]:
    """`frame`'s bytes in three parts (header, name line, readings), so a cycle's records are
    written as they are (`_write_all`): the readings (~14 KB a batch of 100) are copied by the
    kernel into the file and nowhere else."""
    head = f"{site}\t{gateway}\t{batch_hash}\n".encode()
    return (_HEADER.pack(MAGIC, len(head) + len(readings), _crc32(readings, _crc32(head))), head,
            readings)


try:
    _IOV_MAX = max(16, min(os.sysconf("SC_IOV_MAX"), 1024))
except (AttributeError, ValueError, OSError):  # pragma: no cover - POSIX guarantees 16
    _IOV_MAX = 16


def _write_all(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    """Write `parts` in order, gathered by the kernel (`os.writev`, IOV_MAX parts a call: two calls
    for a cycle of 500 batches). Joining them first copied a cycle's ~7 MB once more, into
    memory fresh every cycle, on the store thread with the interpreter held. The same bytes reach
    the file either way; a write cut short by a crash is a torn tail, as before (`open`)."""
    for i in range(0, len(parts), _IOV_MAX):
        chunk = parts[i:i + _IOV_MAX]
        written = os.writev(fd, chunk)
        size = sum(len(p) for p in chunk)
        if written < size:  # a regular file takes it whole; be exact anyway
            rest = memoryview(b"".join(chunk))[written:]
            while rest:
                rest = rest[os.write(fd, rest):]


def segment_name(number: int) -> str:
    return f"evidence-{number:06d}.log"


def scan(data: bytes) -> tuple[int, int | None]:
    """(end of the intact frames from the start, offset of the first damaged frame or None when the
    rest is only an incomplete frame). An intact frame after a damaged one is found by `_intact_after`."""
    pos, size = 0, len(data)
    while pos < size:
        if size - pos < _HEADER.size:
            return pos, None
        magic, length, crc = _HEADER.unpack_from(data, pos)
        if magic != MAGIC or length > MAX_RECORD_BYTES:
            return pos, pos
        end = pos + _HEADER.size + length
        if end > size:
            return pos, None
        if zlib.crc32(data[pos + _HEADER.size:end]) != crc:
            return pos, pos
        pos = end
    return pos, None


def tail_intact(path: Path, size: int) -> bool:
    """Whether a segment ends with an intact record: a frame, found from the end, that ends
    exactly at `size` with its checksum right. Reads the last 64 KiB (a batch's record is ~14 KB),
    more only for a record larger than that."""
    window = 64 * 1024
    with open(path, "rb") as f:
        while True:
            start = max(0, size - window)
            f.seek(start)
            data = f.read(size - start)
            pos = data.rfind(MAGIC)
            while pos != -1:
                if len(data) - pos >= _HEADER.size:
                    _, length, crc = _HEADER.unpack_from(data, pos)
                    if pos + _HEADER.size + length == len(data) and zlib.crc32(data[pos + _HEADER.size:]) == crc:
                        return True
                pos = data.rfind(MAGIC, 0, pos)
            if start == 0 or window > MAX_RECORD_BYTES:
                return False
            window *= 4


def _intact_after(data: bytes, start: int) -> int | None:
    """The offset of the first intact frame after `start`, if any."""
    pos = data.find(MAGIC, start + 1)
    while pos != -1:
        if len(data) - pos >= _HEADER.size:
            _, length, crc = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + length
            if length <= MAX_RECORD_BYTES and end <= len(data) and zlib.crc32(data[pos + _HEADER.size:end]) == crc:
                return pos
        pos = data.find(MAGIC, pos + 1)
    return None


class EvidenceLog:
    """Append-only segment files of signed batches' bytes in `directory`.

    Readers (`read`) never change a file, so `tanji audit export` can read the log of a running
    service; only the writer (`open`, `append`) recovers a torn tail and appends.
    """

    def __init__(self, directory: str | Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self._fd: int | None = None
        self._number = 0
        self._size = 0
        self._lock = threading.Lock()
        self.syncs = 0
        self._appended: dict[tuple[str, str, str], str] = {}  # (site, gateway, hash) -> ref, oldest first
        #: What `open` found damaged (module docstring): {"segment", "offset", "detail"} each.
        self.damage: list[dict[str, object]] = []

    # -- writing --------------------------------------------------------------------------

    def open(self) -> None:
        """Make the directory, recover the last segment's tail (module docstring), open it for appending."""
        with self._lock:
            if self._fd is not None:
                return
            self.directory.mkdir(parents=True, exist_ok=True)
            numbers = self.segments()
            self._number = numbers[-1] if numbers else 1
            self.damage = self._check_earlier(numbers)
            path = self.directory / segment_name(self._number)
            fresh = not numbers
            if path.exists() and not self._recover(path):
                self._number += 1  # the damaged segment stays as it is; appending goes on after it
                path = self.directory / segment_name(self._number)
                fresh = True
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            self._size = os.fstat(self._fd).st_size
            if fresh:
                _sync_dir(self.directory)

    def _check_earlier(self, numbers: list[int]) -> list[dict[str, object]]:
        """The segments before the last: each present, beginning with a frame, ending with an
        intact record (module docstring). Each finding is logged as an ALARM."""
        found: list[dict[str, object]] = []
        present = set(numbers)
        for number in range(numbers[0], numbers[-1]) if numbers else ():
            path = self.directory / segment_name(number)
            if number not in present:
                found.append(self._damaged(path, 0, "is missing (deleted, or never restored from the backup)"))
                continue
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(_HEADER.size)
            if size and head[:len(MAGIC)] == MAGIC and tail_intact(path, size):
                continue
            end, damaged = scan(path.read_bytes())  # damaged: once, to name the byte
            if size and end == size:
                continue  # intact after all (a record larger than the end's window)
            if damaged is not None:
                detail = "holds a record that fails its checksum"
            elif size == 0:
                detail = "is empty"
            else:
                detail = f"ends in an incomplete record (cut short: {size - end} bytes of it left)"
            found.append(self._damaged(path, end, detail))
        return found

    def _damaged(self, path: Path, offset: int, detail: str) -> dict[str, object]:
        log.error("ALARM: evidence log segment %s %s, from byte %d: the batches whose records are there fail "
                  "export (each named) until it is restored from a backup; ingest goes on. Keep a copy of the file "
                  "as it is", path, detail, offset)
        return {"segment": path.name, "offset": offset, "detail": f"{path.name} {detail}, from byte {offset}"}

    def _recover(self, path: Path) -> bool:
        """Cut a torn tail off the last segment; False when it is damaged before intact records
        (left as it is: nothing durable is dropped, and appending goes on in a new segment)."""
        data = path.read_bytes()
        end, damaged = scan(data)
        if end == len(data):
            return True
        if damaged is not None:
            later = _intact_after(data, damaged)
            if later is not None:
                self.damage.append(self._damaged(
                    path, damaged, f"holds a record that fails its checksum, with intact records after it (from "
                                   f"byte {later}): not a write cut short by a crash, so nothing is cut, and "
                                   f"appending goes on in {segment_name(self._number + 1)}"))
                return False
        torn = path.with_name(f"{path.name}.torn-{end}")
        torn.write_bytes(data[end:])
        os.truncate(path, end)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        log.warning("evidence log %s ended in an incomplete record (%d bytes from byte %d: a write cut short by a "
                    "crash, never acknowledged, so its messages come again); moved to %s and the segment cut "
                    "there", path, len(data) - end, end, torn)
        return True

    def append(self, records: Sequence[tuple[str, str, str, bytes]]) -> list[str]:
        """Durably append (site, gateway, batch hash, readings) records: one writev, one sync; their
        references. A record appended shortly before is not written again (module docstring)."""
        if not records:
            return []
        if self._fd is None:
            self.open()
        with self._lock:
            if self._size >= self.segment_bytes:
                self._rotate()
            refs, parts, pos = [], [], self._size
            name = segment_name(self._number)
            appended = self._appended
            new: dict[tuple[str, str, str], str] = {}  # remembered only once durable
            for site, gateway, batch_hash, readings in records:
                key = (site, gateway, batch_hash)
                ref = appended.get(key) or new.get(key)
                if ref is not None:
                    refs.append(ref)
                    continue
                f = frame_parts(site, gateway, batch_hash, readings)
                ref = new[key] = f"{name}@{pos}"
                refs.append(ref)
                parts += f
                pos += _HEADER.size + len(f[1]) + len(readings)
            if not parts:
                return refs
            try:
                _write_all(self._fd, parts)  # type: ignore[arg-type]
                os.fdatasync(self._fd)  # type: ignore[arg-type]
            except BaseException:
                self._cut_back()
                raise
            self._size = pos
            self.syncs += 1
            appended.update(new)
            if len(appended) > REMEMBERED:
                for key in list(itertools.islice(appended, len(appended) - REMEMBERED)):
                    del appended[key]
            return refs

    def _cut_back(self) -> None:
        """After a failed append (disk full, I/O error): cut the segment back to its last durable
        record, so what was partly written is not a damaged record before the next cycle's, and
        the references `append` computes stay the offsets of their frames."""
        try:
            os.ftruncate(self._fd, self._size)  # type: ignore[arg-type]
        except OSError:
            log.exception("evidence log %s: cutting a failed append back to byte %d failed",
                          segment_name(self._number), self._size)
            self._size = os.fstat(self._fd).st_size  # type: ignore[arg-type]

    def _rotate(self) -> None:
        os.close(self._fd)  # type: ignore[arg-type]
        self._appended.clear()  # what `append` remembers is always in the segment being appended to
        self._number += 1
        self._fd = os.open(self.directory / segment_name(self._number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._size = 0
        _sync_dir(self.directory)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- reading --------------------------------------------------------------------------

    def segments(self) -> list[int]:
        """The segment numbers present, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.directory.iterdir() if (m := _SEGMENT.match(p.name)))

    def read(self, ref: str, site: str, gateway: str, batch_hash: str) -> bytes:
        """The readings' bytes of the record `ref` names, checked to be that batch's."""
        name, _, offset = ref.partition("@")
        path = self.directory / name
        if not _SEGMENT.match(name) or not offset.isdigit():
            raise EvidenceLogError(f"batch {gateway} {batch_hash[:16]}… names {ref!r}, which is no evidence reference")
        try:
            with open(path, "rb") as f:
                f.seek(int(offset))
                header = f.read(_HEADER.size)
                magic, length, crc = _HEADER.unpack(header) if len(header) == _HEADER.size else (b"", 0, 0)
                payload = f.read(length) if magic == MAGIC else b""
        except FileNotFoundError:
            raise EvidenceLogError(
                f"the readings of batch {gateway} {batch_hash[:16]}… are in {path}, which does not exist: pass the "
                "accounting service's --state-dir (its evidence/ directory holds the signed batches' bytes), or "
                "the segment was pruned") from None
        if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
            raise EvidenceLogError(f"the record of batch {gateway} {batch_hash[:16]}… at {path} byte {offset} is "
                                   "damaged (checksum mismatch or cut short)")
        head, _, readings = payload.partition(b"\n")
        if head != f"{site}\t{gateway}\t{batch_hash}".encode():
            raise EvidenceLogError(f"{path} byte {offset} holds {head.decode(errors='replace')!r}, not batch "
                                   f"{site} {gateway} {batch_hash}: is this the service's state directory?")
        return readings

    # -- retention ------------------------------------------------------------------------

    def prune(self, older_than_s: float, now: float | None = None) -> list[Path]:
        """Delete whole segments last written more than `older_than_s` ago, never the one being appended to."""
        cutoff = (time.time() if now is None else now) - older_than_s
        numbers = self.segments()
        removed = []
        for number in numbers[:-1]:  # the newest segment is the writer's
            path = self.directory / segment_name(number)
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        if removed:
            _sync_dir(self.directory)
            log.info("evidence log: pruned %d segment(s) last written before %s", len(removed),
                     time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(cutoff)))
        return removed


def _sync_dir(directory: Path) -> None:
    """Make a file's creation or removal durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

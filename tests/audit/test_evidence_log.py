"""The evidence log (signed batches' bytes in the state directory, beside the InfluxDB store): what
`append` returned survives a SIGKILL; a torn tail is recovered (moved aside, never deleted); a
damaged record followed by intact ones is kept and named (file, byte) while appending goes on;
earlier segments are checked from their ends at start; a reference is checked against the batch
naming it; whole old segments can be pruned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from accounting.errors import EvidenceLogError
from accounting.store.evidence_log import EvidenceLog, frame

REPO = Path(__file__).resolve().parents[2]


def records(n: int, start: int = 0) -> list[tuple[str, str, str, bytes]]:
    return [("site", "gw-1", f"{i:064x}", b'[{"meter":"m","ts_ms":%d}]' % i) for i in range(start, start + n)]


def written(directory: Path, n: int) -> tuple[Path, list[str]]:
    """A closed log of `n` records in its first segment: (that segment, the records' references)."""
    log = EvidenceLog(directory)
    refs = log.append(records(n))
    log.close()
    return directory / "evidence-000001.log", refs


def flipped(segment: Path, at: int) -> bytes:
    """Invert one byte of the segment (damage as a crash or bit rot leaves it); the new contents."""
    data = bytearray(segment.read_bytes())
    data[at] ^= 0xFF
    segment.write_bytes(bytes(data))
    return bytes(data)


def test_records_read_back_and_a_reference_is_checked_against_its_batch(tmp_path):
    log = EvidenceLog(tmp_path / "evidence")
    refs = log.append(records(3)) + log.append(records(2, start=3))
    assert log.syncs == 2, "one sync per append (per cycle), never per batch"
    assert [log.read(r, *rec[:3]) for r, rec in zip(refs, records(5), strict=True)] == [r[3] for r in records(5)]
    with pytest.raises(EvidenceLogError, match="is this the service's state directory"):
        log.read(refs[0], "site", "gw-1", records(2)[1][2])  # another batch's record
    with pytest.raises(EvidenceLogError, match="does not exist: pass the accounting service's --state-dir"):
        EvidenceLog(tmp_path / "elsewhere").read(refs[0], *records(1)[0][:3])
    log.close()


def test_a_torn_tail_is_moved_aside_and_the_intact_records_stay(tmp_path):
    segment, refs = written(tmp_path, 4)
    intact = segment.stat().st_size
    torn = frame(*records(1, start=4)[0])
    with open(segment, "ab") as f:  # a crash in the middle of the next cycle's write
        f.write(torn[:len(torn) // 2])
    log = EvidenceLog(tmp_path)
    log.open()
    assert segment.stat().st_size == intact
    assert (tmp_path / f"evidence-000001.log.torn-{intact}").read_bytes() == torn[:len(torn) // 2], "kept aside"
    assert [log.read(r, *rec[:3]) for r, rec in zip(refs, records(4), strict=True)] == [r[3] for r in records(4)]
    [again] = log.append(records(1, start=4))  # the unacknowledged batch comes again
    assert again == f"evidence-000001.log@{intact}" and log.read(again, *records(1, start=4)[0][:3])
    log.close()


def test_a_damaged_last_record_is_a_torn_write(tmp_path):
    segment, refs = written(tmp_path, 3)
    last = int(refs[2].split("@")[1])
    flipped(segment, segment.stat().st_size - 3)  # the length arrived, the data did not (as a crash may leave it)
    log = EvidenceLog(tmp_path)
    log.open()
    assert segment.stat().st_size == last and (tmp_path / f"evidence-000001.log.torn-{last}").exists()
    assert log.read(refs[1], *records(3)[1][:3]) == records(3)[1][3]
    log.close()


def test_a_damaged_record_before_intact_ones_is_kept_and_appending_goes_on_after_it(tmp_path, caplog):
    """Bit rot inside a durable record of the last segment is not a torn write: nothing is cut,
    the service starts (ingest never stops on it), the segment and byte are named as an ALARM, and
    appending goes on in a new segment."""
    segment, refs = written(tmp_path, 3)
    middle = int(refs[1].split("@")[1])
    data = flipped(segment, middle + 20)
    log = EvidenceLog(tmp_path)
    log.open()
    assert [(d["segment"], d["offset"]) for d in log.damage] == [("evidence-000001.log", middle)]
    assert f"ALARM: evidence log segment {segment} holds a record that fails its checksum" in caplog.text
    assert f"from byte {middle}" in caplog.text and "ingest goes on" in caplog.text
    [new] = log.append(records(1, start=3))
    assert new == "evidence-000002.log@0" and segment.read_bytes() == data, "nothing was cut"
    assert log.read(refs[2], *records(3)[2][:3]) == records(3)[2][3], "the intact records after it still read"
    with pytest.raises(EvidenceLogError, match=f"at {segment} byte {middle} is damaged"):
        log.read(refs[1], *records(3)[1][:3])
    log.close()


def test_earlier_segments_cut_short_altered_at_the_end_or_lost_are_named_at_start(tmp_path, caplog):
    """Only the last segment is scanned at start; each earlier one is checked from its end (its last
    record intact and ending at the file's end) and its first header, and the numbers must run
    without a hole. What is found is an ALARM naming the segment and the byte; the log opens and
    appends as usual."""
    log = EvidenceLog(tmp_path, segment_bytes=200)
    refs = []
    for i in range(12):
        refs += log.append(records(1, start=i))
    log.close()
    assert log.segments() == [1, 2, 3, 4, 5, 6]
    last_of = {n: max(int(r.split("@")[1]) for r in refs if r.startswith(f"evidence-{n:06d}")) for n in range(1, 7)}
    seg = {n: tmp_path / f"evidence-{n:06d}.log" for n in range(1, 7)}
    flipped(seg[2], seg[2].stat().st_size - 5)  # the last record of segment 2 altered
    os.truncate(seg[3], seg[3].stat().st_size - 7)  # segment 3 cut short by a copy that stopped early
    seg[4].unlink()  # segment 4 lost
    seg[5].write_bytes(b"")  # segment 5 emptied
    caplog.clear()
    log = EvidenceLog(tmp_path, segment_bytes=200)
    log.open()
    assert [(d["segment"], d["offset"]) for d in log.damage] == [
        ("evidence-000002.log", last_of[2]), ("evidence-000003.log", last_of[3]), ("evidence-000004.log", 0),
        ("evidence-000005.log", 0)]
    details = [d["detail"] for d in log.damage]
    assert "fails its checksum" in details[0] and "ends in an incomplete record" in details[1]
    assert "is missing" in details[2] and "is empty" in details[3]
    assert caplog.text.count("ALARM: evidence log segment") == 4
    assert log.read(refs[0], *records(1)[0][:3]) == records(1)[0][3], "segment 1 is intact"
    [ref] = log.append(records(1, start=50))  # appending goes on after segment 6
    assert int(ref[9:15]) >= 6 and log.read(ref, *records(1, start=50)[0][:3]) == records(1, start=50)[0][3]
    log.close()


def test_checking_earlier_segments_reads_their_ends_only(tmp_path):
    """The start-up check is bounded however many years of segments there are: per earlier segment
    it reads its first header and its last record's neighbourhood, not the segment."""
    from accounting.store.evidence_log import tail_intact

    log = EvidenceLog(tmp_path, segment_bytes=2_000_000)
    big = [("site", "gw-1", f"{i:064x}", b"r" * 14_000) for i in range(200)]  # ~2.8 MB: two segments
    log.append(big[:150])
    log.append(big[150:])
    log.close()
    first = tmp_path / "evidence-000001.log"
    assert log.segments() == [1, 2] and first.stat().st_size > 2_000_000

    def bytes_read() -> int:  # by this process's read calls, page cache or not (proc(5) `rchar`)
        return int(next(line for line in Path("/proc/self/io").read_text().splitlines()
                        if line.startswith("rchar:")).split()[1])

    before = bytes_read()
    assert tail_intact(first, first.stat().st_size)
    read_first = bytes_read() - before
    assert 0 < read_first <= 64 * 1024 + 4096, read_first  # the window, and /proc/self/io itself
    before = bytes_read()
    EvidenceLog(tmp_path).open()  # segment 1 checked from its ends, segment 2 (the last) scanned
    assert bytes_read() - before <= (tmp_path / "evidence-000002.log").stat().st_size + 2 * 64 * 1024 + 4096



def test_what_append_returned_is_there_after_a_sigkill(tmp_path):
    """A child appends cycles and prints each cycle's references once `append` returned (when the
    pipeline would acknowledge); SIGKILLed mid-stream, every printed reference reads back."""
    script = textwrap.dedent("""
        import sys
        from accounting.store.evidence_log import EvidenceLog
        log = EvidenceLog(sys.argv[1], segment_bytes=20_000)
        i = 0
        while True:
            recs = [("site", "gw-1", f"{i + k:064x}", b"x" * (200 + (i + k) % 50)) for k in range(5)]
            refs = log.append(recs)
            print(" ".join(f"{r}={i + k}" for k, r in enumerate(refs)), flush=True)
            i += 5
    """)
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             cwd=REPO)
    acknowledged: list[tuple[str, int]] = []
    while len(acknowledged) < 300:  # enough cycles to cross segments
        line = child.stdout.readline()
        assert line, "the child stopped"
        acknowledged += [(ref, int(i)) for ref, i in (p.split("=") for p in line.split())]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    log = EvidenceLog(tmp_path)
    log.open()  # recovers whatever the kill cut short
    assert len(log.segments()) > 1
    for ref, i in acknowledged:
        assert log.read(ref, "site", "gw-1", f"{i:064x}") == b"x" * (200 + i % 50)
    log.close()


def test_old_segments_are_pruned_whole_and_the_current_one_never(tmp_path):
    tmp_path = tmp_path / "evidence"  # `tanji audit prune --state-dir` names its parent
    log = EvidenceLog(tmp_path, segment_bytes=200)
    for i in range(6):
        log.append(records(2, start=2 * i))
    numbers = log.segments()
    assert len(numbers) > 2
    old = time.time() - 40 * 86_400
    for n in numbers:
        os.utime(tmp_path / f"evidence-{n:06d}.log", (old, old))
    assert log.prune(50 * 86_400) == []
    r = subprocess.run([sys.executable, "-m", "tanji", "audit", "prune", "--state-dir", str(tmp_path.parent),
                        "--older-than", "30"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{len(numbers) - 1} segment(s) pruned" in r.stdout
    assert log.segments() == numbers[-1:], "the segment being appended to stays"
    assert log.append(records(1, start=99)), "and the writer goes on"
    log.close()


def test_the_service_starts_on_a_damaged_log_and_names_it(tmp_path):
    """`tanji accounting --store influx` checks the evidence log before it ingests: a damaged
    record before intact ones is named (file, byte) as an ALARM, the file is left as it is, and
    the service runs on (it used to refuse to start: ingest stopped for every gateway)."""
    from tests.audit.batches import plant_site

    site_file, _, _ = plant_site(tmp_path)
    state = tmp_path / "state"
    segment, refs = written(state / "evidence", 3)
    data = flipped(segment, int(refs[0].split("@")[1]) + 20)
    child = subprocess.Popen([sys.executable, "-m", "tanji", "accounting", "--config", str(site_file), "--store",
                              "influx", "--influx-url", "http://127.0.0.1:9", "--state-dir", str(state)],
                             stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                             env={**os.environ, "TANJI_INFLUX_TOKEN": "t"})
    try:
        lines = []
        while not any("ALARM: evidence log segment" in line for line in lines):
            line = child.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        alarm = next(line for line in lines if "ALARM" in line)
        assert str(segment) in alarm and "from byte 0" in alarm and "ingest goes on" in alarm
        assert child.poll() is None, "the service runs on"
    finally:
        child.terminate()
        child.wait(60)
        child.stderr.close()
    assert "Traceback" not in "".join(lines)
    assert segment.read_bytes() == data and (state / "evidence" / "evidence-000002.log").exists()


def test_records_and_batch_points_are_the_bytes_written_before_the_shortcuts():
    """The evidence format does not move: a frame is magic, length, CRC-32 and the named readings
    (written in parts now), and a signed batch's point is the line every earlier one was (its
    own format now), so a log and points written before verify as before, and after."""
    import struct
    import zlib

    from accounting.store.evidence import StoredBatch
    from accounting.store.influx_evidence import batch_line

    payload = b"site\tgw-1\t" + b"a" * 64 + b"\n" + b'[{"meter":"m"}]'
    assert frame("site", "gw-1", "a" * 64, b'[{"meter":"m"}]') == \
        struct.pack("<4sII", b"TEv1", len(payload), zlib.crc32(payload)) + payload
    for prev, prev_field in ((None, ""), ("b" * 64, f',prev="{"b" * 64}"')):
        b = StoredBatch("s 1", "g,1", 7, "a" * 64, "c" * 16, "d" * 16, prev, "e" * 86 + "==", 1_000, 2_000, 100, 3,
                        b"[]")
        assert batch_line(b, "evidence-000001.log@12") == (
            f'batch,site=s\\ 1,gateway=g\\,1,chain={"c" * 16} seq=7i,hash="{"a" * 64}",min_ts=1000i,max_ts=2000i,'
            f'n=100i,received_ms=3i,ref="evidence-000001.log@12",key="{"d" * 16}"{prev_field},sig="{"e" * 86}==" '
            "1000000007").encode()


def test_a_record_asked_for_again_is_not_written_again(tmp_path):
    """A cycle answered again (a refused write, a retry) asks for its records again: the same
    references come back and nothing is written; a new segment starts remembering afresh."""
    log = EvidenceLog(tmp_path, segment_bytes=400)
    refs = log.append(records(3))
    size = (tmp_path / "evidence-000001.log").stat().st_size
    assert log.append(records(3)) == refs and log.append(records(1, start=1)) == refs[1:2]
    assert (tmp_path / "evidence-000001.log").stat().st_size == size and log.syncs == 1
    mixed = log.append(records(2, start=2))  # one known, one new: only the new one is written
    assert mixed[0] == refs[2] and mixed[1] == f"evidence-000001.log@{size}"
    twice = log.append(records(1, start=9) * 2)  # the same batch twice in one cycle: one record
    assert twice[0] == twice[1]
    while log.segments() == [1]:
        log.append(records(1, start=100 + log.syncs))
    [again] = log.append(records(1))  # remembered no more: written again, in the current segment
    assert again.startswith("evidence-000002.log@") and log.read(again, *records(1)[0][:3]) == records(1)[0][3]
    log.close()


def test_an_append_the_disk_refuses_is_cut_back(tmp_path):
    """The file size limit (RLIMIT_FSIZE, as a full disk does) refuses a cycle's write after part
    of it reached the file: `append` raises, the part is cut off, and the next cycle's records are
    where their references say (the segment does not hold half a record before them)."""
    script = textwrap.dedent("""
        import resource, signal, sys
        from accounting.store.evidence_log import EvidenceLog
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        log = EvidenceLog(sys.argv[1])
        log.append([("site", "gw-1", "%064x" % 0, b"x" * 300)])
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
        try:
            log.append([("site", "gw-1", "%064x" % i, b"x" * 300) for i in range(1, 5)])
        except OSError as exc:
            print("refused", exc.errno, flush=True)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        print(*log.append([("site", "gw-1", "%064x" % 7, b"y" * 300)]), flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    refused, ref = r.stdout.split("\n")[:2]
    assert refused.startswith("refused")
    first = len(frame("site", "gw-1", f"{0:064x}", b"x" * 300))
    assert ref == f"evidence-000001.log@{first}"
    log = EvidenceLog(tmp_path)
    log.open()  # nothing torn, nothing damaged
    assert not list(tmp_path.glob("*.torn-*"))
    assert log.read(ref, "site", "gw-1", f"{7:064x}") == b"y" * 300
    log.close()

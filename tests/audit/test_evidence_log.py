"""The evidence log (signed batches' bytes in the state directory, beside the InfluxDB store): what
`append` returned survives a SIGKILL; a torn tail is recovered (moved aside, never deleted); a
damaged record followed by intact ones is refused with the file, offset and fix; a reference is
checked against the batch naming it; whole old segments can be pruned."""

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


def test_a_damaged_record_before_intact_ones_is_refused_not_dropped(tmp_path):
    segment, refs = written(tmp_path, 3)
    middle = int(refs[1].split("@")[1])
    data = flipped(segment, middle + 20)  # bit rot inside a durable record
    with pytest.raises(EvidenceLogError) as refused:
        EvidenceLog(tmp_path).open()
    message = str(refused.value)
    assert f"{segment} is damaged at byte {middle}" in message and "intact records after it" in message
    assert "restore it from a backup, or move it aside" in message
    assert segment.read_bytes() == data, "nothing was cut"
    with pytest.raises(EvidenceLogError, match=f"at {segment} byte {middle} is damaged"):
        EvidenceLog(tmp_path).read(refs[1], *records(3)[1][:3])


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


def test_the_service_refuses_to_start_on_a_damaged_log_and_says_what_to_do(tmp_path):
    """`tanji accounting --store influx` opens the evidence log before it ingests: a damaged record
    before intact ones stops it at once with the file, the byte and the fix (no traceback)."""
    from tests.audit.batches import plant_site

    site_file, _, _ = plant_site(tmp_path)
    state = tmp_path / "state"
    segment, refs = written(state / "evidence", 3)
    data = flipped(segment, int(refs[0].split("@")[1]) + 20)
    r = subprocess.run([sys.executable, "-m", "tanji", "accounting", "--config", str(site_file), "--store", "influx",
                        "--influx-url", "http://127.0.0.1:9", "--state-dir", str(state)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, "TANJI_INFLUX_TOKEN": "t"})
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert f"evidence log {segment} is damaged at byte 0" in r.stderr, r.stderr
    assert "move it aside" in r.stderr and segment.read_bytes() == data


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

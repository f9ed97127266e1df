"""The SQLite evidence retention statement of docs/storage.md, run as printed on a real store.

Signed batches keep their readings' exact bytes, so without it they outgrow the readings the
documented retention already deletes. After readings and batches before a cutoff are deleted:
no batch wholly before the cutoff is left, the straddling batch is, a window after the cutoff
exports and verifies offline, and a window that begins before it is reported NOT VERIFIED (its
evidence is gone, and the report says where the signed readings begin) rather than passing.
"""

from __future__ import annotations

import sqlite3

from accounting.ingest.subscriber import InboundMessage
from accounting.service import AccountingService
from accounting.store.checkpoints import CheckpointStore
from accounting.store.sqlite import SqliteStore
from tests.audit.batches import T0, plant_payloads, plant_site
from tests.audit.test_bundle import TOPIC, tanji
from tests.engine.test_retention import documented_sql

HOUR = 3_600_000


def test_deleting_old_signed_batches_keeps_later_windows_verifiable(tmp_path):
    site_file, site, key = plant_site(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    db = tmp_path / "acc.sqlite"
    service = AccountingService([site], SqliteStore(db), broker_port=1,
                                checkpoints=CheckpointStore(state / "checkpoints.sqlite"))
    service.restore()
    payloads = plant_payloads(tmp_path, key, hours=3)  # a batch per 10 minutes (30 readings)
    service.pipeline.run_cycle([InboundMessage(TOPIC, p, 0, 0, T0 + 4 * HOUR, 0) for p in payloads])
    service.stop()

    cutoff = T0 + HOUR + 25 * 60_000  # 01:25, inside the span of the batch of 01:20-01:29
    with sqlite3.connect(db) as conn:
        spans = conn.execute("SELECT min_ts, max_ts FROM batches").fetchall()
        wholly_before = sum(hi < cutoff for _, hi in spans)
        straddling = sum(lo < cutoff <= hi for lo, hi in spans)
        assert wholly_before > 0 and straddling == 1, spans
        conn.execute(documented_sql("retention: delete every reading"), {"cutoff_ms": cutoff})
        conn.execute(documented_sql("retention: delete the signed batches"), {"cutoff_ms": cutoff})
    with sqlite3.connect(db) as conn:
        left = conn.execute("SELECT min_ts, max_ts FROM batches").fetchall()
    assert len(left) == len(spans) - wholly_before
    assert all(hi >= cutoff for _, hi in left) and sum(lo < cutoff for lo, _ in left) == 1

    def export_and_verify(start: str, end: str, name: str):
        out = tmp_path / name
        r = tanji("audit", "export", "--config", str(site_file), "--store", f"sqlite:{db}", "--state-dir",
                  str(state), "--from", start, "--to", end, "--window", "hour", "--out", str(out))
        assert r.returncode == 0, r.stderr
        return tanji("audit", "verify", str(out))

    after = export_and_verify("2026-01-01T02:00+00:00", "2026-01-01T03:00+00:00", "after.zip")
    assert after.returncode == 0, after.stdout + after.stderr
    assert after.stdout.count("VERIFIED  widget") == 1 and "NOT VERIFIED" not in after.stdout
    across = export_and_verify("2026-01-01T01:00+00:00", "2026-01-01T03:00+00:00", "across.zip")
    assert across.returncode == 1, across.stdout + across.stderr
    assert "NOT VERIFIED  widget  2026-01-01T01:00Z" in across.stdout, across.stdout
    assert "VERIFIED  widget  2026-01-01T02:00Z" in across.stdout, across.stdout
    assert "signed readings begin at 2026-01-01T01:20Z, after this window's start" in across.stdout, across.stdout

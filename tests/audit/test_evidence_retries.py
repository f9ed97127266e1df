"""A cycle written again keeps each batch's record once, and a message refused after its chain
was examined leaves no trace in the chain.

Real influxd (tests/services.py) with a retention of one hour refuses, for its content, a batch
of the gateway's spool from three hours back: the pipeline answers that cycle again, its batch
points together and then one by one (pipeline.py `_evidence_alone`), and each of those writes
asked the evidence log for the cycle's records again. And influxd stopped mid-run: the writes
spill and nothing is written twice, and a copy of a batch sent while its first copy waited
for the store is a replay. And the disk refusing the evidence log's append part way (the file
size limit): the store write is retried, the part written is cut back (before, the retry's
records sat after it and the points named the wrong bytes: export failed), each record once. And a message quarantined (`internal_error`) after its batch's chain
links were checked: neither its batch record nor its link stays, so its redelivered copy is
admitted, not dropped as a replay of readings that were never stored.
"""

from __future__ import annotations

import json
import resource
import signal
import struct
import threading
import time
from pathlib import Path

from accounting.ingest.admission import Admission
from accounting.ingest.chain import ChainTracker
from accounting.ingest.dedup import DedupIndex
from accounting.ingest.meter_order import MeterOrder
from accounting.ingest.pipeline import Pipeline
from accounting.ingest.sequence import SequenceTracker
from accounting.ingest.signatures import BatchSignatures
from accounting.ingest.stats import IngestStats
from accounting.ingest.subscriber import InboundMessage
from accounting.store.evidence_log import MAGIC
from accounting.store.influx import InfluxStore
from gateway.service import encode_batch_body
from gateway.signing_key import SigningKey
from gateway.spool import Spool
from tanji import signed_batch as sb
from tanji.wire import Reading
from tests.audit.batches import T0, keyed_site, signed_payloads
from tests.audit.test_ingest_verification import (
    TOPIC,
    Source,
    make_pipeline,
    messages,
    quarantine_reasons,
    store,
)

__all__ = ["store"]  # the fixture: each store (SQLite; InfluxDB with and without the evidence log)

MINUTE_MS = 60_000
_HEADER = struct.Struct("<4sII")


def chained(tmp_path: Path, key: SigningKey, starts: list[int], per_batch: int = 3) -> list[bytes]:
    """Consecutive batches of the incomer signed and chained by a gateway spool, batch i's
    readings from `starts[i]`, a second apart (energy rising throughout)."""
    spool = Spool(tmp_path / "chained.sqlite", signer=key, site="test-site", gateway="gw-1")
    out = []
    for b, start in enumerate(starts):
        spool.add([Reading("incomer", start + i * 1000, "good",
                           {"energy_import_kwh": 1000.0 + b * per_batch + i, "power_kw": 60.0})
                   for i in range(per_batch)])
        batch = spool.next_batch(per_batch)
        out.append(encode_batch_body("test-site", "gw-1", batch.seq, batch.body, backlog=False,
                                     sent_ms=start + 60_000, sig=batch.sig))
    spool.close()
    return out


def now_messages(*payloads: bytes) -> list[InboundMessage]:
    now = int(time.time() * 1000)
    return [InboundMessage(TOPIC, p, i + 1, 1, now, 0) for i, p in enumerate(payloads)]


def logged(directory: Path) -> list[str]:
    """The batch hash of every record in the evidence log, in the order written."""
    hashes = []
    for segment in sorted(directory.glob("evidence-*.log")):
        data, pos = segment.read_bytes(), 0
        while pos < len(data):
            magic, length, _ = _HEADER.unpack_from(data, pos)
            assert magic == MAGIC
            head = data[pos + _HEADER.size:pos + _HEADER.size + length].partition(b"\n")[0]
            hashes.append(head.decode().split("\t")[2])
            pos += _HEADER.size + length
    return hashes


def batch_hash(payload: bytes) -> str:
    body = json.loads(payload)
    sig = sb.parse_signature(body["sig"])
    return sb.batch_hash(sig.header("test-site", "gw-1", body["seq"], sb.readings_digest(sb.raw_member(payload))))


def test_a_cycle_influxdb_refuses_in_part_keeps_each_batch_record_once(tmp_path, influx):
    # A retention of one hour: influxd refuses (400, partial write) points older than that.
    influx.query(f'CREATE RETENTION POLICY "hour" ON "{influx.db}" DURATION 1h REPLICATION 1 DEFAULT', influx.db)
    _, site, key = keyed_site(tmp_path, 1883, mode="required")
    now = int(time.time() * 1000)
    # batch 0 is the spool's from three hours back, batches 1-4 from the last half hour
    payloads = chained(tmp_path, key, [now - 180 * MINUTE_MS] + [now - (30 - 5 * i) * MINUTE_MS for i in range(4)])
    store = InfluxStore(influx.url, token="t", org="tanji", bucket=influx.db, spill_dir=tmp_path / "spill",
                        evidence_dir=tmp_path / "evidence", concurrent_writes=1)
    try:
        pipeline, source, stats, _ = make_pipeline(site, store)
        pipeline.run_cycle(now_messages(*payloads))
        store.flush()
        assert quarantine_reasons(store) == ["store_rejected"], "batch 0 is older than the retention"
        assert stats.accepted == 12
        kept = store.read_batches("test-site", now - 60 * MINUTE_MS, now)
        assert [b.seq for b in kept] == [1, 2, 3, 4]
        assert [b.readings for b in kept] == [sb.raw_member(p) for p in payloads[1:]], "the points name their bytes"
    finally:
        store.close()
    records = logged(tmp_path / "evidence")
    assert sorted(records) == sorted(batch_hash(p) for p in payloads), \
        "each batch's record once (batch 0's too: appended before influxd refused its point, named by none)"


def test_influxd_stopped_mid_run_spills_and_each_batch_record_is_written_once(tmp_path, influx_private):
    influx = influx_private
    _, site, key = keyed_site(tmp_path, 1883, mode="required")
    now = int(time.time() * 1000)
    payloads = chained(tmp_path, key, [now - (40 - 5 * i) * MINUTE_MS for i in range(6)])
    store = InfluxStore(influx.url, token="t", org="tanji", bucket=influx.db, spill_dir=tmp_path / "spill",
                        evidence_dir=tmp_path / "evidence", max_backoff_s=0.5)
    try:
        pipeline, source, stats, _ = make_pipeline(site, store)
        pipeline.run_cycle(now_messages(*payloads[:2]))
        influx.stop_influxd()
        pipeline.run_cycle(now_messages(*payloads[2:4]))
        pipeline.run_cycle(now_messages(payloads[1], *payloads[4:]))  # the gateway sends batch 1 again
        assert len(store.spill) > 0 and store.writes_failed > 0, "the writes during the outage spilled"
        influx.start_influxd()
        assert store.flush(60)
        assert source.confirmed == [0, 1, 2, 3, 1, 4, 5]
        assert stats.accepted == 18 and stats.duplicates == 3, "batch 1's copy is a replay"
        kept = store.read_batches("test-site", now - 60 * MINUTE_MS, now)
        assert [b.seq for b in kept] == [0, 1, 2, 3, 4, 5]
        assert [b.readings for b in kept] == [sb.raw_member(p) for p in payloads]
        stored = store.read_readings("test-site", "incomer", now - 60 * MINUTE_MS, now)
        assert len(stored) == 18 and len({r.ts_ms for r in stored}) == 18
    finally:
        store.close()
    assert logged(tmp_path / "evidence") == [batch_hash(p) for p in payloads], "each batch's record once, in order"


class FailingOnce(MeterOrder):
    """The meters' reading order, failing once on one batch: what a bug or a transient fault below
    admission's checks does (the message is quarantined as `internal_error`, the others go on)."""

    def __init__(self, seq: int) -> None:
        super().__init__()
        self.seq, self.failed = seq, False

    def backwards(self, site, gateway, seq, readings, earliest=None):
        if seq == self.seq and not self.failed:
            self.failed = True
            raise RuntimeError("the meter order could not be read")
        return super().backwards(site, gateway, seq, readings, earliest)


def test_a_message_quarantined_after_its_chain_was_checked_leaves_no_link_and_its_copy_is_admitted(tmp_path,
                                                                                                   store):
    _, site, key = keyed_site(tmp_path, 1883, mode="required")
    honest = signed_payloads(tmp_path, key, 4)
    sites = {site.id: site}
    chains = ChainTracker(store)
    admission = Admission(sites, DedupIndex(), SequenceTracker(), signatures=BatchSignatures(sites), chains=chains,
                          order=FailingOnce(seq=1))
    stats = IngestStats()
    pipeline = Pipeline(Source(), admission, store, stats, deliver=lambda cycles: None)
    pipeline.run_cycle(messages(honest[0], honest[1], honest[2]))
    store.flush()
    assert quarantine_reasons(store) == ["internal_error"]
    assert [b.seq for b in store.read_batches("test-site", T0 - 1, T0 + 3_600_000)] == [0, 2], \
        "no batch record for a message whose readings were not stored"
    # The broker redelivers batch 1 (its acknowledgement was lost with the connection), and the fault is gone.
    pipeline.run_cycle(messages(honest[1], honest[3]))
    store.flush()
    stored = store.read_readings("test-site", "incomer", T0, T0 + 3_600_000)
    expected = sorted(r["ts_ms"] for p in honest for r in json.loads(p)["readings"])
    assert sorted(r.ts_ms for r in stored) == expected, "every reading exactly once, batch 1's too"
    assert stats.accepted == 12 and stats.duplicates == 0 and chains.counts["replay"] == 0
    assert [b.seq for b in store.read_batches("test-site", T0 - 1, T0 + 3_600_000)] == [0, 1, 2, 3]
    assert chains.suspected() == 0 and chains.alarms() == [], "batch 1 filled the gap it left"
    pipeline.run_cycle(messages(honest[1]))  # a third copy is a replay, as any copy of a stored batch
    assert chains.counts["replay"] == 1 and stats.duplicates == 3


def test_a_cycle_retried_after_the_disk_refused_its_evidence_is_recorded_once_and_not_a_replay(tmp_path, influx,
                                                                                               caplog):
    """The file size limit (RLIMIT_FSIZE, as a full disk does) refuses the evidence log's append
    of a cycle part way: the store write fails and is retried until the limit is lifted. The retry
    writes the cycle as admitted (the chain tracker is not asked again, so nothing is a replay),
    the log holds each record once (the part written is cut back), and a copy the gateway
    republishes afterwards is a replay of a batch that is stored."""
    _, site, key = keyed_site(tmp_path, 1883, mode="required")
    now = int(time.time() * 1000)
    payloads = chained(tmp_path, key, [now - (40 - 5 * i) * MINUTE_MS for i in range(4)])
    store = InfluxStore(influx.url, token="t", org="tanji", bucket=influx.db, spill_dir=tmp_path / "spill",
                        evidence_dir=tmp_path / "evidence", concurrent_writes=1)
    pipeline, source, stats, chains = make_pipeline(site, store)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def lift() -> None:  # once the store write has failed and been retried, the disk has room again
        deadline = time.monotonic() + 60  # a bound, not a measurement: the assertions below say what happened
        while caplog.text.count("store write failed; retrying") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    try:
        pipeline.run_cycle(now_messages(payloads[0]))
        segment = tmp_path / "evidence" / "evidence-000001.log"
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        lifter = threading.Thread(target=lift, daemon=True)
        resource.setrlimit(resource.RLIMIT_FSIZE, (segment.stat().st_size + 100, hard))
        try:
            lifter.start()
            pipeline.run_cycle(now_messages(*payloads[1:3]))
        finally:
            lifter.join(60)
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, handler)
        assert "store write failed; retrying" in caplog.text and "File too large" in caplog.text
        pipeline.run_cycle(now_messages(payloads[2], payloads[3]))  # batch 2 republished (unconfirmed > 10 s)
        store.flush()
        assert source.confirmed == [0, 1, 2, 2, 3]
        assert stats.accepted == 12 and stats.duplicates == 3 and chains.counts["replay"] == 1
        stored = store.read_readings("test-site", "incomer", now - 60 * MINUTE_MS, now)
        assert len(stored) == 12 and len({r.ts_ms for r in stored}) == 12
        kept = store.read_batches("test-site", now - 60 * MINUTE_MS, now)
        assert [b.readings for b in kept] == [sb.raw_member(p) for p in payloads]
    finally:
        store.close()
    assert logged(tmp_path / "evidence") == [batch_hash(p) for p in payloads], "each record once, nothing torn"


def test_a_log_holding_batches_twice_after_a_crash_exports_and_verifies(tmp_path, request):
    """A run that appended a cycle's records and died before their points were written leaves
    copies no point names; the restarted service appends the redelivered batches again. The log
    then holds every batch twice, and the bundle exports (from the records the points name) and
    verifies as any other."""
    from accounting.service import AccountingService
    from accounting.store.checkpoints import CheckpointStore
    from accounting.store.evidence_log import EvidenceLog
    from tests.audit.batches import plant_payloads, plant_site
    from tests.audit.test_bundle import _store, tanji

    site_file, site, key = plant_site(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    payloads = plant_payloads(tmp_path, key)
    crashed = EvidenceLog(state / "evidence")  # the run that died after its append
    crashed.append([("test-site", "gw-1", batch_hash(p), sb.raw_member(p)) for p in payloads])
    crashed.close()
    store, store_args = _store("influx", tmp_path, state, request)
    service = AccountingService([site], store, broker_port=1, checkpoints=CheckpointStore(state / "checkpoints.sqlite"))
    service.restore()
    service.pipeline.run_cycle([InboundMessage(TOPIC, p, 0, 0, T0 + 3 * 3_600_000, 0) for p in payloads])
    service.stop()
    records = logged(state / "evidence")
    assert sorted(records) == sorted([batch_hash(p) for p in payloads] * 2), "every batch twice"
    out = tmp_path / "audit.zip"
    r = tanji("audit", "export", "--config", str(site_file), *store_args, "--state-dir", str(state), "--from",
              "2026-01-01T00:00+00:00", "--to", "2026-01-01T02:00+00:00", "--window", "hour", "--out", str(out))
    assert r.returncode == 0, r.stderr
    r = tanji("audit", "verify", str(out))
    assert r.returncode == 0 and "NOT VERIFIED" not in r.stdout, r.stdout + r.stderr
    assert r.stdout.count("VERIFIED  widget") == 2, r.stdout

"""Accounting verifies every batch before admission (signatures: required | preferred | off),
tracks each gateway's chain, and keeps the signed batches and chain events in both stores."""

from __future__ import annotations

import json
import queue
import time

import pytest

from accounting.ingest.admission import Admission
from accounting.ingest.chain import ChainTracker
from accounting.ingest.dedup import DedupIndex
from accounting.ingest.pipeline import Pipeline
from accounting.ingest.sequence import SequenceTracker
from accounting.ingest.signatures import BatchSignatures
from accounting.ingest.stats import IngestStats
from accounting.ingest.subscriber import InboundMessage
from accounting.store.influx import InfluxStore
from accounting.store.sqlite import SqliteStore
from gateway.signing_key import generate_key
from tanji import signed_batch as sb
from tests.audit.batches import T0, altered, keyed_site, signed_payloads

TOPIC = "tanji/v1/test-site/gw-1/readings"


class Source:
    """Stands in for the MQTT client in these unit tests: records what would be confirmed."""

    def __init__(self) -> None:
        self.inbox: queue.Queue[InboundMessage] = queue.Queue()
        self.confirmed: list[int] = []

    def ack(self, messages: list[InboundMessage], unconfirmed: set[int] | None = None) -> int:
        self.confirmed += [json.loads(m.payload)["seq"] for i, m in enumerate(messages)
                           if not unconfirmed or i not in unconfirmed]
        return len(messages)


def make_pipeline(site, store, gap_grace_s: float = 120.0):
    sites = {site.id: site}
    chains = ChainTracker(store, gap_grace_s=gap_grace_s)
    admission = Admission(sites, DedupIndex(), SequenceTracker(), signatures=BatchSignatures(sites), chains=chains)
    source = Source()
    stats = IngestStats()
    return Pipeline(source, admission, store, stats, deliver=lambda cycles: None), source, stats, chains


def messages(*payloads: bytes) -> list[InboundMessage]:
    return [InboundMessage(TOPIC, p, i + 1, 1, T0 + 120_000, 0) for i, p in enumerate(payloads)]


def quarantine_reasons(store) -> list[str]:
    return sorted(q.reason for q in store.quarantined())


@pytest.fixture(params=["sqlite", "influx", "influx-inline"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "store.sqlite")
    else:  # the service's way (the bytes in the state directory's evidence log), and the bytes kept in InfluxDB
        influx = request.getfixturevalue("influx")
        s = InfluxStore(influx.url, token="t", org="tanji", bucket=influx.db, spill_dir=tmp_path / "spill",
                        evidence_dir=tmp_path / "evidence" if request.param == "influx" else None)
    yield s
    s.close()


def test_forged_altered_replayed_and_dropped_batches_are_named(tmp_path, store):
    _, site, key = keyed_site(tmp_path, 1883, mode="required")
    honest = signed_payloads(tmp_path, key, 6)
    forged = signed_payloads(tmp_path / "forger", generate_key(tmp_path / "other.key"), 6)
    pipeline, source, stats, chains = make_pipeline(site, store, gap_grace_s=0.0)
    # batch 3 is dropped; a forged batch 3 (valid format, wrong key), an altered copy of batch 4
    # and a replay of batch 1 arrive instead
    pipeline.run_cycle(messages(honest[0], honest[1], honest[2], forged[3], altered(honest[4])))
    pipeline.run_cycle(messages(honest[4], honest[1], honest[5]))
    store.flush()
    assert quarantine_reasons(store) == ["bad_signature", "unknown_key"]
    assert source.confirmed == [0, 1, 2, 4, 1, 5], "a refused copy never confirms (the gateway keeps its own)"
    stored = store.read_readings("test-site", "incomer", T0, T0 + 3_600_000)
    honest_ts = sorted(r["ts_ms"] for i in (0, 1, 2, 4, 5) for r in json.loads(honest[i])["readings"])
    assert sorted(r.ts_ms for r in stored) == honest_ts, "every honest reading exactly once"
    assert all(r.values["energy_import_kwh"] != 9999.0 for r in stored)
    assert stats.accepted == len(honest_ts)
    # the replay is recorded; the dropped batch 3 is a gap once the grace is over
    events = chains.check()
    store.write_chain_events(events)
    assert [(e.kind, e.seq_lo, e.seq_hi) for e in events] == [("gap", 3, 3)]
    kept = store.chain_events("test-site")
    assert {(e.kind, e.seq_lo) for e in kept} == {("replay", 1), ("gap", 3)}
    assert [a["kind"] for a in chains.alarms()] == ["gap"]
    # the batches are kept as they arrived, beside the readings: their signatures still verify
    batches = store.read_batches("test-site", T0 - 1, T0 + 3_600_000)
    assert [b.seq for b in batches] == [0, 1, 2, 4, 5]
    for b, payload in zip(batches, [honest[i] for i in (0, 1, 2, 4, 5)], strict=True):
        assert b.readings == sb.raw_member(payload) and b.key == key.key_id
        sig = sb.parse_signature(json.loads(payload)["sig"])
        assert b.hash == sb.batch_hash(sig.header("test-site", "gw-1", b.seq, sb.readings_digest(b.readings)))
    # the late batch 3 closes the gap
    pipeline.run_cycle(messages(honest[3]))
    assert chains.check() == [] and chains.alarms() == []
    gaps = [e for e in store.chain_events("test-site") if e.kind == "gap"]
    assert [(e.seq_lo, e.resolved_ms is not None) for e in gaps] == [(3, True)]


def test_a_second_history_is_a_fork(tmp_path):
    _, site, key = keyed_site(tmp_path, 1883, mode="required")
    store = SqliteStore(tmp_path / "store.sqlite")
    first = signed_payloads(tmp_path, key, 3)
    zero = json.loads(first[0])
    digest = sb.readings_digest(sb.raw_member(first[0]))
    zero_hash = sb.batch_hash(sb.parse_signature(zero["sig"]).header("test-site", "gw-1", 0, digest))
    other = b'[{"meter":"incomer","ts_ms":%d,"quality":"good","values":{"energy_import_kwh":5.0}}]' % (T0 + 3000)
    sig, _ = sb.sign(key, "test-site", "gw-1", 1, zero["sig"]["chain"], zero_hash, other)
    from gateway.service import encode_batch_body
    fork = encode_batch_body("test-site", "gw-1", 1, other.decode(), backlog=False, sent_ms=T0 + 60_000,
                             sig=sig.json_text())
    pipeline, source, stats, chains = make_pipeline(site, store)
    pipeline.run_cycle(messages(*first))
    pipeline.run_cycle(messages(fork))
    assert quarantine_reasons(store) == ["chain_fork"]
    assert [(e.kind, e.seq_lo) for e in store.chain_events("test-site")] == [("fork", 1)]
    assert [a["kind"] for a in chains.alarms()] == ["fork"]
    assert stats.accepted == 9


@pytest.mark.parametrize("mode, unsigned_admitted", [("required", False), ("preferred", True), ("off", True)])
def test_the_site_setting_decides_what_is_admitted(tmp_path, mode, unsigned_admitted):
    _, site, key = keyed_site(tmp_path, 1883, mode=mode)
    store = SqliteStore(tmp_path / "store.sqlite")
    unsigned = signed_payloads(tmp_path, None, 2)
    (tmp_path / "s").mkdir()
    signed = signed_payloads(tmp_path / "s", key, 2, start_ms=T0 + 100_000)
    pipeline, source, stats, _ = make_pipeline(site, store)
    pipeline.run_cycle(messages(*unsigned, *signed))
    assert stats.accepted == (12 if unsigned_admitted else 6)
    assert quarantine_reasons(store) == ([] if unsigned_admitted else ["unsigned", "unsigned"])
    kept = store.read_batches("test-site", T0 - 1, T0 + 3_600_000)
    assert len(kept) == {"required": 2, "preferred": 4, "off": 0}[mode]


def test_a_gateway_without_registered_keys_counts_as_unsigned_when_preferred(tmp_path):
    _, site, _ = keyed_site(tmp_path, 1883, mode="preferred")
    from dataclasses import replace
    site = replace(site, gateways=tuple(replace(g, keys=()) for g in site.gateways))
    store = SqliteStore(tmp_path / "store.sqlite")
    payloads = signed_payloads(tmp_path, generate_key(tmp_path / "unregistered.key"), 2)
    pipeline, _, stats, _ = make_pipeline(site, store)
    pipeline.run_cycle(messages(*payloads))
    assert stats.accepted == 6 and quarantine_reasons(store) == []
    kept = store.read_batches("test-site", T0 - 1, T0 + 3_600_000)
    assert [(b.sig, b.n, b.readings) for b in kept] == [(None, 3, b""), (None, 3, b"")], \
        "an unsigned batch is recorded, its readings are not written twice"
    assert quarantine_reasons(store) == []


def test_a_run_is_checked_by_its_newest_signature(tmp_path):
    _, site, key = keyed_site(tmp_path, 1883, mode="required")
    sites = {site.id: site}
    payloads = signed_payloads(tmp_path, key, 5)
    checker = BatchSignatures(sites)
    checker.prepare(messages(*payloads))
    assert checker.stats.signature_checks == 1
    checker = BatchSignatures(sites)
    checker.prepare(messages(*payloads[:4], altered(payloads[4])))
    assert checker.stats.signature_checks == 2  # the head fails; batch 3 vouches for 0..3
    refused = [checker._checked[i].reason for i in range(5)]
    assert refused == [None, None, None, None, "bad_signature"]


def test_a_batch_admission_refuses_after_its_check_was_prepared_leaves_its_run_admitted(tmp_path):
    """The pre-pass checks a gateway's batch from the members before its readings
    (`batch_decoder.decode_head`); admission parses the readings. A batch whose readings the
    decoder then refuses (a reading stamped far in the future) is quarantined with the decoder's
    reason, and the batches around it in its chain are admitted, vouched for by the signatures."""
    _, site, key = keyed_site(tmp_path, 1883, mode="required")
    store = SqliteStore(tmp_path / "store.sqlite")
    payloads = signed_payloads(tmp_path, key, 4)
    body = json.loads(payloads[2])
    future = int(time.time() * 1000) + 30 * 24 * 3_600_000  # beyond what the wire format lets a clock be ahead
    bad = payloads[2].replace(b'"ts_ms":%d' % body["readings"][0]["ts_ms"], b'"ts_ms":%d' % future, 1)
    assert bad != payloads[2]
    pipeline, _, stats, _ = make_pipeline(site, store)
    pipeline.run_cycle(messages(payloads[0], payloads[1], bad, payloads[3]))
    assert quarantine_reasons(store) == ["timestamp"]
    assert stats.accepted == 9
    kept = store.read_batches("test-site", T0 - 1, T0 + 3_600_000)
    assert [b.seq for b in kept] == [0, 1, 3]
    assert pipeline.admission.signatures.stats.verified_batches == 3


def test_a_restarted_tracker_knows_the_chains_from_the_store(tmp_path, store):
    from accounting.ingest.batch_decoder import decode_batch

    _, site, key = keyed_site(tmp_path, 1883, mode="required")
    honest = signed_payloads(tmp_path, key, 4)
    pipeline, _, _, chains = make_pipeline(site, store, gap_grace_s=0.0)
    pipeline.run_cycle(messages(honest[0], honest[1], honest[3]))
    store.write_chain_events(chains.check())  # batch 2 never came: a recorded gap
    store.flush()
    recent = store.recent_batches("test-site", "gw-1", 10)
    assert sorted(b.seq for b in recent) == [0, 1, 3] and all(b.readings == b"" for b in recent)
    restarted = ChainTracker(store, gap_grace_s=0.0)
    restarted.restore("test-site", ["gw-1"])
    assert [(a["kind"], a["seq_lo"]) for a in restarted.alarms()] == [("gap", 2)]
    checker = BatchSignatures({site.id: site})
    checker.prepare(messages(honest[1], honest[2]))
    again = checker.check(0, messages(honest[1])[0], "test-site", "gw-1",
                          decode_batch(honest[1], "test-site", "gw-1", T0 + 120_000))
    assert restarted.observe(again) == "replay"
    late = checker.check(1, messages(honest[2])[0], "test-site", "gw-1",
                         decode_batch(honest[2], "test-site", "gw-1", T0 + 120_000))
    assert restarted.observe(late) == "new"
    assert restarted.alarms() == [], "the late batch closes the gap recorded before the restart"

"""Chain gaps and forks reach the operator's alarm list: a gap is a condition that ends when the
batches arrive late, a fork an event that stays until acknowledged and is not raised twice; so is
damage the evidence log found at start."""

from __future__ import annotations

import os

from accounting.live.chain_alarms import EVIDENCE, FORK, GAP, sync_chain_alarms
from accounting.store.alarms import AlarmStore
from accounting.store.evidence import ChainEvent

T0 = 1_767_225_600_000


def gap(lo: int, hi: int) -> dict:
    return ChainEvent("s1", "gw-1", "c1", "gap", lo, hi, T0, f"batch {hi + 1} names batch {hi}")._asdict()


def fork(seq: int) -> dict:
    return ChainEvent("s1", "gw-1", "c1", "fork", seq, seq, T0, "another batch at this seq")._asdict()


def active(log: AlarmStore) -> list[tuple[str, str]]:
    return sorted((a["kind"], a["subject"]) for a in log.alarms("s1", active=True))


def test_an_open_gap_is_a_condition_alarm_that_ends_when_filled():
    log = AlarmStore()
    sync_chain_alarms(log, [gap(3, 5)], ["s1"], now_ms=T0)
    sync_chain_alarms(log, [gap(3, 5)], ["s1"], now_ms=T0 + 5_000)  # still open: refreshed, not doubled
    assert active(log) == [(GAP, "gw-1 chain c1 batches 3..5")]
    alarm = log.alarms("s1")[0]
    assert (alarm["severity"], alarm["latching"], alarm["detail"]["seq_hi"]) == ("alarm", False, 5)
    assert "check its spool" in alarm["message"]
    sync_chain_alarms(log, [], ["s1"], now_ms=T0 + 10_000)  # the batches arrived late
    assert active(log) == []
    assert log.alarms("s1", active=False)[0]["cleared_ms"] == T0 + 10_000


def test_a_fork_stays_until_acknowledged_and_is_not_raised_again():
    log = AlarmStore()
    sync_chain_alarms(log, [fork(7), gap(3, 3)], ["s1"], now_ms=T0)
    assert active(log) == [(FORK, "gw-1 chain c1 batch 7"), (GAP, "gw-1 chain c1 batch 3")]
    alarm_id = next(a["id"] for a in log.alarms("s1") if a["kind"] == FORK)
    sync_chain_alarms(log, [fork(7)], ["s1"], now_ms=T0 + 5_000)  # a fork does not clear itself
    assert (FORK, "gw-1 chain c1 batch 7") in active(log)
    log.acknowledge(alarm_id, "operator", "key rotated")
    sync_chain_alarms(log, [fork(7)], ["s1"], now_ms=T0 + 10_000)  # the tracker still lists it (24 h)
    assert active(log) == []
    assert [a["acked_by"] for a in log.alarms("s1", active=False) if a["kind"] == FORK] == ["operator"]


def test_alarms_of_other_sites_are_left_alone():
    log = AlarmStore()
    log.raise_alarm("s2", GAP, "gw-9 chain c batch 1", severity="alarm", message="other site", now_ms=T0)
    sync_chain_alarms(log, [], ["s1"], now_ms=T0)
    assert [a["subject"] for a in log.alarms("s2", active=True)] == ["gw-9 chain c batch 1"]


def test_a_damaged_evidence_segment_found_at_start_is_an_alarm_of_the_service(tmp_path, influx):
    """`EvidenceLog.open` found a segment cut short: the service's chain check raises it for each
    signing site (latching: found again after the next start only if the end is still cut), and
    its audit status names it; acknowledged, it is not raised again."""
    from accounting.service import AccountingService
    from accounting.store.evidence_log import EvidenceLog
    from accounting.store.influx import InfluxStore
    from tests.audit.batches import keyed_site

    _, site, _ = keyed_site(tmp_path, 1883, mode="required")
    evidence = tmp_path / "evidence"
    log = EvidenceLog(evidence, segment_bytes=150)
    refs = [log.append([("test-site", "gw-1", f"{i:064x}", b"[]" * 20)])[0] for i in range(3)]
    log.close()
    cut = max(r for r in refs if r.startswith("evidence-000001.log@")).replace("@", " byte ")  # its last record
    first = evidence / "evidence-000001.log"
    os.truncate(first, first.stat().st_size - 3)
    store = InfluxStore(influx.url, token="t", org="tanji", bucket=influx.db, spill_dir=tmp_path / "spill",
                        evidence_dir=evidence)
    store.open_evidence()
    service = AccountingService([site], store, broker_port=1)
    try:
        service.check_chains()
        service.check_chains()  # raised once, not twice
        [alarm] = [a for a in service.alarms("test-site", active=True) if a["kind"] == EVIDENCE]
        assert alarm["subject"] == cut and alarm["latching"]
        assert "ends in an incomplete record" in alarm["message"] and "restored from a backup" in alarm["message"]
        assert [d["segment"] for d in service.audit_status()["evidence_log_damage"]] == ["evidence-000001.log"]
        service.alarm_log.acknowledge(alarm["id"], "operator", "restored")
        service.check_chains()
        assert [a for a in service.alarms("test-site", active=True) if a["kind"] == EVIDENCE] == []
    finally:
        service.stop()
        store.close()

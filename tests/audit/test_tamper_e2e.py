"""The proofs of issue #18 with real Mosquitto brokers, a real gateway process and accounting.

The gateway publishes to broker A (the plant's). An attacker on the path relays A's readings
to broker B, where accounting listens: it drops one batch, injects a forged one (valid format,
another key), an altered copy of a genuine batch and a replay. Accounting names each, and
every honest reading that reached B arrives exactly once. A second test kills the gateway
between signing and publishing and takes its broker away: the chain still verifies whole.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from accounting.service import AccountingService
from accounting.store.sqlite import SqliteStore
from gateway.service import KILL_AFTER_SIGNING_ENV
from gateway.signing_key import generate_key
from tests.audit.batches import altered, keyed_site
from tests.gateway.conftest import Collector
from tests.services import MosquittoServer

pytestmark = pytest.mark.slow


def wait(predicate, timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


class Relay:
    """A man in the middle: forwards A's readings to B, except what `tamper` says (a list of payloads)."""

    def __init__(self, a: int, b: int, tamper) -> None:
        self.tamper = tamper
        self.forwarded: list[bytes] = []
        self.seen: list[bytes] = []
        self.lock = threading.Lock()
        self.out = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="relay-out")
        self.out.connect("127.0.0.1", b)
        self.out.loop_start()
        self.inp = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="relay-in", clean_session=False)
        self.inp.on_connect = lambda c, u, f, r, p: c.subscribe("tanji/v1/+/+/readings", qos=1)
        self.inp.on_message = self._message
        self.inp.reconnect_delay_set(0.2, 1)
        self.inp.connect("127.0.0.1", a)
        self.inp.loop_start()

    def _message(self, client, userdata, msg) -> None:
        with self.lock:
            self.seen.append(msg.payload)
            for payload in self.tamper(msg.payload):
                self.out.publish(msg.topic, payload, qos=1).wait_for_publish(10)
                self.forwarded.append(payload)

    def stop(self) -> None:
        for c in (self.inp, self.out):
            c.loop_stop()
            c.disconnect()


def stored_ts(service, meter: str | None = None) -> list[tuple[str, int]]:
    return sorted((r.meter, r.ts_ms) for r in service.store.read_readings("test-site", meter, 0, 2**62))


def published(payloads: list[bytes], skip: set[int] = frozenset()) -> list[tuple[str, int]]:
    out = set()
    for p in payloads:
        body = json.loads(p)
        if body["seq"] not in skip:
            out |= {(r["meter"], r["ts_ms"]) for r in body["readings"]}
    return sorted(out)


@pytest.mark.timeout(240)
def test_forged_altered_replayed_and_dropped_batches_are_named(tmp_path, mosquitto, plant_factory,
                                                                gateway_process):
    site_file, site, key = keyed_site(tmp_path, mosquitto.port, mode="required", period_s=0.2)
    plant_factory(site)
    b = MosquittoServer(tmp_path / "mosquitto-b")
    b.start()
    forger = generate_key(tmp_path / "forger.key")
    from tanji import signed_batch as sb

    def tamper(payload: bytes) -> list[bytes]:
        body = json.loads(payload)
        seq = body["seq"]
        if seq == 3:
            return []  # dropped
        if seq == 4:  # an altered copy arrives first, then the genuine batch
            return [altered(payload), payload]
        if seq == 6:  # a forged batch in a valid frame, and a replay of batch 2
            readings = sb.raw_member(payload)
            sig, _ = sb.sign(forger, body["site"], body["gateway"], 1000, body["sig"]["chain"], None, readings)
            from gateway.service import encode_batch_body
            forged = encode_batch_body(body["site"], body["gateway"], 1000, readings.decode(), backlog=False,
                                       sent_ms=body["sent_ms"], sig=sig.json_text())
            return [payload, forged, next(p for p in relay.seen if json.loads(p)["seq"] == 2)]
        return [payload]

    service = AccountingService([site], SqliteStore(tmp_path / "acc.sqlite"), broker_port=b.port)
    service.chains.gap_grace_ms = 0  # the test decides when the gap is due
    service.start()
    relay = Relay(mosquitto.port, b.port, tamper)
    gateway = gateway_process(site_file)
    try:
        assert service.wait_connected(20)
        gateway.start()
        wait(lambda: len(relay.seen) >= 9, what="nine batches from the gateway")
        assert gateway.signal(signal.SIGTERM) == 0
        wait(lambda: service.stats.received >= len(relay.forwarded), what="accounting to receive them all")
        service.pipeline.stop()
        service.check_chains()
        operator_alarms = service.alarms("test-site", active=True)
    finally:
        relay.stop()
        gateway.stop()
        service.stop()
        b.stop()
    stats = service.stats.to_dict()
    assert stats["quarantined_by_reason"] == {"bad_signature": 1, "unknown_key": 1}
    honest = published(relay.seen, skip={3})
    assert stored_ts(service) == honest, "every honest reading exactly once, nothing forged or altered"
    assert stats["accepted"] == len(honest)
    store = SqliteStore(tmp_path / "acc.sqlite")
    events = {(e.kind, e.seq_lo) for e in store.chain_events("test-site")}
    assert ("gap", 3) in events and ("replay", 2) in events
    assert stats["audit"]["alarms"][0]["kind"] == "gap"
    gaps = [a for a in operator_alarms if a["kind"] == "chain_gap"]
    assert [(a["detail"]["seq_lo"], a["detail"]["seq_hi"], a["severity"]) for a in gaps] == [(3, 3, "alarm")], \
        "the dropped batch is in the operator's alarm list too"
    assert {q.reason for q in store.quarantined()} == {"bad_signature", "unknown_key"}
    assert all(v != 9999.0 for r in store.read_readings("test-site", None, 0, 2**62)
               for v in r.values.values())
    store.close()


@pytest.mark.timeout(300)
def test_the_chain_verifies_across_a_kill_between_signing_and_publishing_and_a_broker_outage(
        tmp_path, mosquitto, plant_factory, gateway_process, monkeypatch):
    site_file, site, key = keyed_site(tmp_path, mosquitto.port, mode="required", period_s=0.2,
                                      delivery="confirmed")
    plant_factory(site)
    collector = Collector(mosquitto.host, mosquitto.port, topic="tanji/v1/+/+/readings")
    service = AccountingService([site], SqliteStore(tmp_path / "acc.sqlite"), broker_port=mosquitto.port)
    service.chains.gap_grace_ms = 0
    service.start()
    gateway = gateway_process(site_file)
    try:
        assert service.wait_connected(20)
        monkeypatch.setenv(KILL_AFTER_SIGNING_ENV, "3")
        gateway.start()
        assert gateway.proc.wait(60) == -signal.SIGKILL  # signed batch 3, died before publishing it
        monkeypatch.delenv(KILL_AFTER_SIGNING_ENV)
        assert max((json.loads(p)["seq"] for p in collector.payloads), default=-1) < 3
        gateway.start()
        wait(lambda: any(json.loads(p)["seq"] >= 5 for p in collector.payloads), what="batch 5")
        mosquitto.stop()
        time.sleep(1.5)  # the gateway spools meanwhile
        mosquitto.start()
        wait(lambda: service.wait_connected(1) and service.stats.received > 0, what="reconnect")
        seen = max(json.loads(p)["seq"] for p in collector.payloads)
        wait(lambda: any(json.loads(p)["seq"] >= seen + 5 for p in collector.payloads), what="five more batches")
        # a batch the broker lost in its outage comes again once its confirmation is overdue (30 s)
        kept = SqliteStore(tmp_path / "acc.sqlite")
        wait(lambda: {b.seq for b in kept.read_batches("test-site", 0, 2**62)} >= set(range(seen + 5)),
             timeout_s=120, what="the whole chain in accounting")
        kept.close()
        assert gateway.signal(signal.SIGTERM) == 0
        last = max(json.loads(p)["seq"] for p in collector.payloads)
        wait(lambda: service.stats.to_dict()["accepted"] >= len(published(collector.payloads)), what="all stored")
        service.check_chains()
        operator_alarms = service.alarms("test-site")
    finally:
        collector.stop()
        gateway.stop()
        service.stop()
    stats = service.stats.to_dict()
    assert stats["quarantined"] == 0
    store = SqliteStore(tmp_path / "acc.sqlite")
    batches = store.read_batches("test-site", 0, 2**62)
    assert sorted({b.seq for b in batches}) == list(range(last + 1)), "every batch once, batch 3 included"
    assert len({b.chain for b in batches}) == 1
    by_seq = {b.seq: b for b in batches}
    assert all(by_seq[s].prev == by_seq[s - 1].hash for s in range(1, last + 1)), "one unbroken chain"
    # a batch the broker lost may have been a gap for a while: it is closed; no fork, no new chain
    events = store.chain_events("test-site")
    assert [e for e in events if e.kind in ("fork", "new_chain")] == []
    assert all(e.resolved_ms is not None for e in events if e.kind == "gap")
    assert service.chains.alarms() == []
    assert [a for a in operator_alarms if a["kind"].startswith("chain_") and a["active"]] == [], \
        "a gap filled late leaves no active alarm"
    assert stored_ts(service) == published(collector.payloads)
    store.close()

"""The gateway signs and chains every batch as it forms it, keeps it signed in the spool, and
publishes it byte for byte the same however often it is republished."""

from __future__ import annotations

import json
import logging
import os
import sqlite3

import pytest

from gateway.service import GatewayService, encode_batch_body
from gateway.signing_key import generate_key, load_key
from gateway.spool import Spool
from tanji import signed_batch as sb
from tanji.wire import Reading, decode_batch
from tests.audit.signing import verify
from tests.gateway.conftest import simulated_site


def readings(n: int, start: int = 1_767_225_600_000) -> list[Reading]:
    return [Reading("m1", start + i, "good", {"energy_import_kwh": 100.0 + i, "power_kw": 1.5}) for i in range(n)]


def verified_chain(payloads: list[bytes], public_raw: bytes) -> list[tuple[int, str, str | None]]:
    """(seq, hash, prev) of each payload, after checking its signature (asserts on failure)."""
    out = []
    for payload in payloads:
        body = json.loads(payload)
        sig = sb.parse_signature(body["sig"])
        head = sig.header(body["site"], body["gateway"], body["seq"], sb.readings_digest(sb.raw_member(payload)))
        assert verify(public_raw, sig.value, head), f"batch {body['seq']} does not verify"
        out.append((body["seq"], sb.batch_hash(head), sig.prev))
    return out


def assert_linked(chain: list[tuple[int, str, str | None]]) -> None:
    by_seq = {seq: (h, prev) for seq, h, prev in chain}
    for seq, (_, prev) in by_seq.items():
        if seq - 1 in by_seq:
            assert prev == by_seq[seq - 1][0], f"batch {seq} does not name batch {seq - 1}"


def publish(spool: Spool, batch, sent_ms: int = 1_767_225_601_000, backlog: bool = False) -> bytes:
    return encode_batch_body("s", "g", batch.seq, batch.body, backlog=backlog, sent_ms=sent_ms, sig=batch.sig)


def test_spool_signs_chains_and_keeps_the_chain_across_reopen(tmp_path):
    key = generate_key(tmp_path / "gw.key")
    spool = Spool(tmp_path / "s.sqlite", signer=key, site="s", gateway="g")
    spool.add(readings(25))
    batches = [spool.next_batch(10) for _ in range(3)]
    first = [publish(spool, b) for b in batches]
    spool.close()
    spool = Spool(tmp_path / "s.sqlite", signer=key, site="s", gateway="g")
    # replayed after a restart: the same signed batch, only the transport fields differ
    replayed = [publish(spool, b, sent_ms=1_767_225_699_000, backlog=True) for b in spool.pending_batches()]
    assert [sb.raw_member(p) for p in replayed] == [sb.raw_member(p) for p in first]
    assert verified_chain(replayed, key.public_raw) == verified_chain(first, key.public_raw)
    spool.add(readings(5, start=1_767_225_700_000))
    later = publish(spool, spool.next_batch(10))
    chain = verified_chain([*first, later], key.public_raw)
    assert [seq for seq, _, _ in chain] == [0, 1, 2, 3] and chain[0][2] is None
    assert_linked(chain)
    assert {json.loads(p)["sig"]["chain"] for p in [*first, later]} == {spool.chain}


def test_a_spool_set_aside_continues_the_chain(tmp_path):
    key = generate_key(tmp_path / "gw.key")
    spool = Spool(tmp_path / "s.sqlite", signer=key, site="s", gateway="g")
    spool.add(readings(10))
    before = publish(spool, spool.next_batch(10))
    spool.close()
    (tmp_path / "s.sqlite").write_bytes(b"not a database" * 100)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{tmp_path / 's.sqlite'}{suffix}"):
            os.remove(f"{tmp_path / 's.sqlite'}{suffix}")
    spool = Spool(tmp_path / "s.sqlite", signer=key, site="s", gateway="g")
    assert spool.set_aside is not None
    spool.add(readings(3, start=1_767_225_700_000))
    after = publish(spool, spool.next_batch(10))
    chain = verified_chain([before, after], key.public_raw)
    assert [seq for seq, _, _ in chain] == [0, 1]
    assert_linked(chain)


def test_a_kill_before_the_commit_signs_nothing_twice(tmp_path):
    """The signature and the chain move in the batch's own transaction: a batch that never
    committed leaves no signature behind and the chain where it was."""
    key = generate_key(tmp_path / "gw.key")
    spool = Spool(tmp_path / "s.sqlite", signer=key, site="s", gateway="g")
    spool.add(readings(10))
    spool.next_batch(5)
    prev = spool.prev
    spool.db.execute("CREATE TRIGGER refuse BEFORE INSERT ON batch BEGIN SELECT RAISE(ABORT, 'disk gone'); END")
    with pytest.raises(sqlite3.Error):
        spool.next_batch(5)
    assert spool.prev == prev and spool.next_seq == 1
    spool.db.execute("DROP TRIGGER refuse")
    spool.close()
    spool = Spool(tmp_path / "s.sqlite", signer=key, site="s", gateway="g")
    assert spool.prev == prev and spool.queued == 5
    batch = spool.next_batch(5)
    assert json.loads(batch.sig)["prev"] == prev and batch.seq == 1


@pytest.mark.timeout(60)
def test_gateway_makes_its_key_at_first_start_and_signs_every_batch(tmp_path, mosquitto, plant_factory,
                                                                     collector_factory, caplog):
    _, site = simulated_site(tmp_path, mosquitto.port, period_s=0.1)
    plant_factory(site)
    collector = collector_factory(mosquitto.host, mosquitto.port)
    service = GatewayService(site, spool_path=tmp_path / "spool.sqlite", status_interval_s=0.5)
    with caplog.at_level(logging.WARNING, logger="tanji.gateway"):
        service.start()
        try:
            collector.wait_for(lambda: len(collector.batches) >= 10)
        finally:
            service.stop()
    key = load_key(tmp_path / "spool.sqlite.key")  # refuses a key others may read
    assert f'public_key: "{key.public_key}"' in caplog.text, "the log says how to register the new key"
    assert service.final_health["signing_key"] == key.key_id
    chain = verified_chain(collector.payloads, key.public_raw)
    assert sorted(seq for seq, _, _ in chain) == list(range(len(chain)))
    assert_linked(chain)
    for payload in collector.payloads:
        decode_batch(payload)  # third parties still read wire format v1


@pytest.mark.timeout(60)
def test_signatures_off_publishes_unsigned_batches(tmp_path, mosquitto, plant_factory, collector_factory):
    _, site = simulated_site(tmp_path, mosquitto.port, period_s=0.1)
    from dataclasses import replace
    site = replace(site, signatures="off")
    plant_factory(site)
    collector = collector_factory(mosquitto.host, mosquitto.port)
    service = GatewayService(site, spool_path=tmp_path / "spool.sqlite", status_interval_s=0.5)
    service.start()
    try:
        collector.wait_for(lambda: len(collector.batches) >= 3)
    finally:
        service.stop()
    assert all("sig" not in b for b in collector.batches)
    assert not (tmp_path / "spool.sqlite.key").exists()

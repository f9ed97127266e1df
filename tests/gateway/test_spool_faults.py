"""A spool on a full disk, a corrupt spool, an emptied spool: nothing silent, seq never goes back.

Findings reproduced (issue #14 item 7): with the disk full, publishing stayed blocked after the
broker returned ("cannot form a batch") and the real SQLITE_FULL was hidden behind "cannot
rollback"; a 0-byte spool started silently with its backlog gone and seq back to 0. A full disk
is made with SQLite's max_page_count (the same SQLITE_FULL a full file system gives).
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from gateway.service import GatewayService
from gateway.spool import Spool
from tanji.site import load_site
from tanji.wire import Reading
from tests.gateway.conftest import write_site
from tests.services import free_port

VALUES = {"energy_import_kwh": 1234.5, "power_kw": 3.2, "voltage_l1_v": 230.1}


def readings(n: int, start: int = 0) -> list[Reading]:
    return [Reading("m1", 1_700_000_000_000 + i, "good", VALUES) for i in range(start, start + n)]


def test_a_full_disk_reports_sqlite_full_and_batches_still_form(tmp_path):
    spool = Spool(tmp_path / "spool.sqlite", max_pages=40)
    with pytest.raises(sqlite3.OperationalError) as failed:
        spool.add(readings(5000))  # more than the disk holds even after making room
    assert "full" in str(failed.value).lower() and "rollback" not in str(failed.value)
    added = 0
    for i in range(200):  # fill it up in small commits, as the gateway does
        try:
            spool.add(readings(20, 10_000 + 20 * i))
            added += 20
        except sqlite3.OperationalError:
            break
    assert spool.full_errors > 0 and spool.dropped > 0, "the size policy made room instead of refusing"
    formed = 0
    while (batch := spool.next_batch(50)) is not None:  # with the disk full, batches still form
        spool.ack(batch.seq)
        formed += batch.n
    assert formed + spool.dropped == added
    spool.close()


def test_a_zero_byte_spool_is_set_aside_with_an_alarm_and_seq_continues(tmp_path):
    path = tmp_path / "spool.sqlite"
    spool = Spool(path)
    spool.add(readings(30))
    for _ in range(3):
        spool.next_batch(10)
    assert spool.next_seq == 3
    spool.close()
    path.write_bytes(b"")          # the file emptied (a botched copy, a filesystem repair)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"spool.sqlite{suffix}").unlink(missing_ok=True)
    again = Spool(path)
    assert again.set_aside is not None and again.stats()["spool_alarm"]
    assert (tmp_path / again.set_aside.split("/")[-1]).exists(), "kept aside, never silently replaced"
    assert again.next_seq == 3, "seq never goes back"
    again.add(readings(5, 100))
    assert again.next_batch(10).seq == 3
    again.close()


def test_a_corrupt_spool_is_set_aside_and_seq_continues(tmp_path):
    path = tmp_path / "spool.sqlite"
    spool = Spool(path)
    spool.add(readings(30))
    spool.next_batch(10)
    spool.next_batch(10)
    spool.close()
    raw = bytearray(path.read_bytes())
    raw[0:100] = b"\x00" * 100     # the header destroyed
    path.write_bytes(bytes(raw))
    again = Spool(path)
    assert again.set_aside and again.stats()["spool_set_aside"] == again.set_aside
    assert again.next_seq == 2
    again.close()


@pytest.mark.timeout(90)
def test_publishing_resumes_after_the_broker_returns_to_a_full_spool(tmp_path, mosquitto, plant_factory,
                                                                   collector_factory):
    port = free_port()
    site = load_site(write_site(tmp_path, [
        {"id": "incomer", "profile": "eastron-sdm630", "host": "127.0.0.1", "port": port, "unit_id": 1,
         "poll_period_s": 0.02}], mosquitto.port))
    plant_factory(site)
    mosquitto.stop()
    service = GatewayService(site, spool_path=tmp_path / "spool.sqlite", status_interval_s=0.5, max_spool_pages=60)
    service.start()
    try:
        deadline = time.monotonic() + 60
        while service.health()["spool_full_errors"] < 2:
            assert time.monotonic() < deadline, "the spool never filled"
            time.sleep(0.2)
        mosquitto.start()
        collector = collector_factory(mosquitto.host, mosquitto.port)
        collector.wait_for(lambda: len(collector.readings()) > 200, 60)
        health = service.health()
        assert health["spool_write_errors"] == 0 or health["unspooled_dropped"] == 0
        assert health["spool_dropped"] > 0, "room was made by the declared policy, and counted"
    finally:
        service.stop()

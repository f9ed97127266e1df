"""A dead, a refusing and a slow meter do not change the poll period of the others."""

from __future__ import annotations

import statistics
import time

import pytest

from gateway.service import GatewayService
from tanji.site import load_site
from tests.gateway.conftest import PROFILES, SDM630_VALUES, write_site
from tests.services import free_port

PERIOD_S = 0.1


@pytest.mark.timeout(60)
def test_bad_meters_do_not_delay_the_good_ones(tmp_path, mosquitto, fake_meters, collector_factory):
    port, closed_port = free_port(), free_port()
    for unit in (1, 2, 3, 4):
        fake_meters.add(port, unit, PROFILES["eastron-sdm630"], SDM630_VALUES)
    fake_meters.devices[(port, 3)].offline = True      # never answers: every poll times out
    fake_meters.devices[(port, 4)].delay_s = 0.3       # answers, three periods late
    fake_meters.start()
    common = {"profile": "eastron-sdm630", "host": "127.0.0.1", "poll_period_s": PERIOD_S, "timeout_s": 0.5}
    site_file = write_site(tmp_path, [
        {"id": "good-1", "port": port, "unit_id": 1, **common},
        {"id": "good-2", "port": port, "unit_id": 2, **common},
        {"id": "dead", "port": port, "unit_id": 3, **common},
        {"id": "slow", "port": port, "unit_id": 4, **common},
        {"id": "refused", "port": closed_port, "unit_id": 1, **common},
    ], mosquitto.port)
    collector = collector_factory(mosquitto.host, mosquitto.port)
    service = GatewayService(load_site(site_file), spool_path=tmp_path / "spool.sqlite", status_interval_s=0.5)
    service.start()
    time.sleep(4.0)
    health = service.health()
    service.stop()

    by_meter: dict[str, list[dict]] = {}
    for r in collector.readings():
        by_meter.setdefault(r["meter"], []).append(r)
    for meter in ("good-1", "good-2"):
        readings = by_meter[meter]
        assert all(r["quality"] == "good" for r in readings)
        gaps = [b["ts_ms"] - a["ts_ms"] for a, b in zip(readings, readings[1:], strict=False)]
        assert statistics.median(gaps) == pytest.approx(PERIOD_S * 1000, abs=15), gaps
        assert max(gaps) < 3 * PERIOD_S * 1000, gaps
        assert health["meters"][meter]["overruns"] == 0 and health["meters"][meter]["errors"] == 0
    # The failing meters report comm_error readings with no values, and back off.
    for meter in ("dead", "refused"):
        readings = by_meter[meter]
        assert readings and all(r["quality"] == "comm_error" and r["values"] == {} for r in readings)
        assert health["meters"][meter]["consecutive_errors"] >= 2
        assert len(readings) < len(by_meter["good-1"]) / 4, "a failing meter backs off"
    # The slow meter still delivers good readings, at the pace it can.
    slow = by_meter["slow"]
    assert slow and all(r["quality"] == "good" for r in slow)
    assert health["meters"]["slow"]["overruns"] > 0

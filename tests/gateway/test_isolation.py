"""A dead, a refusing and a slow meter do not change the poll period of the others.

Each Modbus TCP meter has its own address here, as meters with their own Ethernet port do;
meters sharing one address share its connection (tests/gateway/test_serial_server.py), unless
the endpoint lets a Modbus TCP gateway work on several requests at once (`max_in_flight`,
the second test).
"""

from __future__ import annotations

import statistics
import time

import pytest

from gateway.service import GatewayService
from tanji.site import load_site
from tests.gateway.conftest import write_site
from tests.services import free_port

PERIOD_S = 0.1


NAMES = ["good-1", "good-2", "dead", "slow", "refused"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layout", ["own-address", "gateway-max-in-flight"])
def test_bad_meters_do_not_delay_the_good_ones(tmp_path, mosquitto, plant_factory, collector_factory, layout):
    common = {"profile": "eastron-sdm630", "poll_period_s": PERIOD_S, "timeout_s": 0.5}
    if layout == "own-address":
        meters = [{"id": name, "unit_id": 1, "host": "127.0.0.1", "port": free_port(), **common} for name in NAMES]
        extra = {}
    else:  # one Modbus TCP gateway address, 5 unit ids, requests matched by transaction id
        meters = [{"id": name, "unit_id": unit, "endpoint": "mgate", **common}
                  for unit, name in enumerate(NAMES, start=1)]
        extra = {"endpoints": [{"id": "mgate", "host": "127.0.0.1", "port": free_port(), "framing": "tcp",
                                "max_in_flight": 5}]}
    site = load_site(write_site(tmp_path, meters, mosquitto.port, **extra))
    plant = plant_factory(site)
    plant.inject("dead", "offline")                # never answers: every poll times out
    plant.inject("slow", "slow", delay_s=0.3)      # answers, three periods late
    # The gateway looks for "refused" on a port where nothing listens.
    gateway_site = site.with_meter_addresses({"refused": ("127.0.0.1", free_port())})
    collector = collector_factory(mosquitto.host, mosquitto.port)
    service = GatewayService(gateway_site, spool_path=tmp_path / "spool.sqlite", status_interval_s=0.5)
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
        assert max(gaps) < 5 * PERIOD_S * 1000, gaps  # scheduling jitter on a busy machine, not a missed poll
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

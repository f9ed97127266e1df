"""Quality codes end to end: simulator faults → the codes accounting receives."""

from __future__ import annotations

import time

import pytest

from gateway.service import GatewayService
from tests.gateway.conftest import simulated_site


@pytest.mark.timeout(60)
def test_simulated_faults_become_quality_codes(tmp_path, mosquitto, plant_factory, collector_factory):
    _, site = simulated_site(tmp_path, mosquitto.port, period_s=0.1)
    plant = plant_factory(site)
    collector = collector_factory(mosquitto.host, mosquitto.port)
    service = GatewayService(site, spool_path=tmp_path / "spool.sqlite")
    service.start()
    try:
        collector.wait_for(lambda: len(collector.unique().get("plc-a", [])) >= 5)
        plant.inject("plc-a", "counter_reset", value=0)            # the PLC restarted: counters from 0
        plant.inject("line-a-meter", "exception", code=6)          # "device busy" on every request
        time.sleep(1.5)
        plant.clear("line-a-meter")
        collector.wait_for(lambda: any(r["meter"] == "line-a-meter" and r["quality"] == "good"
                                       for r in collector.readings()[-20:]))
    finally:
        service.stop()
    plc = [r for r in collector.readings() if r["meter"] == "plc-a"]
    flagged = [r for r in plc if r["quality"] == "counter_reset_suspected"]
    assert len(flagged) == 1, "only the first reading after the reset is suspect"
    assert flagged[0]["value_quality"]["units_total"] == "counter_reset_suspected"
    before = plc[plc.index(flagged[0]) - 1]["values"]["units_total"]
    assert flagged[0]["values"]["units_total"] < before
    line = [r for r in collector.readings() if r["meter"] == "line-a-meter"]
    errors = [r for r in line if r["quality"] == "comm_error"]
    assert errors and all(r["values"] == {} for r in errors)
    assert 2 <= len(errors) <= 10, "the meter answering exceptions backed off"
    assert line[-1]["quality"] == "good"
    assert all(r["quality"] == "good" for r in collector.readings() if r["meter"] == "incomer")

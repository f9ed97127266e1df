"""Eight unit ids on one RS-485 bus, served by the plant simulator over a pty (socat)."""

from __future__ import annotations

import time

import pytest

from gateway.service import GatewayService
from simulators.plant import PlantSimulator
from tanji.site import load_site
from tests.gateway.conftest import write_site

DELAY_MS = 20.0
PERIOD_S = 0.1


@pytest.mark.timeout(60)
def test_eight_units_share_the_bus_one_request_at_a_time(tmp_path, mosquitto, pty_pair, collector_factory):
    sim_end, gateway_end = pty_pair
    meters = [{"id": f"m{u}", "transport": "rtu", "bus": "rs485-1", "unit_id": u, "poll_period_s": PERIOD_S,
               "profile": "eastron-sdm630"} for u in range(1, 7)]
    meters += [{"id": f"plc{u}", "transport": "rtu", "bus": "rs485-1", "unit_id": u, "poll_period_s": PERIOD_S,
                "profile": "generic-plc-counter", "role": "production_counter", "cost_centre": "line-a"}
               for u in (7, 8)]
    site_file = write_site(tmp_path, meters, mosquitto.port, buses=[
        {"id": "rs485-1", "device": gateway_end, "baudrate": 19200, "timeout_s": 0.5,
         "inter_frame_delay_ms": DELAY_MS}])
    site = load_site(site_file)
    plant = PlantSimulator.from_site(site, seed=0, serial_devices={"rs485-1": sim_end})
    plant.start()
    collector = collector_factory(mosquitto.host, mosquitto.port)
    service = GatewayService(site, spool_path=tmp_path / "spool.sqlite", status_interval_s=0.5)
    try:
        service.start()
        started = time.monotonic()
        time.sleep(4.0)
        health = service.health()
        elapsed = time.monotonic() - started
        bus = service.scheduler.buses["rs485-1"]
        requests = bus.requests
    finally:
        service.stop()
        plant.stop()

    per_meter = {m: h["polls"] for m, h in health["meters"].items()}
    assert set(per_meter) == {m["id"] for m in meters}
    assert health["poll_errors"] == 0, "no collision, no timeout: one frame on the line at a time"
    # 8 meters every 0.1 s want 80 requests/s; the 20 ms of silence after each frame caps the
    # line at 50/s, so the bus (not the meters' periods) sets the pace, and it is shared fairly.
    assert requests <= (elapsed + 1) / (DELAY_MS / 1000)
    assert requests >= 0.6 * elapsed / (DELAY_MS / 1000)
    assert max(per_meter.values()) - min(per_meter.values()) <= 2, per_meter
    collector.wait_for(lambda: len(collector.unique()) == 8)
    good = [r for r in collector.readings() if r["quality"] == "good"]
    assert {r["meter"] for r in good} == set(per_meter)
    plc = next(r for r in good if r["meter"] == "plc7")
    assert set(plc["values"]) == {"units_total", "units_rejected_total", "batch_id", "line_running"}
    sdm = next(r for r in good if r["meter"] == "m1")
    assert 200 < sdm["values"]["voltage_l1_v"] < 260

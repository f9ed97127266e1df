"""The plant watch and the operator's log: what changed, alarms, acknowledgement, durability.

Readings are the ones ingest hands the service (StoredReading rows of the demo site); the
engine is a real one (its gap rule, site balance and factors are what the watch judges by).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accounting.engine.engine import Engine
from accounting.errors import UnknownAlarmError
from accounting.live.engine_state import dataset_for
from accounting.live.watch import OFFLINE_REFRESH_MS, PlantWatch
from accounting.site_topology import site_topology
from accounting.store.alarms import AlarmStore
from accounting.store.base import StoredReading
from tanji.site import load_site, parse_site_text


def load_site_text(text: str):  # noqa: ANN201
    return parse_site_text(text, str(SITE_FILE))


SITE_FILE = Path(__file__).resolve().parents[2] / "firmware-config" / "sites" / "cq-battery.yaml"
T0 = 1_750_000_000_000
HOUR0 = T0 - T0 % 3_600_000


@pytest.fixture
def plant() -> tuple[PlantWatch, AlarmStore, Engine]:
    site = load_site(SITE_FILE)
    engine = Engine(site_topology(site), dataset_for(site))
    store = AlarmStore()
    return PlantWatch({site.id: site}, store, lambda _: engine), store, engine


def plc(ts: int, units: float, running: float = 1.0, meter: str = "plc-b") -> StoredReading:
    return StoredReading("cq-battery", "gw-cq-01", meter, ts, "good",
                         {"units_total": units, "units_rejected_total": 0.0, "batch_id": 7.0, "line_running": running})


def kinds(store: AlarmStore) -> list[str]:
    return [c["kind"] for c in reversed(store.changes())]


def test_a_step_across_a_recorded_replacement_is_a_change_not_an_alarm() -> None:
    """The engine books the step from the record: the operator sees what was recorded, no alarm;
    a step back of the register the record does not name still raises one."""
    text = SITE_FILE.read_text()
    old = "unit_id: 2, poll_period_s: 1}"
    assert text.count(old) == 1
    site = load_site_text(text.replace(old, "unit_id: 2, poll_period_s: 1, replacements: [{at: '2025-06-15T15:00:01.500Z', "
                                       "old_final: {units_total: 11507.5}, new_initial: {units_total: 3}}]}"))
    engine = Engine(site_topology(site), dataset_for(site))
    store = AlarmStore()
    watch = PlantWatch({site.id: site}, store, lambda _: engine)
    swap = HOUR0 + 1500
    assert HOUR0 + 1000 < swap <= HOUR0 + 2000
    watch.observe({"cq-battery": [plc(HOUR0, 11_506), plc(HOUR0 + 1000, 11_507)]})
    watch.observe({"cq-battery": [plc(HOUR0 + 2000, 4), plc(HOUR0 + 3000, 5)]})
    assert store.alarms() == []
    [change] = store.changes()
    assert change["kind"] == "meter_replaced" and change["subject"] == "plc-b" and change["ts_ms"] == HOUR0 + 2000
    assert change["detail"]["old_final"] == {"units_total": 11507.5} and change["detail"]["at_ms"] == swap
    watch.observe({"cq-battery": [plc(HOUR0 + 5000, 2)]})
    [alarm] = store.alarms(active=True)
    assert alarm["kind"] == "counter_step_back" and alarm["detail"]["from"] == 5


def test_line_stop_and_start_are_changes(plant: tuple[PlantWatch, AlarmStore, Engine]) -> None:
    watch, store, _ = plant
    watch.observe({"cq-battery": [plc(HOUR0, 100), plc(HOUR0 + 1000, 101)]})
    assert kinds(store) == []  # the first state seen is no change
    watch.observe({"cq-battery": [plc(HOUR0 + 2000, 101, 0.0), plc(HOUR0 + 3000, 101, 0.0)]})
    watch.observe({"cq-battery": [plc(HOUR0 + 4000, 102, 1.0)]})
    assert kinds(store) == ["line_stopped", "line_started"]
    assert [c["subject"] for c in store.changes()] == ["line-b", "line-b"]
    assert store.changes()[1]["ts_ms"] == HOUR0 + 2000
    assert store.alarms() == []


def test_a_counter_going_back_is_an_alarm_until_acknowledged(plant: tuple[PlantWatch, AlarmStore, Engine]) -> None:
    """The issue's PLC after a simulator restart: 11,507 → 11,489 must be visible."""
    watch, store, _ = plant
    watch.observe({"cq-battery": [plc(HOUR0, 11_506), plc(HOUR0 + 1000, 11_507)]})
    watch.observe({"cq-battery": [plc(HOUR0 + 2000, 11_489), plc(HOUR0 + 3000, 11_490)]})
    [alarm] = store.alarms(active=True)
    assert alarm["kind"] == "counter_step_back" and alarm["subject"] == "plc-b/units_total"
    assert alarm["detail"]["from"] == 11_507 and alarm["detail"]["to"] == 11_489 and alarm["latching"]
    assert "counter_step_back" in kinds(store)
    # A latching alarm does not clear itself; acknowledging ends it and keeps who and why.
    assert store.clear_alarm("cq-battery", "counter_step_back", "plc-b/units_total") is False
    acked = store.acknowledge(alarm["id"], "Wang Fang", "PLC restarted from its last backup")
    assert not acked["active"] and acked["acked_by"] == "Wang Fang"
    assert store.alarms(active=True) == []
    with pytest.raises(UnknownAlarmError):
        store.acknowledge(alarm["id"] + 100, "x")


def test_a_rollover_is_information_an_implausible_jump_a_warning(plant: tuple[PlantWatch, AlarmStore, Engine]) -> None:
    watch, store, engine = plant
    wrap = engine.topology.meter("plc-b").rollover_kwh
    assert wrap > 0
    watch.observe({"cq-battery": [plc(HOUR0, wrap - 5), plc(HOUR0 + 1000, 3)]})
    assert kinds(store) == ["counter_rollover"] and store.alarms() == []
    # A 0.01 kWh register behind a 40:1 CT steps 0.4 kWh: one step in a second is no jump.
    air = [StoredReading("cq-battery", "gw-cq-01", "air-meter", HOUR0 + k * 1000, "good",
                         {"energy_import_kwh": 10_530.0 + 0.4 * (k // 3)}) for k in range(12)]
    watch.observe({"cq-battery": air})
    assert store.alarms() == []
    line_meter = engine.topology.meter("line-b-meter")
    kwh = 5000.0
    jump = line_meter.max_power_kw * 10 / 3600  # ten seconds' worth of the plausible maximum in one
    rows = [StoredReading("cq-battery", "gw-cq-01", "line-b-meter", HOUR0 + k * 1000, "good",
                          {"energy_import_kwh": v, "power_kw": 100.0})
            for k, v in enumerate((kwh, kwh + 0.04, kwh + 0.04 + jump))]
    watch.observe({"cq-battery": rows})
    [alarm] = store.alarms(active=True)
    assert alarm["kind"] == "implausible_jump" and alarm["subject"] == "line-b-meter/energy_import_kwh"


def test_a_gap_in_readings_is_reported_once_as_estimated(plant: tuple[PlantWatch, AlarmStore, Engine]) -> None:
    watch, store, engine = plant
    assert engine.gap_polls * 1.0 < 30  # polled every second: 30 s is a gap
    watch.observe({"cq-battery": [plc(HOUR0, 10), plc(HOUR0 + 1000, 11), plc(HOUR0 + 31_000, 20),
                                  plc(HOUR0 + 32_000, 21)]})
    [gap] = store.changes()
    assert gap["kind"] == "estimated_gap" and gap["subject"] == "plc-b"
    assert gap["detail"]["gaps"] == 1 and gap["detail"]["seconds"] == 30.0


def test_offline_meter_alarm_clears_when_it_is_back(plant: tuple[PlantWatch, AlarmStore, Engine]) -> None:
    watch, store, _ = plant
    now = watch._started_ms + 600_000
    # Right after a start, stored readings are old but the meters are not offline: give them time.
    watch.check([{"site": "cq-battery", "meter": "plc-a", "last_ts_ms": now - 900_000}], [],
                now_ms=watch._started_ms + 1000)
    assert store.alarms() == []
    rows = [{"site": "cq-battery", "meter": "plc-a", "last_ts_ms": now - 1000},
            {"site": "cq-battery", "meter": "air-meter", "last_ts_ms": now - 45_000}]
    watch.check(rows, [], now_ms=now)
    watch.check(rows, [], now_ms=now + 1000)  # still offline: one alarm, not refreshed every second
    [alarm] = store.alarms(active=True)
    assert alarm["kind"] == "meter_offline" and alarm["subject"] == "air-meter"
    assert alarm["last_seen_ms"] == now and "no reading for 45 s" in alarm["message"], alarm
    rows[0]["last_ts_ms"] = now + 30_000
    watch.check(rows, [], now_ms=now + OFFLINE_REFRESH_MS)  # refreshed once the interval has passed
    [alarm] = store.alarms(active=True)
    assert alarm["last_seen_ms"] == now + OFFLINE_REFRESH_MS and "no reading for 75 s" in alarm["message"], alarm
    rows[1]["last_ts_ms"] = now + 1500
    watch.check(rows, [], now_ms=now + 2000)
    assert store.alarms(active=True) == []
    assert store.alarm(alarm["id"])["cleared_ms"] == now + 2000
    assert kinds(store) == ["meter_offline", "meter_online"]


def test_gateway_backlog_alarm(plant: tuple[PlantWatch, AlarmStore, Engine]) -> None:
    watch, store, _ = plant
    gateway = {"site": "cq-battery", "gateway": "gw-cq-01",
               "status": {"spool_depth": 90_000, "publish_lag_ms": 300_000, "spool_alarm": False}}
    watch.check([], [gateway])
    [alarm] = store.alarms(active=True)
    assert alarm["kind"] == "gateway_backlog" and alarm["detail"]["spool_depth"] == 90_000
    gateway["status"] = {"spool_depth": 3, "publish_lag_ms": 900, "spool_alarm": False}
    watch.check([], [gateway])
    assert store.alarms(active=True) == []


def test_negative_remainder_beyond_accuracy_is_an_alarm(plant: tuple[PlantWatch, AlarmStore, Engine]) -> None:
    """Submeters that measure more than the incomer (a CT ratio set wrong) raise the engine's
    site-balance alarm; the watch turns it into one alarm for that hour."""
    watch, store, engine = plant
    incomer = engine.channel_index("incomer", "energy_import_kwh")
    line = engine.channel_index("line-b-meter", "energy_import_kwh")
    ts = np.array([HOUR0, HOUR0 + 3_000_000] * 2, dtype=np.int64)
    engine.ingest(np.array([incomer, incomer, line, line]), ts, np.array([100.0, 110.0, 500.0, 560.0]))
    watch.check([], [], now_ms=HOUR0 + 3_000_000)
    [alarm] = store.alarms(active=True)
    assert alarm["kind"] == "negative_remainder" and alarm["detail"]["hour_start_ms"] == HOUR0
    assert alarm["detail"]["remainder_kwh"] == pytest.approx(10 - 60)


def test_the_log_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "alarms.sqlite"
    store = AlarmStore(path)
    alarm_id, new = store.raise_alarm("cq-battery", "meter_offline", "air-meter", severity="alarm", message="x")
    assert new and store.raise_alarm("cq-battery", "meter_offline", "air-meter", severity="alarm",
                                     message="y")[0] == alarm_id
    store.acknowledge(alarm_id, "Li", "cable replaced")
    store.record_change("cq-battery", "line_stopped", "line-a", "stopped", {"meter": "plc-a"}, ts_ms=T0)
    store.close()
    again = AlarmStore(path)
    [alarm] = again.alarms()
    assert alarm["message"] == "y" and alarm["acked_by"] == "Li" and alarm["ack_note"] == "cable replaced"
    assert again.changes()[0]["detail"] == {"meter": "plc-a"}
    assert again.active_subjects("cq-battery", "meter_offline") == {"air-meter"}

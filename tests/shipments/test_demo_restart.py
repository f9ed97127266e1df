"""A restarted demo's line PLCs go on with the batch they showed, never reopening old batch numbers
(an old number shown again would merge a new span into a shipped batch)."""

from __future__ import annotations

from pathlib import Path

from accounting.store.base import StoredReading
from accounting.store.sqlite import SqliteStore
from demo.cli import DEFAULT_SCENARIO
from demo.history import continue_from_store
from simulators.plant import PlantSimulator
from simulators.scenario import load_scenario


def test_plc_batch_continues_after_restart(tmp_path: Path) -> None:
    scenario = load_scenario(DEFAULT_SCENARIO)
    store = SqliteStore(tmp_path / "tanji.sqlite")
    store.write_readings([StoredReading("cq-battery", "gw-cq-01", "plc-a", 1_750_000_000_000, "good",
                                        {"units_total": 850_000.0, "units_rejected_total": 13_000.0,
                                         "batch_id": 254_321.0})])
    plant = PlantSimulator(scenario, seed=1)
    model = plant.devices["plc-a"].model
    assert model.values(0.0)["batch_id"] != 254_321.0  # a fresh plant starts at its first batch
    continue_from_store(store, "cq-battery", plant)
    assert model.values(0.0)["batch_id"] == 254_321.0
    assert model.values(0.0)["units_total"] == 850_000.0
    store.close()

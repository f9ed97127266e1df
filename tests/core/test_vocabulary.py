"""The shared vocabulary of tanji/: each word defined once, with the rules that go with it."""

from __future__ import annotations

import json

import pytest

from tanji import wire
from tanji.methods import dataset_ref, parse_dataset_ref
from tanji.profile import RATIOS, Register
from tanji.quality import QUALITY_CODES, worst
from tanji.quantities import COUNTERS, ENERGY_COUNTERS, PRODUCTION_COUNTERS, QUANTITIES, Quantity
from tanji.roles import counters_for


def test_quality_codes_have_one_order_the_severity() -> None:
    assert wire.QUALITY_CODES is QUALITY_CODES
    schema = json.loads(wire.SCHEMA_PATH.read_text())
    assert tuple(schema["$defs"]["quality"]["enum"]) == QUALITY_CODES
    assert worst([]) == "good"
    assert worst({"stale", "comm_error", "out_of_range"}) == "comm_error"
    assert worst(("good", "counter_reset_suspected", "stale")) == "counter_reset_suspected"


def test_every_quantity_has_a_kind_and_every_counter_a_flow() -> None:
    kinds = {q.kind for q in QUANTITIES.values()}
    assert kinds == {"counter", "state", "gauge"}
    assert QUANTITIES["batch_id"].kind == "state" and QUANTITIES["line_running"].kind == "state"
    assert set(COUNTERS) == set(ENERGY_COUNTERS) | set(PRODUCTION_COUNTERS)
    assert all(QUANTITIES[c].unit == "kWh" for c in ENERGY_COUNTERS)
    with pytest.raises(ValueError, match="flow"):
        Quantity("water_m3", "m3", "counter", "a counter without a flow")
    with pytest.raises(ValueError, match="kind"):
        Quantity("batch", "1", "label", "the old name of a state")  # type: ignore[arg-type]


def test_roles_take_the_counters_of_their_flows() -> None:
    sdm630 = ["energy_import_kwh", "energy_export_kwh", "power_kw"]
    assert counters_for("grid_import", sdm630) == ("energy_import_kwh", "energy_export_kwh")
    assert counters_for("submeter", sdm630) == ("energy_import_kwh", "energy_export_kwh")
    # A PV meter brings one counter: the inverter's generation, else what a meter at it exports.
    assert counters_for("pv", ["energy_generated_kwh", "power_kw"]) == ("energy_generated_kwh",)
    assert counters_for("pv", sdm630) == ("energy_export_kwh",)
    assert counters_for("pv", ["energy_import_kwh"]) == ("energy_import_kwh",)
    # A tariff register is part of the total: the books take the total only, never both.
    tariffs = [*sdm630, "energy_import_t1_kwh", "energy_import_t2_kwh", "energy_export_t1_kwh"]
    assert counters_for("grid_import", tariffs) == ("energy_import_kwh", "energy_export_kwh")
    plc = ["units_total", "units_rejected_total", "batch_id", "line_running"]
    assert counters_for("production_counter", plc) == ("units_total", "units_rejected_total")
    assert counters_for("production_counter", sdm630) == ()


@pytest.mark.parametrize(("apply_ratio", "expected"), [("none", 1.0), ("ct", 40.0), ("vt", 100.0),
                                                       ("ctvt", 4000.0)])
def test_the_ct_vt_rule(apply_ratio: str, expected: float) -> None:
    assert set(RATIOS) == {"none", "ct", "vt", "ctvt"}
    reg = Register("energy_import_kwh", 0, "float32", "ABCD", 1.0, "input", apply_ratio, None, None)
    assert reg.ratio(ct_ratio=40.0, vt_ratio=100.0) == expected


def test_dataset_references() -> None:
    assert parse_dataset_ref("cn-mee-regional-co2@2022") == ("cn-mee-regional-co2", ("2022",))
    assert parse_dataset_ref("cn-electricity-carbon-footprint") == ("cn-electricity-carbon-footprint", ())
    assert parse_dataset_ref(" x@2023+2024 ") == ("x", ("2023", "2024"))
    # written back the one way every part writes it (records, labels, the CLI, recompute)
    for ref in ("cn-mee-regional-co2@2022", "cn-electricity-carbon-footprint", "x@2023+2024"):
        assert dataset_ref(*parse_dataset_ref(ref)) == ref
    assert dataset_ref("x", "2023+2024") == "x@2023+2024" and dataset_ref("x", None) == "x"


def test_a_site_has_one_zone() -> None:
    """Every part takes a site's zone from `Site.zone` (the API's windows, shipments' lots, the
    plant watch, the factor CLI, the demo): a site file's name, else Beijing time."""
    from dataclasses import replace
    from pathlib import Path

    from tanji.site import load_site

    site = load_site(Path(__file__).resolve().parents[2] / "firmware-config" / "sites" / "cq-battery.yaml")
    assert site.zone.key == site.timezone
    assert replace(site, timezone="").zone.key == "Asia/Shanghai"
    assert replace(site, timezone="Nowhere/Atlantis").zone.key == "Asia/Shanghai"

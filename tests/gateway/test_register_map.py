"""Decoding responses into readings: units, CT/VT ratios, and every quality code."""

from __future__ import annotations

import math

import pytest

from gateway.read_plan import plan_for_profile
from gateway.register_map import RegisterMap
from tanji.codec import encode
from tanji.site import Meter
from tests.gateway.conftest import PLC_VALUES, PROFILES, SDM630_VALUES


def meter(profile: str, ct: float = 1.0, vt: float = 1.0) -> Meter:
    return Meter(id="m1", gateway="gw", profile=PROFILES[profile], role="submeter", transport="tcp", unit_id=1,
                 poll_period_s=1.0, cost_centre="c", host="127.0.0.1", port=502, ct_ratio=ct, vt_ratio=vt)


def words_for(m: Meter, values: dict[str, float]) -> list[list[int]]:
    """The device's registers for `values` (secondary side, canonical units), one list per request."""
    plan = plan_for_profile(m.profile)
    out = []
    for req in plan:
        words = [0] * req.count
        for r in req.registers:
            raw = values[r.name] / r.scale
            words[r.address - req.address:r.end - req.address] = encode(raw, r.data_type, r.order)
        out.append(words)
    return out


def test_sdm630_values_with_ct_and_vt_ratios():
    m = meter("eastron-sdm630", ct=40, vt=2)
    reading = RegisterMap(m, plan_for_profile(m.profile)).decode(words_for(m, SDM630_VALUES), 1000)
    v = reading.values
    assert reading.quality == "good" and reading.value_quality is None and reading.ts_ms == 1000
    assert v["current_l1_a"] == pytest.approx(2.5 * 40)          # apply_ratio: ct
    assert v["voltage_l1_v"] == pytest.approx(231.5)              # apply_ratio: none
    assert v["power_kw"] == pytest.approx(1.5 * 80, rel=1e-6)     # W → kW, then ct × vt
    assert v["energy_import_kwh"] == pytest.approx(1000 * 80)
    assert set(v) == {r.name for r in m.profile.registers}


def test_plc_counter_low_word_first():
    m = meter("generic-plc-counter")
    values = {**PLC_VALUES, "units_total": 70000}  # needs both words
    reading = RegisterMap(m, plan_for_profile(m.profile)).decode(words_for(m, values), 1)
    assert reading.values["units_total"] == 70000 and reading.values["batch_id"] == 42


def test_out_of_range_and_nan():
    m = meter("eastron-sdm630")
    rmap = RegisterMap(m, plan_for_profile(m.profile))
    reading = rmap.decode(words_for(m, {**SDM630_VALUES, "power_factor": 1.7, "frequency_hz": math.nan}), 1)
    assert reading.quality == "out_of_range"
    assert reading.value_quality == {"power_factor": "out_of_range", "frequency_hz": "out_of_range"}
    assert reading.values["power_factor"] == pytest.approx(1.7) and reading.values["frequency_hz"] is None


def test_counter_reset_versus_rollover():
    m = meter("generic-plc-counter")
    rmap = RegisterMap(m, plan_for_profile(m.profile))
    top = 4294967296
    sequence = [(top - 10, "good"), (5, "good"),                 # wrapped at the rollover value: kept counting
                (7, "good"), (3, "counter_reset_suspected"),     # went down: PLC restarted
                (4, "good")]                                     # counting again from the new base
    for i, (units, expected) in enumerate(sequence):
        reading = rmap.decode(words_for(m, {**PLC_VALUES, "units_total": units}), i)
        assert reading.quality == expected, (units, reading)
    assert reading.values["units_total"] == 4


def test_energy_counter_going_down_is_suspected():
    m = meter("eastron-sdm630")
    rmap = RegisterMap(m, plan_for_profile(m.profile))
    rmap.decode(words_for(m, SDM630_VALUES), 1)
    reading = rmap.decode(words_for(m, {**SDM630_VALUES, "energy_import_kwh": 10.0}), 2)
    assert reading.value_quality == {"energy_import_kwh": "counter_reset_suspected"}
    assert reading.quality == "counter_reset_suspected"


def test_frozen_grid_values_become_stale():
    m = meter("eastron-sdm630")
    rmap = RegisterMap(m, plan_for_profile(m.profile), stale_after_s=10)
    words = words_for(m, SDM630_VALUES)
    assert rmap.decode(words, 0).quality == "good"
    assert rmap.decode(words, 9_999).quality == "good"
    stale = rmap.decode(words, 10_000)
    assert stale.quality == "stale"
    assert stale.value_quality == dict.fromkeys(["voltage_l1_v", "voltage_l2_v", "voltage_l3_v", "frequency_hz"],
                                                "stale")
    # One jitter in the last bit of a voltage is a live meter again.
    assert rmap.decode(words_for(m, {**SDM630_VALUES, "voltage_l1_v": 231.50002}), 11_000).quality == "good"


def test_failed_poll_is_comm_error_with_no_values():
    m = meter("eastron-sdm630")
    reading = RegisterMap(m, plan_for_profile(m.profile)).failed(5)
    assert (reading.quality, reading.values, reading.ts_ms) == ("comm_error", {}, 5)

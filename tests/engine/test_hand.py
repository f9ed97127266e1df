"""Hand-calculated cases. The worked example's numbers are the ones in docs/accounting.md."""

from __future__ import annotations

import numpy as np
import pytest

from accounting.engine import Engine
from accounting.errors import CertificateAlreadyClaimedError
from accounting.factors import load_dataset
from accounting.instruments import (
    GecLedger,
    GreenCertificate,
    GreenPowerContract,
    InstrumentPortfolio,
)
from accounting.topology import CostCentre, Meter, Product, SiteTopology
from tests.engine.scenarios import T0, H, worked_example_arrays, worked_example_topology

NATIONAL_2022 = load_dataset("cn-mee-national-co2", "2022")
REGIONAL_2022 = load_dataset("cn-mee-regional-co2", "2022")


def by_id(footprints):
    return {f.product_id: f for f in footprints}


def worked_engine(mode="annual", with_contract=True):
    topo = worked_example_topology(mode)
    portfolio = None
    if with_contract:
        ledger = GecLedger()
        ledger.register([GreenCertificate("GEC-0001", "2025-03", "wind_onshore", "Gansu")])
        portfolio = InstrumentPortfolio("js-01", ledger)
        granularity, period = ("hourly", T0) if mode == "hourly" else ("monthly", "2025-03")
        portfolio.add_contract(GreenPowerContract("PPA-1", "wind_onshore", "Gansu", granularity,
                                                  ((period, 30.0),), ("GEC-0001",), earmark="A"))
    engine = Engine(topo, NATIONAL_2022, instruments=portfolio)
    engine.ingest(*worked_example_arrays(engine))
    return engine


@pytest.mark.parametrize("mode", ["annual", "monthly", "hourly"])
def test_worked_example(mode):
    engine = worked_engine(mode)
    fp = by_id(engine.footprints(T0, T0 + H))
    a, b, c = fp["A"], fp["B"], fp["C"]
    # C = 80 - 10 + 50 = 120; R = 120 - (40 + 40 + 20) = 20; air 20 -> 10/10; R -> 10/10 by energy
    assert a.energy_kwh == pytest.approx(60.0)
    assert (b.energy_kwh, c.energy_kwh) == pytest.approx((20.0, 40.0))
    assert a.units == pytest.approx(30.0)
    assert a.kgco2e_location == pytest.approx(60 * 0.5366)
    assert a.kgco2e_per_unit_location == pytest.approx(1.0732)
    # PV self-consumption 40 of 120 kWh covers a third of everyone; the 30 kWh contract is
    # earmarked to A (40 kWh left) -> 10 kWh uncovered at the residual mix 0.5856
    assert a.kgco2e_market == pytest.approx(5.856)
    assert a.kgco2e_per_unit_market == pytest.approx(0.1952)
    assert b.kgco2e_market == pytest.approx(20 * 2 / 3 * 0.5856)
    assert c.kgco2e_market == pytest.approx(40 * 2 / 3 * 0.5856)
    assert a.renewable_share == pytest.approx(50 / 60)
    assert a.residual_mix == "available"
    assert (a.share_metered, a.share_allocated, a.share_estimated) == pytest.approx((2 / 3, 1 / 3, 0))
    assert a.uncertainty_pct_95 == pytest.approx(5.0999, abs=1e-3)
    assert a.primary_data_share == pytest.approx(32.196 / (32.196 + 90.0))
    assert a.hourly_matched_share == (pytest.approx(50 / 60) if mode == "hourly" else None)
    assert (a.dataset_id, a.dataset_version, a.matching_mode) == ("cn-mee-national-co2", "2022", mode)
    used = [u for u in engine.instrument_usage() if u["kind"] == "contract"]
    assert used[0]["used_kwh"] == pytest.approx(30.0)
    bal = engine.site_balance()
    assert bal.columns["consumption_kwh"][0] == pytest.approx(120.0)
    assert bal.columns["allocated_kwh"][0] + bal.columns["unallocated_kwh"][0] == pytest.approx(120.0)


def test_worked_example_without_instruments_location_unchanged():
    with_ppa = by_id(worked_engine(with_contract=True).footprints(T0, T0 + H))
    without = by_id(worked_engine(with_contract=False).footprints(T0, T0 + H))
    for k in "ABC":
        assert with_ppa[k].kgco2e_location == without[k].kgco2e_location
    assert without["A"].kgco2e_market == pytest.approx(40 * 0.5856)


def single_line(**meter_kw):
    return SiteTopology(
        site_id="cq-01", grid_region="Southwest",
        meters=(Meter("main", "grid_import", ("energy_import_kwh",), **meter_kw),
                Meter("plc", "production_counter", ("units_total",), cost_centre="L1")),
        cost_centres=(CostCentre("L1"),),
        products=(Product("P", line="L1", units_meter="plc"),),
        remainder_key="units")


def feed(engine, rows):
    ch = np.array([engine.channel_index(m, c) for m, c, _, _ in rows])
    return engine.ingest(ch, np.array([r[2] for r in rows], np.int64), np.array([r[3] for r in rows]))


def test_location_regional_and_counter_reset():
    engine = Engine(single_line(poll_period_s=60), REGIONAL_2022)
    m = ("main", "energy_import_kwh")
    feed(engine, [(*m, T0, 100.0), (*m, T0 + 60_000, 150.0), (*m, T0 + 120_000, 5.0),
                  ("plc", "units_total", T0, 0.0), ("plc", "units_total", T0 + 120_000, 10.0)])
    [fp] = engine.footprints(T0, T0 + H)
    # 50 kWh measured, then a reset: the new register value 5 kWh counts, as estimated energy
    assert fp.energy_kwh == pytest.approx(55.0)
    assert fp.kgco2e_location == pytest.approx(55.0 * 0.2268)
    assert fp.share_estimated == pytest.approx(5 / 55)
    assert fp.residual_mix == "unavailable"
    assert fp.kgco2e_market == pytest.approx(fp.kgco2e_location)


def test_rollover_and_implausible():
    engine = Engine(single_line(poll_period_s=60, rollover_kwh=10_000.0, max_power_kw=600.0), REGIONAL_2022)
    m = ("main", "energy_import_kwh")
    feed(engine, [(*m, T0, 9_990.0), (*m, T0 + 60_000, 4.0),  # rollover: +14 kWh
                  (*m, T0 + 120_000, 500.0),  # 496 kWh in a minute: implausible, rejected
                  (*m, T0 + 180_000, 10.0)])  # +6 kWh from the baseline 4.0
    hours, kwh = engine.hourly_energy(*m)
    assert kwh.sum() == pytest.approx(20.0)


def test_a_persistent_impossible_rise_is_rebased_not_booked():
    """The incomer swapped for a meter whose register reads 50,000 kWh, with no replacement
    record: 49,000 kWh in a minute is more than 600 kW can count. While within the gap
    threshold (3 polls) of the baseline the readings are rejected as glitches; once they have
    stayed up longer the baseline re-anchors and nothing is booked for the step. Left
    rejected, the step would have been booked whole 100 h later, when 49,115 kWh in 100 h
    (491 kW) looked plausible."""
    engine = Engine(single_line(poll_period_s=60, max_power_kw=600.0), REGIONAL_2022)
    m = ("main", "energy_import_kwh")
    feed(engine, [(*m, T0, 1_000.0), (*m, T0 + 60_000, 1_005.0),  # +5
                  (*m, T0 + 120_000, 50_000.0),  # the swap: rejected (glitch?)
                  (*m, T0 + 180_000, 50_005.0), (*m, T0 + 240_000, 50_010.0),  # still within 3 polls: rejected
                  (*m, T0 + 300_000, 50_015.0),  # 4 polls up: rebased, nothing booked
                  (*m, T0 + 360_000, 50_020.0),  # +5 from the new baseline
                  (*m, T0 + 100 * H, 50_120.0)])  # +100 over a long gap (estimated)
    hours, kwh = engine.hourly_energy(*m)
    assert kwh.sum() == pytest.approx(110.0)
    assert kwh[0] == pytest.approx(10.0 + 100.0 * (H - 360_000) / (100 * H - 360_000))


def test_gap_across_hour_boundary():
    engine = Engine(single_line(poll_period_s=60), REGIONAL_2022)
    m = ("main", "energy_import_kwh")
    # 00:50 -> 01:20 with a 60 s poll: a gap; 30 kWh spread 10 (00:50-01:00) + 20 (01:00-01:20)
    feed(engine, [(*m, T0 + 50 * 60_000, 0.0), (*m, T0 + 80 * 60_000, 30.0),
                  ("plc", "units_total", T0, 0.0), ("plc", "units_total", T0 + 2 * H, 60.0)])
    hours, kwh = engine.hourly_energy(*m)
    assert list(hours) == [T0, T0 + H]
    assert kwh == pytest.approx([10.0, 20.0])
    fps = [engine.footprints(T0 + i * H, T0 + (i + 1) * H)[0] for i in range(2)]
    assert [f.share_estimated for f in fps] == pytest.approx([1.0, 1.0])
    assert [f.units for f in fps] == pytest.approx([30.0, 30.0])


def test_hourly_matching_excludes_certificates():
    topo = single_line(poll_period_s=1200)
    ledger = GecLedger()
    ledger.register([GreenCertificate("S1", "2025-03", "solar_pv_utility", "Qinghai")])
    pf = InstrumentPortfolio("cq-01", ledger)
    pf.add_certificates(["S1"])
    rows = [("main", "energy_import_kwh", T0, 0.0), ("main", "energy_import_kwh", T0 + H, 100.0),
            ("plc", "units_total", T0, 0.0), ("plc", "units_total", T0 + H, 10.0)]
    annual = Engine(topo, NATIONAL_2022, instruments=pf)
    hourly = Engine(topo, NATIONAL_2022, instruments=pf, matching_mode="hourly")
    for e in (annual, hourly):
        feed(e, rows)
    assert annual.footprints(T0, T0 + H)[0].kgco2e_market == pytest.approx(0.0)
    fp = hourly.footprints(T0, T0 + H)[0]
    assert fp.kgco2e_market == pytest.approx(100 * 0.5856)
    assert fp.hourly_matched_share == 0.0
    assert any(u["kind"] == "ineligible" for u in hourly.instrument_usage())


def test_certificate_claimed_once():
    ledger = GecLedger()
    ledger.register([GreenCertificate("S1", "2025-03", "wind_onshore", "Gansu")])
    InstrumentPortfolio("a", ledger).add_certificates(["S1"])
    with pytest.raises(CertificateAlreadyClaimedError) as err:
        InstrumentPortfolio("b", ledger).add_certificates(["S1"])
    assert err.value.claimed_by == "site:a"


def test_batch_footprint():
    topo = SiteTopology(
        site_id="s", grid_region="Southwest",
        meters=(Meter("main", "grid_import", ("energy_import_kwh",), poll_period_s=1800),
                Meter("plc", "production_counter", ("units_total", "batch_id"), cost_centre="L1",
                      poll_period_s=1800)),
        cost_centres=(CostCentre("L1"),),
        products=(Product("P", line="L1", units_meter="plc"),), remainder_key="units")
    engine = Engine(topo, REGIONAL_2022)
    feed(engine, [("main", "energy_import_kwh", T0, 0.0), ("main", "energy_import_kwh", T0 + H, 40.0),
                  ("main", "energy_import_kwh", T0 + 2 * H, 100.0),
                  ("plc", "units_total", T0, 0.0), ("plc", "units_total", T0 + H, 4.0),
                  ("plc", "units_total", T0 + 2 * H, 10.0),
                  ("plc", "batch_id", T0, 7.0), ("plc", "batch_id", T0 + H // 2, 8.0),
                  ("plc", "batch_id", T0 + 2 * H, 9.0)])
    [fp] = engine.footprints(batch_id=8)
    # batch 8 runs 00:30-02:00: half of hour 0 (20 kWh, 2 units) and all of hour 1 (60 kWh, 6 units)
    assert fp.energy_kwh == pytest.approx(80.0)
    assert fp.units == pytest.approx(8.0)
    assert fp.batch_id == "8"


def test_engine_docstring_example_runs():
    """The usage example in Engine's docstring is what integrators copy: it must work."""
    doc = Engine.__doc__
    code = doc[doc.index("Example::") + len("Example::"):doc.index("Thread safety")]
    lines = [line[8:] for line in code.splitlines()]
    namespace: dict = {}
    exec("\n".join(lines), namespace)
    fp = namespace["fp"]
    assert fp.kgco2e_location == pytest.approx(11.34)
    assert fp.kgco2e_per_unit_location == pytest.approx(1.134)

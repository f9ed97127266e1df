"""The EU battery figure by hand: grid mix for grid electricity, the installation's factor for
directly connected (on-site PV) electricity, certificates and green-power contracts left out;
per kWh of declared battery energy; the market-based figure beside it on the same boundary."""

from __future__ import annotations

from dataclasses import replace

import pytest

from accounting.engine import Engine
from accounting.factors import load_dataset
from accounting.instruments import (
    GecLedger,
    GreenCertificate,
    GreenPowerContract,
    InstrumentPortfolio,
)
from tests.engine.scenarios import T0, H, worked_example_arrays, worked_example_topology

NATIONAL_2022 = load_dataset("cn-mee-national-co2", "2022")
LIFECYCLE = load_dataset("cn-electricity-carbon-footprint", "2023")


def battery_engine(dataset, with_contract: bool) -> Engine:
    topo = worked_example_topology("annual")
    a, b, c = topo.products
    topo = replace(topo, products=(replace(a, battery_kwh_per_unit=2.0), replace(b, battery_kwh_per_unit=5.0), c))
    portfolio = None
    if with_contract:
        ledger = GecLedger()
        ledger.register([GreenCertificate("GEC-0001", "2025-03", "wind_onshore", "Gansu")])
        portfolio = InstrumentPortfolio("js-01", ledger)
        portfolio.add_contract(GreenPowerContract("PPA-1", "wind_onshore", "Gansu", "monthly",
                                                  (("2025-03", 30.0),), ("GEC-0001",), earmark="A"))
    engine = Engine(topo, dataset, instruments=portfolio)
    engine.ingest(*worked_example_arrays(engine))
    return engine


def footprints(engine: Engine) -> dict[str, object]:
    return {f.product_id: f for f in engine.footprints(T0, T0 + H)}


def test_eu_battery_figure_by_hand_under_co2_factors() -> None:
    fp = footprints(battery_engine(NATIONAL_2022, with_contract=True))
    a, b, c = fp["A"], fp["B"], fp["C"]
    # A: 60 kWh, PV self-consumption covers a third (20 kWh, a direct connection: factor 0 on
    # the co2 basis), 40 kWh from the grid at 0.5366; 30 units of 2 kWh; upstream 3 kg/unit.
    assert a.kgco2e_eu_battery_electricity == pytest.approx(40 * 0.5366)
    assert a.kgco2e_per_battery_kwh_eu == pytest.approx((40 * 0.5366 / 30 + 3.0) / 2.0)
    # The market-based figure has the contract (30 kWh earmarked to A) and stays under its name.
    assert a.kgco2e_per_battery_kwh_market == pytest.approx((0.1952 + 3.0) / 2.0)
    assert (a.boundary, b.boundary) == ("cradle-to-gate", "gate-to-gate")
    assert a.pcf_kgco2e_per_unit_market == pytest.approx(0.1952 + 3.0)
    assert b.pcf_kgco2e_per_unit_market == pytest.approx(b.kgco2e_per_unit_market)
    assert b.kgco2e_per_battery_kwh_eu == pytest.approx(20 * 2 / 3 * 0.5366 / b.units / 5.0)
    assert (a.battery_kwh_per_unit, c.battery_kwh_per_unit) == (2.0, None)
    assert c.kgco2e_per_battery_kwh_eu is None and c.kgco2e_per_battery_kwh_market is None


def test_contractual_instruments_do_not_lower_the_eu_figure() -> None:
    with_ppa = footprints(battery_engine(NATIONAL_2022, with_contract=True))["A"]
    without = footprints(battery_engine(NATIONAL_2022, with_contract=False))["A"]
    assert with_ppa.kgco2e_per_battery_kwh_eu == without.kgco2e_per_battery_kwh_eu
    assert with_ppa.kgco2e_per_battery_kwh_market < without.kgco2e_per_battery_kwh_market


def test_direct_connection_counts_at_the_installations_life_cycle_factor() -> None:
    a = footprints(battery_engine(LIFECYCLE, with_contract=False))["A"]
    pv = LIFECYCLE.technology_factor("solar_pv_rooftop")
    assert pv > 0
    assert a.kgco2e_eu_battery_electricity == pytest.approx(40 * 0.6205 + 20 * pv)
    assert a.kgco2e_per_battery_kwh_eu == pytest.approx(((40 * 0.6205 + 20 * pv) / 30 + 3.0) / 2.0)

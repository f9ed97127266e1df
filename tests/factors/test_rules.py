"""How a site picks its factor, the market options, and the GEC rules, proven on the engine."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from accounting.engine import Engine
from accounting.errors import (
    CertificateAlreadyClaimedError,
    CertificateExpiredError,
    CertificateNotTransferableError,
    CertificateNotYetValidError,
    FactorDatasetError,
)
from accounting.factors import default_registry
from accounting.factors.selection import dataset_for, effective_matching_mode
from accounting.portfolio import Portfolios
from accounting.site_topology import site_topology
from accounting.store.ledger import LedgerStore
from tanji.errors import TanjiError
from tanji.site import Site, parse_site_text
from tests.engine.scenarios import WORKED_EXAMPLE_READINGS, worked_example_topology

CN = timezone(timedelta(hours=8))
H = 3_600_000
REF_MONTH = int(datetime(2025, 3, 1, tzinfo=CN).timestamp() * 1000)
REF_HOURS = 31 * 24

SITE = """
site:
  id: {id}
  province: {province}
  matching_mode: {mode}
  factor_dataset: {dataset}
  remainder_key: units
  market: {market}
broker: {{host: 127.0.0.1, port: 1883}}
gateways:
  - id: gw
    spool_path: /tmp/unused.sqlite
    meters:
      - {{id: incomer, role: grid_import, profile: eastron-sdm630, host: 127.0.0.1, port: 5020, unit_id: 1, poll_period_s: 60}}
      - {{id: pv, role: pv, profile: eastron-sdm630, host: 127.0.0.1, port: 5021, unit_id: 1, poll_period_s: 60}}
      - {{id: plc-a, role: production_counter, cost_centre: line-a, profile: generic-plc-counter, host: 127.0.0.1, port: 5022, unit_id: 1, poll_period_s: 60}}
cost_centres:
  - {{id: line-a, kind: production}}
products:
  - {{id: widget, name: Widget, cost_centre: line-a, counter: {{meter: plc-a, channel: units_total}}}}
"""


def site(*, id: str = "s1", province: str = "Jiangsu", mode: str = "annual",
         dataset: str = "cn-mee-co2", market: str = "{}") -> Site:
    return parse_site_text(SITE.format(id=id, province=province, mode=mode, dataset=dataset, market=market))


def ms(year: int, month: int, day: int = 1, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=CN).timestamp() * 1000)


# -- factor selection -------------------------------------------------------------------------

def test_latest_published_factor_for_each_hour_and_the_exact_versions_named() -> None:
    ds = dataset_for(site(dataset="cn-electricity-carbon-footprint"))
    assert (ds.version, ds.selection) == ("2023.1+2024", "latest_per_hour")  # 2023 (AR5) is superseded
    hours = np.array([ms(2023, 12, 31, 23), ms(2024, 1, 1, 0), ms(2026, 6, 1)])
    assert list(ds.location_factors("East", hours)) == [0.6205, 0.5777, 0.5777]
    assert ds.technology_factor("wind_onshore", ms(2023, 6)) == 0.0336  # the vintage's own
    assert ds.technology_factor("wind_onshore", ms(2024, 6)) == 0.0324
    pinned = dataset_for(site(dataset="cn-electricity-carbon-footprint@2024"))
    assert (pinned.version, pinned.selection) == ("2024", "pinned")
    assert list(pinned.location_factors("East", hours)) == [0.5777] * 3


def test_a_site_gets_its_province_where_published_else_its_region() -> None:
    ds = dataset_for(site(province="Jiangsu"))
    assert ds.region_for("East") == "Jiangsu"
    years = np.array([ms(2021, 6), ms(2022, 6), ms(2023, 6), ms(2025, 6)])
    assert list(ds.location_factors("East", years)) == [0.6451, 0.5978, 0.5827, 0.5827]
    tibet = dataset_for(site(province="Tibet"))
    assert tibet.region_for("Southwest") == "Southwest"  # no provincial factor is published for Tibet
    assert tibet.location_factors("Southwest", np.array([ms(2023, 6)]))[0] == 0.2472
    regional = dataset_for(site(dataset="cn-mee-regional-co2", province="Chongqing"))
    assert regional.region_for("Southwest") == "Southwest"


def test_uncovered_energy_rule_is_a_site_setting_and_is_disclosed() -> None:
    t = np.array([ms(2023, 6)])
    residual = dataset_for(site())
    assert residual.uncovered_basis("East") == "residual_mix"
    assert residual.residual_factors("East", t)[0] == 0.6096
    fossil = dataset_for(site(market="{uncovered: fossil_only}"))
    assert fossil.uncovered_basis("East") == "fossil_only" and fossil.residual_factors("East", t)[0] == 0.8273
    grid = dataset_for(site(market="{uncovered: grid_average}"))
    assert grid.uncovered_basis("East") == "grid_average" and grid.residual_factors("East", t) is None
    with pytest.raises(FactorDatasetError, match="no fossil-only factor"):
        dataset_for(site(dataset="cn-mee-regional-co2", market="{uncovered: fossil_only}"))
    with pytest.raises(TanjiError, match="uncovered"):
        site(market="{uncovered: cheapest}")


def test_hourly_matching_exemption_below_the_threshold() -> None:
    small = site(mode="hourly", market="{hourly_exemption_mwh: 5000, annual_consumption_mwh: 1200}")
    big = site(mode="hourly", market="{hourly_exemption_mwh: 5000, annual_consumption_mwh: 9000}")
    assert effective_matching_mode(small) == "monthly" and site_topology(small).matching_mode == "monthly"
    assert effective_matching_mode(big) == "hourly"
    with pytest.raises(TanjiError, match="annual_consumption_mwh"):
        site(mode="hourly", market="{hourly_exemption_mwh: 5000}")


# -- the 2023 → 2024 footprint factor on a reference month --------------------------------------

def _month_readings(engine: Engine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The worked example's hour repeated for every hour of March 2025 (hourly readings)."""
    ch, ts, val = [], [], []
    for meter, channel, v0, v1 in WORKED_EXAMPLE_READINGS:
        c = engine.channel_index(meter, channel)
        for h in range(REF_HOURS + 1):
            ch.append(c)
            ts.append(REF_MONTH + h * H)
            val.append(v0 + h * (v1 - v0))
    return np.array(ch), np.array(ts, dtype=np.int64), np.array(val)


def test_reference_month_recomputed_with_2023_and_2024_footprint_factors_gives_the_hand_ratio() -> None:
    registry = default_registry()
    old, new = registry.resolve("cn-electricity-carbon-footprint@2023.1"), registry.resolve(
        "cn-electricity-carbon-footprint@2024")
    engine = Engine(worked_example_topology(), old)
    readings = _month_readings(engine)
    engine.ingest(*readings)
    end = REF_MONTH + REF_HOURS * H
    r23 = {f.product_id: f for f in engine.recompute(readings, old).engine.footprints(REF_MONTH, end)}
    r24 = {f.product_id: f for f in engine.recompute(readings, new).engine.footprints(REF_MONTH, end)}
    # by hand: product A takes 60 kWh every hour (docs/accounting.md section 7)
    assert r23["A"].energy_kwh == pytest.approx(60 * REF_HOURS)
    assert r23["A"].kgco2e_location == pytest.approx(60 * REF_HOURS * 0.6205)  # 27 699.12 kg
    assert r24["A"].kgco2e_location == pytest.approx(60 * REF_HOURS * 0.5777)  # 25 788.528 kg
    for pid in r23:
        assert r24[pid].kgco2e_location / r23[pid].kgco2e_location == pytest.approx(0.5777 / 0.6205, rel=1e-12)
        assert (r23[pid].dataset_version, r24[pid].dataset_version) == ("2023.1", "2024")


# -- certificates as the national system defines them ----------------------------------------

def _portfolios(tmp_path: Path, s: Site, now_ms: int) -> Portfolios:
    return Portfolios([s], LedgerStore(tmp_path / "ledger.sqlite"), clock=lambda: now_ms)


def _cert(serial: str, month: str, **kw: object) -> dict:
    return {"serial": serial, "site_id": "s1", "generation_month": month, "technology": "wind",
            "province": "Gansu", **kw}


def test_validity_two_years_from_the_production_month_and_the_2025_transition(tmp_path: Path) -> None:
    s = site()
    ds = dataset_for(s)
    p = _portfolios(tmp_path, s, ms(2026, 2, 15))
    assert p.add_certificate(_cert("OK-2024-03", "2024-03"), ds)["valid_until_month"] == "2026-02"
    with pytest.raises(CertificateExpiredError, match="two years"):
        p.add_certificate(_cert("OLD-2024-01", "2024-01"), ds)  # valid until 2025-12
    with pytest.raises(CertificateExpiredError, match="before 2024 are valid until the end of 2025"):
        p.add_certificate(_cert("OLD-2023-11", "2023-11"), ds)
    with pytest.raises(CertificateNotYetValidError, match="not valid yet"):
        p.add_certificate(_cert("FUTURE", "2026-04"), ds)
    early = _portfolios(tmp_path / "b", s, ms(2025, 12, 31, 23)) if (tmp_path / "b").mkdir() is None else None
    assert early.add_certificate(_cert("T-2023-11", "2023-11"), ds)["valid_until_month"] == "2025-12"
    assert [c["serial"] for c in p.certificates("s1")] == ["OK-2024-03"]  # nothing else was claimed


def test_cancellation_is_recorded_with_date_claimant_and_period_and_survives_restart(tmp_path: Path) -> None:
    s = site(mode="monthly")
    now = ms(2025, 4, 2)
    row = _portfolios(tmp_path, s, now).add_certificate(_cert("C-1", "2025-03"), dataset_for(s))
    assert row["cancellation"] == {"status": "cancelled (核销)", "cancelled_ms": now, "claimant": "site:s1",
                                   "period": "2025-03"}
    again = _portfolios(tmp_path, s, ms(2026, 1, 1))
    assert again.certificates("s1")[0]["cancellation"]["cancelled_ms"] == now
    with pytest.raises(CertificateAlreadyClaimedError, match="site:s1"):
        again.add_certificate(_cert("C-1", "2025-03"), dataset_for(s))  # double claim, after a restart


def test_non_tradable_certificates_stay_with_the_generating_project(tmp_path: Path) -> None:
    s = site(market='{own_generation_projects: ["PV-OWN-1"]}')
    p = _portfolios(tmp_path, s, ms(2025, 4, 2))
    with pytest.raises(CertificateNotTransferableError, match="not tradable"):
        p.add_certificate(_cert("NT-1", "2025-03", tradable=False, project_id="WIND-OTHER"), dataset_for(s))
    own = p.add_certificate(_cert("NT-OWN", "2025-03", tradable=False, project_id="PV-OWN-1",
                                  technology="solar_pv", province="Jiangsu"), dataset_for(s))
    assert own["counted"] is False and "already counted as PV self-consumption" in own["reason"]


def test_csv_import_is_all_or_nothing_with_the_line_of_the_bad_row(tmp_path: Path) -> None:
    s = site()
    p = _portfolios(tmp_path, s, ms(2025, 4, 2))
    text = ("serial,generation_month,technology,province,tradable,project_id,earmark\n"
            "L-1,2025-01,wind,Gansu,true,W-1,\n"
            "L-2,2025-06,solar_pv,Qinghai,true,S-1,\n")  # produced after the claim date
    with pytest.raises(CertificateNotYetValidError, match="line 3"):
        p.import_certificates("s1", text, dataset_for(s))
    assert p.certificates("s1") == []
    rows = p.import_certificates("s1", text.replace("2025-06", "2025-02"), dataset_for(s))
    assert [r["serial"] for r in rows] == ["L-1", "L-2"]
    with pytest.raises(CertificateAlreadyClaimedError, match="line 2"):
        p.import_certificates("s1", text.replace("2025-06", "2025-02"), dataset_for(s))


def _pv_site_engine(portfolio, s: Site) -> dict:
    """One hour: 100 kWh imported, PV 50 kWh all self-consumed, 10 units."""
    engine = Engine(site_topology(s), dataset_for(s), instruments=portfolio)
    rows = [("incomer", "energy_import_kwh", 0.0, 100.0), ("pv", "energy_export_kwh", 0.0, 50.0),
            ("plc-a", "units_total", 0.0, 10.0)]
    t0 = ms(2025, 3, 10)
    ch, ts, val = [], [], []
    for meter, channel, v0, v1 in rows:
        c = engine.channel_index(meter, channel)
        ch += [c, c]
        ts += [t0, t0 + H]
        val += [v0, v1]
    engine.ingest(np.array(ch), np.array(ts, dtype=np.int64), np.array(val))
    [fp] = engine.footprints(t0, t0 + H)
    return fp.to_dict()


def test_own_pv_certificate_is_not_counted_on_top_of_pv_self_consumption(tmp_path: Path) -> None:
    s = site(province="Jiangsu", market='{own_generation_projects: ["PV-OWN-1"]}')
    p = _portfolios(tmp_path, s, ms(2025, 4, 2))
    without = _pv_site_engine(p.portfolio("s1"), s)
    assert without["energy_kwh"] == pytest.approx(150.0) and without["covered_pv_kwh"] == pytest.approx(50.0)
    p.add_certificate(_cert("OWN-PV-1", "2025-03", tradable=False, project_id="PV-OWN-1",
                            technology="solar_pv", province="Jiangsu"), dataset_for(s))
    with_own = _pv_site_engine(p.portfolio("s1"), s)
    assert with_own["covered_gec_kwh"] == 0.0 and with_own["kgco2e_market"] == without["kgco2e_market"]
    p.add_certificate(_cert("BOUGHT-1", "2025-03"), dataset_for(s))  # a tradable one bought elsewhere counts
    bought = _pv_site_engine(p.portfolio("s1"), s)
    assert bought["covered_gec_kwh"] == pytest.approx(100.0)
    assert bought["kgco2e_market"] < without["kgco2e_market"]
    assert bought["uncovered_basis"] == "residual_mix" and bought["factor_selection"] == "latest_per_hour"


def test_legacy_monthly_contract_under_hourly_matching(tmp_path: Path) -> None:
    contract = {"contract_id": "PPA-2025", "site_id": "s1", "technology": "wind", "province": "Gansu",
                "granularity": "monthly", "deliveries": [["2025-03", 744.0]], "signed_date": "2025-01-10"}
    legacy = site(mode="hourly", market='{legacy_contracts_signed_before: 2027-01-01}')
    p = _portfolios(tmp_path, legacy, ms(2025, 4, 2))
    p.add_contract(contract, dataset_for(legacy))
    fp = _pv_site_engine(p.portfolio("s1"), legacy)
    # 744 kWh over March's 744 hours at a flat profile: 1 kWh in the measured hour
    assert fp["covered_contract_kwh"] == pytest.approx(1.0) and fp["matching_mode"] == "hourly"
    (tmp_path / "b").mkdir()
    strict = site(mode="hourly", market='{legacy_contracts_signed_before: 2025-01-01}')  # signed after: not legacy
    q = _portfolios(tmp_path / "b", strict, ms(2025, 4, 2))
    q.add_contract(contract, dataset_for(strict))
    assert _pv_site_engine(q.portfolio("s1"), strict)["covered_contract_kwh"] == 0.0


def test_the_exemption_is_disclosed_in_words() -> None:
    from accounting.factors.selection import exemption_text, factor_rule_text, uncovered_rule_text
    small = site(mode="hourly", market="{hourly_exemption_mwh: 5000, annual_consumption_mwh: 1200}")
    assert exemption_text(small) == " (hourly-matching exemption: declared 1200 MWh/yr < 5000 MWh/yr)"
    assert exemption_text(site(mode="hourly")) == ""
    fp = {"dataset_id": "cn-mee-co2", "dataset_version": "2021+2022+2023", "factor_region": "Jiangsu",
          "gas_basis": "co2", "factor_selection": "latest_per_hour", "uncovered_basis": "fossil_only"}
    assert factor_rule_text(fp) == ("cn-mee-co2@2021+2022+2023 · region Jiangsu · co2 · "
                                    "latest published factor for each hour")
    assert uncovered_rule_text(fp) == "unmatched energy: fossil-only factor"


def test_a_national_gec_code_carries_its_project(tmp_path: Path) -> None:
    s = site(market='{own_generation_projects: ["P3205000000000001"]}')
    p = _portfolios(tmp_path, s, ms(2025, 4, 2))
    serial = "P3205000000000001" + "202503000000101"  # 17-character project code + 15 characters
    row = p.add_certificate(_cert(serial, "2025-03", tradable=False, technology="solar_pv", province="Jiangsu"),
                            dataset_for(s))
    assert row["project_id"] == "P3205000000000001" and row["counted"] is False  # own PV, found from the code
    from accounting.errors import InstrumentError
    with pytest.raises(InstrumentError, match="not the project code its serial carries"):
        p.add_certificate(_cert("W6200000000000009" + "202503000000102", "2025-03", project_id="OTHER"),
                          dataset_for(s))

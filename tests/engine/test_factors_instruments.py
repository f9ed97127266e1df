"""Factor datasets, the region mapping, the GEC ledger, and live-state behaviour around late data."""

from __future__ import annotations

import numpy as np
import pytest

from accounting.engine import Engine, window_bounds
from accounting.errors import (
    CertificateAlreadyClaimedError,
    CheckpointError,
    FactorDatasetError,
    MissingFactorError,
    UnknownChannelError,
    UnknownRegionError,
)
from accounting.factors import (
    MAINLAND_PROVINCES,
    FactorRegistry,
    grid_region_for_province,
    load_dataset,
    load_hourly_csv,
    shipped_datasets,
)
from accounting.instruments import GecLedger, GreenCertificate, InstrumentPortfolio, deliverable
from tanji.civil_calendar import civil_zone
from tests.engine.scenarios import T0, H, worked_example_arrays, worked_example_topology


def test_shipped_datasets_have_provenance():
    ids = {(d.dataset_id, d.version) for d in shipped_datasets()}
    assert {("cn-mee-national-co2", "2021"), ("cn-mee-national-co2", "2022"),
            ("cn-mee-regional-co2", "2022"), ("cn-electricity-carbon-footprint", "2023")} <= ids
    for d in shipped_datasets():
        assert d.publisher and d.publication_date and d.source_reference and d.unit
    regional = load_dataset("cn-mee-regional-co2", "2022")
    assert regional.location_factors("Southwest", np.array([T0]))[0] == 0.2268
    assert load_dataset("cn-mee-national-co2").version == "2023"  # the latest version
    assert load_dataset("cn-mee-national-co2", "2021").location_factors("East", np.array([T0]))[0] == 0.5568
    assert load_dataset("cn-electricity-carbon-footprint").gas_basis == "co2e_lifecycle"


def test_region_mapping():
    assert len(MAINLAND_PROVINCES) == 31
    assert grid_region_for_province("Chongqing") == "Southwest"
    assert grid_region_for_province("江苏") == "East"
    assert grid_region_for_province("广东省") == "South"
    with pytest.raises(UnknownRegionError):
        grid_region_for_province("Hong Kong")
    assert deliverable("Gansu", "East", "mainland") and not deliverable("Gansu", "East", "regional")
    assert not deliverable("Taiwan", "East", "mainland")


def test_hourly_csv_and_registry(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("timestamp,region,factor\n2025-03-01T08:00:00+08:00,East,0.5\n"
                    f"{T0 + H},East,0.6\n")
    ds = load_hourly_csv(path, dataset_id="grid-x", version="1", publisher="x",
                         publication_date="2025-03-02", source_reference="export")
    assert list(ds.location_factors("East", np.array([T0, T0 + H]))) == [0.5, 0.6]
    with pytest.raises(MissingFactorError):
        ds.location_factors("East", np.array([T0 + 2 * H]))
    reg = FactorRegistry([ds])
    reg.add(ds)  # same content: harmless
    path.write_text("timestamp,region,factor\n2025-03-01T00:00:00Z,East,0.7\n")
    changed = load_hourly_csv(path, dataset_id="grid-x", version="1", publisher="x",
                              publication_date="2025-03-02", source_reference="export")
    with pytest.raises(FactorDatasetError):
        reg.add(changed)  # a new version never rewrites an old one
    path.write_text("timestamp,region,factor\n2025-03-01T00:30:00Z,East,0.7\n")
    with pytest.raises(FactorDatasetError):
        load_hourly_csv(path, dataset_id="g", version="1", publisher="x",
                        publication_date="d", source_reference="s")


def test_ledger_atomic_and_unique_across_sites():
    ledger = GecLedger()
    ledger.register([GreenCertificate(f"S{i}", "2025-01", "hydro", "Sichuan") for i in range(3)])
    a = InstrumentPortfolio("a", ledger)
    a.add_certificates(["S0"])
    with pytest.raises(CertificateAlreadyClaimedError):
        InstrumentPortfolio("b", ledger).add_certificates(["S1", "S0"])
    assert ledger.claimant_of("S1") is None  # all or nothing
    with pytest.raises(CertificateAlreadyClaimedError):
        a.add_certificates(["S0"])  # not even the same site twice


def test_recompute_with_new_dataset_is_a_new_version_and_live_is_untouched():
    topo = worked_example_topology()
    engine = Engine(topo, load_dataset("cn-mee-national-co2", "2022"))
    engine.ingest(*worked_example_arrays(engine))
    before = [f.to_dict() for f in engine.footprints()]
    r1 = engine.recompute(engine.readings(), load_dataset("cn-mee-national-co2", "2021"))
    r2 = engine.recompute(engine.readings())
    assert (r1.result_version, r2.result_version) == (1, 2)
    assert r1.dataset_version == "2021" and r1.footprints[0].kgco2e_location == pytest.approx(60 * 0.5568)
    assert [f.to_dict() for f in engine.footprints()] == before
    assert r1.result_id != r2.result_id
    with pytest.raises(CheckpointError):
        Engine.restore(engine.checkpoint(), topo, load_dataset("cn-mee-national-co2", "2021"))


def test_provisional_grace_and_revision_on_late_reading():
    topo = worked_example_topology()
    engine = Engine(topo, load_dataset("cn-mee-national-co2", "2022"), grace_period_s=600)
    main = engine.channel_index("main", "energy_import_kwh")
    ch, ts, val = worked_example_arrays(engine)
    engine.ingest(ch, ts, val)
    [a, *_] = engine.footprints(T0, T0 + H)
    assert a.provisional and a.revision == 0
    engine.close_hours(T0 + H + 600_000)
    a = engine.footprints(T0, T0 + H)[0]
    assert not a.provisional and a.revision == 0
    # a late reading inside hour 0 only refines the split within that hour: nothing re-opens
    summary = engine.ingest(np.array([main]), np.array([T0 + H // 2]), np.array([1030.0]))
    assert (summary.late, summary.reopened_hours) == (1, 0)
    # 20 kWh over 01:00-03:00 spread 10/10; hour 1 closes; a late reading at 01:30 shows all
    # 20 kWh were used by then: hour 1 re-opens with revision 1, the total stays 100 kWh
    engine.ingest(np.array([main]), np.array([T0 + 3 * H]), np.array([1100.0]))
    engine.close_hours(T0 + 2 * H + 600_000)
    assert engine.site_balance().columns["import_kwh"] == pytest.approx([80.0, 10.0, 10.0])
    summary = engine.ingest(np.array([main]), np.array([T0 + H + H // 2]), np.array([1100.0]))
    assert (summary.late, summary.reopened_hours) == (1, 1)
    bal = engine.site_balance()
    assert bal.columns["import_kwh"] == pytest.approx([80.0, 20.0, 0.0])
    assert list(bal.revision) == [0, 1, 0] and list(bal.closed) == [True, True, False]


def test_unknown_channel_and_bad_readings():
    engine = Engine(worked_example_topology(), load_dataset("cn-mee-national-co2", "2022"))
    with pytest.raises(UnknownChannelError):
        engine.channel_index("nope", "energy_import_kwh")
    with pytest.raises(UnknownChannelError):
        engine.ingest(np.array([999]), np.array([T0]), np.array([1.0]))
    s = engine.ingest([("main", "energy_import_kwh")] * 3, np.array([T0, T0 + 1, T0 + 2]),
                      np.array([1.0, np.nan, -1.0]), quality=np.array([0, 0, 0]))
    assert (s.accepted, s.rejected) == (1, 2)


def test_window_bounds_local_calendar():
    at = T0 + 20 * H  # 2025-03-01T20:00Z = 2025-03-02T04:00+08:00
    tz = civil_zone("Asia/Shanghai")
    day = window_bounds("day", at, tz)
    assert day == (T0 + 16 * H, T0 + 40 * H)
    assert window_bounds("shift", at, tz) == (T0 + 16 * H, T0 + 24 * H)
    assert window_bounds("hour", at + 5, tz) == (at, at + H)
    lo, hi = window_bounds("month", at, tz)
    assert (hi - lo) // H == 31 * 24

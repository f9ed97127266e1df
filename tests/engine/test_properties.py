"""Property tests: the engine agrees with the reference and keeps the invariants of ACCOUNTING.md §6."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from accounting.engine import Engine
from accounting.factors import load_dataset
from tests.engine.plants import T0, H, Scenario, scenarios
from tests.engine.reference import reference_footprints

DATASETS = [load_dataset("cn-mee-national-co2", "2022"), load_dataset("cn-mee-regional-co2", "2022"),
            load_dataset("cn-electricity-carbon-footprint", "2023")]
FIELDS = ["units", "energy_kwh", "kgco2e_location", "kgco2e_market", "renewable_share",
          "covered_pv_kwh", "covered_contract_kwh", "covered_gec_kwh"]


def arrays(engine: Engine, readings):
    ch = np.array([engine.channel_index(m, c) for m, c, _, _ in readings], dtype=np.int64)
    ts = np.array([r[2] for r in readings], dtype=np.int64)
    val = np.array([r[3] for r in readings], dtype=np.float64)
    return ch, ts, val


def engine_for(sc: Scenario, dataset, regional=False) -> Engine:
    return Engine(sc.topology, dataset, instruments=sc.portfolio,
                  deliverability="regional" if regional else "mainland")


def close(a, b, rel=1e-9, abs_=1e-9):
    return a == pytest.approx(b, rel=rel, abs=abs_)


@given(scenarios(), st.sampled_from(DATASETS), st.booleans())
def test_engine_agrees_with_reference(sc, dataset, regional):
    engine = engine_for(sc, dataset, regional)
    engine.ingest(*arrays(engine, sc.readings))
    windows = [(T0, T0 + sc.n_hours * H)] + [(T0 + i * H, T0 + (i + 1) * H) for i in range(sc.n_hours)]
    for lo, hi in windows:
        ref, _ = reference_footprints(sc.topology, dataset, sc.readings, lo, hi,
                                      portfolio=sc.portfolio, regional=regional)
        for fp in engine.footprints(lo, hi):
            r = ref[fp.product_id]
            for f in FIELDS:
                assert close(getattr(fp, f), r[f], rel=1e-7, abs_=1e-6), (f, lo, fp.product_id)
            if fp.energy_kwh > 1e-6:
                for f in ("share_metered", "share_allocated", "share_estimated", "uncertainty_pct_95"):
                    assert close(getattr(fp, f), r[f], rel=1e-6, abs_=1e-6), f


@given(scenarios())
def test_energy_conservation_per_site_hour(sc):
    engine = engine_for(sc, DATASETS[0])
    engine.ingest(*arrays(engine, sc.readings))
    bal = engine.site_balance()
    cols = bal.columns
    assert np.allclose(cols["allocated_kwh"] + cols["unallocated_kwh"], cols["consumption_kwh"],
                       rtol=1e-9, atol=1e-9)
    assert np.allclose(cols["consumption_kwh"],
                       np.maximum(cols["import_kwh"] - cols["export_kwh"] + cols["pv_kwh"], 0), rtol=1e-9)
    per_product = sum(f.energy_kwh for f in engine.footprints())
    assert close(per_product, cols["allocated_kwh"].sum(), rel=1e-9)


@given(scenarios())
def test_certificate_conservation(sc):
    engine = engine_for(sc, DATASETS[0])
    engine.ingest(*arrays(engine, sc.readings))
    usage = engine.instrument_usage()
    for u in usage:
        assert u["used_kwh"] <= u["available_kwh"] * (1 + 1e-12) + 1e-9
    fps = engine.footprints()
    covered = sum(f.covered_contract_kwh + f.covered_gec_kwh for f in fps)
    used = sum(u["used_kwh"] for u in usage)
    assert covered <= used * (1 + 1e-9) + 1e-9  # the rest covered unallocated energy
    for f in fps:
        assert f.kgco2e_market >= 0
        assert f.covered_pv_kwh + f.covered_contract_kwh + f.covered_gec_kwh <= f.energy_kwh * (1 + 1e-9) + 1e-9
    if sc.portfolio:
        serials = [h.certificate.serial for h in sc.portfolio.certificates]
        assert len(serials) == len(set(serials))
        claimed = [c.serial for c in sc.portfolio.ledger.claims()]
        assert len(claimed) == len(set(claimed))


@given(scenarios(), st.integers(0, 2**32 - 1))
def test_duplicate_reorder_and_split_invariance(sc, seed):
    rng = random.Random(seed)
    ordered = engine_for(sc, DATASETS[0])
    ordered.ingest(*arrays(ordered, sc.readings))
    messy = list(sc.readings) + rng.sample(sc.readings, k=len(sc.readings) // 3)
    rng.shuffle(messy)
    shuffled = engine_for(sc, DATASETS[0])
    cuts = sorted(rng.sample(range(1, len(messy)), k=min(5, len(messy) - 1))) if len(messy) > 1 else []
    total_dup = 0
    for lo, hi in zip([0] + cuts, cuts + [len(messy)], strict=True):
        total_dup += shuffled.ingest(*arrays(shuffled, messy[lo:hi])).duplicate
    assert total_dup == len(messy) - len(sc.readings)
    for a, b in zip(ordered.footprints(), shuffled.footprints(), strict=True):
        for f in FIELDS:
            assert close(getattr(a, f), getattr(b, f)), f
    for key in ordered.channel_keys:
        if key[1] != "batch_id":
            assert np.array_equal(ordered.hourly_energy(*key)[1], shuffled.hourly_energy(*key)[1])


@given(scenarios(), st.integers(0, 2**32 - 1))
def test_live_equals_recompute(sc, seed):
    rng = random.Random(seed)
    live = engine_for(sc, DATASETS[0])
    readings = sorted(sc.readings, key=lambda r: r[2])  # arrival in time order, in small batches
    i = 0
    while i < len(readings):
        n = rng.randint(1, 40)
        live.ingest(*arrays(live, readings[i:i + n]))
        i += n
    result = live.recompute(live.readings())
    assert result.dataset_version == "2022" and result.result_version == 1
    for a, b in zip(live.footprints(), result.footprints, strict=True):
        for f in FIELDS + ["share_estimated"]:
            assert close(getattr(a, f), getattr(b, f)), f
    restored = Engine.restore(live.checkpoint(), sc.topology, DATASETS[0], instruments=sc.portfolio)
    assert [f.to_dict() for f in restored.footprints()] == [f.to_dict() for f in live.footprints()]

"""Raw-reading retention as docs/storage.md documents it, run on a real SQLite store.

Thinning (the documented SQL, read from the page itself): before a cutoff, keep each thinned
meter's first reading of every hour. A later recompute from the store gives the same energy
totals (counter differences telescope), the hours after the cutoff bit for bit, and reports
the thinned hours as estimated (a gap of many poll periods is spread, ACCOUNTING.md §1).
Deleting readings outright leaves a later recompute of that period nothing to compute from.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from accounting.engine import Engine
from accounting.engine.kernels_energy import HOUR_MS
from accounting.factors import load_dataset
from accounting.store.base import StoredReading
from accounting.store.sqlite import SqliteStore
from accounting.topology import CostCentre, Meter, Product, SiteTopology
from tests.engine.plants import T0

DATASET = load_dataset("cn-mee-national-co2", "2022")
DOC = Path(__file__).resolve().parents[2] / "docs" / "storage.md"
THINNED = ["main", "sub"]


def documented_sql(marker: str) -> str:
    """The ```sql block of docs/storage.md whose first line is ``-- <marker>``."""
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    found = [b for b in blocks if b.startswith(f"-- {marker}")]
    assert len(found) == 1, f"docs/storage.md has no single sql block starting '-- {marker}'"
    return found[0]


def topology() -> SiteTopology:
    return SiteTopology(
        "r", "East",
        (Meter("main", "grid_import", ("energy_import_kwh",), poll_period_s=60),
         Meter("sub", "submeter", ("energy_import_kwh",), cost_centre="L1", poll_period_s=60),
         Meter("plc", "production_counter", ("units_total",), cost_centre="L1", poll_period_s=60)),
        (CostCentre("L1"),), (Product("P", line="L1", units_meter="plc"),))


def two_days(seed: int) -> list[StoredReading]:
    """A poll every 60 s at 17 s past the minute (never on the hour), irregular loads."""
    rng = random.Random(seed)
    main = sub = units = 0.0
    rows = []
    for k in range(48 * 60):
        t = T0 + 17_000 + k * 60_000
        d = rng.uniform(0.5, 3.0)
        main += d
        sub += d * rng.uniform(0.2, 0.8)
        units += rng.randint(0, 4)
        rows += [StoredReading("r", "gw", "main", t, "good", {"energy_import_kwh": main}),
                 StoredReading("r", "gw", "sub", t, "good", {"energy_import_kwh": sub}),
                 StoredReading("r", "gw", "plc", t, "good", {"units_total": units})]
    return rows


def recompute(store: SqliteStore) -> Engine:
    engine = Engine(topology(), DATASET)
    span = store.reading_span("r")
    chunks = store.iter_channel_arrays("r", engine.channel_keys, span[0], span[1] + 1, 6 * HOUR_MS)
    return engine.recompute(chunks, retain_readings=False).engine


@pytest.mark.parametrize("seed", [1, 2])
def test_thinning_old_counter_readings_keeps_totals_and_marks_hours_estimated(tmp_path, seed):
    db = tmp_path / "tanji.sqlite"
    store = SqliteStore(db)
    store.write_readings(two_days(seed))
    before = recompute(store)
    cutoff = T0 + 24 * HOUR_MS
    with sqlite3.connect(db) as conn:  # as an operator runs it, beside the running service
        conn.execute(documented_sql("thin"), {"cutoff_ms": cutoff, "meters": json.dumps(THINNED)})
    assert store.count_readings("r") == 3 * 48 * 60 - len(THINNED) * (24 * 60 - 24)
    for meter in THINNED:  # one reading per hour left before the cutoff
        assert len(store.read_readings("r", meter, T0, cutoff)) == 24
    assert len(store.read_readings("r", "plc", T0, cutoff)) == 24 * 60  # not thinned
    after = recompute(store)
    store.close()
    for meter in THINNED:
        h, e_before = before.hourly_energy(meter, "energy_import_kwh")
        h2, e_after = after.hourly_energy(meter, "energy_import_kwh")
        assert np.array_equal(h, h2)
        assert e_after.sum() == pytest.approx(e_before.sum(), rel=1e-12)  # the total is kept
        late = h >= cutoff + HOUR_MS
        assert np.array_equal(e_after[late], e_before[late])  # untouched after the cutoff
        assert not np.array_equal(e_after[~late], e_before[~late])  # spread across hours
        assert np.abs(e_after[~late] - e_before[~late]).max() < 0.05 * e_before[~late].max()
    fp_before, fp_after = before.footprints(T0, cutoff)[0], after.footprints(T0, cutoff)[0]
    assert fp_before.share_estimated == 0 and fp_after.share_estimated > 0.9
    assert fp_after.units == fp_before.units
    later = (before.footprints(cutoff + HOUR_MS, T0 + 48 * HOUR_MS)[0].to_dict(),
             after.footprints(cutoff + HOUR_MS, T0 + 48 * HOUR_MS)[0].to_dict())
    assert later[0] | {"revision": 0} == later[1] | {"revision": 0}


def test_deleted_readings_leave_a_recompute_of_their_period_nothing(tmp_path):
    db = tmp_path / "tanji.sqlite"
    store = SqliteStore(db)
    store.write_readings(two_days(3))
    cutoff = T0 + 24 * HOUR_MS
    with sqlite3.connect(db) as conn:
        conn.execute(documented_sql("retention: delete every reading"), {"cutoff_ms": cutoff})
    assert store.read_readings("r", None, T0, cutoff) == []
    assert store.count_readings("r") == 3 * 24 * 60
    after = recompute(store)
    store.close()
    assert after.hourly_energy("main", "energy_import_kwh")[0][0] == cutoff  # no hour before
    (fp,) = after.footprints(T0, cutoff)
    assert fp.units == 0 and fp.energy_kwh == 0 and fp.kgco2e_location == 0

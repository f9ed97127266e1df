"""The plant watch's numba pass against its plain-Python reference (tests/service/watch_reference.py).

Random readings of the demo site (a PLC with a recorded replacement, energy meters with a
plausible maximum, a meter the site does not know), in random order and batches, with bad
qualities, missing values, drops, jumps, rollovers and gaps: both watches must leave the same
operator's log (changes and alarms, in order) and the same per-meter state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounting.engine.engine import Engine
from accounting.live.engine_state import dataset_for
from accounting.live.kernels_watch import EV_FLOATS, EV_INTS
from accounting.live.watch import PlantWatch
from accounting.site_topology import site_topology
from accounting.store.alarms import AlarmStore
from accounting.store.base import StoredReading
from tanji.site import parse_site_text

from .watch_reference import ReferenceWatch

SITE_FILE = Path(__file__).resolve().parents[2] / "firmware-config" / "sites" / "cq-battery.yaml"
T0 = 1_750_000_000_000
HOUR0 = T0 - T0 % 3_600_000
REPLACED_AT = HOUR0 + 30_500
_TEXT = SITE_FILE.read_text().replace(
    "unit_id: 2, poll_period_s: 1}",
    "unit_id: 2, poll_period_s: 1, replacements: [{at: '" + np.datetime_as_string(
        np.datetime64(REPLACED_AT, "ms")) + "Z', old_final: {units_total: 11507.5}, new_initial: {units_total: 3}}]}")
SITE = parse_site_text(_TEXT, str(SITE_FILE))
ENGINE = Engine(site_topology(SITE), dataset_for(SITE))
TOPOLOGY = ENGINE.topology
WRAP = TOPOLOGY.meter("plc-b").rollover_kwh
METERS = ["plc-b", "plc-a", "line-b-meter", "air-meter", "ghost"]
CHANNELS = {m.meter_id: m.counter_channels for m in TOPOLOGY.meters}

value = st.one_of(st.none(), st.sampled_from([0.0, 3.0, 100.0, 11_506.0, 11_507.5, WRAP - 5, WRAP + 1]),
                  st.floats(0, 2e4, allow_nan=False), st.integers(0, 200).map(lambda k: 5000.0 + 0.04 * k))


@st.composite
def reading(draw: st.DrawFn) -> StoredReading:
    meter = draw(st.sampled_from(METERS))
    names = [*CHANNELS.get(meter, ("energy_import_kwh",)), "line_running", "power_kw"]
    values = {n: v for n in names if (v := draw(value if n != "line_running" else
                                               st.sampled_from([None, 0.0, 1.0, 2.0]))) is not None}
    ts = HOUR0 + draw(st.integers(0, 90)) * draw(st.sampled_from([500, 700, 1000]))
    quality = draw(st.sampled_from(["good", "good", "good", "comm_error", "stale"]))
    return StoredReading(SITE.id, "gw-cq-01", meter, ts, quality, values)


def log(store: AlarmStore) -> tuple[list, list]:
    changes = [(c["ts_ms"], c["kind"], c["subject"], c["message"], c["detail"]) for c in store.changes(limit=100_000)]
    alarms = [(a["kind"], a["subject"], a["message"], a["detail"], a["active"]) for a in store.alarms(limit=100_000)]
    return changes, alarms


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(reading(), max_size=30), min_size=1, max_size=4),
       seed=st.one_of(st.none(), reading()), engine_known=st.booleans(), small_buffer=st.booleans())
def test_the_pass_equals_the_reference(batches: list[list[StoredReading]], seed: StoredReading | None,
                                       engine_known: bool, small_buffer: bool) -> None:
    def engine(site_id: str) -> Engine:
        if not engine_known:
            raise KeyError(site_id)
        return ENGINE

    ours, theirs = AlarmStore(), AlarmStore()
    watch, reference = PlantWatch({SITE.id: SITE}, ours, engine), ReferenceWatch({SITE.id: SITE}, theirs, engine)
    if small_buffer:  # the pass stops when its event buffer might overflow and resumes
        most = 2 + max(len(c) for c in CHANNELS.values())
        watch._ev_i, watch._ev_f = np.zeros((most, EV_INTS), np.int64), np.zeros((most, EV_FLOATS))
    if seed is not None and seed.meter in CHANNELS:
        watch.seed(SITE.id, {seed.meter: seed})
        reference.seed(SITE.id, {seed.meter: seed})
    layout = watch._layouts[SITE.id]
    for rows in batches:
        watch.observe_columns(SITE.id, layout.columns(rows))
        reference.observe({SITE.id: rows})
    assert log(ours) == log(theirs)
    w = watch._sites[SITE.id]
    for m, meter in enumerate(w.meters):
        seen = reference.seen[SITE.id][meter.meter_id]
        assert (None if w.last_ts[m] == np.iinfo(np.int64).min else int(w.last_ts[m])) == seen.ts_ms
        assert int(w.gap_count[m]) == seen.gap_count and float(w.gap_s[m]) == seen.gap_s
        assert (None if w.gap_since[m] == np.iinfo(np.int64).min else int(w.gap_since[m])) == seen.gap_since_ms
        lo, hi = int(w.ch_off[m]), int(w.ch_off[m + 1])
        assert [None if np.isnan(v) else v for v in w.counter[lo:hi].tolist()] == \
            [None if v is None else float(v) for v in seen.counters]

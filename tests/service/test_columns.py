"""Readings made columns once per cycle (`accounting.ingest.reading_columns`): the engine feed and
the meter status computed from them equal the row-by-row way (the references below, as the
feed and the status were before), for random rows of the demo site: bad qualities, per-value
qualities, missing values, equal timestamps, meters the layout does not name."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounting.engine.engine import Engine
from accounting.ingest.engine_feed import EngineFeed
from accounting.ingest.reading_columns import ColumnLayout
from accounting.live.engine_state import dataset_for
from accounting.live.status import PlantStatus
from accounting.site_topology import site_topology
from accounting.store.base import StoredReading
from tanji.site import load_site

SITE = load_site(Path(__file__).resolve().parents[2] / "firmware-config" / "sites" / "cq-battery.yaml")
TOPOLOGY = site_topology(SITE)
METERS = [m.meter_id for m in TOPOLOGY.meters]
NAMES = sorted({c for m in TOPOLOGY.meters for c in m.channels} | {"line_running", "power_kw"})
T0 = 1_750_000_000_000


@st.composite
def reading(draw: st.DrawFn) -> StoredReading:
    meter = draw(st.sampled_from(METERS))
    values = {n: draw(st.one_of(st.none(), st.floats(0, 1e5, allow_nan=False), st.integers(0, 10**6)))
              for n in draw(st.lists(st.sampled_from(NAMES), max_size=4, unique=True))}
    vq = draw(st.one_of(st.none(), st.just({}), st.dictionaries(st.sampled_from(NAMES),
                                                                st.sampled_from(["good", "stale", "comm_error"]))))
    return StoredReading(SITE.id, "gw-cq-01", meter, T0 + draw(st.integers(0, 20)) * 1000,
                         draw(st.sampled_from(["good", "stale", "comm_error"])), values, vq)


def reference_feed(engine: Engine, rows: list[StoredReading]) -> tuple[list, list, list, list]:
    """The feed as it was: per reading and engine channel, in the rows' order."""
    channels: dict[str, list[tuple[str, int]]] = {}
    for index, (meter, channel) in enumerate(engine.channel_keys):
        channels.setdefault(meter, []).append((channel, index))
    idx, ts, val, bad = [], [], [], []
    for _, _, meter, ts_ms, quality, values, vq in rows:
        for channel, index in channels.get(meter, []):
            v = values.get(channel)
            if v is None:
                continue
            idx.append(index)
            ts.append(ts_ms)
            val.append(float(v))
            bad.append(0 if (vq.get(channel, "good") if vq else quality) == "good" else 1)
    return idx, ts, val, bad


class RecordingEngine(Engine):
    def ingest(self, channels, ts_ms, value, quality=None):  # noqa: ANN001, ANN201
        self.fed = (channels.tolist(), ts_ms.tolist(), value.tolist(), quality.tolist())
        return super().ingest(channels, ts_ms, value, quality)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(reading(), max_size=40))
def test_the_feed_from_columns_equals_the_row_by_row_feed(rows: list[StoredReading]) -> None:
    engine = RecordingEngine(TOPOLOGY, dataset_for(SITE))
    engine.fed = ([], [], [], [])
    n = EngineFeed(engine).feed(rows)
    # The engine orders by (channel, time), keeping arrival order among equal ones: that order must agree.
    def by_channel(fed: tuple[list, ...]) -> list[tuple]:
        return sorted(zip(*fed, strict=True), key=lambda x: (x[0], x[1]))
    assert by_channel(engine.fed) == by_channel(reference_feed(engine, rows)) and n == len(engine.fed[0])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(reading(), max_size=30), max_size=3), unnamed=st.sets(st.sampled_from(METERS)))
def test_the_status_from_columns_equals_the_row_by_row_status(batches: list[list[StoredReading]],
                                                             unnamed: set[str]) -> None:
    layout = ColumnLayout(tuple(m for m in METERS if m not in unnamed), ColumnLayout.of(TOPOLOGY).names)
    ours, theirs = PlantStatus({SITE.id: SITE}), PlantStatus({SITE.id: SITE})
    for rows in batches:
        touched = ours.update_columns(SITE.id, rows, layout.columns(rows))
        assert touched == theirs.update({SITE.id: rows})[SITE.id]
    assert ours.meter_rows(SITE.id) == theirs.meter_rows(SITE.id)


def test_a_layout_names_the_topologys_meters_and_channels() -> None:
    layout = ColumnLayout.of(TOPOLOGY)
    assert layout.meters == tuple(METERS) and "line_running" in layout.names and "batch_id" in layout.names
    assert layout.same_as(ColumnLayout.of(replace(TOPOLOGY)))
    cols = layout.columns([StoredReading(SITE.id, "g", "ghost", T0, "good", {"units_total": None})])
    assert cols.meter.tolist() == [-1] and np.isnan(cols.values).all()

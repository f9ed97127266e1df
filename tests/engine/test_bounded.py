"""A bounded engine (raw tail of a few readings, the store behind it) gives the hours of a
recomputation from the store, bit for bit, whatever the arrival order (ACCOUNTING.md §6.3, §6.4).

Readings go the way the service sends them: each batch is written to a real SQLite store, then
fed to the engine. Some are delivered late, far beyond the tail, some twice, batches are cut at
random; the engine must re-spread the hours from the store exactly.
"""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from accounting.engine import Engine
from accounting.engine.kernels_energy import HOUR_MS
from accounting.errors import ReadingError
from accounting.factors import load_dataset
from accounting.store.base import StoredReading
from accounting.store.source import StoreSource
from accounting.store.sqlite import SqliteStore
from accounting.topology import CostCentre, Meter, Product, SiteTopology
from tests.engine.plants import T0, H, scenarios

DATASET = load_dataset("cn-mee-national-co2", "2022")


def stored_rows(site: str, readings) -> list[StoredReading]:
    """(meter, channel, ts, value) readings as the store's rows (one per meter and time)."""
    by_key: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for meter, channel, t, v in readings:
        by_key[(meter, t)].setdefault(channel, v)  # the first copy wins, as in the store
    return [StoredReading(site, "gw", m, t, "good", values) for (m, t), values in by_key.items()]


def arrays(engine: Engine, readings):
    ch = np.array([engine.channel_index(m, c) for m, c, _, _ in readings], dtype=np.int64)
    return ch, np.array([r[2] for r in readings], np.int64), np.array([r[3] for r in readings], np.float64)


def as_messages(readings) -> list[list]:
    """Readings grouped as a gateway sends them: all channels of a meter at one time together."""
    by_key: dict[tuple[str, int], list] = defaultdict(list)
    for r in readings:
        by_key[(r[0], r[2])].append(r)
    return list(by_key.values())


def messy_delivery(readings, rng: random.Random) -> list:
    """Time order, except ~15 % held back to a random later point (often the end), ~20 % sent
    twice, and small windows shuffled; a meter's channels at one time travel together."""
    ordered = sorted(as_messages(readings), key=lambda m: m[0][2])
    out, held = [], []
    for r in ordered:
        if rng.random() < 0.15:
            held.append((rng.randint(len(out), len(out) + len(ordered)), r))
        else:
            out.append(r)
        if rng.random() < 0.2:
            out.insert(rng.randint(max(0, len(out) - 50), len(out)), r)
    for pos, r in sorted(held, key=lambda x: x[0]):
        out.insert(min(pos, len(out)), r)
    for i in range(0, len(out), 7):
        window = out[i:i + 7]
        rng.shuffle(window)
        out[i:i + 7] = window
    return [r for message in out for r in message]


def feed_like_the_service(engine: Engine, store: SqliteStore, site: str, delivery, rng) -> None:
    i = 0
    while i < len(delivery):
        n = rng.randint(1, 60)
        while i + n < len(delivery) and delivery[i + n][:3:2] == delivery[i + n - 1][:3:2]:
            n += 1  # a message is never cut
        batch = delivery[i:i + n]
        store.write_readings(stored_rows(site, batch))  # durable first, then the engine
        engine.ingest(*arrays(engine, batch))
        i += n


def recomputed(engine: Engine, store: SqliteStore, site: str) -> Engine:
    span = store.reading_span(site)
    chunks = store.iter_channel_arrays(site, engine.channel_keys, span[0], span[1] + 1, 2 * H)
    return engine.recompute(chunks, retain_readings=False).engine


def assert_same_hours(live: Engine, again: Engine) -> None:
    for key in live.channel_keys:
        if key[1] == "batch_id":
            continue
        h1, e1 = live.hourly_energy(*key)
        h2, e2 = again.hourly_energy(*key)
        assert np.array_equal(h1, h2), key
        assert np.array_equal(e1, e2), key  # bit for bit, not approximately
    # every field, bit for bit, but the revision counter: only the live engine saw hours reopen
    assert [f.to_dict() | {"revision": 0} for f in live.footprints()] == \
        [f.to_dict() | {"revision": 0} for f in again.footprints()]


@given(scenarios(), st.sampled_from([0.0, 1.0, 900.0]), st.integers(0, 2**32 - 1))
def test_bounded_engine_equals_recompute_from_the_store(tmp_path_factory, sc, tail_s, seed):
    rng = random.Random(seed)
    site = sc.topology.site_id
    store = SqliteStore(tmp_path_factory.mktemp("store") / "s.sqlite")
    try:
        live = Engine(sc.topology, DATASET, instruments=sc.portfolio, tail_s=tail_s,
                      source=StoreSource(store, site))
        feed_like_the_service(live, store, site, messy_delivery(sc.readings, rng), rng)
        assert live.pending_readings == 0
        assert_same_hours(live, recomputed(live, store, site))
        # and the same as an engine that kept every reading, fed in time order
        full = Engine(sc.topology, DATASET, instruments=sc.portfolio)
        full.ingest(*arrays(full, sorted(sc.readings, key=lambda r: r[2])))
        assert_same_hours(live, full)
    finally:
        store.close()


@given(scenarios(instruments=False), st.integers(0, 2**32 - 1))
def test_late_reading_far_beyond_the_tail_refines_the_spread_not_the_totals(tmp_path_factory, sc, seed):
    """One reading delivered after everything else, hours after its time: totals unchanged
    (ACCOUNTING.md §1), its hours re-spread as if it had come in order."""
    rng = random.Random(seed)
    site = sc.topology.site_id
    messages = sorted(as_messages(sc.readings), key=lambda m: m[0][2])
    if len(messages) < 3:
        return
    late = messages.pop(rng.randrange(1, len(messages) - 1))
    ordered = [r for m in messages for r in m]
    store = SqliteStore(tmp_path_factory.mktemp("store") / "s.sqlite")
    try:
        live = Engine(sc.topology, DATASET, tail_s=0.0, source=StoreSource(store, site))
        store.write_readings(stored_rows(site, ordered))
        live.ingest(*arrays(live, ordered))
        store.write_readings(stored_rows(site, late))
        summary = live.ingest(*arrays(live, late))
        newest = {}
        for m, c, t, _ in ordered:
            newest[(m, c)] = max(t, newest.get((m, c), t))
        assert summary.beyond_tail == sum(r[2] < newest.get(r[:2], r[2]) for r in late)
        assert_same_hours(live, recomputed(live, store, site))
    finally:
        store.close()


def test_without_a_source_a_reading_beyond_the_tail_is_refused_by_name():
    topo = SiteTopology("s", "East", (Meter("m", "grid_import", ("energy_import_kwh",), poll_period_s=60),
                                      Meter("p", "production_counter", ("units_total",), cost_centre="L")),
                        (CostCentre("L"),), (Product("P", line="L", units_meter="p"),))
    engine = Engine(topo, DATASET, tail_s=0.0)
    c = engine.channel_index("m", "energy_import_kwh")
    engine.ingest(np.full(3, c), np.array([T0, T0 + 60_000, T0 + 120_000]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ReadingError, match="m/energy_import_kwh: 1 reading"):
        engine.ingest(np.array([c]), np.array([T0 + 30_000]), np.array([1.5]))


def batch_topology() -> SiteTopology:
    return SiteTopology(
        "b", "East",
        (Meter("main", "grid_import", ("energy_import_kwh",), poll_period_s=60),
         Meter("plc", "production_counter", ("units_total", "batch_id"), cost_centre="L1",
               poll_period_s=60)),
        (CostCentre("L1"),), (Product("P", line="L1", units_meter="plc"),))


@given(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 1.0, None]))
def test_batch_channel_runs_equal_those_of_all_readings(tmp_path_factory, seed, tail_s):
    """Batch-id readings delivered out of order, some far beyond the tail: the batch
    footprints equal those of an engine that kept every reading."""
    rng = random.Random(seed)
    readings = []
    batch, units, kwh = 1.0, 0.0, 0.0
    for k in range(240):
        t = T0 + k * 60_000
        if rng.random() < 0.05:
            batch += 1
        units += rng.uniform(0, 3)
        kwh += rng.uniform(1, 5)
        readings += [("plc", "batch_id", t, batch), ("plc", "units_total", t, units),
                     ("main", "energy_import_kwh", t, kwh)]
    store = SqliteStore(tmp_path_factory.mktemp("store") / "s.sqlite")
    try:
        live = Engine(batch_topology(), DATASET, tail_s=tail_s, source=StoreSource(store, "b"))
        feed_like_the_service(live, store, "b", messy_delivery(readings, rng), rng)
        full = Engine(batch_topology(), DATASET)
        full.ingest(*arrays(full, readings))
        for b in range(1, int(batch) + 1):
            got = [f.to_dict() | {"revision": 0} for f in live.footprints(batch_id=b)]
            want = [f.to_dict() | {"revision": 0} for f in full.footprints(batch_id=b)]
            assert got == want, b
        assert_same_hours(live, full)
    finally:
        store.close()


def test_late_readings_wait_while_the_store_cannot_answer(tmp_path):
    """A store that cannot answer (InfluxDB down, readings still in the spill queue) does not
    lose late readings: they wait, and are re-spread once it answers."""
    store = SqliteStore(tmp_path / "s.sqlite")
    answering = [False]

    class Flaky(StoreSource):
        def channel_readings(self, *args):
            if not answering[0]:
                from accounting.errors import SourceUnavailableError
                raise SourceUnavailableError("down")
            return super().channel_readings(*args)

    topo = batch_topology()
    live = Engine(topo, DATASET, tail_s=0.0, source=Flaky(store, "b"))
    readings = [("main", "energy_import_kwh", T0 + k * 60_000, float(k * k)) for k in range(120)]
    late = readings.pop(50)
    store.write_readings(stored_rows("b", readings))
    live.ingest(*arrays(live, readings))
    store.write_readings(stored_rows("b", [late]))
    summary = live.ingest(*arrays(live, [late]))
    assert summary.pending == 1 and live.pending_readings == 1
    answering[0] = True
    assert live.retry_pending() == 0
    full = Engine(topo, DATASET)
    full.ingest(*arrays(full, sorted(readings + [late], key=lambda r: r[2])))
    assert np.array_equal(live.hourly_energy("main", "energy_import_kwh")[1],
                          full.hourly_energy("main", "energy_import_kwh")[1])
    store.close()
    assert HOUR_MS == H

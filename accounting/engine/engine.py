"""The accounting engine of one site: readings in, product footprints out.

:class:`Engine` assembles the parts, one concern each: ``settings`` (how it computes),
``state`` (the live state, bounded by channels x hours plus a raw tail), ``live`` (counter
readings into it, re-spreads from the store), ``batches`` (batch-id channels), ``footprints``
(allocation, market matching, reduction), ``checkpoint`` (snapshots of what changed) and
``results`` (what it returns). The numbers are made by the kernels (``kernels_*.py``) over the
arrays built in ``arrays.py``. See ``docs/accounting.md`` for the method.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from accounting.engine import checkpoint as cp
from accounting.engine.arrays import KeyIndex, build_topology_arrays, instrument_rows
from accounting.engine.batches import BatchLog
from accounting.engine.footprints import FootprintReducer, add_span
from accounting.engine.kernels_energy import HOUR_MS, NO_TS, counter_to_hours_replaced
from accounting.engine.live import CounterFeed, sort_batch
from accounting.engine.results import FootprintResult, IngestSummary, ProductFootprint, SiteBalance
from accounting.engine.settings import EngineSettings
from accounting.engine.source import ReadingSource
from accounting.engine.state import LiveState, tail_capacity
from accounting.errors import CheckpointError, ReadingError, TopologyError
from accounting.factors.dataset import FactorDataset
from accounting.instruments import InstrumentPortfolio
from accounting.topology import SiteTopology

Readings = tuple[np.ndarray, np.ndarray, np.ndarray]


class Engine:
    """Live accounting of one site: cumulative readings in, product footprints out.

    The engine keeps, per counter channel and hour, the energy and what is needed to rebuild
    any hour exactly (``state.py``), plus the newest raw readings of each channel; allocation
    and market matching are derived when footprints are asked for. Results are a pure function
    of the set of readings, the topology, the dataset version, the instruments and the
    settings — not of arrival order or batch split. With a bounded raw tail
    (``settings.tail_s``) the store behind it (``source``) is the system of record for older
    readings.

    Example::

        import numpy as np
        from accounting.engine import Engine
        from accounting.factors import load_dataset
        from accounting.topology import CostCentre, Meter, Product, SiteTopology

        topo = SiteTopology(
            site_id="cq-01", grid_region="Southwest",
            meters=(Meter("main", "grid_import", ("energy_import_kwh",), accuracy_class_pct=0.5),
                    Meter("plc1", "production_counter", ("units_total",), cost_centre="L1")),
            cost_centres=(CostCentre("L1"),),
            products=(Product("widget", line="L1", units_meter="plc1"),),
            remainder_key="units")  # unmetered energy follows units produced
        engine = Engine(topo, load_dataset("cn-mee-regional-co2", "2022"))
        main = engine.channel_index("main", "energy_import_kwh")
        plc = engine.channel_index("plc1", "units_total")
        t0 = 1_735_689_600_000  # 2025-01-01T00:00Z
        engine.ingest(np.array([main, main, plc, plc]),
                      np.array([t0, t0 + 3_600_000, t0, t0 + 3_600_000]),
                      np.array([100.0, 150.0, 0.0, 10.0]))
        [fp] = engine.footprints(t0, t0 + 3_600_000)
        fp.kgco2e_location  # 50 kWh x 0.2268 = 11.34
        fp.kgco2e_per_unit_location  # 1.134

    Thread safety: none; one engine per site, driven by one ingest task (the service holds a
    lock around it).
    """

    def __init__(self, topology: SiteTopology, dataset: FactorDataset,
                 settings: EngineSettings | None = None, *,
                 instruments: InstrumentPortfolio | None = None,
                 source: ReadingSource | None = None, **overrides: Any) -> None:
        """Create an empty engine. ``overrides`` are fields of :class:`EngineSettings`
        (``matching_mode=``, ``grace_period_s=`` ...), applied over ``settings``."""
        settings = (settings or EngineSettings()).with_(**overrides)
        if instruments is not None and instruments.site_id != topology.site_id:
            raise TopologyError("the instrument portfolio belongs to another site")
        self.topology = topology
        self.dataset = dataset
        self.settings = settings
        self.instruments = instruments
        self.matching_mode = settings.mode_for(topology)
        self._arrays = build_topology_arrays(topology, settings.gap_polls)
        self._counters = len(self._arrays.channels)
        self._keys = KeyIndex(list(self._arrays.channels.keys) + topology.batch_keys(), "channel")
        rows, ineligible = instrument_rows(instruments, topology, dataset, self.matching_mode,
                                           settings.deliverability)
        self._reducer = FootprintReducer(topology, dataset, self._arrays, self.matching_mode,
                                         rows, ineligible)
        caps = tail_capacity(settings.tail_s, self._arrays.poll_period_array)
        self._state = LiveState(self._counters, self._arrays.channel_params, caps)
        self._feed = CounterFeed(self._state, self._arrays.channels.keys, settings.grace_period_s,
                                 source)
        batch_keys = self._keys.keys[self._counters:]
        by_id = {m.meter_id: m for m in topology.meters}
        polls = np.array([by_id[m].poll_period_s for m, _ in batch_keys], np.float64)
        bcaps = tail_capacity(settings.tail_s, polls)
        self._batches = [BatchLog(None if bcaps is None else int(bcaps[i]))
                         for i in range(len(batch_keys))]
        self._version = 0  # counts changes of the live state (the derivation cache's key)
        self._result_version = 0
        self._read_only = False

    # ------------------------------------------------------------------ settings
    @property
    def grace_period_s(self) -> float:
        return self.settings.grace_period_s

    @property
    def deliverability(self) -> str:
        return self.settings.deliverability

    @property
    def gap_polls(self) -> float:
        return self.settings.gap_polls

    @property
    def factor_region(self) -> str:
        return self._reducer.factor_region

    @property
    def source(self) -> ReadingSource | None:
        """Where readings older than the raw tail are looked up (the store)."""
        return self._feed.source

    @source.setter
    def source(self, source: ReadingSource | None) -> None:
        self._feed.source = source

    # ------------------------------------------------------------------ channels
    def channel_index(self, meter_id: str, channel: str) -> int:
        """Dense index of a (meter_id, channel) key: counters first, then batch-id channels."""
        return self._keys.index((meter_id, channel))

    def channel_key(self, index: int) -> tuple[str, str]:
        """The (meter_id, channel) key of an index (inverse of :meth:`channel_index`)."""
        return self._keys.key(index)  # type: ignore[return-value]

    @property
    def channel_keys(self) -> tuple[tuple[str, str], ...]:
        """All keys in index order."""
        return self._keys.keys

    # ------------------------------------------------------------------ ingest
    def ingest(self, channels: np.ndarray | Sequence[tuple[str, str]], ts_ms: np.ndarray,
               value: np.ndarray, quality: np.ndarray | None = None) -> IngestSummary:
        """Add cumulative readings (any order, any split, duplicates allowed).

        ``channels`` are indices from :meth:`channel_index` or (meter_id, channel) keys;
        ``ts_ms`` UTC epoch ms; ``value`` the cumulative register (kWh, units) or, on a
        ``batch_id`` channel, the batch number. Readings with ``quality != 0``, a non-finite or
        negative value are rejected. Returns the counts of what happened.
        """
        if self._read_only:
            raise ReadingError("this engine was built without retaining readings; it is read-only")
        ch = self._as_indices(channels)
        ts = np.ascontiguousarray(ts_ms, dtype=np.int64)
        val = np.ascontiguousarray(value, dtype=np.float64)
        if not (len(ch) == len(ts) == len(val)):
            raise ReadingError("channels, ts_ms and value must have the same length")
        summary = IngestSummary()
        ok = np.isfinite(val) & (val >= 0)
        if quality is not None:
            q = np.asarray(quality)
            if len(q) != len(ch):
                raise ReadingError("quality must have the same length as the readings")
            ok &= q == 0
        if not ok.all():
            summary.rejected = int(len(ch) - ok.sum())
            ch, ts, val = ch[ok], ts[ok], val[ok]
        ch, ts, val, starts, dups = sort_batch(ch, ts, val)
        summary.duplicate += dups
        if len(ch) == 0:
            return summary
        self._version += 1
        n_counter = int(np.searchsorted(ch, self._counters))  # counters sort first
        if n_counter:
            self._feed.feed(ch[:n_counter], ts[:n_counter], val[:n_counter],
                            starts[starts < n_counter], summary)
        bounds = np.append(starts, len(ch))
        for g in np.flatnonzero(starts >= n_counter).tolist():
            lo, hi = int(bounds[g]), int(bounds[g + 1])
            c = int(ch[lo])
            self._batches[c - self._counters].ingest(ts[lo:hi], val[lo:hi], summary,
                                                     self._batch_fetch(c), "/".join(self._keys.keys[c]))
        return summary

    def close_hours(self, now_ms: int) -> None:
        """Advance the clock (e.g. from wall time when meters fall silent) so hours can close."""
        self._state.watermark_ms = max(self._state.watermark_ms, int(now_ms))

    @property
    def pending_readings(self) -> int:
        """Late readings waiting for the store to answer before they are re-spread."""
        return sum(len(p.ts) for p in self._feed.pending)

    def retry_pending(self) -> int:
        """Re-spread the late readings that waited for the store; returns how many still wait."""
        if self._feed.pending:
            self._version += 1
        return self._feed.retry_pending()

    def _batch_fetch(self, c: int):  # noqa: ANN202 -- a closure over the source
        source = self._feed.source
        if source is None:
            return None
        meter, channel = self._keys.keys[c]

        def fetch(start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
            got = source.channel_readings(meter, [channel], start_ms, end_ms)
            return got.get(channel, (np.zeros(0, np.int64), np.zeros(0)))

        return fetch

    def _as_indices(self, channels: np.ndarray | Sequence[tuple[str, str]]) -> np.ndarray:
        arr = np.asarray(channels) if not isinstance(channels, np.ndarray) else channels
        if arr.dtype.kind in "iu":
            idx = np.ascontiguousarray(arr, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= len(self._keys)):
                bad = idx[(idx < 0) | (idx >= len(self._keys))][0]
                self._keys.key(int(bad))  # raises UnknownChannelError
            return idx
        return np.array([self._keys.index(tuple(k)) for k in channels], dtype=np.int64)

    # ------------------------------------------------------------------ restart
    def resume(self, margin_ms: int, until_ms: dict[str, int] | None = None) -> int:
        """After :meth:`restore` from an incremental checkpoint: rebuild the hours from
        ``margin_ms`` before each channel's newest reading from the source, through the
        source's newest reading of each meter (``until_ms``: meter id -> end, exclusive), and
        refill the raw tails. Readings stored after the checkpoint are picked up. Returns the
        number of closed hours that changed."""
        self._version += 1
        reopened = self._feed.resume(margin_ms, until_ms)
        for i, log in enumerate(self._batches):
            fetch = self._batch_fetch(self._counters + i)
            meter = self._keys.keys[self._counters + i][0]
            if fetch is None or log.last_t == NO_TS and meter not in (until_ms or {}):
                continue
            after = (log.last_t - margin_ms) if log.last_t != NO_TS else (until_ms or {})[meter] - margin_ms
            log.resume(after, fetch, max(log.last_t + 1, (until_ms or {}).get(meter, 0)))
        return reopened

    # ------------------------------------------------------------------ derived results
    def _derive(self, lo_ms: int | None = None, hi_ms: int | None = None):  # noqa: ANN202
        lo = None if lo_ms is None else lo_ms // HOUR_MS
        hi = None if hi_ms is None else -((-hi_ms) // HOUR_MS) - 1
        return self._reducer.derive(self._state, self._version, lo, hi)

    def _last_closed(self) -> int:
        return self._state.last_closed_hour(self.settings.grace_period_s)

    def site_balance(self, start_ms: int | None = None, end_ms: int | None = None) -> SiteBalance:
        """Per-hour site balance for hours starting in ``[start_ms, end_ms)`` (all by default)."""
        return self._reducer.site_balance(self._state, self._derive(start_ms, end_ms), start_ms,
                                          end_ms, self._last_closed())

    def hourly_energy(self, meter_id: str, channel: str, start_ms: int | None = None,
                      end_ms: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(hour_start_ms, kWh or units) of one counter channel, as spread by the energy kernel."""
        c = self.channel_index(meter_id, channel)
        if c >= self._counters:
            raise ReadingError(f"{meter_id}/{channel} is not a counter channel")
        span = self._state.span()
        if span is None:
            return np.zeros(0, np.int64), np.zeros(0)
        hours = np.arange(span[0], span[1] + 1, dtype=np.int64)
        hour_ms = hours * HOUR_MS
        sel = np.ones(len(hours), bool)
        if start_ms is not None:
            sel &= hour_ms >= start_ms
        if end_ms is not None:
            sel &= hour_ms < end_ms
        return hour_ms[sel], self._state.energy[hours[sel] - self._state.origin, c].copy()

    def hourly_flags(self, meter_id: str, channel: str, start_ms: int | None = None,
                     end_ms: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(hour_start_ms, flags) of one counter channel: the OR of ``FLAG_*`` of the readings
        ending in each hour (``FLAG_READ`` when any did): data quality per meter and period."""
        c = self.channel_index(meter_id, channel)
        if c >= self._counters:
            raise ReadingError(f"{meter_id}/{channel} is not a counter channel")
        st = self._state
        if not st.capacity:
            return np.zeros(0, np.int64), np.zeros(0, np.uint8)
        hours = np.arange(st.origin, st.origin + st.capacity, dtype=np.int64)
        sel = np.ones(len(hours), bool)
        if start_ms is not None:
            sel &= hours * HOUR_MS >= start_ms
        if end_ms is not None:
            sel &= hours * HOUR_MS < end_ms
        return hours[sel] * HOUR_MS, st.flags[sel, c].copy()

    def reading_flags(self, meter_id: str, channel: str, ts_ms: np.ndarray, value: np.ndarray,
                      start_ms: int) -> np.ndarray:
        """The ``FLAG_*`` the energy step gives each of one counter channel's readings
        ``ts_ms``/``value`` (sorted, unique, usable, all after the start of ``start_ms``'s hour).

        The step is re-run from the state the engine holds entering that hour (its anchor, the
        last accepted reading before it); the rule looks only at that baseline and the reading,
        so each flag is the one the live engine gave. Per-hour flags keep only their OR
        (:meth:`hourly_flags`); this is the per-reading view of a meter and period."""
        c = self.channel_index(meter_id, channel)
        if c >= self._counters:
            raise ReadingError(f"{meter_id}/{channel} is not a counter channel")
        a_t, a_v = self._feed.anchor(c, start_ms // HOUR_MS)
        ts = np.ascontiguousarray(ts_ms, dtype=np.int64)
        val = np.ascontiguousarray(value, dtype=np.float64)
        first = 0
        if a_t != NO_TS:
            ts, val, first = np.concatenate(([a_t], ts)), np.concatenate(([a_v], val)), 1
        flags = np.zeros(len(ts), np.uint8)
        if len(ts) > 1:
            origin = int(ts[0]) // HOUR_MS
            n = int(ts[-1]) // HOUR_MS - origin + 1
            p = self._arrays.channel_params
            r = slice(int(p.rep_ptr[c]), int(p.rep_ptr[c + 1]))
            counter_to_hours_replaced(ts, val, flags, 0, len(ts), float(p.rollover[c]),
                                      float(p.max_rate[c]), int(p.gap_ms[c]), origin, origin,
                                      np.zeros(n), np.zeros(n), p.rep_at[r], p.rep_old[r],
                                      p.rep_new[r])
        return flags[first:]

    def footprints(self, start_ms: int | None = None, end_ms: int | None = None, *,
                   batch_id: str | float | None = None) -> list[ProductFootprint]:
        """Footprints of every product for hours starting in ``[start_ms, end_ms)``.

        Windows are whole hours (use :func:`accounting.engine.window_bounds` for a shift, day,
        month or year). With ``batch_id``, the window is the production batch instead: the
        spans during which a line's ``batch_id`` channel showed that number, each hour weighted
        by the fraction of it the batch covered; only the products of those lines are returned.
        """
        if batch_id is not None:
            return self._batch_footprints(batch_id)
        d = self._derive(start_ms, end_ms)
        if d is None:
            return []
        weights = d.hour_mask(start_ms, end_ms).astype(np.float64)
        first, last = (int(d.hour_ms[0]), int(d.hour_ms[-1]) + HOUR_MS) if len(d.hour_ms) else (0, 0)
        lo = first if start_ms is None else start_ms
        hi = last if end_ms is None else end_ms
        closed = self._last_closed()
        return [self._reducer.footprint(self._state, d, p, weights, lo, hi, None, closed)
                for p in range(len(self._arrays.products))]

    def batch_runs(self) -> list[dict[str, object]]:
        """Every production batch the lines' PLCs showed, in time order per channel: a run of one
        number on a ``batch_id`` channel, from its first reading to the next run's first reading
        (the last run: to its last reading), its line, and ``closed`` once the register moved on."""
        out: list[dict[str, object]] = []
        for i, log in enumerate(self._batches):
            meter = self.topology.meter(self._keys.keys[self._counters + i][0])
            n = len(log.run_val)
            for j in range(n):
                end = int(log.run_first[j + 1]) if j + 1 < n else int(log.run_last[j])
                out.append({"meter_id": meter.meter_id, "cost_centre": meter.cost_centre,
                            "batch_id": float(log.run_val[j]), "start_ms": int(log.run_first[j]),
                            "end_ms": end, "closed": j + 1 < n})
        return out

    def _batch_footprints(self, batch_id: str | float) -> list[ProductFootprint]:
        target = float(batch_id)
        result = []
        closed = self._last_closed()
        for i, log in enumerate(self._batches):
            meter = self.topology.meter(self._keys.keys[self._counters + i][0])
            found = log.spans(target)
            if found is None or meter.cost_centre is None:
                continue
            spans, span_lo, span_hi = found
            d = self._derive(span_lo - span_lo % HOUR_MS, span_hi)
            if d is None:
                continue
            weights = np.zeros(len(d.hour_ms))
            for a, b in spans:
                add_span(weights, d.hour_ms, a, b)
            cc = self._arrays.cost_centres.index(meter.cost_centre)
            for p in np.flatnonzero(self._arrays.product_cc_array == cc):
                result.append(self._reducer.footprint(self._state, d, int(p), weights, span_lo,
                                                      span_hi, str(batch_id), closed))
        return result

    def instrument_usage(self) -> list[dict[str, object]]:
        """kWh available and used of every instrument row (certificate lots, contract deliveries),
        plus instruments not eligible in this matching mode or boundary. Used <= available."""
        return self._reducer.instrument_usage(self._derive())

    # ------------------------------------------------------------------ recompute
    def recompute(self, readings: Readings | Iterable[Readings], dataset: FactorDataset | None = None,
                  *, start_ms: int | None = None, end_ms: int | None = None,
                  retain_readings: bool = True) -> FootprintResult:
        """Recompute from stored readings into a new, versioned result; live state is untouched.

        ``readings`` is ``(channel_index_array, ts_ms, value)`` or an iterable of such chunks,
        either in time order (a store streamed window by window) or each holding whole channels
        (a per-meter export). ``dataset`` defaults to the live one; passing a new version is how
        a new factor version is applied to history. ``retain_readings=False`` keeps no raw
        readings (constant memory whatever the period; chunks must then come in time order or
        by whole channels) and makes the returned engine read-only.

        Reads only this engine's topology, settings and instruments, never its live state, so
        it needs no lock shared with ingest.
        """
        ds = dataset or self.dataset
        settings = self.settings.with_(tail_s=None if retain_readings else 0.0)
        fresh = Engine(self.topology, ds, settings, instruments=self.instruments)
        if isinstance(readings, tuple) and len(readings) == 3 and isinstance(readings[0], np.ndarray):
            readings = [readings]
        for chunk in readings:
            try:
                fresh.ingest(*chunk)
            except ReadingError as exc:
                raise ReadingError(f"recompute: {exc} (give chunks in time order, or whole "
                                   "channels per chunk)") from None
        fresh._read_only = not retain_readings
        self._result_version += 1
        footprints = fresh.footprints(start_ms, end_ms)
        digest = hashlib.sha256()
        digest.update(fresh._fingerprint().encode())
        span = fresh._state.span()
        if span is not None:
            st = fresh._state
            digest.update(np.ascontiguousarray(st.energy[span[0] - st.origin:span[1] - st.origin + 1]).tobytes())
        return FootprintResult(result_id=digest.hexdigest()[:16], result_version=self._result_version,
                               dataset_id=ds.dataset_id, dataset_version=ds.version,
                               matching_mode=self.matching_mode, footprints=footprints,
                               instrument_usage=fresh.instrument_usage(), engine=fresh)

    def with_instruments(self, instruments: InstrumentPortfolio | None) -> Engine:
        """This engine's live state (hours, tails, clock, revisions, result counter) under another
        instrument portfolio: how an instrument added at run time reaches the market-based
        numbers. Instrument rows are fixed when an engine is built, hence a new engine."""
        engine = Engine(self.topology, self.dataset, self.settings, instruments=instruments,
                        source=self.source)
        engine._adopt(self, copy=True)
        return engine

    def _adopt(self, other: Engine, copy: bool) -> None:
        state = other._state.copy() if copy else other._state
        self._state = state
        self._feed.state = state
        self._feed.pending = list(other._feed.pending)
        self._batches = [_copy_batch(b) for b in other._batches] if copy else other._batches
        self._result_version = other._result_version
        self._version = other._version + 1
        self._read_only = other._read_only

    def readings(self) -> Readings:
        """The retained raw readings (every reading when ``tail_s`` is None, else the tails) as
        ``(channel_index, ts_ms, value)`` arrays, channel-major."""
        chs, tss, vals = [], [], []
        for c in range(self._counters):
            ts, val, _ = self._state.tail_readings(c)
            chs.append(np.full(len(ts), c, np.int64))
            tss.append(ts)
            vals.append(val)
        for i, log in enumerate(self._batches):
            ts, val = log.readings()
            chs.append(np.full(len(ts), self._counters + i, np.int64))
            tss.append(ts)
            vals.append(val)
        if not chs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(chs), np.concatenate(tss), np.concatenate(vals)

    def memory_bytes(self) -> int:
        """Bytes held by the live state's arrays."""
        runs = sum(b.run_val.nbytes * 3 + b.tail_ts.nbytes * 2 for b in self._batches)
        return self._state.nbytes() + runs

    # ------------------------------------------------------------------ checkpoints
    def _fingerprint(self) -> str:
        return json.dumps({"topology": hashlib.sha256(repr(self.topology).encode()).hexdigest(),
                           "dataset": [self.dataset.dataset_id, self.dataset.version, self.dataset.digest],
                           "settings": self.settings.results_key(self.topology)}, sort_keys=True)

    def snapshot(self, full: bool = False) -> cp.Snapshot:
        """What a checkpoint saves: the hour blocks written since the last snapshot (all when
        ``full``, or when none was taken yet), per-channel state, and the raw tails when the
        engine has no store to refill them from (or ``full``). Costs a copy of those blocks;
        compress and write it after releasing any lock."""
        with_tails = full or self.source is None
        st = self._state
        s = st.channels
        scalars: dict[str, np.ndarray] = {"cur_t": s.cur_t.copy(), "cur_v": s.cur_v.copy(),
                                          "last_t": s.last_t.copy(), "first_t": s.first_t.copy(),
                                          "anc_hi": s.anc_hi.copy()}
        if with_tails:
            t = st.tail
            lengths = t.length.copy()
            idx = (np.repeat(t.offset, lengths) + np.arange(lengths.sum())
                   - np.repeat(np.cumsum(lengths) - lengths, lengths))
            scalars |= {"tail_length": lengths, "tail_ts": t.ts[idx], "tail_val": t.val[idx],
                        "tail_fl": t.fl[idx]}
        for i, log in enumerate(self._batches):
            for k, v in log.arrays(with_tails).items():
                scalars[f"batch{i}_{k}"] = v.copy()
        meta = {"fingerprint": self._fingerprint(), "settings": self.settings.to_dict(),
                "result_version": self._result_version, "tails": with_tails}
        return cp.take(st, meta, scalars, full)

    def checkpoint(self) -> bytes:
        """The whole live state as bytes, for :meth:`restore` (every block, with the tails)."""
        return self.snapshot(full=True).encode()

    def mark_checkpoint_lost(self) -> None:
        """The last snapshot was not saved: the next one writes every block."""
        self._state.full_checkpoint_due = True

    @classmethod
    def restore(cls, blob: bytes | cp.Snapshot, topology: SiteTopology, dataset: FactorDataset,
                settings: EngineSettings | None = None, *,
                instruments: InstrumentPortfolio | None = None,
                source: ReadingSource | None = None, **overrides: Any) -> Engine:
        """Rebuild an engine from :meth:`checkpoint` bytes or a saved snapshot. The topology,
        dataset version and result-changing settings must be the ones it was made with (else
        :class:`CheckpointError`); settings not given are the checkpoint's. Without the raw
        tails in it, call :meth:`resume` next."""
        snap = cp.decode(blob) if isinstance(blob, bytes | bytearray | memoryview) else blob
        meta = snap.meta
        if meta.get("format") != cp.FORMAT:
            raise CheckpointError(f"unsupported checkpoint format {meta.get('format')}")
        if settings is None:
            settings = EngineSettings.from_dict(meta.get("settings", {}))
        engine = cls(topology, dataset, settings, instruments=instruments, source=source, **overrides)
        if engine._fingerprint() != meta["fingerprint"]:
            raise CheckpointError("checkpoint was made for another topology, dataset or settings")
        engine._load(snap)
        return engine

    def _load(self, snap: cp.Snapshot) -> None:
        sc = snap.scalars
        st = self._state
        try:
            for name in ("cur_t", "cur_v", "last_t", "first_t", "anc_hi"):
                getattr(st.channels, name)[:] = sc[name]
            cp.apply_blocks(st, snap.meta, snap.blocks)
            if "tail_length" in sc:
                lengths = sc["tail_length"]
                ends = np.cumsum(lengths)
                for c in np.flatnonzero(lengths).tolist():
                    lo, hi = int(ends[c] - lengths[c]), int(ends[c])
                    st.set_tail(c, sc["tail_ts"][lo:hi], sc["tail_val"][lo:hi], sc["tail_fl"][lo:hi])
            for i, log in enumerate(self._batches):
                prefix = f"batch{i}_"
                log.load({k[len(prefix):]: v for k, v in sc.items() if k.startswith(prefix)})
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"checkpoint does not fit this engine: {exc}") from None
        self._result_version = int(snap.meta.get("result_version", 0))
        self._version += 1


def _copy_batch(log: BatchLog) -> BatchLog:
    other = BatchLog(log.cap)
    other.__dict__.update({k: (v.copy() if isinstance(v, np.ndarray) else v)
                           for k, v in log.__dict__.items()})
    return other

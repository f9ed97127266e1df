"""The plant watch: what changed, and what an operator must act on, from what the plant says.

Runs inside the accounting service, on its engine thread: `observe` after each delivered batch
(every reading of it, in time order per meter), `check` as a periodic job. What it finds goes
to the operator's log (`accounting.store.alarms`), durable, so the dashboard shows the same
history after a restart.

Changes (information): a line started or stopped (the PLC's `line_running`), the grid factor
changed with the hour, a meter went offline or came back, energy estimated over a gap in a
meter's readings, a counter that rolled over.

Alarms (act on them): a meter offline (a condition: clears itself); a gateway's backlog (its
spool holds readings older than a minute, or its spool alarm is up); an hour whose remainder
is negative beyond the meters' accuracy (the engine's site-balance alarm); a counter that went
backwards (reset, meter swap, PLC restarted from a stale value) or jumped implausibly (more
than its meter's plausible maximum rate). The last three are events: they stay active until
someone acknowledges them. A step across a recorded meter replacement (the site file's
`replacements:`) is booked exactly by the engine: it is a change (`meter_replaced`), no alarm.

The thresholds are the engine's: a gap is longer than `gap_polls` poll periods, an implausible
jump implies more than the meter's `max_power_kw` (units per hour for a PLC), a counter drop
from within 10 % of its wrap value is a rollover (`kernels_energy.ROLLOVER_NEAR`). A jump is
judged net of one register step (a 0.1 kWh register read every second steps 0.4 kWh at times
without anything being wrong).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from accounting.engine.engine import Engine
from accounting.engine.kernels_energy import HOUR_MS, NO_TS, ROLLOVER_NEAR
from accounting.ingest.reading_columns import LINE_RUNNING, ColumnLayout, ReadingColumns
from accounting.live.grid import grid_factors
from accounting.live.kernels_watch import (
    EV_ARG,
    EV_BEFORE,
    EV_DT,
    EV_FLOATS,
    EV_INTS,
    EV_JUMP,
    EV_KIND,
    EV_LINE_EDGE,
    EV_METER,
    EV_REPLACED,
    EV_ROW,
    EV_STEP_BACK,
    EV_VALUE,
    watch_rows,
)
from accounting.site_topology import site_topology
from accounting.store.alarms import AlarmStore
from accounting.store.base import StoredReading
from accounting.topology import Meter
from tanji.replacements import MeterReplacement
from tanji.site import Site

log = logging.getLogger(__name__)

#: A meter is offline when its newest reading is older than this many poll periods (and at
#: least OFFLINE_MIN_S): late readings of a loaded gateway are not an outage.
OFFLINE_POLLS = 10
OFFLINE_MIN_S = 30.0
#: An active offline alarm's message ("no reading for N s") and last-seen time are refreshed at
#: most this often: refreshed every check (each second), a fleet catching up on a backlog, whose
#: meters all count as offline until their readings are recent, cost the engine thread two SQLite
#: statements per meter per second (~0.35 s a second with 5,000 meters).
OFFLINE_REFRESH_MS = 30_000
#: A gateway whose oldest unacknowledged reading is older than this has a backlog.
BACKLOG_MS = 60_000
#: At most one "estimated gap" change per meter in this long (they are summed meanwhile).
GAP_COALESCE_MS = 60_000
#: How often the site balance (negative remainder) and the factor in effect are looked at.
SLOW_CHECK_S = 10.0


def offline_after_ms(poll_period_s: float) -> float:
    """How long a meter may stay silent before it counts as offline (the dashboard's rule too)."""
    return max(OFFLINE_MIN_S, OFFLINE_POLLS * poll_period_s) * 1000


class _SiteWatch:
    """What the watch knows of one site's meters, as arrays the pass over readings updates
    (`accounting.live.kernels_watch.watch_rows`): rules from the topology, then per meter its
    newest time, line state, counter values and unreported gaps."""

    def __init__(self, site: Site) -> None:
        step = {(m.id, r.name): r.scale * _RATIOS[r.apply_ratio](m) for m in site.meters
                for r in m.profile.registers if not r.data_type.startswith("float")}  # an integer register counts in steps
        self.meters = list(site_topology(site).meters)
        self.index = {m.meter_id: i for i, m in enumerate(self.meters)}
        self.channels = [m.counter_channels for m in self.meters]
        n = len(self.meters)
        self.ch_off = np.zeros(n + 1, np.int64)
        self.ch_off[1:] = np.cumsum([len(c) for c in self.channels])
        self.ch_names = [c for cs in self.channels for c in cs]
        self.step = np.array([step.get((m.meter_id, c), 0.0) for m, cs in zip(self.meters, self.channels, strict=True)
                              for c in cs], np.float64)
        self.max_power = np.array([m.max_power_kw for m in self.meters], np.float64)
        self.gap_ms = np.full(n, np.nan)  # the engine's gap rule, known once the site's engine is
        self.rep_off = np.zeros(n + 1, np.int64)
        self.rep_off[1:] = np.cumsum([len(m.replacements) for m in self.meters])
        self.rep_at = np.array([r.at_ms for m in self.meters for r in m.replacements], np.int64)
        self.rep_bits = np.array([sum(1 << k for k, c in enumerate(cs) if c in r.old_final)
                                  for m, cs in zip(self.meters, self.channels, strict=True) for r in m.replacements], np.int64)
        self.last_ts = np.full(n, NO_TS, np.int64)
        self.running = np.full(n, np.nan)
        self.counter = np.full(len(self.ch_names), np.nan)
        self.gap_since = np.full(n, NO_TS, np.int64)
        self.gap_count = np.zeros(n, np.int64)
        self.gap_s = np.zeros(n)
        self.gap_reported = np.zeros(n, np.int64)
        self._layout: ColumnLayout | None = None
        self._maps: tuple[np.ndarray, np.ndarray, int] = (np.zeros(0, np.int64), np.zeros(0, np.int64), -1)

    def meter(self, meter_id: str) -> Meter | None:
        i = self.index.get(meter_id)
        return None if i is None else self.meters[i]

    def maps(self, layout: ColumnLayout) -> tuple[np.ndarray, np.ndarray, int]:
        """(layout slot → meter, channel slot → layout column, the line state's column) for `layout`."""
        if layout is not self._layout:
            column = {name: k for k, name in enumerate(layout.names)}
            meter_of_slot = np.array([self.index.get(m, -1) for m in layout.meters], np.int64)
            ch_col = np.array([column.get(c, -1) for c in self.ch_names], np.int64)
            self._layout, self._maps = layout, (meter_of_slot, ch_col, column.get(LINE_RUNNING, -1))
        return self._maps


#: Events a pass over readings buffers before Python handles them (it resumes after).
EVENTS = 1024


class PlantWatch:
    """Changes and alarms of every site; `engine(site_id)` gives the site's live engine."""

    def __init__(self, sites: Mapping[str, Site], store: AlarmStore, engine: Callable[[str], Engine]) -> None:
        self.sites = sites
        self.store = store
        self.engine = engine
        self._sites = {s.id: _SiteWatch(s) for s in sites.values()}
        self._offline_ms = {(site_id, m.meter_id): offline_after_ms(m.poll_period_s)
                            for site_id, w in self._sites.items() for m in w.meters}
        self._layouts = {s.id: ColumnLayout.of(site_topology(s)) for s in sites.values()}
        self._ev_i = np.zeros((EVENTS, EV_INTS), np.int64)
        self._ev_f = np.zeros((EVENTS, EV_FLOATS))
        self._factor: dict[str, float] = {}
        self._started_ms = _now_ms()
        self._offline_refreshed: dict[tuple[str, str], int] = {}  # (site, meter) → when its alarm was last refreshed
        self._slow_at = 0.0
        for site_id in self._sites:  # compiles the pass (or loads it from numba's cache) now, not at the first reading
            self.observe_columns(site_id, self._layouts[site_id].columns([]))

    # -- readings (engine thread, after each delivered batch) ------------------------------

    def seed(self, site_id: str, latest: Mapping[str, StoredReading]) -> None:
        """Start from the store's newest readings (on restart): a drop across the restart counts."""
        w = self._sites.get(site_id)
        if w is None:
            return
        for meter_id, r in latest.items():
            m = w.index.get(meter_id)
            if m is not None:
                w.last_ts[m] = r.ts_ms
                for s in range(int(w.ch_off[m]), int(w.ch_off[m + 1])):
                    w.counter[s] = _number(r.values.get(w.ch_names[s]))
                w.running[m] = _number(r.values.get(LINE_RUNNING))

    def observe(self, by_site: Mapping[str, Sequence[StoredReading]]) -> None:
        """Look at every new reading (in the order delivered, a gateway's order): line state
        changes, counter steps, gaps. A reading older than the meter's newest is the engine's
        business (it places it), not a change now."""
        for site_id, rows in by_site.items():
            if site_id in self._sites:
                self.observe_columns(site_id, self._layouts[site_id].columns(list(rows)))
        self._report_gaps()

    def observe_columns(self, site_id: str, cols: ReadingColumns) -> None:
        """`observe` for one site's readings already made columns (the service makes them once
        for the engine feed and the watch); gaps are reported by the next `observe` or `report_gaps`.
        Kept cheap: this runs on the ingest path, one numba pass, Python only for an event."""
        w = self._sites.get(site_id)
        if w is None:
            return
        if np.isnan(w.gap_ms).any():
            try:
                polls = self.engine(site_id).gap_polls
            except KeyError:  # the site's engine is not installed yet: no gap rule
                pass
            else:
                w.gap_ms = np.array([polls * m.poll_period_s * 1000 for m in w.meters], np.float64)
        meter_of_slot, ch_col, running_col = w.maps(cols.layout)
        ev_i, ev_f = self._ev_i, self._ev_f
        row = 0
        while row < len(cols):
            row, n_ev = watch_rows(row, cols.meter, cols.ts, cols.good, cols.values, running_col, meter_of_slot,
                                   w.ch_off, ch_col, w.step, w.max_power, w.gap_ms, w.rep_off, w.rep_at,
                                   w.rep_bits, w.last_ts, w.running, w.counter, w.gap_since, w.gap_count,
                                   w.gap_s, ev_i, ev_f)
            for e in range(n_ev):
                self._event(site_id, w, cols, ev_i[e].tolist(), ev_f[e].tolist())
        if not len(cols):  # an empty pass compiles the kernel (see __init__)
            watch_rows(0, cols.meter, cols.ts, cols.good, cols.values, running_col, meter_of_slot, w.ch_off,
                       ch_col, w.step, w.max_power, w.gap_ms, w.rep_off, w.rep_at, w.rep_bits, w.last_ts,
                       w.running, w.counter, w.gap_since, w.gap_count, w.gap_s, ev_i, ev_f)

    def _event(self, site_id: str, w: _SiteWatch, cols: ReadingColumns, ints: list[int],
               floats: list[float]) -> None:
        kind, row, m, arg = ints[EV_KIND], ints[EV_ROW], ints[EV_METER], ints[EV_ARG]
        meter, ts_ms = w.meters[m], int(cols.ts[row])
        if kind == EV_LINE_EDGE:
            self._line_edge(site_id, meter, bool(arg), ts_ms)
        elif kind == EV_REPLACED:
            self._replaced(site_id, meter, meter.replacements[arg], ts_ms)
        elif kind == EV_STEP_BACK:
            self._step_back(site_id, meter, w.ch_names[arg], floats[EV_BEFORE], floats[EV_VALUE], ts_ms)
        elif kind == EV_JUMP:
            self._jump(site_id, meter, w.ch_names[arg], floats[EV_BEFORE], floats[EV_VALUE], ints[EV_DT], ts_ms)

    def _line_edge(self, site_id: str, meter: Meter, started: bool, ts_ms: int) -> None:
        line = meter.cost_centre or meter.meter_id
        self.store.record_change(site_id, "line_started" if started else "line_stopped", line,
                                 f"line {line} {'started' if started else 'stopped'} ({meter.meter_id})",
                                 {"meter": meter.meter_id}, ts_ms=ts_ms)

    def _jump(self, site_id: str, meter: Meter, channel: str, before: float, value: float, dt_ms: int,
              ts_ms: int) -> None:
        subject = f"{meter.meter_id}/{channel}"
        detail = {"meter": meter.meter_id, "channel": channel, "from": before, "to": value,
                  "seconds": dt_ms / 1000, "max_per_h": meter.max_power_kw}
        message = (f"{subject} jumped from {before:,.3f} to {value:,.3f} in {dt_ms / 1000:.0f} s, "
                   f"more than its plausible {meter.max_power_kw:,.0f} per hour: the step is not booked")
        self.store.raise_alarm(site_id, "implausible_jump", subject, severity="warning", latching=True,
                               message=message, detail=detail, now_ms=ts_ms)
        self.store.record_change(site_id, "implausible_jump", subject, message, detail, ts_ms=ts_ms)

    def _step_back(self, site_id: str, meter: Meter, channel: str, before: float, value: float, ts_ms: int) -> None:
        subject = f"{meter.meter_id}/{channel}"
        detail = {"meter": meter.meter_id, "channel": channel, "from": before, "to": value,
                  "line": meter.cost_centre}
        wrap = meter.rollover_kwh if channel == _PRIMARY[meter.role == "production_counter"] else 0.0
        if wrap > 0 and before >= ROLLOVER_NEAR * wrap:
            self.store.record_change(site_id, "counter_rollover", subject,
                                     f"{subject} rolled over ({before:,.0f} → {value:,.0f})", detail, ts_ms=ts_ms)
            return
        message = (f"{subject} went back from {before:,.3f} to {value:,.3f} (counter reset, meter swap or a "
                   "device restarted from an older value): check the booked units and energy")
        self.store.raise_alarm(site_id, "counter_step_back", subject, severity="warning", latching=True,
                               message=message, detail=detail, now_ms=ts_ms)
        self.store.record_change(site_id, "counter_step_back", subject, message, detail, ts_ms=ts_ms)

    def _replaced(self, site_id: str, meter: Meter, r: MeterReplacement, ts_ms: int) -> None:
        """A recorded replacement between two readings: the engine books the step exactly, so
        the step is a change to note, not an alarm."""
        regs = ", ".join(f"{c} {r.old_final[c]:,.3f} → {r.new_initial[c]:,.3f}" for c in r.old_final)
        self.store.record_change(site_id, "meter_replaced", meter.meter_id,
                                 f"{meter.meter_id} replaced as recorded ({regs}): booked from the record",
                                 {"meter": meter.meter_id, "at_ms": r.at_ms, "old_final": r.old_final,
                                  "new_initial": r.new_initial}, ts_ms=ts_ms)

    def report_gaps(self) -> None:
        """One "estimated gap" change per meter with unreported gaps, at most every GAP_COALESCE_MS."""
        now = _now_ms()
        for site_id, w in self._sites.items():
            due = np.flatnonzero((w.gap_since != NO_TS) & (now - w.gap_reported >= GAP_COALESCE_MS))
            for m in due.tolist():
                meter_id = w.meters[m].meter_id
                count, seconds = int(w.gap_count[m]), float(w.gap_s[m])
                detail = {"meter": meter_id, "gaps": count, "seconds": round(seconds, 1),
                          "from_ms": int(w.gap_since[m])}
                self.store.record_change(
                    site_id, "estimated_gap", meter_id,
                    f"{meter_id}: {count} gap(s), {seconds:,.0f} s without readings; the energy over "
                    "them is spread as estimated", detail, ts_ms=int(w.last_ts[m]))
                w.gap_since[m], w.gap_count[m], w.gap_s[m], w.gap_reported[m] = NO_TS, 0, 0.0, now

    _report_gaps = report_gaps

    # -- periodic checks (engine thread) -----------------------------------------------------

    def check(self, meter_rows: Iterable[dict[str, Any]], gateway_rows: Iterable[dict[str, Any]],
              now_ms: int | None = None) -> None:
        """Offline meters, gateway backlogs; every SLOW_CHECK_S the remainder and the factor."""
        now = _now_ms() if now_ms is None else now_ms
        self._offline(meter_rows, now)
        self._backlog(gateway_rows, now)
        if time.monotonic() - self._slow_at >= SLOW_CHECK_S:
            self._slow_at = time.monotonic()
            for site_id in self.sites:
                try:
                    engine = self.engine(site_id)
                except KeyError:
                    continue
                self._remainder(site_id, engine, now)
                self._factor_change(site_id, engine, now)

    def _offline(self, rows: Iterable[dict[str, Any]], now: int) -> None:
        # Which meters have an offline alarm to end: asked once per site and check, not once per
        # meter (an UPDATE per meter every second cost the engine thread ~15 % while ingesting).
        # Runs every second over every meter: a dict lookup and a comparison per meter, no more.
        alarmed = {site_id: self.store.active_subjects(site_id, "meter_offline") for site_id in self._sites}
        limits = self._offline_ms
        started = self._started_ms
        for row in rows:
            site_id, meter_id = row.get("site"), row.get("meter")
            limit_ms = limits.get((site_id, meter_id))
            if limit_ms is None:
                continue
            last = row.get("last_ts_ms")
            # Silent since its last reading, or since this process started (a restart is no outage).
            silent_ms = now - (last if last is not None and last > started else started)
            if silent_ms > limit_ms:
                key = (site_id, meter_id)
                if meter_id in alarmed[site_id] and now - self._offline_refreshed.get(key, 0) < OFFLINE_REFRESH_MS:
                    continue
                self._offline_refreshed[key] = now
                message = (f"meter {meter_id} offline: no reading for {silent_ms / 1000:,.0f} s"
                           if last is not None else f"meter {meter_id}: no reading since the service started")
                _, new = self.store.raise_alarm(site_id, "meter_offline", meter_id, severity="alarm", message=message,
                                                detail={"meter": meter_id, "last_ts_ms": last,
                                                        "silent_s": round(silent_ms / 1000)}, now_ms=now)
                if new:
                    self.store.record_change(site_id, "meter_offline", meter_id, message,
                                             {"meter": meter_id, "last_ts_ms": last}, ts_ms=now)
            elif meter_id in alarmed[site_id] and self.store.clear_alarm(site_id, "meter_offline", meter_id,
                                                                          now_ms=now):
                self._offline_refreshed.pop((site_id, meter_id), None)
                self.store.record_change(site_id, "meter_online", meter_id, f"meter {meter_id} back online",
                                         {"meter": meter_id, "last_ts_ms": last}, ts_ms=now)

    def _backlog(self, rows: Iterable[dict[str, Any]], now: int) -> None:
        alarmed: dict[str, set[str]] = {}
        for row in rows:
            site_id, gateway = row.get("site"), row.get("gateway")
            status = row.get("status") or {}
            lag = status.get("publish_lag_ms") or 0
            depth = status.get("spool_depth") or 0
            if lag > BACKLOG_MS or status.get("spool_alarm"):
                message = (f"gateway {gateway}: {depth:,} readings waiting in its spool, the oldest "
                           f"{lag / 1000:,.0f} s old" + (" (spool nearly full)" if status.get("spool_alarm") else ""))
                self.store.raise_alarm(site_id, "gateway_backlog", gateway, severity="alarm", message=message,
                                       detail={"gateway": gateway, "spool_depth": depth, "publish_lag_ms": lag,
                                               "spool_alarm": bool(status.get("spool_alarm"))}, now_ms=now)
            else:
                if site_id not in alarmed:
                    alarmed[site_id] = self.store.active_subjects(site_id, "gateway_backlog")
                if gateway in alarmed[site_id]:
                    self.store.clear_alarm(site_id, "gateway_backlog", gateway, now_ms=now)

    def _remainder(self, site_id: str, engine: Engine, now: int) -> None:
        """The engine's site-balance alarm of the current and previous hour (ACCOUNTING.md §2)."""
        hour = now - now % HOUR_MS
        balance = engine.site_balance(hour - HOUR_MS, hour + HOUR_MS)
        cols = balance.columns
        for i, h in enumerate(balance.hour_start_ms.tolist()):
            if not cols["alarm"][i]:
                continue
            local = _local(h, self.sites[site_id])
            remainder = float(cols["remainder_raw_kwh"][i])
            tolerance = float(cols["tolerance_kwh"][i])
            message = (f"hour {local}: the submeters exceed the incomer by {-remainder:,.1f} kWh, beyond the "
                       f"meters' accuracy (±{tolerance:,.1f} kWh); the hour's energy is booked as estimated — "
                       "check the meters' wiring and CT ratios")
            self.store.raise_alarm(site_id, "negative_remainder", local, severity="alarm", latching=True,
                                   message=message, detail={"hour_start_ms": h, "remainder_kwh": remainder,
                                                            "tolerance_kwh": tolerance,
                                                            "consumption_kwh": float(cols["consumption_kwh"][i])},
                                   now_ms=now)

    def _factor_change(self, site_id: str, engine: Engine, now: int) -> None:
        hours = grid_factors(engine, now, now + 1)["hours"]
        value = hours[0]["location_kg_per_kwh"] if hours else None
        if value is None:
            return
        before = self._factor.get(site_id)
        if before is None:
            last = self.store.last_change(site_id, "factor_changed", engine.factor_region)
            before = last["detail"].get("to") if last else value
        self._factor[site_id] = value
        if before != value:
            ds = engine.dataset
            self.store.record_change(
                site_id, "factor_changed", engine.factor_region,
                f"grid factor {engine.factor_region}: {before:.4f} → {value:.4f} kg/kWh "
                f"({ds.dataset_id} v{ds.version})",
                {"from": before, "to": value, "dataset_id": ds.dataset_id, "dataset_version": ds.version},
                ts_ms=now - now % HOUR_MS)


#: A register's step in channel units is its scale times the ratio it is wired through.
_RATIOS = {"none": lambda m: 1.0, "ct": lambda m: m.ct_ratio, "vt": lambda m: m.vt_ratio,
           "ctvt": lambda m: m.ct_ratio * m.vt_ratio}
#: The channel whose register wrap the topology records (`Meter.rollover_kwh`, see
#: accounting/site_topology.py), by "is a production counter".
_PRIMARY = {False: "energy_import_kwh", True: "units_total"}


def _number(value: object) -> float:
    """A stored value as the pass's state holds it (NaN: none)."""
    return float(value) if isinstance(value, int | float) else np.nan


def _local(ms: int, site: Site) -> str:
    return datetime.fromtimestamp(ms / 1000, site.zone).strftime("%Y-%m-%d %H:00")


def _now_ms() -> int:
    return int(time.time() * 1000)

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from accounting.engine.engine import Engine
from accounting.engine.kernels_energy import HOUR_MS, ROLLOVER_NEAR
from accounting.live.grid import grid_factors
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
#: A gateway whose oldest unacknowledged reading is older than this has a backlog.
BACKLOG_MS = 60_000
#: At most one "estimated gap" change per meter in this long (they are summed meanwhile).
GAP_COALESCE_MS = 60_000
#: How often the site balance (negative remainder) and the factor in effect are looked at.
SLOW_CHECK_S = 10.0


def offline_after_ms(poll_period_s: float) -> float:
    """How long a meter may stay silent before it counts as offline (the dashboard's rule too)."""
    return max(OFFLINE_MIN_S, OFFLINE_POLLS * poll_period_s) * 1000


@dataclass
class _MeterSeen:
    """What the watch knows of one meter: its rules (from the topology) and its last reading."""

    meter: Meter
    channels: tuple[str, ...]  # its counter channels
    steps: tuple[float, ...]  # one register step of each, in channel units (0: a float register)
    gap_ms: float | None = None  # the engine's gap rule, known once the site's engine is
    ts_ms: int | None = None
    counters: list[float | None] = field(default_factory=list)
    running: float | None = None
    gap_since_ms: int | None = None  # first gap not reported yet
    gap_count: int = 0
    gap_s: float = 0.0
    gap_reported_ms: int = 0


class PlantWatch:
    """Changes and alarms of every site; `engine(site_id)` gives the site's live engine."""

    def __init__(self, sites: Mapping[str, Site], store: AlarmStore, engine: Callable[[str], Engine]) -> None:
        self.sites = sites
        self.store = store
        self.engine = engine
        step = {(s.id, m.id, r.name): r.scale * _RATIOS[r.apply_ratio](m)
                for s in sites.values() for m in s.meters for r in m.profile.registers
                if not r.data_type.startswith("float")}  # an integer register counts in steps
        self._seen: dict[str, dict[str, _MeterSeen]] = {}
        for s in sites.values():
            for m in site_topology(s).meters:
                channels = m.counter_channels
                self._seen.setdefault(s.id, {})[m.meter_id] = _MeterSeen(
                    m, channels, tuple(step.get((s.id, m.meter_id, c), 0.0) for c in channels),
                    counters=[None] * len(channels))
        self._factor: dict[str, float] = {}
        self._started_ms = _now_ms()
        self._slow_at = 0.0

    # -- readings (engine thread, after each delivered batch) ------------------------------

    def seed(self, site_id: str, latest: Mapping[str, StoredReading]) -> None:
        """Start from the store's newest readings (on restart): a drop across the restart counts."""
        by_meter = self._seen.get(site_id, {})
        for meter_id, r in latest.items():
            seen = by_meter.get(meter_id)
            if seen is not None:
                seen.ts_ms = r.ts_ms
                seen.counters = [_number(r.values.get(c)) for c in seen.channels]
                seen.running = _number(r.values.get("line_running"))

    def observe(self, by_site: Mapping[str, Iterable[StoredReading]]) -> None:
        """Look at every new reading (in the order delivered, a gateway's order): line state
        changes, counter steps, gaps. A reading older than the meter's newest is the engine's
        business (it places it), not a change now. Kept cheap: this runs on the ingest path."""
        for site_id, rows in by_site.items():
            by_meter = self._seen.get(site_id)
            if by_meter is None:
                continue
            for r in rows:
                seen = by_meter.get(r.meter)
                if seen is None or r.quality != "good":
                    continue
                last = seen.ts_ms
                if last is not None and r.ts_ms <= last:
                    continue
                values = r.values
                running = values.get("line_running")
                if running is not None:
                    if seen.running is not None and (running > 0) != (seen.running > 0):
                        self._line_edge(site_id, seen.meter, running > 0, r.ts_ms)
                    seen.running = running
                counters = seen.counters
                replaced = _replaced_between(seen.meter, last, r.ts_ms)
                if replaced is not None:
                    self._replaced(site_id, seen.meter, replaced, r.ts_ms)
                for i, channel in enumerate(seen.channels):
                    value = values.get(channel)
                    if value is None:
                        continue
                    before = counters[i]
                    if before is not None and last is not None and (replaced is None or channel not in replaced.old_final):
                        if value < before:
                            self._step_back(site_id, seen.meter, channel, before, float(value), r.ts_ms)
                        elif seen.meter.max_power_kw > 0 and (value - before - seen.steps[i]) * HOUR_MS > \
                                seen.meter.max_power_kw * (r.ts_ms - last):
                            self._jump(site_id, seen.meter, channel, before, float(value), r.ts_ms - last, r.ts_ms)
                    counters[i] = value
                if last is not None and (seen.gap_ms is None or r.ts_ms - last > seen.gap_ms):
                    self._gap(site_id, seen, last, r.ts_ms)  # a call per reading only when it can be a gap
                seen.ts_ms = r.ts_ms
        self._report_gaps()

    def _line_edge(self, site_id: str, meter: Meter, started: bool, ts_ms: int) -> None:
        line = meter.cost_centre or meter.meter_id
        self.store.record_change(site_id, "line_started" if started else "line_stopped", line,
                                 f"line {line} {'started' if started else 'stopped'} ({meter.meter_id})",
                                 {"meter": meter.meter_id}, ts_ms=ts_ms)

    def _gap(self, site_id: str, seen: _MeterSeen, last: int, ts_ms: int) -> None:
        if seen.gap_ms is None:
            try:
                seen.gap_ms = self.engine(site_id).gap_polls * seen.meter.poll_period_s * 1000
            except KeyError:  # the site's engine is not installed yet
                return
        if ts_ms - last > seen.gap_ms:
            if seen.gap_since_ms is None:
                seen.gap_since_ms = last
            seen.gap_count += 1
            seen.gap_s += (ts_ms - last) / 1000

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

    def _gap_ms(self, site_id: str, meter: Meter) -> float:
        try:
            polls = self.engine(site_id).gap_polls
        except KeyError:
            return 0.0
        return polls * meter.poll_period_s * 1000

    def _report_gaps(self) -> None:
        now = _now_ms()
        for site_id, by_meter in self._seen.items():
            for meter_id, seen in by_meter.items():
                if seen.gap_since_ms is not None and now - seen.gap_reported_ms >= GAP_COALESCE_MS:
                    self._report_gap(site_id, meter_id, seen, now)

    def _report_gap(self, site_id: str, meter_id: str, seen: _MeterSeen, now: int) -> None:
        detail = {"meter": meter_id, "gaps": seen.gap_count, "seconds": round(seen.gap_s, 1),
                  "from_ms": seen.gap_since_ms}
        self.store.record_change(
            site_id, "estimated_gap", meter_id,
            f"{meter_id}: {seen.gap_count} gap(s), {seen.gap_s:,.0f} s without readings; the energy over "
            "them is spread as estimated", detail, ts_ms=seen.ts_ms)
        seen.gap_since_ms, seen.gap_count, seen.gap_s, seen.gap_reported_ms = None, 0, 0.0, now

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
        alarmed = {site_id: self.store.active_subjects(site_id, "meter_offline") for site_id in self._seen}
        for row in rows:
            site_id, meter_id = row.get("site"), row.get("meter")
            seen = self._seen.get(site_id, {}).get(meter_id)
            if seen is None:
                continue
            meter = seen.meter
            limit_ms = offline_after_ms(meter.poll_period_s)
            last = row.get("last_ts_ms")
            # Silent since its last reading, or since this process started (a restart is no outage).
            silent_ms = now - max(last if last is not None else 0, self._started_ms)
            if silent_ms > limit_ms:
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


def _replaced_between(meter: Meter, last: int | None, ts_ms: int) -> MeterReplacement | None:
    """The meter's last recorded replacement in (last, ts_ms], if any."""
    if not meter.replacements or last is None:
        return None
    found = None
    for r in meter.replacements:
        if last < r.at_ms <= ts_ms:
            found = r
    return found


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _local(ms: int, site: Site) -> str:
    return datetime.fromtimestamp(ms / 1000, site.zone).strftime("%Y-%m-%d %H:00")


def _now_ms() -> int:
    return int(time.time() * 1000)

"""The demo plant's past: readings since the start of last month, so closed periods exist.

A PACT partner sees only closed months (`accounting.pact.publisher`); a demo that starts now
would have none for weeks. So before the live plant starts, the same simulated plant (same
scenario and seed, its physics integrated minute by minute) is run from the start of the
previous month (site time) to now, read every `step_min` minutes, and those readings are
written to the demo's store as a gateway's would be. The live plant then continues from the
history's last counter values (energy registers, unit counters, batch numbers), so the engine
sees one continuous plant.

To take seconds rather than minutes, the past runs on hourly profile cells, is read on the
hour (like a utility meter's hourly interval data), and a line PLC counts a cell's units at
once, rejects at the scenario's rate (the live plant draws each unit). Readings an hour apart
are gaps for meters polled every second: the engine flags that energy `gap_spread` (measured
in total, its spread over time estimated), so the history's months show their energy as
estimated, as they would for a plant backfilled from interval data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from accounting.site_topology import site_topology
from accounting.store.base import ReadingStore, StoredReading
from simulators.clock import ManualClock
from simulators.ground_truth import GroundTruth
from simulators.load_profile import cell_start
from simulators.models import ProductionCounter
from simulators.plant import PlantSimulator
from simulators.scenario import Scenario

log = logging.getLogger("tanji.demo")


CELL_S = 3600.0


class _BulkCounter(ProductionCounter):
    """A line PLC that counts a cell's units at once (history only), rejects at the set rate."""

    truth: GroundTruth

    def _accumulate(self, a: float, b: float, plant_t: float) -> None:
        if not self.schedule.running(cell_start(a, self.step_s)):
            return
        self.progress += (b - a) / self.takt_s
        made = int(self.progress) - self.made
        if made <= 0:
            return
        self.made += made
        rejected_before = int(getattr(self, "_rejected_progress", 0.0))
        self._rejected_progress = getattr(self, "_rejected_progress", 0.0) + made * self.reject_pct / 100.0
        rejected = int(self._rejected_progress) - rejected_before
        self.counts["units_total"] += made - rejected
        self.counts["units_rejected_total"] += rejected


def history_start_ms(timezone: str, now_ms: int, months: int = 1) -> int:
    """Start of the calendar month `months` before the current one, in the site's zone."""
    local = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(timezone))
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for _ in range(months):
        first = (first - timedelta(days=1)).replace(day=1)
    return int(first.timestamp() * 1000)


def seed_history(scenario: Scenario, store: ReadingStore, live: PlantSimulator, *, seed: int | None = None,
                 months: int = 1, step_min: int = 60, now_ms: int | None = None) -> int:
    """Write the plant's readings from `months` months back to now into `store`, and make the
    live plant continue from them. Returns how many readings were written."""
    site = scenario.site
    now_ms = now_ms or int(time.time() * 1000)
    start_ms = history_start_ms(site.zone.key, now_ms, months)
    started = time.monotonic()
    past = PlantSimulator(replace(scenario, step_s=CELL_S, faults=()), seed=seed,
                          clock=ManualClock(start_ms / 1000))
    for device in past.devices.values():
        if isinstance(device.model, ProductionCounter):
            device.model.__class__ = _BulkCounter
    channels = {m.meter_id: m.channels for m in site_topology(site).meters}
    gateway_of = {m.id: m.gateway for m in site.meters}
    rows: list[StoredReading] = []
    written = 0
    step_ms = step_min * 60_000
    for ts in range(start_ms, now_ms, step_ms):
        for meter, device in past.devices.items():
            if meter not in channels:
                continue
            model = device.model
            model.advance(ts / 1000)
            values = {name: model.shown(name) for name in model.counter_names}
            if isinstance(model, ProductionCounter):
                values["batch_id"] = float(model.first_batch + model.made // model.batch_size)
            rows.append(StoredReading(site.id, gateway_of[meter], meter, ts, "good",
                                      {c: float(values[c]) for c in channels[meter] if c in values}))
        if len(rows) >= 20_000:
            written += store.write_readings(rows)
            rows = []
    written += store.write_readings(rows)
    # The live plant goes on from where the history ended.
    last = (now_ms - 1) / 1000
    for meter, device in past.devices.items():
        model, live_model = device.model, live.devices[meter].model
        model.advance(last)
        for name in model.counter_names:
            live_model.set_shown(name, model.shown(name))
        if isinstance(model, ProductionCounter) and isinstance(live_model, ProductionCounter):
            live_model.made, live_model.progress = model.made, model.progress
    log.info("history: %d readings from %s to now written in %.1f s", written,
             datetime.fromtimestamp(start_ms / 1000, site.zone).strftime("%Y-%m-%d"),
             time.monotonic() - started)
    return written


def continue_from_store(store: ReadingStore, site_id: str, live: PlantSimulator) -> None:
    """A demo restarted on its work directory: the live plant goes on from the stored counters."""
    for meter, reading in store.latest(site_id).items():
        device = live.devices.get(meter)
        if device is None:
            continue
        for name in device.model.counter_names:
            value = reading.values.get(name)
            if value is not None:
                device.model.set_shown(name, float(value))
        # A line PLC goes on with the batch it showed (its next batch number is the one after),
        # not from its first batch again: a restarted plant must not reopen shipped batches.
        batch = reading.values.get("batch_id")
        model = device.model
        if isinstance(model, ProductionCounter) and batch is not None and batch >= model.first_batch:
            model.made = int(batch - model.first_batch) * model.batch_size
            model.progress = float(model.made)

"""Long-run benchmark: a year of 1 s readings of a 100-meter site through the engine and the
service's checkpoint path (issue #12). Memory, checkpoints and restarts must cost channels x
hours, not readings.

The readings are generated on the fly, an hour of every channel at a time (vectorised, never
materialised: a year is ~3.2 G readings), and fed in time order to an engine with the
service's settings (``accounting.live.engine_state.SERVICE_SETTINGS``: a one-hour raw tail, a
SQLite store behind it). After every simulated hour a checkpoint is taken as the service takes
it (``Engine.snapshot`` under the lock, then ``CheckpointStore.save_snapshot``). At the end of
month 1 and month 12 it measures:

- ``rss_mb_month_1``/``rss_mb_month_12``: the process's resident memory (VmRSS) after a year
  footprint was computed; baseline ``rss_mb_before_engine`` (interpreter, numpy, numba, kernels);
- ``checkpoint_s_month_*``: median wall time of the month's last day of hourly checkpoints
  (snapshot + compress + one SQLite transaction, synchronous=FULL), ``checkpoint_mb_month_12``
  the bytes written by one; ``checkpoint_lock_max_ms_month_*`` the longest snapshot of that day
  (the copy the service takes under the engines' lock, i.e. how long ingest can wait for it); baseline in the same run: ``checkpoint_full_s_month_12`` /
  ``checkpoint_full_mb_month_12``, a checkpoint of everything (what one cost before);
- ``restore_s_month_12``: a restart at month 12: load the checkpoint, restore the engine and
  resume from the store's last two hours (written to a real SQLite store for it); the restored
  engine's hours are checked against the live one's, bit for bit; ``restore_checkpoint_s_month_12``
  the checkpoint part of it, ``restore_cpu_s_month_12`` the CPU seconds (all threads) it took;
- ``footprints_year_ms``: ``Engine.footprints`` over the whole year at month 12 right after an
  ingest (nothing cached): allocation and market matching of 8,760 hours, every product (one
  product's footprint costs the same derivation);
- ``live_channel_updates_per_s``: an engine of 100,000 counter channels fed one reading each
  per call (median of 30 calls); baseline ``numpy_floor_updates_per_s``: the same arithmetic
  (delta, one hour bucket, tail write) as plain numpy in the same run.

- ``issue_table``: the issue's own table re-measured (a 10-meter site polled every second, fed
  in 1-hour batches, ``footprints()`` and a checkpoint once per simulated day; at 1, 7 and 14
  days: readings held, RSS, one checkpoint's time and size), each engine kind in a process of
  its own: ``bounded`` (the service's engine and checkpoint path), ``keep-every-reading`` (this
  tree's engine with ``tail_s=None`` and whole checkpoints: the old behaviour, same run) and,
  with ``--old-tree PATH`` (a checkout of the code before #12, e.g. ``git archive 837b74b``),
  ``old-code``: that code's engine through the same calls.

Prints progress, then one JSON line (last), with the machine's baseline measured in the same run
under ``machine`` (benchmarks/machine.py). ``--quick`` (the test suite's smoke test): 10
meters, 3 "months" of 2 days, 10,000 live channels; the keys are the same (month 12 is the
last month). Usage: ``.venv/bin/python benchmarks/longrun.py [--quick] [--meters N]
[--days-per-month D] [--issue-days 1,7,14] [--old-tree PATH]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

HERE = Path(__file__).resolve()
# the tree measured: this one, or (``--old-tree``, for a baseline run) an older checkout
sys.path.insert(0, os.environ.get("TANJI_LONGRUN_TREE") or str(HERE.parents[1]))

from accounting.engine import Engine  # noqa: E402
from accounting.engine.kernels_energy import HOUR_MS  # noqa: E402
from accounting.topology import CostCentre, Meter, Product, SiteTopology  # noqa: E402
from benchmarks.engine import hourly_dataset, plant  # noqa: E402

try:  # what the pre-#12 tree (an ``--old-tree`` baseline run) does not have
    from accounting.engine.settings import EngineSettings
    from accounting.live.engine_state import SERVICE_SETTINGS
    from accounting.store.base import StoredReading
    from accounting.store.checkpoints import CheckpointStore
    from accounting.store.source import StoreSource
    from accounting.store.sqlite import SqliteStore
    from benchmarks.machine import machine_baseline
except ImportError:
    EngineSettings = None  # type: ignore[assignment,misc]

T0 = 1_735_660_800_000  # 2025-01-01T00:00+08:00
SECOND = 1000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@numba.njit(cache=True, parallel=True)
def generate_hour(t0: int, n_sec: int, rates: np.ndarray, state: np.ndarray, seed: int,
                  ch: np.ndarray, ts: np.ndarray, val: np.ndarray) -> None:
    """One hour of 1 s readings of every channel, channel-major (the engine's sorted order);
    ``state`` carries each register across hours."""
    for c in numba.prange(rates.shape[0]):
        x = np.uint64(seed * 1_000_003 + c * 7919 + t0 // 1000 + 1)
        v = state[c]
        base = c * n_sec
        for k in range(n_sec):
            x ^= x << np.uint64(13)
            x ^= x >> np.uint64(7)
            x ^= x << np.uint64(17)
            u = (x >> np.uint64(11)) * (1.0 / 9007199254740992.0)
            v += rates[c] * (0.5 + u)
            ch[base + k] = c
            ts[base + k] = t0 + k * 1000
            val[base + k] = v
        state[c] = v


def site(n_meters: int) -> tuple[SiteTopology, np.ndarray]:
    """benchmarks/engine.py's plant, every meter polled each second; kWh (units) per second."""
    topo, _ = plant(n_meters)
    topo = dataclasses.replace(topo, meters=tuple(dataclasses.replace(m, poll_period_s=1.0)
                                                  for m in topo.meters))
    rates = []
    for m in topo.meters:
        for c in m.counter_channels:
            if m.role == "grid_import":
                rates.append(len(topo.meters) / 60 if c == "energy_import_kwh" else 0.005)
            elif m.role == "pv":
                rates.append(0.3)
            elif m.role == "production_counter":
                rates.append(0.03)
            else:
                rates.append(0.01)
    return topo, np.array(rates)


class Feed:
    """Generates hour after hour of readings and feeds them to an engine."""

    def __init__(self, engine: Engine, rates: np.ndarray) -> None:
        self.engine = engine
        self.rates = rates
        self.state = np.zeros(len(rates))
        n = len(rates) * 3600
        self.ch, self.ts, self.val = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n)
        self.generate_s = 0.0
        self.feed_s = 0.0
        self.readings = 0

    def hour(self, h: int) -> tuple[np.ndarray, ...]:
        t = time.perf_counter()
        generate_hour(T0 + h * HOUR_MS, 3600, self.rates, self.state, 7, self.ch, self.ts, self.val)
        self.generate_s += time.perf_counter() - t
        return self.ch, self.ts, self.val

    def feed(self, h: int) -> tuple[np.ndarray, ...]:
        chunk = self.hour(h)
        t = time.perf_counter()
        self.engine.ingest(*chunk)
        self.feed_s += time.perf_counter() - t
        self.readings += len(chunk[0])
        return chunk


def store_hour(store: SqliteStore, engine: Engine, chunk: tuple[np.ndarray, ...]) -> None:
    """An hour of readings as the store keeps them: one row per meter and second."""
    ch, ts, val = chunk
    by_meter: dict[str, dict[str, np.ndarray]] = {}
    for c, (meter, channel) in enumerate(engine.channel_keys):
        lo, hi = np.searchsorted(ch, [c, c + 1])
        by_meter.setdefault(meter, {})[channel] = val[lo:hi]
        times = ts[lo:hi].tolist()
    rows = []
    for meter, channels in by_meter.items():
        names = list(channels)
        columns = [channels[n].tolist() for n in names]
        rows += [StoredReading(engine.topology.site_id, "gw", meter, t, "good", dict(zip(names, v, strict=True)))
                 for t, *v in zip(times, *columns, strict=True)]
    store.write_readings(rows)


def checkpoint(engine: Engine, store: CheckpointStore, full: bool = False) -> tuple[float, int, float]:
    """(seconds, bytes written, seconds of the snapshot: what the engines' lock is held for)."""
    t = time.perf_counter()
    snapshot = engine.snapshot(full=full)  # the service holds the engines' lock for this only
    locked = time.perf_counter() - t
    written = store.save_snapshot("bench", int(time.time() * 1000), {}, snapshot)
    return time.perf_counter() - t, written, locked


def live_feed(n_channels: int, calls: int = 30) -> tuple[float, float]:
    """(engine, numpy floor) channel updates/s, one reading per channel per call."""
    meters = (Meter("grid", "grid_import", ("energy_import_kwh",), poll_period_s=1.0, max_power_kw=1e9),) + tuple(
        Meter(f"m{i}", "submeter", ("energy_import_kwh",), cost_centre="L", poll_period_s=1.0, max_power_kw=1e9)
        for i in range(n_channels - 2))
    topo = SiteTopology("live", "East", meters + (Meter("p", "production_counter", ("units_total",),
                                                        cost_centre="L", poll_period_s=1.0, max_power_kw=1e9),),
                        (CostCentre("L"),), (Product("P", line="L", units_meter="p"),))
    engine = Engine(topo, hourly_dataset(24), SERVICE_SETTINGS)
    ch = np.arange(n_channels, dtype=np.int64)
    vals = np.zeros(n_channels)
    times = []
    for k in range(calls + 2):
        vals = vals + 0.01
        ts = np.full(n_channels, T0 + k * SECOND, np.int64)
        t = time.perf_counter()
        engine.ingest(ch, ts, vals)
        times.append(time.perf_counter() - t)
    engine_rate = n_channels / statistics.median(times[2:])
    # the floor: the same work as plain numpy (delta, its hour bucket, the tail write)
    energy = np.zeros((2, n_channels))
    prev = np.zeros(n_channels)
    tail_ts = np.zeros((n_channels, 64), np.int64)
    tail_val = np.zeros((n_channels, 64))
    floor = []
    for k in range(calls):
        vals = vals + 0.01
        t = time.perf_counter()
        energy[0] += vals - prev
        prev = vals
        tail_ts[:, k % 64] = T0 + k * SECOND
        tail_val[:, k % 64] = vals
        floor.append(time.perf_counter() - t)
    return engine_rate, n_channels / statistics.median(floor)


# ---- the issue's table: a 10-meter site polled every second, fed in 1-hour batches, with
# ``footprints()`` and a checkpoint once per simulated day; one engine kind per process (RSS)
ISSUE_METERS = 10
ENGINE_KINDS = ("bounded", "keep-every-reading", "old-code")


def issue_run(kind: str, days: list[float]) -> list[dict[str, float]]:
    """One engine kind through the issue's scenario; a row at the end of each of ``days``.

    ``bounded``: the service's engine (one-hour tail, a store behind it), checkpointed the way
    the service does (snapshot of what changed + one SQLite transaction). ``keep-every-reading``:
    this tree's engine keeping every reading (``tail_s=None``, no store), checkpointed whole
    (``Engine.checkpoint()``, what each checkpoint held before #12). ``old-code``: the same
    calls on the tree in ``TANJI_LONGRUN_TREE`` (the code the issue measured)."""
    topo, rates = site(ISSUE_METERS)
    n_hours = int(round(max(days) * 24))
    dataset = hourly_dataset(n_hours + 24)
    tmp = Path(tempfile.mkdtemp(prefix="tanji-longrun-issue-"))
    checkpoints = None
    if kind == "bounded":
        store = SqliteStore(tmp / "tanji.sqlite")
        checkpoints = CheckpointStore(tmp / "checkpoints.sqlite")
        engine = Engine(topo, dataset, SERVICE_SETTINGS, source=StoreSource(store, topo.site_id))
    elif kind == "keep-every-reading":
        engine = Engine(topo, dataset, EngineSettings(tail_s=None))
    else:
        engine = Engine(topo, dataset)  # the old constructor: every reading kept
    feed = Feed(engine, rates)
    marks = {int(round(d * 24)): d for d in days}
    rows = []
    for h in range(n_hours):
        feed.feed(h)
        if (h + 1) % 24 and h + 1 not in marks:
            continue
        engine.footprints()
        t = time.perf_counter()
        if checkpoints is not None:
            written = checkpoints.save_snapshot("bench", int(time.time() * 1000), {}, engine.snapshot())
        else:
            written = len(engine.checkpoint())
        took = time.perf_counter() - t
        if h + 1 in marks:
            held = len(engine.readings()[0]) if kind == "bounded" else feed.readings
            rows.append({"days": marks[h + 1], "readings_fed": feed.readings, "readings_held": held,
                         "rss_mb": round(rss_mb(), 1), "checkpoint_s": round(took, 4),
                         "checkpoint_mb": round(written / 1e6, 3)})
            print(f"  {kind}: day {marks[h + 1]:g}: {held:,} readings held, RSS {rss_mb():.0f} MB, "
                  f"checkpoint {took:.3f} s / {written / 1e6:.2f} MB", file=sys.stderr, flush=True)
    if checkpoints is not None:
        checkpoints.close()
        store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return rows


def issue_table(days: list[float], old_tree: str | None) -> dict[str, list[dict[str, float]]]:
    """The issue's table for each engine kind, each in a process of its own."""
    table = {}
    for kind in ENGINE_KINDS:
        if kind == "old-code" and not old_tree:
            continue
        env = {**os.environ, "TANJI_LONGRUN_TREE": old_tree} if kind == "old-code" else dict(os.environ)
        out = subprocess.run([sys.executable, str(HERE), "--issue-run", kind,
                              "--issue-days", ",".join(f"{d:g}" for d in days)],
                             env=env, stdout=subprocess.PIPE, text=True, check=True)
        table[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 meters, 3 months of 2 days, 10,000 live channels")
    parser.add_argument("--meters", type=int, default=None, help="meters of the site (default 100)")
    parser.add_argument("--days-per-month", type=float, default=None, help="simulated days per month (default 365/12)")
    parser.add_argument("--issue-days", default=None,
                        help="simulated days of the issue's 10-meter table (default 1,7,14; --quick 0.5,1)")
    parser.add_argument("--old-tree", default=None,
                        help="a checkout of the code before #12 (e.g. git worktree add /tmp/old 837b74b): "
                             "its engine measured through the issue's table as well")
    parser.add_argument("--issue-run", choices=ENGINE_KINDS, help=argparse.SUPPRESS)  # one child run
    args = parser.parse_args()
    issue_days = [float(d) for d in (args.issue_days or ("0.5,1" if args.quick else "1,7,14")).split(",")]
    if args.issue_run:
        print(json.dumps(issue_run(args.issue_run, issue_days)))
        return
    n_meters = args.meters or (10 if args.quick else 100)
    months = 3 if args.quick else 12
    days = args.days_per_month or (2.0 if args.quick else 365 / 12)
    live_channels = 10_000 if args.quick else 100_000
    month_hours = [int(round((m + 1) * days * 24)) for m in range(months)]
    n_hours = month_hours[-1]
    t_start = time.perf_counter()

    topo, rates = site(n_meters)
    dataset = hourly_dataset(n_hours + 24)
    rss_before = rss_mb()
    tmp = Path(tempfile.mkdtemp(prefix="tanji-longrun-"))
    store = SqliteStore(tmp / "tanji.sqlite")
    checkpoints = CheckpointStore(tmp / "checkpoints.sqlite")
    engine = Engine(topo, dataset, SERVICE_SETTINGS, source=StoreSource(store, topo.site_id))
    feed = Feed(engine, rates)
    print(f"{n_meters} meters, {len(rates)} channels, {n_hours} hours of 1 s readings "
          f"({len(rates) * 3600 * n_hours:,} readings), {numba.get_num_threads()} threads", flush=True)
    feed.feed(0)  # compile
    figures: dict[str, float] = {}
    month_checkpoints: list[tuple[float, int, float]] = []
    tail_registers = feed.state.copy()
    for h in range(1, n_hours):
        if h == n_hours - 2:
            tail_registers = feed.state.copy()  # to write the store's recent tail after the figures
        feed.feed(h)
        month_checkpoints.append(checkpoint(engine, checkpoints))
        month = next((m for m, end in enumerate(month_hours) if h == end - 1), None)
        if month is None or month not in (0, months - 1):
            if h % 720 == 0:
                print(f"  hour {h}: {feed.readings:,} readings fed, {feed.readings / feed.feed_s / 1e6:.1f} M/s, "
                      f"RSS {rss_mb():.0f} MB", flush=True)
            if month is not None:
                month_checkpoints = []
            continue
        tag = "1" if month == 0 else "12"
        t = time.perf_counter()
        fps = engine.footprints(T0, T0 + n_hours * HOUR_MS)
        footprints_ms = 1000 * (time.perf_counter() - t)
        last_day = month_checkpoints[-24:]
        figures[f"rss_mb_month_{tag}"] = rss_mb()
        figures[f"checkpoint_s_month_{tag}"] = statistics.median(s for s, _, _ in last_day)
        figures[f"checkpoint_max_s_month_{tag}"] = max(s for s, _, _ in last_day)
        figures[f"checkpoint_mb_month_{tag}"] = statistics.median(b for _, b, _ in last_day) / 1e6
        figures[f"lock_ms_month_{tag}"] = 1000 * max(x for _, _, x in last_day)
        figures[f"state_mb_month_{tag}"] = engine.memory_bytes() / 1e6
        figures[f"footprints_year_ms_month_{tag}"] = footprints_ms
        print(f"month {tag}: RSS {figures[f'rss_mb_month_{tag}']:.0f} MB, state "
              f"{figures[f'state_mb_month_{tag}']:.1f} MB, checkpoint {figures[f'checkpoint_s_month_{tag}']:.4f} s "
              f"/ {figures[f'checkpoint_mb_month_{tag}']:.3f} MB, {len(fps)} footprints in {footprints_ms:.0f} ms",
              flush=True)
        month_checkpoints = []

    # the store's recent tail, the last two hours regenerated from the registers saved then
    # (written now, so that the StoredReading objects count in no figure above)
    regen = Feed(engine, rates)
    regen.state = tail_registers
    for h in (n_hours - 2, n_hours - 1):
        store_hour(store, engine, regen.hour(h))
    del regen
    # a checkpoint of everything: what each one cost before (baseline, same run)
    full_s, full_bytes, _ = checkpoint(engine, checkpoints, full=True)
    checkpoints.close()
    # restart at month 12: the last checkpoint + the store's last two hours
    t, cpu = time.perf_counter(), time.process_time()
    checkpoints = CheckpointStore(tmp / "checkpoints.sqlite")
    saved = checkpoints.load_snapshot("bench")
    restored = Engine.restore(saved.snapshot, topo, dataset, SERVICE_SETTINGS,
                              source=StoreSource(store, topo.site_id))
    restore_checkpoint_s = time.perf_counter() - t
    restored.resume(3_600_000, {m.meter_id: T0 + n_hours * HOUR_MS for m in topo.meters})
    restore_s, restore_cpu_s = time.perf_counter() - t, time.process_time() - cpu
    for key in engine.channel_keys:
        assert np.array_equal(restored.hourly_energy(*key)[1], engine.hourly_energy(*key)[1]), key
    checkpoints.close()
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"restore at month {months}: {restore_s:.2f} s ({restore_checkpoint_s:.2f} s the checkpoint, the rest "
          f"the store's last hour; {restore_cpu_s:.2f} s of CPU; hours equal the live engine's)", flush=True)

    live_rate, floor_rate = live_feed(live_channels)
    print(f"live feed: {live_rate:,.0f} channel updates/s ({live_channels:,} channels, one reading each "
          f"per call); numpy floor {floor_rate:,.0f}/s", flush=True)
    print(f"the issue's table ({ISSUE_METERS} meters, days {issue_days}), one process per engine kind:", flush=True)
    table = issue_table(issue_days, args.old_tree)
    print(json.dumps({
        "quick": args.quick, "meters": n_meters, "channels": len(rates), "hours": n_hours,
        "readings_fed": feed.readings,
        "rss_mb_before_engine": round(rss_before, 1),
        "rss_mb_month_1": round(figures["rss_mb_month_1"], 1),
        "rss_mb_month_12": round(figures["rss_mb_month_12"], 1),
        "state_mb_month_1": round(figures["state_mb_month_1"], 2),
        "state_mb_month_12": round(figures["state_mb_month_12"], 2),
        "checkpoint_s_month_1": round(figures["checkpoint_s_month_1"], 5),
        "checkpoint_s_month_12": round(figures["checkpoint_s_month_12"], 5),
        "checkpoint_max_s_month_12": round(figures["checkpoint_max_s_month_12"], 5),
        "checkpoint_mb_month_1": round(figures["checkpoint_mb_month_1"], 4),
        "checkpoint_lock_max_ms_month_1": round(figures["lock_ms_month_1"], 3),
        "checkpoint_lock_max_ms_month_12": round(figures["lock_ms_month_12"], 3),
        "checkpoint_mb_month_12": round(figures["checkpoint_mb_month_12"], 4),
        "checkpoint_full_s_month_12": round(full_s, 4),
        "checkpoint_full_mb_month_12": round(full_bytes / 1e6, 3),
        "restore_s_month_12": round(restore_s, 3),
        "restore_checkpoint_s_month_12": round(restore_checkpoint_s, 3),
        "restore_cpu_s_month_12": round(restore_cpu_s, 3),
        "footprints_year_ms": round(figures["footprints_year_ms_month_12"], 1),
        "live_channel_updates_per_s": round(live_rate),
        "numpy_floor_updates_per_s": round(floor_rate),
        "feed_readings_per_s": round(feed.readings / feed.feed_s),
        "generate_s": round(feed.generate_s, 1),
        "total_s": round(time.perf_counter() - t_start, 1),
        "threads": numba.get_num_threads(),
        "issue_table": table,
        "machine": machine_baseline(),  # a child process: none of its memory counts above
    }))


if __name__ == "__main__":
    main()

"""Restarts of the real `tanji accounting` process restore exactly (issue #14 item 3, item 7's
checkpoint file; issue #12's restart path).

Real Mosquitto, real InfluxDB (the production store) or SQLite, the process started the way
docs/deploy.md starts it. After each scenario the process is stopped with SIGTERM and its final
checkpoint, restored alone, must hold every reading exactly once: its hours equal, bit for bit,
those of an engine fed every reading once (and the store holds exactly what was sent).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from accounting.engine.engine import Engine
from accounting.factors.selection import dataset_for
from accounting.ingest.engine_feed import EngineFeed
from accounting.site_topology import site_topology
from accounting.store.base import StoredReading
from accounting.store.checkpoints import CheckpointStore
from accounting.store.influx import InfluxStore
from accounting.store.sqlite import SqliteStore
from tanji import wire
from tests.ingest.traffic import HOUR_MS, Publisher, hour_start, plant_batches, wait_until
from tests.services import free_port

REPO = Path(__file__).resolve().parents[2]
SITE_FILE = REPO / "firmware-config" / "sites" / "cq-battery.yaml"


class Accounting:
    """One `tanji accounting` process; `ready` once it logs that it is (restored, subscribed, caught up)."""

    def __init__(self, args: list[str], log: Path, launcher: list[str] | None = None) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *(launcher or ["-m", "tanji"]), "--log-level", "INFO", "accounting", *args],
                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 120) -> None:
        ok = wait_until(lambda: "ready: restored, subscribed and caught up" in self.text()
                        or self.proc.poll() is not None,
                        timeout_s)
        assert ok and self.proc.poll() is None, self.text()[-3000:]

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()


def rows_of(site, batches) -> list[StoredReading]:
    return [StoredReading(site.id, b["gateway"], r["meter"], r["ts_ms"], r["quality"], r["values"])
            for b in (wire.decode_batch(x.payload) for x in batches) for r in b["readings"]]


def reference(site, batches) -> Engine:
    """An engine fed every reading exactly once."""
    engine = Engine(site_topology(site), dataset_for(site))
    EngineFeed(engine).feed(rows_of(site, batches))
    return engine


def assert_checkpoint_holds(state: Path, site, want: Engine) -> None:
    checkpoints = CheckpointStore(state / "checkpoints.sqlite")
    saved = checkpoints.load_snapshot(site.id)
    checkpoints.close()
    assert saved is not None, "no checkpoint was written"
    got = Engine.restore(saved.snapshot, site_topology(site), dataset_for(site))
    for key in want.channel_keys:
        if key[1] == "batch_id":
            continue
        h_want, e_want = want.hourly_energy(*key)
        h_got, e_got = got.hourly_energy(*key)
        assert np.array_equal(h_got, h_want) and np.array_equal(e_got, e_want), key


def influx_args(influx, mosquitto, state: Path) -> list[str]:
    return ["--config", str(SITE_FILE), "--broker", f"{mosquitto.host}:{mosquitto.port}",
            "--store", "influx", "--influx-url", influx.url, "--influx-bucket", influx.db,
            "--influx-org", "tanji", "--state-dir", str(state), "--client-id", "acc-restart",
            "--checkpoint-interval", "3600"]


def influx_count(influx, site_id: str, tmp_path: Path) -> int:
    series = influx.query(f"SELECT COUNT(quality) FROM reading WHERE site = '{site_id}'", influx.db)
    found = series["results"][0].get("series")
    return int(found[0]["values"][0][1]) if found else 0


@pytest.fixture
def site():
    from tanji.site import load_site
    return load_site(SITE_FILE)


@pytest.mark.timeout(420)
def test_restart_from_influxdb_replays_what_was_stored_after_the_checkpoint(site, mosquitto, influx, tmp_path):
    """The finding: `_rebuild` read up to 2**62 ms, InfluxQL matched nothing, the readings stored
    after the last checkpoint never reached the restarted engine (17.99 kWh instead of 35.99)."""
    state = tmp_path / "state"
    t0 = hour_start(int(time.time() * 1000)) - 3 * HOUR_MS
    first = plant_batches(site, start_ms=t0, step_ms=10_000, polls=360)
    second = plant_batches(site, start_ms=t0 + HOUR_MS, step_ms=10_000, polls=360,
                           seq0=len(first))
    publisher = Publisher(mosquitto.host, mosquitto.port)
    procs = []
    try:
        procs.append(Accounting(influx_args(influx, mosquitto, state), tmp_path / "run1.log"))
        procs[-1].wait_ready()
        publisher.publish_all(first)
        n1 = sum(b.readings for b in first)
        assert wait_until(lambda: influx_count(influx, site.id, tmp_path) == n1, 90)
        assert procs[-1].terminate() == 0  # checkpoint of the first hour

        procs.append(Accounting(influx_args(influx, mosquitto, state), tmp_path / "run2.log"))
        procs[-1].wait_ready()
        publisher.publish_all(second)
        n2 = n1 + sum(b.readings for b in second)
        assert wait_until(lambda: influx_count(influx, site.id, tmp_path) == n2, 90)
        procs[-1].kill()  # the second hour is stored, but no checkpoint has it

        procs.append(Accounting(influx_args(influx, mosquitto, state), tmp_path / "run3.log"))
        procs[-1].wait_ready()
        assert procs[-1].terminate() == 0
    finally:
        publisher.close()
        for p in procs:
            p.close()
    assert influx_count(influx, site.id, tmp_path) == n2
    assert_checkpoint_holds(state, site, reference(site, first + second))


@pytest.mark.timeout(300)
def test_without_a_checkpoint_the_engine_is_rebuilt_from_influxdb(site, mosquitto, influx, tmp_path):
    """The finding: without a checkpoint the engine rebuilt from InfluxDB was empty (0 of 5,001)."""
    t0 = hour_start(int(time.time() * 1000)) - 3 * HOUR_MS
    batches = plant_batches(site, start_ms=t0, step_ms=10_000, polls=720)
    store = InfluxStore(influx.url, token="t", bucket=influx.db, spill_dir=tmp_path / "spill")
    store.write_readings(rows_of(site, batches))  # stored by an earlier run whose state is gone
    assert store.flush(30)
    store.close()
    state = tmp_path / "state"
    proc = Accounting(influx_args(influx, mosquitto, state), tmp_path / "run.log")
    try:
        proc.wait_ready()
        assert "engine rebuilt from the store" in proc.text()
        assert proc.terminate() == 0
    finally:
        proc.close()
    assert_checkpoint_holds(state, site, reference(site, batches))


@pytest.mark.timeout(300)
def test_sigterm_with_http_port_ends_in_a_final_checkpoint(site, mosquitto, influx, tmp_path):
    """The finding: with --http-port, uvicorn restored the default SIGTERM handler and raised the
    signal again after its shutdown; the process died (exit 143) before `service.stop()`."""
    state = tmp_path / "state"
    t0 = hour_start(int(time.time() * 1000)) - 2 * HOUR_MS
    batches = plant_batches(site, start_ms=t0, step_ms=10_000, polls=360)
    publisher = Publisher(mosquitto.host, mosquitto.port)
    proc = Accounting([*influx_args(influx, mosquitto, state), "--http-port", str(free_port()),
                       "--http-host", "127.0.0.1"], tmp_path / "run.log")
    try:
        proc.wait_ready()
        publisher.publish_all(batches)
        n = sum(b.readings for b in batches)
        assert wait_until(lambda: influx_count(influx, site.id, tmp_path) == n, 90)
        assert proc.terminate() == 0, proc.text()[-2000:]
    finally:
        publisher.close()
        proc.close()
    assert_checkpoint_holds(state, site, reference(site, batches))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_checkpoint_file_is_set_aside_and_the_engine_rebuilt(site, mosquitto, tmp_path, damage):
    """The finding: a truncated or corrupt checkpoints.sqlite (only a cache) stopped the process
    with a raw sqlite3.DatabaseError instead of rebuilding from the store."""
    db, state = tmp_path / "tanji.sqlite", tmp_path / "state"
    args = ["--config", str(SITE_FILE), "--broker", f"{mosquitto.host}:{mosquitto.port}",
            "--store", f"sqlite:{db}", "--state-dir", str(state), "--client-id", "acc-corrupt"]
    t0 = hour_start(int(time.time() * 1000)) - 3 * HOUR_MS
    first = plant_batches(site, start_ms=t0, step_ms=10_000, polls=360)
    second = plant_batches(site, start_ms=t0 + HOUR_MS, step_ms=10_000, polls=360, seq0=len(first))
    publisher = Publisher(mosquitto.host, mosquitto.port)
    procs = []

    def count() -> int:
        store = SqliteStore(db)
        try:
            return store.count_readings(site.id)
        finally:
            store.close()

    try:
        procs.append(Accounting(args, tmp_path / "run1.log"))
        procs[-1].wait_ready()
        publisher.publish_all(first)
        n1 = sum(b.readings for b in first)
        assert wait_until(lambda: count() == n1, 90)
        assert procs[-1].terminate() == 0
        path = state / "checkpoints.sqlite"
        data = path.read_bytes()
        for extra in ("-wal", "-shm"):
            Path(f"{path}{extra}").unlink(missing_ok=True)
        path.write_bytes(data[: len(data) // 2] if damage == "truncated"
                         else data[:100] + os.urandom(len(data) - 100))

        procs.append(Accounting(args, tmp_path / "run2.log"))
        procs[-1].wait_ready()
        assert "moved to" in procs[-1].text()
        publisher.publish_all(second)
        n2 = n1 + sum(b.readings for b in second)
        assert wait_until(lambda: count() == n2, 90)
        assert procs[-1].terminate() == 0
    finally:
        publisher.close()
        for p in procs:
            p.close()
    assert count() == n2
    assert list(state.glob("checkpoints.sqlite.corrupt-*"))
    assert_checkpoint_holds(state, site, reference(site, first + second))


# The real `tanji accounting`, with one addition: once the file named by argv[1] exists, the
# next checkpoint transaction stops just before its COMMIT (its blocks and meta written into
# the open transaction) and says so in the file named by argv[2]: the moment to SIGKILL it.
PAUSE_BEFORE_COMMIT = """
import os, sys, time
sys.path.insert(0, {repo!r})
from accounting.store import checkpoints
trigger, marker = sys.argv[1], sys.argv[2]
connect = checkpoints.CheckpointStore._connect

def _connect(self):
    conn = connect(self)
    def pause(sql):
        if sql.strip().upper() == "COMMIT" and os.path.exists(trigger):
            with open(marker, "w") as out:
                out.write("paused")
            time.sleep(3600)
    conn.set_trace_callback(pause)
    return conn

checkpoints.CheckpointStore._connect = _connect
from tanji.cli import main
sys.exit(main(sys.argv[3:]))
"""


def saved_checkpoint_time(path: Path, site_id: str) -> int | None:
    """taken_ms of the committed checkpoint, read as any reader sees the file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute("SELECT taken_ms FROM engines WHERE site = ?", (site_id,)).fetchone()
        return None if row is None else int(row[0])
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_sigkill_during_a_checkpoint_write_restarts_from_the_previous_one(site, mosquitto, tmp_path):
    """Issue #12: a crash (SIGKILL) in the middle of a checkpoint transaction. The restarted
    service finds the previous checkpoint whole, resumes from it and the store, and neither
    loses nor doubles a reading (exact store count; hours equal an engine fed each once)."""
    db, state = tmp_path / "tanji.sqlite", tmp_path / "state"
    args = ["--config", str(SITE_FILE), "--broker", f"{mosquitto.host}:{mosquitto.port}",
            "--store", f"sqlite:{db}", "--state-dir", str(state), "--client-id", "acc-cp-kill",
            "--checkpoint-interval", "0.2"]
    launcher = tmp_path / "pause_before_commit.py"
    launcher.write_text(PAUSE_BEFORE_COMMIT.format(repo=str(REPO)))
    trigger, marker = tmp_path / "pause-now", tmp_path / "paused"
    t0 = hour_start(int(time.time() * 1000)) - 3 * HOUR_MS
    first = plant_batches(site, start_ms=t0, step_ms=10_000, polls=360)
    second = plant_batches(site, start_ms=t0 + HOUR_MS, step_ms=10_000, polls=360, seq0=len(first))
    third = plant_batches(site, start_ms=t0 + 2 * HOUR_MS, step_ms=10_000, polls=180,
                          seq0=len(first) + len(second))
    publisher = Publisher(mosquitto.host, mosquitto.port)
    procs = []
    checkpoint_file = state / "checkpoints.sqlite"

    def count() -> int:
        store = SqliteStore(db)
        try:
            return store.count_readings(site.id)
        finally:
            store.close()

    try:
        procs.append(Accounting(args, tmp_path / "run1.log",
                                [str(launcher), str(trigger), str(marker)]))
        procs[-1].wait_ready()
        publisher.publish_all(first)
        n1 = sum(b.readings for b in first)
        assert wait_until(lambda: count() == n1, 90)
        committed = saved_checkpoint_time(checkpoint_file, site.id)
        assert wait_until(lambda: saved_checkpoint_time(checkpoint_file, site.id) != committed, 60)
        trigger.touch()
        assert wait_until(marker.exists, 60), procs[-1].text()[-2000:]
        before_kill = saved_checkpoint_time(checkpoint_file, site.id)
        # the engine thread waits in the checkpoint; ingest goes on storing and acknowledging
        publisher.publish_all(second)
        n2 = n1 + sum(b.readings for b in second)
        assert wait_until(lambda: count() == n2, 90)
        procs[-1].kill()  # mid-transaction: BEGIN, blocks and meta written, no COMMIT
        assert saved_checkpoint_time(checkpoint_file, site.id) == before_kill  # the previous one

        procs.append(Accounting(args, tmp_path / "run2.log"))
        procs[-1].wait_ready()
        assert "restored from checkpoint" in procs[-1].text()
        assert "moved to" not in procs[-1].text()  # intact: nothing set aside, nothing rebuilt
        publisher.publish_all(third)
        n3 = n2 + sum(b.readings for b in third)
        assert wait_until(lambda: count() == n3, 90)
        assert procs[-1].terminate() == 0
    finally:
        publisher.close()
        for p in procs:
            p.close()
    assert count() == n3
    assert_checkpoint_holds(state, site, reference(site, first + second + third))

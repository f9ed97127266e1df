"""Incremental checkpoints: what changed, atomically; restore + resume gives the live state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from accounting.engine import Engine, EngineSettings
from accounting.errors import CheckpointError
from accounting.factors import load_dataset
from accounting.store.checkpoints import CheckpointStore
from accounting.store.source import StoreSource
from accounting.store.sqlite import SqliteStore
from accounting.topology import CostCentre, Meter, Product, SiteTopology
from tests.engine.test_bounded import arrays, stored_rows

DATASET = load_dataset("cn-mee-national-co2", "2022")
T0 = 1_740_787_200_000
H = 3_600_000
REPO = Path(__file__).resolve().parents[2]


def plant() -> SiteTopology:
    return SiteTopology(
        "cp", "East",
        (Meter("main", "grid_import", ("energy_import_kwh", "energy_export_kwh"), poll_period_s=60,
               max_power_kw=5000.0),
         Meter("l1", "submeter", ("energy_import_kwh",), cost_centre="L1", poll_period_s=60),
         Meter("plc", "production_counter", ("units_total", "batch_id"), cost_centre="L1",
               poll_period_s=60)),
        (CostCentre("L1"),), (Product("P", line="L1", units_meter="plc"),))


def minute_readings(k0: int, k1: int) -> list:
    out = []
    for k in range(k0, k1):
        t = T0 + k * 60_000
        out += [("main", "energy_import_kwh", t, 3.0 * k), ("main", "energy_export_kwh", t, 0.1 * k),
                ("l1", "energy_import_kwh", t, 1.5 * k), ("plc", "units_total", t, 0.5 * k),
                ("plc", "batch_id", t, float(1 + k // 500))]
    return out


def hours(engine: Engine) -> dict:
    return {key: engine.hourly_energy(*key) for key in engine.channel_keys if key[1] != "batch_id"}


def same(a: Engine, b: Engine) -> None:
    ha, hb = hours(a), hours(b)
    for key in ha:
        assert np.array_equal(ha[key][0], hb[key][0]) and np.array_equal(ha[key][1], hb[key][1]), key
    assert [f.to_dict() for f in a.footprints()] == [f.to_dict() for f in b.footprints()]
    assert [f.to_dict() for f in a.footprints(batch_id=2)] == [f.to_dict() for f in b.footprints(batch_id=2)]


def test_incremental_checkpoints_restore_and_resume_exactly(tmp_path):
    store = SqliteStore(tmp_path / "r.sqlite")
    source = StoreSource(store, "cp")
    settings = EngineSettings(tail_s=600.0)
    live = Engine(plant(), DATASET, settings, source=source)
    checkpoints = CheckpointStore(tmp_path / "checkpoints.sqlite")
    sizes = []
    for day in range(3):  # three days of 1-minute readings, an hour per batch
        for h in range(24):
            k0 = (day * 24 + h) * 60
            batch = minute_readings(k0, k0 + 60)
            store.write_readings(stored_rows("cp", batch))
            live.ingest(*arrays(live, batch))
            sizes.append(checkpoints.save_snapshot("cp", 0, {"n": k0}, live.snapshot()))
    # a late reading far beyond the tail, re-spread from the store, then checkpointed
    late = [("l1", "energy_import_kwh", T0 + 30 * H + 30_000, 1.5 * (30 * 60) + 0.7)]
    store.write_readings(stored_rows("cp", late))
    assert live.ingest(*arrays(live, late)).beyond_tail == 1
    sizes.append(checkpoints.save_snapshot("cp", 0, {"n": -1}, live.snapshot()))
    # readings stored after the last checkpoint but never fed (a crash between store and engine)
    unfed = minute_readings(72 * 60, 72 * 60 + 7)
    store.write_readings(stored_rows("cp", unfed))
    live.ingest(*arrays(live, unfed))
    checkpoints.close()

    # cost of what changed: the first checkpoint holds all blocks so far, later ones one or two
    assert max(sizes[24:]) < 3 * sizes[1]
    checkpoints = CheckpointStore(tmp_path / "checkpoints.sqlite")
    saved = checkpoints.load_snapshot("cp")
    assert saved.service == {"n": -1}
    restored = Engine.restore(saved.snapshot, plant(), DATASET, settings, source=source)
    restored.resume(margin_ms=H, until_ms={m: unfed[-1][2] + 1 for m in ("main", "l1", "plc")})
    same(restored, live)
    # and both equal a recomputation from the store
    span = store.reading_span("cp")
    again = live.recompute(store.iter_channel_arrays("cp", live.channel_keys, span[0], span[1] + 1),
                           retain_readings=False).engine
    for key, (h, e) in hours(live).items():
        h2, e2 = again.hourly_energy(*key)
        assert np.array_equal(h, h2) and np.array_equal(e, e2), key
    # late readings within the refilled tail are still placed from memory
    summary = restored.ingest(*arrays(restored, minute_readings(72 * 60 + 3, 72 * 60 + 4)))
    assert summary.duplicate == 5 and summary.beyond_tail == 0
    checkpoints.close()
    store.close()


def test_full_snapshot_bytes_round_trip_and_refuse_another_dataset():
    live = Engine(plant(), DATASET, tail_s=None)
    live.ingest(*arrays(live, minute_readings(0, 200)))
    again = Engine.restore(live.checkpoint(), plant(), DATASET)
    same(again, live)
    assert len(again.readings()[0]) == len(live.readings()[0]) == 5 * 200
    with pytest.raises(CheckpointError):
        Engine.restore(live.checkpoint(), plant(), load_dataset("cn-mee-national-co2", "2021"))
    with pytest.raises(CheckpointError):
        Engine.restore(b"not a checkpoint", plant(), DATASET)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty-header"])
def test_an_unreadable_checkpoint_file_is_set_aside_not_fatal(tmp_path, damage):
    path = tmp_path / "checkpoints.sqlite"
    live = Engine(plant(), DATASET, tail_s=None)
    live.ingest(*arrays(live, minute_readings(0, 3000)))
    good = CheckpointStore(path)
    good.save_snapshot("cp", 1, {}, live.snapshot(full=True))
    good.close()
    data = path.read_bytes()
    for extra in ("-wal", "-shm"):
        Path(str(path) + extra).unlink(missing_ok=True)
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(data[:100] + os.urandom(len(data) - 100))
    else:
        path.write_bytes(b"\0" * 4096)
    store = CheckpointStore(path)  # the old code raised sqlite3.DatabaseError here or on load
    assert store.load_snapshot("cp") is None
    assert store.set_aside and store.set_aside[0].exists()
    store.save_snapshot("cp", 2, {"fresh": True}, live.snapshot(full=True))
    assert store.load_snapshot("cp").service == {"fresh": True}
    store.close()


CHILD = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {repo!r})
    from accounting.engine.checkpoint import Snapshot
    from accounting.store.checkpoints import CheckpointStore
    store = CheckpointStore(sys.argv[1])
    small = Snapshot({{"which": "first"}}, {{"a": np.arange(3)}}, {{0: b"x" * 100}}, full=True)
    store.save_snapshot("s", 1, {{"which": "first"}}, small)
    print("saved", flush=True)
    rng = np.random.default_rng(0)
    big = Snapshot({{"which": "second"}}, {{"a": np.arange(3)}},
                   {{b: rng.bytes(64 * 1024) for b in range(6000)}}, full=True)
    print("saving", flush=True)
    store.save_snapshot("s", 2, {{"which": "second"}}, big)
    print("done", flush=True)
""")


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path):
    path = tmp_path / "checkpoints.sqlite"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO)))
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "saved"
        assert proc.stdout.readline().strip() == "saving"
        wal = Path(str(path) + "-wal")
        deadline = time.monotonic() + 60
        while (not wal.exists() or wal.stat().st_size < 20 * 1024 * 1024) and time.monotonic() < deadline:
            time.sleep(0.005)  # mid-transaction: frames are being written, no commit yet
        assert proc.poll() is None, "the write finished before the kill"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    store = CheckpointStore(path)
    saved = store.load_snapshot("s")
    assert saved.service == {"which": "first"} and saved.snapshot.blocks == {0: b"x" * 100}
    store.close()


FULL_DISK_CHILD = textwrap.dedent("""
    import resource, sys, numpy as np
    sys.path.insert(0, {repo!r})
    from accounting.engine.checkpoint import Snapshot
    from accounting.errors import CheckpointError
    from accounting.store.checkpoints import CheckpointStore
    store = CheckpointStore(sys.argv[1])
    small = Snapshot({{"which": "first"}}, {{"a": np.arange(3)}}, {{0: b"x" * 100}}, full=True)
    store.save_snapshot("s", 1, {{"which": "first"}}, small)
    # the disk is full from now on: no file of this process may grow past 1 MB
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    rng = np.random.default_rng(0)
    big = Snapshot({{"which": "second"}}, {{"a": np.arange(3)}},
                   {{b: rng.bytes(64 * 1024) for b in range(64)}}, full=True)
    try:
        store.save_snapshot("s", 2, {{"which": "second"}}, big)
    except CheckpointError as exc:
        print("refused:", exc)
    print("set aside:", len(store.set_aside))
    print("loaded:", store.load_snapshot("s").service["which"])
""")


def test_a_full_disk_refuses_the_checkpoint_and_keeps_the_file(tmp_path):
    """A write error (disk full, I/O error, locked) is not corruption: the checkpoint is refused
    with a CheckpointError (the caller's next one is full) and the file, whose previous checkpoint
    is intact, stays where it is. It used to be moved aside as corrupt."""
    path = tmp_path / "checkpoints.sqlite"
    script = tmp_path / "child.py"
    script.write_text(FULL_DISK_CHILD.format(repo=str(REPO)))
    out = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("refused:"), out.stdout
    assert lines[1:] == ["set aside: 0", "loaded: first"]
    assert not list(tmp_path.glob("checkpoints.sqlite.corrupt-*"))
    store = CheckpointStore(path)
    assert store.load_snapshot("s").service == {"which": "first"}
    store.close()

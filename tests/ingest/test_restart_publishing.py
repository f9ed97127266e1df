"""Accounting restarted with its default options while two gateways publish for 60 s: nothing lost,
nothing doubled, with either store (issue #14's restart proof).

Real parts throughout: simulated meters (Modbus TCP), two real gateways (`GatewayService`, with
their spools and the default end-to-end delivery), real Mosquitto, and `tanji accounting` started
as docs/deploy.md starts it, with no --client-id (the default one is persisted in the state
directory) and either `--store sqlite:...` or `--store influx`. Over the 60 s it is stopped
with SIGTERM and started again, SIGKILLed and started again 3 s later, and stopped for 5 s.

Proven by exact counts: every reading the gateways polled is in the store or still in a
gateway's spool (not yet confirmed when the gateways stopped), and the engine state accounting
carries across all of it (its checkpoint plus the stored readings after it, as a restart
restores it) gives the footprints of an engine fed every stored reading exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from accounting.engine.engine import Engine
from accounting.ingest.engine_feed import EngineFeed
from accounting.live.engine_state import dataset_for
from accounting.service import AccountingService
from accounting.site_topology import site_topology
from accounting.store.checkpoints import CheckpointStore
from accounting.store.influx import InfluxStore
from accounting.store.sqlite import SqliteStore
from gateway.service import GatewayService
from simulators.plant import PlantSimulator
from tanji.site import load_site
from tests.gateway.test_end_to_end import spool_keys
from tests.ingest.conftest import REPO
from tests.ingest.traffic import HOUR_MS, wait_until
from tests.services import free_port

PUBLISH_S = 60


def two_gateway_site(tmp_path: Path, broker_port: int) -> Path:
    """Two gateways, each with an SDM630 and a PLC counter polled every 0.25 s."""
    def meters(gw: int) -> list[dict]:
        common = {"host": "127.0.0.1", "poll_period_s": 0.25, "timeout_s": 0.5}
        return [{"id": f"incomer-{gw}" if gw == 1 else "line-a-meter", "role": "grid_import" if gw == 1 else "submeter",
                 "profile": "eastron-sdm630", "port": free_port(), "unit_id": 1, "ct_ratio": 40, **common,
                 **({"cost_centre": "line-a"} if gw == 2 else {})},
                {"id": f"plc-{gw}", "role": "production_counter", "cost_centre": "line-a",
                 "profile": "generic-plc-counter", "port": free_port(), "unit_id": 1, **common}]
    doc = {
        "site": {"id": "restart-site", "province": "Chongqing"},
        "broker": {"host": "127.0.0.1", "port": broker_port},
        "gateways": [{"id": f"gw-{gw}", "spool_path": str(tmp_path / f"spool-{gw}.sqlite"),
                      "publish_interval_s": 0.2, "meters": meters(gw)} for gw in (1, 2)],
        "cost_centres": [{"id": "line-a", "kind": "production"}],
        "products": [{"id": "widget", "cost_centre": "line-a", "counter": {"meter": "plc-1", "channel": "units_total"}}],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def accounting(site_file: Path, workdir: Path, store: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`tanji accounting` with its default options (no client id, default state directory)."""
    cmd = [sys.executable, "-m", "tanji", "--log-level", "WARNING", "accounting", "--config", str(site_file), *store]
    with open(workdir / "accounting.log", "ab") as log:
        return subprocess.Popen(cmd, cwd=workdir, env={**os.environ, "PYTHONPATH": str(REPO), **env},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def signal_and_wait(proc: subprocess.Popen, sig: int) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(60)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["sqlite", "influx"])
def test_restarts_while_gateways_publish_lose_nothing_and_double_nothing(backend, mosquitto, tmp_path, request):
    site_file = two_gateway_site(tmp_path, mosquitto.port)
    site = load_site(site_file)
    work = tmp_path / "work"
    work.mkdir()
    if backend == "sqlite":
        args, env, state = ["--store", "sqlite:tanji.sqlite"], {}, work  # state beside the SQLite file

        def open_store():
            return SqliteStore(work / "tanji.sqlite")
    else:
        influx = request.getfixturevalue("influx")
        args = ["--store", "influx", "--influx-url", influx.url, "--influx-bucket", influx.db]
        env, state = {"TANJI_INFLUX_TOKEN": "t"}, work / "tanji-state"  # the default --state-dir

        def open_store():
            return InfluxStore(influx.url, token="t", org="tanji", bucket=influx.db, spill_dir=tmp_path / "spill")
    plant = PlantSimulator.from_site(site, seed=3)
    plant.start()
    gateways = [GatewayService(site, gateway_id=g.id, status_interval_s=1.0) for g in site.gateways]
    proc = accounting(site_file, work, args, env)
    try:
        assert wait_until(lambda: (state / "mqtt-client-id").exists(), 120)
        for g in gateways:
            g.start()
        started = time.monotonic()
        confirmed = lambda: sum(g.health()["confirmed_readings"] for g in gateways)  # noqa: E731
        assert wait_until(lambda: confirmed() > 0, 120), "accounting never confirmed a batch"

        def at(second: float) -> None:
            time.sleep(max(0.0, started + second - time.monotonic()))

        at(15)
        signal_and_wait(proc, signal.SIGTERM)
        proc = accounting(site_file, work, args, env)
        at(30)
        signal_and_wait(proc, signal.SIGKILL)
        time.sleep(3)
        proc = accounting(site_file, work, args, env)
        at(45)
        signal_and_wait(proc, signal.SIGTERM)
        time.sleep(5)
        proc = accounting(site_file, work, args, env)
        at(PUBLISH_S)
        # Let the last restart's backlog through before the gateways stop polling.
        assert wait_until(lambda: all(g.health()["awaiting_confirmation"] <= 2 for g in gateways), 120)
    finally:
        for g in gateways:
            g.stop()
        plant.stop()
    time.sleep(2.0)  # confirmations in flight at the stop are stored by now
    signal_and_wait(proc, signal.SIGTERM)
    assert proc.returncode == 0, (work / "accounting.log").read_text()[-3000:]

    store = open_store()
    try:
        now = int(time.time() * 1000)
        stored = {(r.meter, r.ts_ms) for r in store.read_readings(site.id, None, now - 2 * HOUR_MS, now + HOUR_MS)}
        polled = sum(g.final_health["polls"] for g in gateways)
        left = set().union(*(spool_keys(g.gateway.spool_path) for g in gateways))
        print(f"{backend}: {polled} readings polled in {PUBLISH_S} s, {len(stored)} stored, {len(left - stored)} "
              "left in the spools at the stop")
        assert len(stored | left) == polled, "every polled reading is stored or still in a gateway's spool"
        assert store.count_readings(site.id) == len(stored)
        assert len(left - stored) <= 2 * 4 * 5, "only what was polled in the last moments waits in the spools"

        # Nothing doubled: the engine accounting restores (checkpoint + replay) equals one fed
        # every stored reading exactly once.
        restored = AccountingService([site], store, checkpoints=CheckpointStore(state / "checkpoints.sqlite"))
        restored.restore()
        lo = min(ts for _, ts in stored) // HOUR_MS * HOUR_MS
        hi = (max(ts for _, ts in stored) // HOUR_MS + 1) * HOUR_MS
        live = {f["product_id"]: f for f in restored.footprints(site.id, start_ms=lo, end_ms=hi)}
        reference = Engine(site_topology(site), dataset_for(site))
        EngineFeed(reference).feed(store.read_readings(site.id, None, lo, hi))
        want = {f.product_id: f for f in reference.footprints(lo, hi)}
        assert set(live) == set(want) == {"widget"}
        assert live["widget"]["units"] == want["widget"].units > 0
        assert live["widget"]["energy_kwh"] == pytest.approx(want["widget"].energy_kwh, rel=1e-9)
        assert live["widget"]["kgco2e_location"] == pytest.approx(want["widget"].kgco2e_location, rel=1e-9)
    finally:
        store.close()

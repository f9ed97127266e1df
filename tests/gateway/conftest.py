"""Gateway test helpers: a site file around fake meters, an MQTT collector, a gateway subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml

from simulators.plant import PlantSimulator
from tanji.profile import load_profiles
from tanji.site import Site, load_site
from tanji.wire import decode_batch
from tests.gateway.fake_meters import FakeMeters
from tests.services import free_port

REPO = Path(__file__).resolve().parents[2]
PROFILES = load_profiles()
SDM630_VALUES = {"voltage_l1_v": 231.5, "voltage_l2_v": 229.8, "voltage_l3_v": 230.2, "current_l1_a": 2.5,
                 "current_l2_a": 2.0, "current_l3_a": 1.5, "power_kw": 1.5, "reactive_power_kvar": 0.2,
                 "power_factor": 0.98, "frequency_hz": 50.01, "energy_import_kwh": 1000.0, "energy_export_kwh": 0.0}
PLC_VALUES = {"units_total": 100, "units_rejected_total": 2, "batch_id": 42, "line_running": 1}


def write_site(tmp_path: Path, meters: list[dict[str, Any]], broker_port: int, **gateway: Any) -> Path:
    """A site file with one gateway `gw-1` holding `meters` (the first one is the grid incomer).

    `delivery: broker` unless the test says otherwise: these tests receive with a plain MQTT
    subscriber (as a third-party consumer would), which confirms nothing; the end-to-end
    confirmation by accounting has its own tests (test_delivery.py).
    """
    meters = [dict(m) for m in meters]
    for i, m in enumerate(meters):
        m.setdefault("role", "grid_import" if i == 0 else "submeter")
        if m["role"] == "submeter":
            m.setdefault("cost_centre", "line-a")
    doc = {
        "site": {"id": "test-site", "province": "Chongqing"},
        "broker": {"host": "127.0.0.1", "port": broker_port},
        "gateways": [{"id": "gw-1", "spool_path": str(tmp_path / "spool.sqlite"), "publish_interval_s": 0.1,
                      "delivery": "broker", **gateway, "meters": meters}],
        # A site without a submeter has no line to share its remainder by energy: no production centre.
        "cost_centres": [{"id": "line-a", "kind": "production" if any(m["role"] == "submeter" for m in meters)
                          else "utility"}],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def fake_meters() -> Iterator[FakeMeters]:
    meters = FakeMeters()
    yield meters
    meters.stop()


def three_meter_site(tmp_path: Path, fake: FakeMeters, broker_port: int, period_s: float = 0.1,
                     **gateway: Any) -> tuple[Path, Site]:
    """Two SDM630s (CT 40 and 20) on one port and a PLC counter on another, all polled every `period_s`."""
    p1, p2 = free_port(), free_port()
    fake.add(p1, 1, PROFILES["eastron-sdm630"], SDM630_VALUES)
    fake.add(p1, 2, PROFILES["eastron-sdm630"], SDM630_VALUES)
    fake.add(p2, 1, PROFILES["generic-plc-counter"], PLC_VALUES)
    fake.start()
    common = {"host": "127.0.0.1", "poll_period_s": period_s, "timeout_s": 0.5}
    path = write_site(tmp_path, [
        {"id": "incomer", "profile": "eastron-sdm630", "port": p1, "unit_id": 1, "ct_ratio": 40, **common},
        {"id": "line-a-meter", "profile": "eastron-sdm630", "port": p1, "unit_id": 2, "ct_ratio": 20, **common},
        {"id": "plc-a", "role": "production_counter", "cost_centre": "line-a", "profile": "generic-plc-counter",
         "port": p2, "unit_id": 1, **common},
    ], broker_port, **gateway)
    return path, load_site(path)


@pytest.fixture
def plant_factory() -> Iterator[Callable[..., PlantSimulator]]:
    """`plant_factory(site, **kw)` → a started PlantSimulator for the site; all stopped after."""
    plants: list[PlantSimulator] = []

    def make(site: Site, **kw: Any) -> PlantSimulator:
        plant = PlantSimulator.from_site(site, seed=0, **kw)
        plant.start()
        plants.append(plant)
        return plant
    yield make
    for plant in plants:
        plant.stop()


def simulated_site(tmp_path: Path, broker_port: int, period_s: float = 0.1, **gateway: Any) -> tuple[Path, Site]:
    """Two SDM630s (CT 40 and 20) sharing a port and a PLC counter on another, polled every `period_s`."""
    p1, p2 = free_port(), free_port()
    common = {"host": "127.0.0.1", "poll_period_s": period_s, "timeout_s": 0.5}
    path = write_site(tmp_path, [
        {"id": "incomer", "profile": "eastron-sdm630", "port": p1, "unit_id": 1, "ct_ratio": 40, **common},
        {"id": "line-a-meter", "profile": "eastron-sdm630", "port": p1, "unit_id": 2, "ct_ratio": 20, **common},
        {"id": "plc-a", "role": "production_counter", "cost_centre": "line-a", "profile": "generic-plc-counter",
         "port": p2, "unit_id": 1, **common},
    ], broker_port, **gateway)
    return path, load_site(path)


class Collector:
    """A QoS 1 subscriber with a persistent session: what accounting would receive."""

    def __init__(self, host: str, port: int, topic: str = "tanji/v1/#",
                 setup: Callable[[mqtt.Client], None] | None = None) -> None:
        self.batches: list[dict[str, Any]] = []
        self.payloads: list[bytes] = []  # the readings messages as received (signatures cover their bytes)
        self.status: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"collector-{port}",
                                  clean_session=False)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._message
        if setup is not None:
            setup(self.client)
        self.client.connect(host, port)
        self.client.loop_start()

    def _message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            if msg.topic.endswith("/readings"):
                self.batches.append(decode_batch(msg.payload, msg.topic))
                self.payloads.append(msg.payload)
            else:
                self.status.append(json.loads(msg.payload))

    def readings(self) -> list[dict[str, Any]]:
        """Every reading received, in arrival order (duplicates included)."""
        with self.lock:
            return [r for b in self.batches for r in b["readings"]]

    def unique(self) -> dict[str, list[int]]:
        """Per meter, the timestamps in first-arrival order after dedup on (meter, ts_ms)."""
        seen: set[tuple[str, int]] = set()
        out: dict[str, list[int]] = {}
        for r in self.readings():
            key = (r["meter"], r["ts_ms"])
            if key not in seen:
                seen.add(key)
                out.setdefault(r["meter"], []).append(r["ts_ms"])
        return out

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {predicate}")

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def collector_factory() -> Iterator[Callable[..., Collector]]:
    made: list[Collector] = []

    def make(host: str, port: int, **kw: Any) -> Collector:
        made.append(Collector(host, port, **kw))
        return made[-1]
    yield make
    for c in made:
        c.stop()


class GatewayProcess:
    """`tanji gateway --config …` as a real subprocess, so tests can SIGKILL it."""

    def __init__(self, site_file: Path, log: Path, *extra: str) -> None:
        self.argv = [sys.executable, "-m", "tanji", "gateway", "--config", str(site_file), *extra]
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(15)
        self.proc = None
        return rc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        self.proc = None


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    made: list[GatewayProcess] = []

    def make(site_file: Path, *extra: str) -> GatewayProcess:
        made.append(GatewayProcess(site_file, tmp_path / "gateway.log", *extra))
        return made[-1]
    yield make
    for g in made:
        if g.proc is not None:
            g.proc.kill()
            g.proc.wait()

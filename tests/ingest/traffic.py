"""Wire-format traffic for ingest tests: a plant's meters as plain batches, and a QoS 1 publisher.

Test-only. Counters rise by known amounts so totals are checkable by hand: every SDM630
draws `kw` kW, every PLC counts one unit per `unit_every` readings.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tanji import wire
from tanji.site import Site

HOUR_MS = 3_600_000


def hour_start(ms: int) -> int:
    return ms - ms % HOUR_MS


@dataclass(frozen=True)
class Batch:
    topic: str
    payload: bytes
    readings: int


def plant_batches(site: Site, *, start_ms: int, step_ms: int, polls: int, polls_per_batch: int = 5,
                  kw: float = 36.0, unit_every: int = 2, seq0: int = 0) -> list[Batch]:
    """`polls` polls of every meter of every gateway, `polls_per_batch` polls per message."""
    out = []
    for gateway in site.gateways:
        seq = seq0
        for first in range(0, polls, polls_per_batch):
            readings = []
            for k in range(first, min(first + polls_per_batch, polls)):
                ts = start_ms + k * step_ms
                for m in gateway.meters:
                    if m.role == "production_counter":
                        values = {"units_total": float(k // unit_every), "batch_id": 7.0, "line_running": 1.0}
                    else:
                        kwh = 1000.0 + kw * (k * step_ms) / HOUR_MS
                        values = {"energy_import_kwh": kwh, "energy_export_kwh": 0.0, "power_kw": kw}
                    readings.append({"meter": m.id, "ts_ms": ts, "quality": "good", "values": values})
            out.append(Batch(wire.readings_topic(site.id, gateway.id),
                             wire.encode_batch(site.id, gateway.id, seq, readings), len(readings)))
            seq += 1
    return out


class Publisher:
    """A QoS 1 publisher that waits for every PUBACK (so "sent" means "the broker has it")."""

    def __init__(self, host: str, port: int, client_id: str = "test-publisher") -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._connected.wait(60):
            raise TimeoutError("publisher could not connect")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1, retain=retain)

    def publish_all(self, batches: list[Batch] | list[tuple[str, bytes]], timeout_s: float = 60) -> None:
        infos = [self.publish(*(b if isinstance(b, tuple) else (b.topic, b.payload))) for b in batches]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise TimeoutError("the broker did not acknowledge a publish")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate, timeout_s: float = 30.0, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()

"""MQTT receive: ingest's paho client against paho's own, on the same backlog, in the same run.

    .venv/bin/python benchmarks/mqtt_receive.py [--messages 6000 --repeats 3 --mqtt-version 5]

Why: paho's network thread was ~1.5-1.9 µs of accounting's CPU per reading drained (issue #20,
docs/storage.md), most of it per message rather than per byte. `BufferedClient`
(accounting/ingest/subscriber.py) reads its socket in large reads, decodes the common PUBLISH
without paho's per-packet objects (accounting/ingest/publish_packet.py) and sends a batch's
PUBACKs as one write. This measures what that is worth against the baseline it replaces, paho's
own `Client`, with everything else equal.

One Mosquitto serves every run. Each run: a fresh persistent session (MQTT 5 with a session
expiry, or 3.1.1 with clean session off, as ingest connects), a backlog of fleet-shaped batches
(100 readings a message, unsigned, as the simulated fleet's gateways publish them) queued into it
while the client is away, then the client connects and a consumer thread takes every message
from its callback's queue and acknowledges them 200 at a time (`ack_many` for ingest's client;
paho's `ack` per message, as ingest did before, for paho's). Clients alternate (paho, ingest,
paho, ...). Per run: messages/s from the first message to the last, and the CPU (user +
system) of the network thread and of the consumer thread per message. Every payload is compared
with what was published, in order (`lost` counts the missing or different ones: it must be 0).
Prints one JSON object as its last line, with the machine's baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402
import psutil  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from accounting.ingest.subscriber import BufferedClient  # noqa: E402
from benchmarks.machine import machine_baseline  # noqa: E402
from simulators.fleet import Fleet  # noqa: E402
from tests.services import MosquittoServer  # noqa: E402

TOPIC = "tanji/v1/fleet/+/readings"
ACK_EVERY = 200  # ingest's cycle of messages


def _connect(cls: type[mqtt.Client], port: int, client_id: str, v5: bool) -> mqtt.Client:
    """A client as ingest's subscriber makes it (accounting/ingest/subscriber.py), connecting."""
    if v5:
        client = cls(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True)
    else:
        client = cls(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=False,
                     manual_ack=True)
    client.max_inflight_messages_set(1000)
    if v5:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 600
        client.connect_async("127.0.0.1", port, clean_start=False, properties=properties)
    else:
        client.connect_async("127.0.0.1", port)
    return client


def _subscribe_and_leave(cls: type[mqtt.Client], port: int, client_id: str, v5: bool) -> None:
    """Make the persistent session (subscribed at QoS 1), then go away so a backlog queues up."""
    done = threading.Event()
    client = _connect(cls, port, client_id, v5)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(TOPIC, qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: done.set()
    client.loop_start()
    if not done.wait(20):
        raise RuntimeError("the broker did not confirm the subscription")
    client.disconnect()
    client.loop_stop()


def _publish(port: int, payloads: list[tuple[str, bytes]], client_id: str) -> None:
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    publisher.max_inflight_messages_set(1000)
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    infos = [publisher.publish(f"tanji/v1/fleet/{gateway}/readings", payload, qos=1) for gateway, payload in payloads]
    for info in infos:
        info.wait_for_publish(60)
    publisher.disconnect()
    publisher.loop_stop()


def _thread_cpu(proc: psutil.Process, native_id: int) -> float:
    for t in proc.threads():
        if t.id == native_id:
            return t.user_time + t.system_time
    return 0.0


def run_once(kind: str, port: int, payloads: list[tuple[str, bytes]], tag: str, v5: bool) -> dict:
    """One drain of a fresh backlog by `kind` ("paho" or "ingest"); see the module docstring."""
    cls = BufferedClient if kind == "ingest" else mqtt.Client
    client_id = f"recv-{tag}"
    _subscribe_and_leave(cls, port, client_id, v5)
    _publish(port, payloads, f"pub-{tag}")
    inbox: queue.SimpleQueue[mqtt.MQTTMessage] = queue.SimpleQueue()
    client = _connect(cls, port, client_id, v5)
    client.on_message = lambda c, u, message: inbox.put(message)
    proc = psutil.Process()
    consumer_id = threading.get_native_id()
    client.loop_start()
    network_id = client._thread.native_id  # paho has no public accessor for its thread
    first = inbox.get(timeout=60)
    started = time.perf_counter()
    cpu0 = _thread_cpu(proc, network_id), _thread_cpu(proc, consumer_id)
    got, pending = [first.payload], [first]
    while len(got) < len(payloads):
        try:
            message = inbox.get(timeout=30)
        except queue.Empty:
            break
        got.append(message.payload)
        pending.append(message)
        if len(pending) == ACK_EVERY or len(got) == len(payloads):
            if kind == "ingest":
                client.ack_many([m.mid for m in pending])
            else:
                for m in pending:
                    client.ack(m.mid, m.qos)
            pending = []
    seconds = time.perf_counter() - started
    cpu1 = _thread_cpu(proc, network_id), _thread_cpu(proc, consumer_id)
    client.disconnect()
    client.loop_stop()
    sent = [payload for _, payload in payloads]
    lost = sum(1 for a, b in zip(sent, got, strict=False) if a != b) + len(sent) - len(got)
    per = max(1, len(got) - 1)  # the first message starts the clock
    return {"client": kind, "messages": len(got), "lost": lost, "messages_per_s": round(per / seconds),
            "network_thread_cpu_us_per_message": round((cpu1[0] - cpu0[0]) / per * 1e6, 1),
            "consumer_thread_cpu_us_per_message": round((cpu1[1] - cpu0[1]) / per * 1e6, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6000, help="backlog per run (batches of 100 readings)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each client (alternating)")
    parser.add_argument("--mqtt-version", choices=("5", "3.1.1"), default="5")
    args = parser.parse_args()
    machine = machine_baseline()
    v5 = args.mqtt_version == "5"
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoServer(Path(tmp) / "mosquitto",
                                 extra_conf="max_inflight_messages 1000\nmax_queued_messages 0\n")
        broker.start()
        try:
            fleet = Fleet("127.0.0.1", broker.port, gateways=50, meters_per_gateway=100, site_id="fleet")
            rounds = max(1, -(-args.messages // 50))
            payloads = list(fleet.payloads(rounds, int(time.time() * 1000) - rounds * 1000))[:args.messages]
            runs: dict[str, list[dict]] = {"paho": [], "ingest": []}
            for rep in range(args.repeats):
                for kind in ("paho", "ingest"):
                    result = run_once(kind, broker.port, payloads, f"{kind}-{rep}", v5)
                    runs[kind].append(result)
                    print(json.dumps(result), flush=True)
        finally:
            broker.stop()

    def median(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    print(json.dumps({
        "benchmark": "mqtt_receive", "mqtt_version": args.mqtt_version, "messages_per_run": len(payloads),
        "readings_per_message": 100, "ack_every": ACK_EVERY,
        "paho_messages_per_s": median("paho", "messages_per_s"),
        "ingest_messages_per_s": median("ingest", "messages_per_s"),
        "paho_network_cpu_us_per_message": median("paho", "network_thread_cpu_us_per_message"),
        "ingest_network_cpu_us_per_message": median("ingest", "network_thread_cpu_us_per_message"),
        "paho_consumer_cpu_us_per_message": median("paho", "consumer_thread_cpu_us_per_message"),
        "ingest_consumer_cpu_us_per_message": median("ingest", "consumer_thread_cpu_us_per_message"),
        "network_cpu_ratio_ingest_to_paho": round(median("ingest", "network_thread_cpu_us_per_message")
                                                  / max(1e-9, median("paho", "network_thread_cpu_us_per_message")), 3),
        "lost": sum(r["lost"] for rs in runs.values() for r in rs),
        "runs": runs, "machine": machine}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The fleet generator publishes valid wire-format batches whose counters add up to its truth."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt
import pytest

from simulators.fleet import Fleet
from tanji.site import parse_site_text
from tanji.wire import decode_batch, readings_subscription


def test_fleet_publishes_wire_format_that_adds_up(mosquitto):
    received: list[tuple[str, bytes]] = []
    subscribed, done = threading.Event(), threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, *_: c.subscribe(readings_subscription("fleet-t"), qos=1)
    sub.on_subscribe = lambda *_: subscribed.set()

    def on_message(client, userdata, msg):
        received.append((msg.topic, msg.payload))
        if len(received) == 12:
            done.set()

    sub.on_message = on_message
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    try:
        assert subscribed.wait(5)
        fleet = Fleet(mosquitto.host, mosquitto.port, gateways=3, meters_per_gateway=5, site_id="fleet-t")
        stats = fleet.publish(rounds=4)
        assert (stats.batches, stats.readings) == (12, 60)
        assert done.wait(10)
    finally:
        sub.loop_stop()
        sub.disconnect()
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    seqs: dict[str, list[int]] = {}
    for topic, payload in received:
        body = decode_batch(payload, topic)  # validates against wire format v1
        seqs.setdefault(body["gateway"], []).append(body["seq"])
        for r in body["readings"]:
            first.setdefault(r["meter"], r["values"]["energy_import_kwh"])
            last[r["meter"]] = r["values"]["energy_import_kwh"]
    assert all(s == [0, 1, 2, 3] for s in seqs.values()) and len(seqs) == 3
    truth = fleet.truth()
    assert len(last) == 15
    for meter, kwh in last.items():
        assert kwh - first[meter] == pytest.approx(truth.total(meter, "energy_import_kwh"), rel=1e-9)
    site = parse_site_text(fleet.site_text())
    assert {m.id for m in site.meters} == set(last)
    assert json.loads(received[0][1])["v"] == 1

"""The fleet generator publishes valid wire-format batches whose counters add up to its truth."""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt
import pytest

from simulators.fleet import Fleet, gateway_ids
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


def test_a_signing_fleet_chains_batches_its_site_file_registers_and_ingest_verifies(tmp_path):
    """With signers, each virtual gateway signs and chains as a gateway does; its site file
    registers the keys, and ingest's verifier admits every batch (one check per chained run)."""
    from accounting.ingest.signatures import BatchSignatures
    from accounting.ingest.subscriber import InboundMessage
    from gateway.signing_key import generate_key
    from tanji.errors import WireFormatError

    ids = gateway_ids("fleet-s", 2)
    fleet = Fleet("127.0.0.1", 0, gateways=2, meters_per_gateway=3, site_id="fleet-s",
                  signers={g: generate_key(tmp_path / f"{g}.key") for g in ids})
    site = parse_site_text(fleet.site_text("required"), "fleet.yaml")
    assert site.signatures == "required" and [len(g.keys) for g in site.gateways] == [1, 1]
    assert parse_site_text(fleet.site_text("off"), "fleet.yaml").signatures == "off"  # not YAML's false
    payloads = list(fleet.payloads(3, 1_700_000_000_000))
    bodies = [json.loads(p) for _, p in payloads]
    assert [b["seq"] for b in bodies if b["gateway"] == ids[0]] == [0, 1, 2]
    assert bodies[0]["sig"]["prev"] is None and bodies[2]["sig"]["prev"] is not None  # chained per gateway
    verifier = BatchSignatures({site.id: site})
    messages = [InboundMessage(f"tanji/v1/fleet-s/{g}/readings", p, 0, 0, 0, 0) for g, p in payloads]
    verifier.prepare(messages, now_ms=1_700_000_100_000)
    for i, m in enumerate(messages):
        gateway = m.topic.split("/")[3]
        batch = verifier.decode(i, m.payload, "fleet-s", gateway, 1_700_000_100_000)
        assert verifier.check(i, m, "fleet-s", gateway, batch).key == site.gateways[ids.index(gateway)].keys[0].key_id
    assert verifier.to_dict()["verified_batches"] == 6 and verifier.to_dict()["signature_checks"] == 2
    # an altered reading in a validly framed batch does not verify
    forged = payloads[-1][1].replace(b'"power_kw":', b'"power_kw":1', 1)  # 12.3 -> 112.3
    verifier.prepare([InboundMessage(messages[-1].topic, forged, 0, 0, 0, 0)], now_ms=1_700_000_100_000)
    with pytest.raises(WireFormatError, match="bad_signature: .*does not verify"):
        verifier.check(0, InboundMessage(messages[-1].topic, forged, 0, 0, 0, 0), "fleet-s", ids[1],
                       verifier.decode(0, forged, "fleet-s", ids[1], 1_700_000_100_000))

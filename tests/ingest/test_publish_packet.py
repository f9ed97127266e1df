"""The PUBLISH reader against paho's own decoder, and the client that uses it against paho's.

`publish_packet.decode` must read every packet it takes exactly as paho 2.2's
`_packet.decode_publish` does, and leave every other packet to it (None): a table of packets,
the common kinds and the edge ones, compared one by one. Then `BufferedClient`, fed the same
bytes as a plain paho client, must hand its callback the same messages, and `ack_many` must put
on the wire the bytes paho's `ack` puts there one message at a time.
"""

from __future__ import annotations

import socket

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from accounting.ingest import publish_packet
from accounting.ingest.socket_reader import BufferedSocket
from accounting.ingest.subscriber import BufferedClient
from tests.ingest.test_socket_reader import frame

TOPIC = b"tanji/v1/site-1/gw-1/readings"
BODY = b'{"v":1,"site":"site-1","gateway":"gw-1","seq":7,"readings":[]}'
PAYLOAD_FORMAT_UTF8 = b"\x02\x01\x01"  # properties: length 2, payload format indicator = 1


def body(topic: bytes, qos: int, mid: int, payload: bytes, properties: bytes | None) -> bytes:
    """A PUBLISH packet after its fixed header (`properties`: MQTT 5's length and properties)."""
    out = len(topic).to_bytes(2, "big") + topic
    if qos:
        out += mid.to_bytes(2, "big")
    return out + (properties if properties is not None else b"") + payload


def header(qos: int, dup: bool = False, retain: bool = False) -> int:
    return 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)


# (name, header, packet, v5, taken): `taken` whether the reader reads it (else paho does)
CASES = [
    ("v5 qos1, no properties", header(1), body(TOPIC, 1, 4711, BODY, b"\x00"), True, True),
    ("v5 qos0, no properties", header(0), body(TOPIC, 0, 0, BODY, b"\x00"), True, True),
    ("v5 qos1 dup retain", header(1, True, True), body(TOPIC, 1, 65535, BODY, b"\x00"), True, True),
    ("v5 empty payload", header(1), body(TOPIC, 1, 1, b"", b"\x00"), True, True),
    ("v5 empty topic", header(1), body(b"", 1, 2, BODY, b"\x00"), True, True),
    ("v5 with properties", header(1), body(TOPIC, 1, 3, BODY, PAYLOAD_FORMAT_UTF8), True, False),
    ("v5 qos2", header(2), body(TOPIC, 2, 5, BODY, b"\x00"), True, False),
    ("v5 truncated before properties", header(1), body(TOPIC, 1, 6, b"", None), True, False),
    ("v5 topic longer than packet", header(1), b"\x01\x00" + TOPIC, True, False),
    ("v311 qos1", header(1), body(TOPIC, 1, 4711, BODY, None), False, True),
    ("v311 qos0", header(0), body(TOPIC, 0, 0, BODY, None), False, True),
    ("v311 empty payload", header(1), body(TOPIC, 1, 9, b"", None), False, True),
    ("v311 empty topic", header(0), body(b"", 0, 0, BODY, None), False, False),
    ("v311 qos1 without packet id", header(1), len(TOPIC).to_bytes(2, "big") + TOPIC + b"\x01", False, False),
    ("v311 topic longer than packet", header(0), b"\x00\x40" + TOPIC, False, False),
    ("one byte", header(0), b"\x00", False, False),
]


@pytest.mark.parametrize(("name", "head", "packet", "v5", "taken"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("kind", [bytes, bytearray], ids=["bytes", "bytearray"])
def test_reads_what_paho_reads_and_leaves_the_rest_to_paho(name, head, packet, v5, taken, kind):
    got = publish_packet.decode(head, kind(packet), v5)
    if not taken:
        assert got is None
        return
    protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    ref = _packet.decode_publish(head, kind(packet), protocol)
    assert got == (ref.topic, ref.mid, ref.payload)
    assert type(got[0]) is bytes and type(got[2]) is bytes


def test_the_edge_cases_left_to_paho_are_ones_paho_refuses_or_decodes_itself():
    """The table's `taken=False` rows: paho raises for the malformed ones (so the client's
    fall-back keeps paho's refusal), and decodes the others (properties, QoS 2) itself."""
    for name, head, packet, v5, taken in CASES:
        if taken:
            continue
        protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
        if name in ("v5 with properties", "v5 qos2"):
            assert _packet.decode_publish(head, packet, protocol).payload == BODY, name
        else:
            with pytest.raises(_packet.MalformedPacket):
                _packet.decode_publish(head, packet, protocol)


def fields(message: mqtt.MQTTMessage) -> tuple:
    props = message.properties
    return (message.topic, message.payload, message.mid, message.qos, message.dup, message.retain,
            None if props is None else props.json(), message.info.mid, message.state)


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v311"])
def test_buffered_client_hands_on_the_messages_paho_would(protocol):
    v5 = protocol == mqtt.MQTTv5
    stream = b"".join(frame(body(TOPIC, qos, mid, b"%d" % mid + BODY, (props if v5 else None)), header(qos, dup))
                      for qos, mid, props, dup in [(1, 1, b"\x00", False), (0, 0, b"\x00", False),
                                                   (1, 2, PAYLOAD_FORMAT_UTF8, False), (1, 3, b"\x00", True)])
    seen: dict[str, list[tuple]] = {}
    kinds: dict[str, list[str]] = {}
    for name, cls, sock_type in [("buffered", BufferedClient, BufferedSocket), ("paho", mqtt.Client, None)]:
        client = cls(CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol, manual_ack=True)
        got: list[tuple] = []
        kind: list[str] = []
        seen[name], kinds[name] = got, kind
        client.on_message = lambda c, u, message, got=got, kind=kind: (
            kind.append(type(message).__name__), got.append(fields(message)))
        left, right = socket.socketpair()
        try:
            right.setblocking(False)
            client._sock = sock_type(right) if sock_type else right
            left.sendall(stream)
            while len(got) < 4:
                assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
        finally:
            client._sock = None
            left.close()
            right.close()
    assert seen["buffered"] == seen["paho"]
    # the reader took the common packets (the one with MQTT 5 properties went to paho's decoder)
    assert kinds["buffered"] == ["_Publish", "_Publish", "MQTTMessage" if v5 else "_Publish", "_Publish"]
    assert [m[2] for m in seen["paho"]] == [1, 0, 2, 3]
    if v5:
        assert seen["paho"][2][6] == {"PayloadFormatIndicator": 1}


def test_ack_many_writes_what_paho_acks_one_by_one():
    written: dict[str, bytes] = {}
    mids = [1, 2, 300, 65535, 7]
    for name, cls in [("buffered", BufferedClient), ("paho", mqtt.Client)]:
        client = cls(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5, manual_ack=True)
        left, right = socket.socketpair()
        try:
            client._sock = right
            if name == "buffered":
                client.ack_many(mids)
            else:
                for mid in mids:
                    client.ack(mid, 1)
            left.settimeout(5)
            data = b""
            while len(data) < 4 * len(mids):
                data += left.recv(4096)
            written[name] = data
        finally:
            client._sock = None
            left.close()
            right.close()
    assert written["buffered"] == written["paho"]
    assert written["paho"][:4] == b"\x40\x02\x00\x01"


def test_ack_many_does_nothing_without_manual_ack_or_mids():
    for client, mids in [(BufferedClient(CallbackAPIVersion.VERSION2, client_id="auto"), [1]),
                         (BufferedClient(CallbackAPIVersion.VERSION2, client_id="none", manual_ack=True), [])]:
        client.ack_many(mids)
        assert not client._out_packet

"""An incoming PUBLISH packet's topic, packet id and payload, read without paho's per-packet objects.

paho-mqtt 2.2 decodes every PUBLISH with `paho.mqtt._packet.decode_publish`: three `struct`
formats built for the packet's own lengths (compiled anew whenever a length is new), a copy of
the rest of the packet per unpack, and, in MQTT 5, a `Properties` object made from its name
tables even when the packet carries no property. For a 14 KB batch of 100 readings that took
74 µs in MQTT 5 against 12 in 3.1.1 (`timeit`, one run on this machine under load; `Properties()`
alone 26 µs): more than the rest of paho's handling of the message (docs/storage.md, "paho's
PUBLISH without its per-packet objects"; `benchmarks/mqtt_receive.py` measures the whole).

`decode` reads the packets ingest receives (QoS 0 or 1; in MQTT 5 without properties, as every
Tanji gateway publishes them) with a few index operations and one copy of the payload. Anything
else (QoS 2, properties, a packet too short for its own lengths, an empty MQTT 3.1.1 topic)
returns None, and paho's own decoder reads the packet, so whatever paho accepts or refuses is
still decided by paho. tests/ingest/test_publish_packet.py compares the two on a table of packets.
"""

from __future__ import annotations


def decode(header: int, packet: bytes | bytearray, v5: bool) -> tuple[bytes, int, bytes] | None:
    """(topic, packet id, payload) of a PUBLISH packet, or None for paho's decoder to read it.

    `header` is the fixed header's first byte, `packet` everything after the remaining length
    (paho's `_in_packet["command"]` and `_in_packet["packet"]`), `v5` whether the connection
    speaks MQTT 5 (a properties length follows the packet id). The packet id is 0 at QoS 0.
    """
    qos = (header >> 1) & 3
    if qos > 1:
        return None
    size = len(packet)
    if size < 2:
        return None
    end = 2 + ((packet[0] << 8) | packet[1])  # the topic is packet[2:end]
    pos = end
    mid = 0
    if qos:
        if end + 2 > size:
            return None
        mid = (packet[end] << 8) | packet[end + 1]
        pos += 2
    if v5:
        if pos >= size or packet[pos] != 0:  # properties (or a truncated packet): paho reads them
            return None
        pos += 1
    elif end == 2 or pos > size:  # MQTT 3.1.1 has no empty topic; paho names the fault
        return None
    view = memoryview(packet)
    return bytes(view[2:end]), mid, bytes(view[pos:])

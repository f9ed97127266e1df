"""The MQTT side of ingest: paho-mqtt 2, MQTT 5, QoS 1, persistent session, acknowledgements held back.

No loss under SIGKILL rests on one rule: a PUBACK leaves only after the message's readings
are durable in the store (`ack`, called by the service after its store write). Until then
the broker keeps the message in our persistent session (clean_session=False, a stable client
id per instance) and redelivers it when we come back. Redelivered copies are harmless: the
store and the dedup index are idempotent on (site, meter, ts_ms).

The session must outlive a restart, or the broker's queue for it is abandoned: the client id
is stable (`default_client_id`: persisted beside the service's state and logged at start, never
random), clean start is off and, with MQTT 5, a session expiry interval (7 days by default)
tells the broker to keep the queue while accounting is away. `tanji broker-config` binds client
ids to broker users, so no gateway can take this session over.

End-to-end delivery: once a batch is durable (stored, or quarantined), `ack` also publishes its
sequence number to the gateway's confirm topic (`tanji.wire.confirm_topic`); only then does the
gateway delete it from its spool (`delivery: confirmed`), so a broker that loses what it had
acknowledged (killed between its autosaves) loses nothing: the gateway publishes again what
was never confirmed.

Several accounting instances split the load through a shared subscription
`$share/<group>/tanji/v1/<site>/+/readings`; status topics are subscribed plainly, since
retained messages are not delivered through shared subscriptions.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from accounting.ingest import publish_packet
from accounting.ingest.socket_reader import BufferedSocket
from tanji import wire

log = logging.getLogger(__name__)
SESSION_EXPIRY_S = 7 * 24 * 3600
CLIENT_ID_FILE = "mqtt-client-id"
# The batch header is written before the readings by every encoder of wire v1.
_SEQ = re.compile(rb'"seq"\s*:\s*(\d{1,15})')
#: Packets `BufferedClient.loop_read` reads from its buffer in one turn of paho's loop.
_READS_PER_TURN = 64
#: A PUBACK without reason code or properties: the same four bytes in MQTT 3.1.1 and 5 (paho's own).
_PUBACK = struct.Struct("!BBH")
_INFO, _PROPERTIES = mqtt.MQTTMessage.info, mqtt.MQTTMessage.properties  # the base class's own slots


def default_client_id(state_dir: str | Path | None, share_group: str | None = None) -> str:
    """The accounting service's stable MQTT client id.

    Kept in `<state_dir>/mqtt-client-id` (made once, then read at every start), so the broker
    hands the same session, and the messages it queued while accounting was away, back after a
    restart. Without a state directory it is derived from the host name and the share group,
    which is stable too; it is never random per start (a random id abandons the queue).
    """
    group = share_group or "solo"
    if state_dir is None:
        return f"tanji-accounting-{group}-{socket.gethostname()}"[:64]
    path = Path(state_dir) / CLIENT_ID_FILE
    try:
        saved = path.read_text().strip()
        if saved:
            return saved
    except OSError:
        pass
    client_id = f"tanji-accounting-{group}-{uuid.uuid4().hex[:8]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(client_id + "\n")
    os.replace(tmp, path)
    return client_id


def batch_seq(payload: bytes) -> int | None:
    """The `seq` of a readings batch, read from its header without decoding the readings."""
    match = _SEQ.search(payload, 0, 400)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_ms: int
    generation: int  # connection generation: an ack is only valid on the connection that delivered it


class MessageInbox(queue.Queue):
    """A FIFO of inbound messages bounded by count *and* by payload bytes.

    The broker's in-flight window bounds QoS 1 deliveries, but not QoS 0 ones (a publisher's
    QoS is the ceiling of its subscribers'), so a count alone would let 100,000 1 MiB messages
    into memory. A `put` waits while the count or the bytes are at their limit (a single
    message larger than `max_bytes` still fits into an empty inbox); the waiting network
    thread then stops reading, and TCP back-pressure reaches the broker.
    """

    def __init__(self, maxsize: int, max_bytes: int) -> None:
        super().__init__(maxsize)
        self.max_bytes = max_bytes
        self.bytes = 0

    def put(self, item: InboundMessage, block: bool = True, timeout: float | None = None) -> None:
        size = len(item.payload)
        with self.not_full:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._qsize() >= self.maxsize > 0 or (self.bytes and self.bytes + size > self.max_bytes):
                remaining = None if deadline is None else deadline - time.monotonic()
                if not block or (remaining is not None and remaining <= 0):
                    raise queue.Full
                self.not_full.wait(remaining)
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()

    def _put(self, item: InboundMessage) -> None:
        self.queue.append(item)
        self.bytes += len(item.payload)

    def _get(self) -> InboundMessage:
        item = self.queue.popleft()
        self.bytes -= len(item.payload)
        return item


class _Publish(mqtt.MQTTMessage):
    """An incoming message read by `publish_packet.decode`, as paho would have made it, except
    that `info` (paho's tracker of a message's own publication, a `threading.Condition`: ~3 µs)
    and MQTT 5's empty `properties` (~26 µs) are made only when something reads them. Ingest
    reads neither."""

    __slots__ = ("_v5",)

    def __init__(self, mid: int, topic: bytes, payload: bytes, header: int, v5: bool) -> None:
        self.timestamp = time.monotonic()  # paho's time_func
        self.state = mqtt.mqtt_ms_invalid
        self.dup = bool(header & 0x08)
        self.qos = (header >> 1) & 3
        self.retain = bool(header & 0x01)
        self.mid = mid
        self._topic = topic
        self.payload = payload
        self._v5 = v5

    @property  # type: ignore[override]
    def info(self) -> mqtt.MQTTMessageInfo:
        try:
            return _INFO.__get__(self)
        except AttributeError:
            info = mqtt.MQTTMessageInfo(self.mid)
            _INFO.__set__(self, info)
            return info

    @info.setter
    def info(self, value: mqtt.MQTTMessageInfo) -> None:
        _INFO.__set__(self, value)

    @property  # type: ignore[override]
    def properties(self) -> Properties | None:
        try:
            return _PROPERTIES.__get__(self)
        except AttributeError:
            properties = Properties(PacketTypes.PUBLISH) if self._v5 else None
            _PROPERTIES.__set__(self, properties)
            return properties

    @properties.setter
    def properties(self, value: Properties | None) -> None:
        _PROPERTIES.__set__(self, value)


class BufferedClient(mqtt.Client):
    """paho's client, three of its per-message costs taken off the network thread (paho 2.2's
    private API: its tests pin the behaviour, tests/ingest/test_socket_reader.py and
    tests/ingest/test_publish_packet.py):

    - its socket is read through `BufferedSocket` (one recv for many packets). `_create_socket`
      is paho 2.2's one place where a connection's socket is made (plain or TLS); websockets
      keep paho's own framing wrapper;
    - a PUBLISH is read by `publish_packet.decode` when it is of the common kind, else by paho;
    - `ack_many` queues a cycle's PUBACKs as one write, where paho's `ack` queues a packet, wakes
      its loop through its socket pair and makes one `send` per message.
    """

    def _create_socket(self) -> object:
        sock = super()._create_socket()
        return sock if self._transport == "websockets" else BufferedSocket(sock)

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        """paho's read, again while whole packets wait in the buffer: paho reads one packet per
        turn of its loop and asks `select` (a system call, the interpreter lock given up and
        waited for again) before each; buffered bytes need no asking. Ends when the buffer is
        empty (a partial packet is kept by paho, as from any short read), on any error, or after
        `_READS_PER_TURN` packets, so a broker that keeps sending cannot hold the loop from its
        writes (our PUBACKs) and keepalive."""
        rc = super().loop_read(max_packets)
        sock = self._sock
        for _ in range(_READS_PER_TURN):
            if rc != mqtt.MQTT_ERR_SUCCESS or self._sock is not sock or not isinstance(sock, BufferedSocket) \
                    or not sock.buffered():
                break
            rc = super().loop_read(max_packets)
        return rc

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        """paho's `_handle_publish` for a QoS 0 or 1 message acknowledged by hand (as ingest's
        are): the same message handed to the same callbacks, read by `publish_packet.decode`.
        Anything else, and any packet that reader leaves alone, goes to paho's own."""
        header, v5 = self._in_packet["command"], self._protocol == mqtt.MQTTv5
        decoded = publish_packet.decode(header, self._in_packet["packet"], v5) if self._manual_ack else None
        if decoded is None:
            return super()._handle_publish()
        topic, mid, payload = decoded
        self._handle_on_message(_Publish(mid, topic, payload, header, v5))
        return mqtt.MQTT_ERR_SUCCESS

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK each QoS 1 message of `mids`, all in one queued packet (one wake-up of paho's
        loop, one `send`), with the bytes paho's `ack` would send one by one. Only for a client
        that acknowledges by hand (`manual_ack`), as paho's `ack` does."""
        if not mids or not self._manual_ack:
            return
        pack = _PUBACK.pack
        self._packet_queue(mqtt.PUBACK, b"".join([pack(mqtt.PUBACK, 2, mid) for mid in mids]), 0, 0)


def subscriptions(sites: list[str], share_group: str | None) -> list[str]:
    """The topic filters one instance subscribes to (readings shared, status plain)."""
    topics = []
    for site in sites:
        readings = wire.readings_subscription(site)
        topics.append(f"$share/{share_group}/{readings}" if share_group else readings)
        topics.append(f"{wire.TOPIC_ROOT}/{site}/+/status")
    return topics


class MqttSubscriber:
    """Receives readings into `inbox`; the consumer calls `ack(messages)` once they are stored."""

    def __init__(self, host: str, port: int, client_id: str, topics: list[str], *,
                 username: str | None = None, password: str | None = None, keepalive_s: int = 30,
                 inbox_size: int = 100_000, inbox_bytes: int = 256 * 1024 * 1024, tls: bool = False,
                 ca_file: str | None = None, mqtt_version: str = "5",
                 session_expiry_s: int = SESSION_EXPIRY_S) -> None:
        self.host = host
        self.port = port
        self.topics = topics
        self.inbox: queue.Queue[InboundMessage] = MessageInbox(inbox_size, inbox_bytes)
        self.connected = threading.Event()
        # Monotonic time the broker acknowledged every subscription of this connection; None
        # before, after a refusal, and while disconnected (accounting.ingest.readiness).
        self.subscribed_at: float | None = None
        self._subscribe_mid: int | None = None
        self._generation = 0
        self._keepalive_s = keepalive_s
        self.client_id = client_id
        self.v5 = mqtt_version == "5"
        self.session_expiry_s = session_expiry_s
        self.confirms_sent = 0
        if self.v5:
            self._client = BufferedClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                       manual_ack=True)
        else:  # brokers without MQTT 5 (the demo's embedded amqtt)
            self._client = BufferedClient(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                       protocol=mqtt.MQTTv311, manual_ack=True)
        if username:
            self._client.username_pw_set(username, password)
        if tls or ca_file:
            self._client.tls_set(ca_certs=ca_file)
        self._client.max_inflight_messages_set(1000)
        self._client.reconnect_delay_set(0.2, 5)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self) -> None:
        log.info("MQTT client id %s (MQTT %s%s)", self.client_id, "5" if self.v5 else "3.1.1",
                 f", session expiry {self.session_expiry_s} s" if self.v5 else "")
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.session_expiry_s
            self._client.connect_async(self.host, self.port, keepalive=self._keepalive_s, clean_start=False,
                                       properties=properties)
        else:
            self._client.connect_async(self.host, self.port, keepalive=self._keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def ack(self, messages: list[InboundMessage], unconfirmed: set[int] | None = None) -> int:
        """PUBACK messages delivered on the current connection; returns how many were acked.

        Messages from an earlier connection are not acked: the broker resends them on the new
        one, and their redelivered copies are acked when those are stored. Messages whose index
        is in `unconfirmed` (refused for their signature) are acked but not confirmed to their
        gateway, which keeps its own copy of that batch and sends it again.
        """
        generation = self._generation
        confirms: dict[str, list[int]] = {}
        mids = [m.mid for m in messages if m.qos == 1 and m.generation == generation]
        self._client.ack_many(mids)
        acked = len(mids)
        for i, m in enumerate(messages):
            if m.qos > 1 and m.generation == generation:  # QoS 2: never delivered on our QoS 1 subscriptions
                self._client.ack(m.mid, m.qos)
                acked += 1
            if unconfirmed and i in unconfirmed:
                continue
            if m.topic.endswith("/readings") and (seq := batch_seq(m.payload)) is not None:
                confirms.setdefault(m.topic[:-len("readings")] + "confirm", []).append(seq)
        for topic, seqs in confirms.items():
            self._client.publish(topic, wire.confirm_payload(seqs), qos=1)
            self.confirms_sent += len(seqs)
        return acked

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason_code: mqtt.ReasonCode, properties: object) -> None:
        if reason_code.is_failure:
            log.warning("broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
            return
        self._generation += 1
        self.subscribed_at = None
        _, self._subscribe_mid = client.subscribe([(t, 1) for t in self.topics])
        log.info("connected to %s:%d (session present: %s), subscribing to %s",
                 self.host, self.port, flags.session_present, self.topics)
        self.connected.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int,
                      reason_codes: list[mqtt.ReasonCode], properties: object) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [t for t, rc in zip(self.topics, reason_codes, strict=False) if rc.is_failure]
        if refused:
            log.error("the broker %s:%d refused the subscriptions %s (its ACL must grant this user read on "
                      "them): nothing is ingested from them", self.host, self.port, refused)
            return
        self.subscribed_at = time.monotonic()
        log.info("subscribed to %s", self.topics)

    def inbox_empty(self) -> bool:
        return self.inbox.empty()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags,
                       reason_code: mqtt.ReasonCode, properties: object) -> None:
        self.connected.clear()
        self.subscribed_at = None
        if reason_code.is_failure:
            log.warning("lost the broker %s:%d (%s); reconnecting", self.host, self.port, reason_code)

    def network_alive(self) -> bool:
        """paho's network thread runs (it is gone for good if a callback ever raised out of it)."""
        thread = getattr(self._client, "_thread", None)  # set by loop_start(); paho has no public accessor
        return thread is not None and thread.is_alive()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        # Blocks the network thread when the inbox is full: back-pressure reaches the broker,
        # which stops sending once our in-flight window is exhausted.
        try:
            topic = message.topic
        except UnicodeDecodeError:  # brokers refuse such topics; should one pass, admission names it
            topic = bytes(message._topic).decode("utf-8", "backslashreplace")
        self.inbox.put(InboundMessage(topic, message.payload, message.mid, message.qos,
                                      int(time.time() * 1000), self._generation))

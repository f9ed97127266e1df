"""The MQTT side of ingest: paho-mqtt 2, QoS 1, persistent session, acknowledgements held back.

No loss under SIGKILL rests on one rule: a PUBACK leaves only after the message's readings
are durable in the store (`ack`, called by the service after its store write). Until then
the broker keeps the message in our persistent session (clean_session=False, a stable client
id per instance) and redelivers it when we come back. Redelivered copies are harmless: the
store and the dedup index are idempotent on (site, meter, ts_ms).

Several accounting instances split the load through a shared subscription
`$share/<group>/tanji/v1/<site>/+/readings`; status topics are subscribed plainly, since
retained messages are not delivered through shared subscriptions.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tanji import wire

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_ms: int
    generation: int  # connection generation: an ack is only valid on the connection that delivered it


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
                 inbox_size: int = 100_000, tls: bool = False, ca_file: str | None = None) -> None:
        self.host = host
        self.port = port
        self.topics = topics
        self.inbox: queue.Queue[InboundMessage] = queue.Queue(inbox_size)
        self.connected = threading.Event()
        self._generation = 0
        self._keepalive_s = keepalive_s
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                   protocol=mqtt.MQTTv311, manual_ack=True)
        if username:
            self._client.username_pw_set(username, password)
        if tls or ca_file:
            self._client.tls_set(ca_certs=ca_file)
        self._client.max_inflight_messages_set(1000)
        self._client.reconnect_delay_set(0.2, 5)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def start(self) -> None:
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def ack(self, messages: list[InboundMessage]) -> int:
        """PUBACK messages delivered on the current connection; returns how many were acked.

        Messages from an earlier connection are not acked: the broker resends them on the new
        one, and their redelivered copies are acked when those are stored.
        """
        generation = self._generation
        acked = 0
        for m in messages:
            if m.qos > 0 and m.generation == generation:
                self._client.ack(m.mid, m.qos)
                acked += 1
        return acked

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason_code: mqtt.ReasonCode, properties: object) -> None:
        if reason_code.is_failure:
            log.warning("broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
            return
        self._generation += 1
        client.subscribe([(t, 1) for t in self.topics])
        log.info("connected to %s:%d (session present: %s), subscribed to %s",
                 self.host, self.port, flags.session_present, self.topics)
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags,
                       reason_code: mqtt.ReasonCode, properties: object) -> None:
        self.connected.clear()
        if reason_code.is_failure:
            log.warning("lost the broker %s:%d (%s); reconnecting", self.host, self.port, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        # Blocks the network thread when the inbox is full: back-pressure reaches the broker,
        # which stops sending once our in-flight window is exhausted.
        self.inbox.put(InboundMessage(message.topic, message.payload, message.mid, message.qos,
                                      int(time.time() * 1000), self._generation))

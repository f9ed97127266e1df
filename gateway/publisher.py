"""The MQTT side of the gateway: paho-mqtt 2.x, MQTT 5, a persistent session, QoS 1, last will.

- MQTT 5, so the broker can say no: a publish its ACL refuses is answered with PUBACK reason
  code 135 (not authorized) instead of the plain PUBACK MQTT 3.1.1 sends for it, and the
  readings stay in the spool (`on_ack(mid, refused_reason)`);
- client id `tanji-<site>-<gateway>` (stable, so the broker keeps the session across restarts),
  clean start off and a session expiry interval (`broker.session_expiry_s`), so QoS 1 messages
  in flight during a disconnect are resent by paho on the same session when it comes back;
- last will: a retained `offline` status, so subscribers learn the gateway died even when it
  could not say so; a clean stop publishes the same retained `offline` itself;
- TLS (`ca_file`, optional client certificate `cert_file`/`key_file`) and username / password
  (from a file, so the secret is not in the site file) from the site's `broker:` section; in
  `username` and `password_file`, `{gateway}` stands for the gateway id, so one `broker:`
  section serves a site whose gateways each have their own broker user (`tanji broker-config`);
- reconnects forever in paho's network thread, with a backoff from 1 s to 60 s.

paho calls back from its own thread; every callback is handed to the gateway's event loop
with `call_soon_threadsafe`, so all bookkeeping (spool, in-flight batches) stays in one thread.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tanji.errors import ConfigError
from tanji.site import Broker
from tanji.wire import readings_topic, status_payload, status_topic

log = logging.getLogger("tanji.gateway.mqtt")
MAX_INFLIGHT = 20


class Publisher:
    """Owns the paho client; reports connect, disconnect and PUBACK to the event loop."""

    def __init__(self, site_id: str, gateway_id: str, broker: Broker, loop: asyncio.AbstractEventLoop, *,
                 on_connect: Callable[[], None], on_disconnect: Callable[[], None],
                 on_ack: Callable[[int, str | None], None], max_inflight: int = MAX_INFLIGHT,
                 on_message: Callable[[str, bytes], None] | None = None,
                 subscriptions: tuple[str, ...] = ()) -> None:
        self.site_id = site_id
        self.gateway_id = gateway_id
        self.broker = broker
        self.loop = loop
        self.readings_topic = readings_topic(site_id, gateway_id)
        self.status_topic = status_topic(site_id, gateway_id)
        self.client_id = f"tanji-{site_id}-{gateway_id}"
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_ack = on_ack
        self._on_message = on_message
        self.subscriptions = subscriptions
        self.v5 = broker.mqtt_version == "5"
        if self.v5:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        else:  # MQTT 3.1.1 acknowledges refused publishes like accepted ones: only for brokers without 5
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
                                 protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, 60)
        client.will_set(self.status_topic, status_payload(site_id, gateway_id, "offline"), qos=1, retain=True)
        if broker.username:
            password_file = broker.password_file.replace("{gateway}", gateway_id) if broker.password_file else None
            client.username_pw_set(broker.username.replace("{gateway}", gateway_id), _read_secret(password_file))
        if broker.tls:
            client.tls_set(ca_certs=broker.ca_file, certfile=broker.cert_file, keyfile=broker.key_file,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_publish = self._published
        client.on_message = self._message
        self.client = client
        self.connected = False
        self._stopping = False

    def start(self) -> None:
        log.info("connecting to mqtt%s://%s:%d as %s", "s" if self.broker.tls else "", self.broker.host,
                 self.broker.port, self.client_id)
        if not self.v5:
            self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s)
        else:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.broker.session_expiry_s
            self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s,
                                      clean_start=False, properties=properties)
        self.client.loop_start()

    def stop(self, health: dict[str, Any] | None = None) -> None:
        """Publish the retained offline status (when connected) and disconnect cleanly."""
        self._stopping = True
        if self.connected:
            info = self.client.publish(self.status_topic, status_payload(
                self.site_id, self.gateway_id, "offline", **(health or {})), qos=1, retain=True)
            info.wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()

    def publish_batch(self, payload: bytes) -> int:
        """Hand one batch to paho; returns the message id its PUBACK will carry."""
        return self.client.publish(self.readings_topic, payload, qos=1).mid

    def publish_status(self, payload: bytes) -> None:
        self.client.publish(self.status_topic, payload, qos=1, retain=True)

    # paho's network thread ------------------------------------------------------------------

    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("broker refused the connection: %s", reason)
            return
        self.connected = True
        log.info("connected to the broker (session present: %s)", flags.session_present)
        if self.subscriptions:
            client.subscribe([(topic, 1) for topic in self.subscriptions])
        self.loop.call_soon_threadsafe(self._on_connect, bool(flags.session_present))

    def _disconnected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        was = self.connected
        self.connected = False
        if was and not self._stopping:
            log.warning("disconnected from the broker (%s); spooling until it is back", reason)
        self.loop.call_soon_threadsafe(self._on_disconnect)

    def _published(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        # MQTT 5: a PUBACK with a reason code >= 128 means the broker did NOT take the message
        # (135: not authorized by the ACL; 151: quota exceeded; 153: payload format invalid).
        refused = str(reason) if reason is not None and getattr(reason, "is_failure", False) else None
        self.loop.call_soon_threadsafe(self._on_ack, mid, refused)

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._on_message is not None:
            self.loop.call_soon_threadsafe(self._on_message, message.topic, message.payload)


def _read_secret(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(path, None, "broker.password_file", f"cannot read it: {exc.strerror}",
                          "point password_file at a readable file holding the gateway's MQTT password") from None

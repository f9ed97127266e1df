"""An MQTT broker inside the accounting process, for the one-box embedded default (`tanji demo`).

amqtt runs on its own asyncio loop in a background thread, so the rest of the service (paho's
threads, the ingest thread, uvicorn) is unaffected. It speaks MQTT 3.1.1 with QoS 1 and
persistent sessions, which is what the gateway and ingest need on one box; it has no shared
subscriptions, TLS users or ACLs — production uses Mosquitto (docker/, DESIGN.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading

from amqtt.broker import Broker

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """`EmbeddedBroker(host, port).start()` … `.stop()`; anonymous, no $SYS chatter."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Broker | None = None
        self._thread: threading.Thread | None = None

    def _config(self) -> dict:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

    def start(self, timeout_s: float = 10.0) -> None:
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                self._broker = Broker(self._config(), loop=loop)
                loop.run_until_complete(self._broker.start())
            except Exception as exc:
                started.set_exception(exc)
                loop.close()
                return
            started.set_result(None)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="embedded-broker", daemon=True)
        self._thread.start()
        started.result(timeout_s)
        log.info("embedded MQTT broker (amqtt) listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        if self._loop is None or self._broker is None:
            return
        asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._loop = self._broker = None

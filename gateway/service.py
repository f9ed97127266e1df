"""The gateway process: pollers → spool → MQTT, plus health.

Python API (the in-process demo and the tests use it)::

    from gateway.service import GatewayService
    service = GatewayService(site, "gw-cq-01", spool_path="/tmp/spool.sqlite", broker=("127.0.0.1", 1883))
    service.start()            # runs in a background thread with its own event loop
    ...
    service.health()           # the same dict the status topic carries
    service.stop()

or, inside an event loop, ``await service.run()`` (cancel the task, or call ``stop()``, to end it).

Flow and guarantees:
- each reading goes to the spool (one SQLite commit per event-loop turn) before anything may
  publish it; the publisher only ever reads from the spool;
- batches (up to `batch_max_readings`, formed at most every `publish_interval_s` unless full)
  are published with QoS 1 and deleted from the spool on PUBACK; at most `max_inflight`
  batches are unacknowledged at a time, so an outage fills the disk, never the memory;
- after a restart, unacknowledged batches are replayed first, in sequence order, with their
  original seq and `backlog: true`; batches holding readings taken while the broker was away
  (more than BACKLOG_GRACE_MS before the current connection) are also marked backlog;
- after a reconnect, new batches wait until the batches in flight before the disconnect
  (which paho resends on the persistent session) are acknowledged, so each meter's readings
  arrive in order; if they are not acknowledged within `resend_after_s`, the gateway
  republishes them itself from the spool;
- unless the site says `signatures: off`, every batch is signed with the gateway's Ed25519 key
  and chained to the previous one as it is formed (gateway/spool.py); the key file is made at
  the first start if there is none (tanji/gateway_keys.py, docs/audit.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.clock import READINGS
from gateway.metrics import MetricsServer, exposition
from gateway.publisher import MAX_INFLIGHT, Publisher
from gateway.scheduler import Scheduler, now_ms
from gateway.signing_key import SigningKey, load_or_generate
from gateway.spool import _COUNTERS, Batch, Spool
from tanji.errors import ConfigError
from tanji.gateway_keys import registration_snippet
from tanji.metrics_text import Histogram
from tanji.site import Broker, Site
from tanji.wire import Reading, confirm_topic, decode_confirm, status_payload

log = logging.getLogger("tanji.gateway")
# Readings taken up to this long before the connection came up are live, not backlog (at
# start-up the first polls beat the first CONNACK by a few milliseconds).
BACKLOG_GRACE_MS = 1000
# Readings kept in memory while the spool cannot be written (about 20 MB of SDM630 readings);
# past it the same policy as the spool's applies (gauges first, then every second counter reading).
MAX_UNSPOOLED = 50_000
# A refused publish (MQTT 5 reason code >= 128) is retried after this, doubling up to 60 s.
REFUSED_RETRY_S = 2.0
# A published batch not confirmed while newer ones are, for this long, was lost on the way
# (a broker that forgot it): it is published again.
CONFIRM_GRACE_S = 30.0


def encode_batch_body(site: str, gateway: str, seq: int, readings_json: str, *, backlog: bool,
                      sent_ms: int, sig: str | None = None) -> bytes:
    """tanji.wire.encode_batch for readings already serialised by the spool (a JSON array).

    Equal, once parsed, to `encode_batch` (a test checks it); it saves re-encoding every
    reading on every (re)publish. `sig` is the JSON text of a signed batch's `sig` member; the
    readings, which it signs byte for byte, are always the last member.
    """
    head = json.dumps({"v": 1, "site": site, "gateway": gateway, "seq": seq, "sent_ms": sent_ms,
                       "backlog": backlog}, separators=(",", ":"))
    signed = f',"sig":{sig}' if sig is not None else ""
    return f'{head[:-1]}{signed},"readings":{readings_json}}}'.encode()


def key_file(spool_path: str | Path, configured: str | None = None) -> Path:
    """Where the gateway's private signing key lives: `signing_key_file`, else `<spool>.key`."""
    return Path(configured) if configured else Path(f"{spool_path}.key")


#: Fault injection for the durability proof (tests/audit/): the gateway SIGKILLs itself right
#: after committing the signed batch with this seq, before handing it to MQTT. Never set it in
#: production.
KILL_AFTER_SIGNING_ENV = "TANJI_TEST_KILL_AFTER_SIGNING_SEQ"


def status_file(spool_path: str | Path) -> Path:
    """Where the running gateway writes its health for `tanji gateway status`."""
    return Path(f"{spool_path}.status.json")


class GatewayService:
    """One gateway of a site: polls its meters, spools and publishes their readings."""

    def __init__(self, site: Site, gateway_id: str | None = None, *, spool_path: str | Path | None = None,
                 broker: tuple[str, int] | Broker | None = None, status_interval_s: float = 5.0,
                 max_inflight: int = MAX_INFLIGHT, resend_after_s: float = 10.0,
                 confirm_grace_s: float = CONFIRM_GRACE_S, max_spool_pages: int | None = None,
                 metrics_port: int | None = None, metrics_host: str | None = None) -> None:
        if gateway_id is None:
            if len(site.gateways) != 1:
                raise ValueError(f"site {site.id} has {len(site.gateways)} gateways; name one "
                                 f"({', '.join(g.id for g in site.gateways)})")
            gateway_id = site.gateways[0].id
        self.site = site
        self.gateway = site.gateway(gateway_id)
        self.spool_path = Path(spool_path if spool_path is not None else self.gateway.spool_path)
        if isinstance(broker, tuple):
            broker = replace(site.broker, host=broker[0], port=int(broker[1]))
        self.broker = broker or site.broker
        self.status_interval_s = status_interval_s
        self.max_inflight = max_inflight
        self.resend_after_s = resend_after_s
        self.confirm_grace_s = confirm_grace_s
        self.metrics_port = metrics_port if metrics_port is not None else self.gateway.metrics_port
        self.metrics_host = metrics_host or self.gateway.metrics_host
        self.metrics: MetricsServer | None = None
        self.publish_latency = Histogram()
        self._sent_at: dict[int, float] = {}
        self.max_spool_pages = max_spool_pages
        self.confirmed = self.gateway.delivery == "confirmed"
        self.signs = site.signatures != "off"
        self.key_path = key_file(self.spool_path, self.gateway.signing_key_file)
        self.signer: SigningKey | None = None
        kill_seq = os.environ.get(KILL_AFTER_SIGNING_ENV)
        self._kill_after_seq = int(kill_seq) if kill_seq and kill_seq.isdigit() else None
        self.started_ms = now_ms()
        self.published_refused = 0
        self.refused_reason: str | None = None
        self._refused_until = 0.0
        self._refused_backoff = REFUSED_RETRY_S
        self.confirmed_readings = 0
        self.republished_batches = 0
        self._awaiting: dict[int, float] = {}  # published, unconfirmed batch seq → when last sent
        self.published_batches = 0
        self.acked_readings = 0
        self.spool_errors = 0
        self.unspooled_dropped = 0
        self._pending: list[Reading] = []
        self._retry_scheduled = False
        self._inflight: dict[int, Batch] = {}
        self._held: dict[int, Batch] = {}
        self._held_since = 0.0
        self._replay: deque[Batch] = deque()
        self._connected_since_ms: int | None = None
        self._last_formed = 0.0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._ready = threading.Event()
        self.spool: Spool | None = None
        self.final_health: dict[str, Any] | None = None
        self.scheduler: Scheduler | None = None
        self.publisher: Publisher | None = None

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled: pollers, publisher and status reports."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._wake = asyncio.Event()
        if self.signs:
            self.signer = self._load_signer()
        try:
            self.spool = Spool(self.spool_path, int(self.gateway.spool_max_mb * 1024 * 1024),
                               max_pages=self.max_spool_pages, signer=self.signer, site=self.site.id,
                               gateway=self.gateway.id)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(self.site.file, None, f"gateways.{self.gateway.id}.spool_path",
                              f"cannot open the spool {self.spool_path}: {exc}",
                              "point spool_path (or --spool) at a writable file, e.g. under /var/lib/tanji") from None
        for batch in self.spool.pending_batches():
            if batch.published:
                self._awaiting[batch.seq] = time.monotonic()
            else:
                self._replay.append(batch)
        if self._replay:
            log.info("replaying %d unacknowledged batches (%d readings) from %s", len(self._replay),
                     sum(b.n for b in self._replay), self.spool_path)
        self.scheduler = Scheduler(self.gateway, self._on_reading)
        self.scheduler.log_plan()
        self.publisher = Publisher(self.site.id, self.gateway.id, self.broker, loop,
                                   on_connect=self._on_connect, on_disconnect=self._on_disconnect,
                                   on_ack=self._on_ack, max_inflight=self.max_inflight,
                                   on_message=self._on_confirm,
                                   subscriptions=(confirm_topic(self.site.id, self.gateway.id),) if self.confirmed else ())
        self.publisher.start()
        if self.metrics_port is not None:
            self.metrics = MetricsServer(self.metrics_host, self.metrics_port, self.metrics_text)
            await self.metrics.start()
        log.info("gateway %s of site %s: %d meters, spool %s", self.gateway.id, self.site.id,
                 len(self.gateway.meters), self.spool_path)
        tasks = [asyncio.create_task(self.scheduler.run(), name="pollers"),
                 asyncio.create_task(self._publish_loop(), name="publish"),
                 asyncio.create_task(self._status_loop(), name="status")]
        self._ready.set()
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._flush()
            if self.metrics is not None:
                await self.metrics.close()
            health = self.health()
            self.final_health = health  # what the process reported last (tests read it after stop)
            self.publisher.stop(health)
            # Callbacks paho scheduled before it stopped (a confirmation or a PUBACK that came
            # in while the offline status was sent) run now, while the spool is still open: run
            # after its close, a confirmation failed with "closed database" and its batches were
            # sent again at the next start.
            await asyncio.sleep(0)
            self._write_status_file(health)
            self.spool.close()
            log.info("gateway %s stopped", self.gateway.id)

    def _load_signer(self) -> SigningKey:
        """The gateway's signing key, made at the first start; says whether the site file registers it."""
        key, made = load_or_generate(self.key_path)
        registered = {k.key_id for k in self.gateway.keys}
        if made:
            log.warning("made a new signing key %s for gateway %s in %s (mode 0600); register its public key "
                        "in %s:\n%s", key.key_id, self.gateway.id, self.key_path, self.site.file,
                        registration_snippet(self.gateway.id, key.public_key))
        elif key.key_id not in registered:
            log.warning("the signing key %s (%s) is not registered for gateway %s in %s: accounting refuses "
                        "its batches (unknown_key) until it is; add:\n%s", key.key_id, self.key_path,
                        self.gateway.id, self.site.file, registration_snippet(self.gateway.id, key.public_key))
        log.info("signing batches with key %s (%s)", key.key_id, self.key_path)
        return key

    def start(self) -> None:
        """Run in a background thread (for the in-process demo and tests); returns when running."""
        failure: list[BaseException] = []

        def main() -> None:
            async def body() -> None:
                self._task = asyncio.current_task()
                await self.run()
            try:
                asyncio.run(body())
            except asyncio.CancelledError:
                pass
            except BaseException as exc:  # e.g. an unwritable spool: report it to start()'s caller
                failure.append(exc)
                self._ready.set()
        self._thread = threading.Thread(target=main, name=f"gateway-{self.gateway.id}", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("gateway did not start within 30 s")
        if failure:
            raise failure[0]

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the background thread started by `start()` (to stop `run()`, cancel its task)."""
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    # -- readings into the spool -------------------------------------------------------------

    def _on_reading(self, reading: Reading) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(reading)

    def _flush(self) -> None:
        """Commit the readings of this event-loop turn (the spool write precedes any publish).

        If the disk refuses the write (full, read-only after an SD card error), the readings stay
        in memory, at most MAX_UNSPOOLED of them, and the write is retried on the next turn:
        a short disk hiccup loses nothing, a dead disk cannot exhaust the memory.
        """
        if not self._pending or self.spool is None:
            return
        try:
            self.spool.add(self._pending)
        except sqlite3.Error as exc:
            self.spool_errors += 1
            if len(self._pending) > MAX_UNSPOOLED:
                self._thin_pending()
            if self.spool_errors == 1 or self.spool_errors % 100 == 0:
                log.error("cannot write the spool %s (%s); %d readings held in memory", self.spool_path, exc,
                          len(self._pending))
            if not self._retry_scheduled:
                self._retry_scheduled = True
                asyncio.get_running_loop().call_later(0.5, self._retry_flush)
            return
        self._pending = []

    def _thin_pending(self) -> None:
        """Held in memory too long: drop gauge-only readings, then every second counter reading
        per meter of the oldest half (counters are cumulative: time resolution is lost, not energy)."""
        before = len(self._pending)
        kept = [r for r in self._pending if not _COUNTERS.isdisjoint(r.values)]
        if len(kept) > MAX_UNSPOOLED * 0.9:
            half = len(kept) // 2
            seen: dict[str, int] = {}
            old = []
            for r in kept[:half]:
                seen[r.meter] = seen.get(r.meter, 0) + 1
                if seen[r.meter] % 2:
                    old.append(r)
            kept = old + kept[half:]
        self._pending = kept
        self.unspooled_dropped += before - len(kept)

    def _retry_flush(self) -> None:
        self._retry_scheduled = False
        self._flush()

    # -- publishing --------------------------------------------------------------------------

    def _on_connect(self, session_present: bool = True) -> None:
        self._connected_since_ms = now_ms()
        if not session_present and self._awaiting:
            # The broker has no session of ours: it lost its state, maybe with batches it had
            # acknowledged but not yet delivered to accounting. Send every unconfirmed one again.
            log.warning("the broker lost our session: republishing %d unconfirmed batches", len(self._awaiting))
            self._republish(list(self._awaiting))
        assert self.publisher is not None
        # Replace the retained `offline` (last will, or a clean stop) at once, not at the next report.
        self.publisher.publish_status(status_payload(self.site.id, self.gateway.id, "online", **self.health()))
        if self._inflight:
            # paho resends these on the persistent session; hold new batches until they are acked.
            self._held = dict(self._inflight)
            self._held_since = time.monotonic()
        self._wake.set()

    def _on_disconnect(self) -> None:
        self._connected_since_ms = None

    def _on_ack(self, mid: int, refused: str | None = None) -> None:
        batch = self._inflight.pop(mid, None)
        sent = self._sent_at.pop(mid, None)
        if batch is None:
            return
        if sent is not None:
            self.publish_latency.observe(time.monotonic() - sent)
        self._held.pop(mid, None)
        assert self.spool is not None
        if refused is not None:
            # The broker did not take it (MQTT 5 reason code, e.g. 135 not authorized): keep
            # the readings, raise the alarm, try again later, in sequence order.
            self.published_refused += 1
            if self.refused_reason is None:
                log.error("ALARM: the broker refused batch %d (%s); its %d readings stay in the spool, "
                          "retrying every %g-60 s (check the broker's ACL for this gateway)",
                          batch.seq, refused, batch.n, REFUSED_RETRY_S)
            self.refused_reason = refused
            self._replay = deque(sorted([*self._replay, batch], key=lambda b: b.seq))
            now = time.monotonic()
            if self._refused_until <= now:
                self._refused_until = now + self._refused_backoff
                self._refused_backoff = min(self._refused_backoff * 2, 60.0)
            return
        if self.refused_reason is not None:
            log.info("the broker takes our batches again")
            self.refused_reason = None
        self._refused_backoff = REFUSED_RETRY_S
        try:
            if self.confirmed:
                self.spool.mark_published(batch.seq)
                self._awaiting[batch.seq] = time.monotonic()
            else:
                self.spool.ack(batch.seq)
        except sqlite3.Error as exc:
            # The broker has it; the row stays and is replayed after a restart (a harmless duplicate).
            log.error("cannot update acknowledged batch %d in the spool: %s", batch.seq, exc)
        self.acked_readings += batch.n
        self._wake.set()

    def _on_confirm(self, topic: str, payload: bytes) -> None:
        """Accounting stored these batches durably: only now do they leave the spool."""
        if self.spool is None:
            return
        seqs = [s for s in decode_confirm(payload) if s < self.spool.next_seq]
        if not seqs:
            return
        try:
            self.confirmed_readings += self.spool.confirm(seqs)
        except sqlite3.Error as exc:
            log.error("cannot delete confirmed batches from the spool: %s", exc)
            return
        for seq in seqs:
            self._awaiting.pop(seq, None)
        done = set(seqs)
        if any(b.seq in done for b in self._replay):
            self._replay = deque(b for b in self._replay if b.seq not in done)
        newest, now = max(seqs), time.monotonic()
        lost = [seq for seq, sent in self._awaiting.items() if seq < newest and now - sent > self.confirm_grace_s]
        if lost:
            log.warning("%d published batches (seq %d..%d) were never confirmed while newer ones were: "
                        "republishing them", len(lost), min(lost), max(lost))
            self._republish(lost)

    def _republish(self, seqs: list[int]) -> None:
        assert self.spool is not None
        batches = [b for seq in sorted(seqs) if (b := self.spool.batch(seq)) is not None]
        now = time.monotonic()
        for b in batches:
            self._awaiting[b.seq] = now
        self.republished_batches += len(batches)
        queued = {b.seq for b in self._replay}
        self._replay = deque(sorted([*self._replay, *(b for b in batches if b.seq not in queued)],
                                    key=lambda b: b.seq))
        if self._loop is not None:
            self._wake.set()

    def _send(self, batch: Batch, backlog: bool) -> None:
        assert self.publisher is not None
        payload = encode_batch_body(self.site.id, self.gateway.id, batch.seq, batch.body,
                                    backlog=backlog, sent_ms=now_ms(), sig=batch.sig)
        mid = self.publisher.publish_batch(payload)
        self._inflight[mid] = batch
        self._sent_at[mid] = time.monotonic()
        self.published_batches += 1

    def _fill_window(self) -> None:
        assert self.spool is not None and self.publisher is not None
        if self._connected_since_ms is None or not self.publisher.connected:
            return
        if time.monotonic() < self._refused_until:
            return
        if self._held:
            if time.monotonic() - self._held_since < self.resend_after_s:
                return
            log.warning("%d batches were not acknowledged after reconnecting; republishing them", len(self._held))
            for mid in list(self._held):
                self._inflight.pop(mid, None)
            self._replay.extendleft(sorted(self._held.values(), key=lambda b: b.seq, reverse=True))
            self._held = {}
        while len(self._inflight) < self.max_inflight and self._replay:
            self._send(self._replay.popleft(), backlog=True)
        self._flush()
        while len(self._inflight) < self.max_inflight:
            full = self.spool.queued >= self.gateway.batch_max_readings
            due = time.monotonic() - self._last_formed >= self.gateway.publish_interval_s
            if not (full or (due and self.spool.queued)):
                return
            batch = self.spool.next_batch(self.gateway.batch_max_readings)
            if batch is None:
                return
            if self._kill_after_seq is not None and batch.seq >= self._kill_after_seq:
                log.warning("fault injection: SIGKILL after signing batch %d, before publishing it", batch.seq)
                os.kill(os.getpid(), signal.SIGKILL)
            self._last_formed = time.monotonic()
            self._send(batch, backlog=batch.oldest_ts_ms < self._connected_since_ms - BACKLOG_GRACE_MS)

    async def _publish_loop(self) -> None:
        while True:
            try:
                self._fill_window()
            except sqlite3.Error as exc:
                log.error("cannot form a batch from the spool %s: %s; retrying", self.spool_path, exc)
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: wait_for can swallow a cancel (3.11)
                async with asyncio.timeout(self.gateway.publish_interval_s):
                    await self._wake.wait()
            self._wake.clear()

    # -- health ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Polls, errors per meter, spool depth and publish lag: the status topic's content."""
        meters = self.scheduler.health() if self.scheduler else {}
        out: dict[str, Any] = {
            "uptime_s": round((now_ms() - self.started_ms) / 1000, 1),
            "connected": bool(self.publisher and self.publisher.connected),
            "polls": sum(m["polls"] for m in meters.values()),
            "poll_errors": sum(m["errors"] for m in meters.values()),
            "published_batches": self.published_batches,
            "acked_readings": self.acked_readings,
            "inflight_batches": len(self._inflight),
            "spool_write_errors": self.spool_errors,
            "unspooled_dropped": self.unspooled_dropped,
            "publish_refused": self.published_refused,
            "publish_refused_alarm": self.refused_reason,
            "delivery": self.gateway.delivery,
            "awaiting_confirmation": len(self._awaiting),
            "confirmed_readings": self.confirmed_readings,
            "republished_batches": self.republished_batches,
            "signing_key": self.signer.key_id if self.signer is not None else None,
            **READINGS.health(),
        }
        if self.spool is not None:
            out.update(self.spool.stats())
            out["chain"] = self.spool.chain
        out["meters"] = meters
        return out

    def metrics_text(self) -> str:
        """The Prometheus exposition of `health()`, the lines' counters and the PUBACK latency."""
        lines = self.scheduler.line_health() if self.scheduler else {}
        return exposition(self.gateway.id, self.health(), lines, self.publish_latency)

    def _write_status_file(self, health: dict[str, Any]) -> None:
        """Atomically replace `<spool>.status.json` (read by `tanji gateway status`)."""
        path = status_file(self.spool_path)
        body = {"site": self.site.id, "gateway": self.gateway.id, "pid": os.getpid(), "ts_ms": now_ms(), **health}
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(body, indent=1))
            tmp.replace(path)
        except OSError as exc:
            log.error("cannot write %s: %s", path, exc)

    async def _status_loop(self) -> None:
        while True:
            assert self.spool is not None and self.publisher is not None
            try:
                self.spool.check_size()
                health = self.health()
            except sqlite3.Error as exc:
                log.error("cannot read the spool %s: %s", self.spool_path, exc)
                await asyncio.sleep(self.status_interval_s)
                continue
            if self.publisher.connected:
                self.publisher.publish_status(status_payload(self.site.id, self.gateway.id, "online", **health))
            if self.spool.alarm:
                log.warning("spool %s is %d%% full (%d readings waiting)", self.spool_path,
                            100 * health["spool_bytes"] // max(health["spool_max_bytes"] or 1, 1),
                            health["spool_depth"])
            self._write_status_file(health)
            await asyncio.sleep(self.status_interval_s)

"""One deployment's PACT host system: clients, tokens, published footprints, events, and the
background thread that publishes closed months and delivers events.

    host = PactHost(service, PactClients.from_file("pact.yaml"), state_dir=Path("/var/lib/tanji"),
                    public_url="https://pact.plant.example:8443")
    app = create_app(service, pact=host)     # the app starts and stops the host with itself

State files in `state_dir` (all SQLite, beside the engine checkpoints): `pact-tokens.sqlite`,
`pact-published.sqlite`, `pact-outbox.sqlite`. Without a state dir everything is in memory
(tests; the demo keeps its state in its work directory).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accounting.api.types import AccountingServiceLike, engines_restored
from accounting.pact import events
from accounting.pact.clients import PactClient, PactClients
from accounting.pact.document import EXTENSION_PATH
from accounting.pact.filters import Criteria
from accounting.pact.outbox import DeliveryError, Outbox, OutboxRow
from accounting.pact.published import Published, PublishedStore
from accounting.pact.publisher import Publisher, figures
from accounting.pact.ratelimit import AuthLimiter
from accounting.pact.tokens import TokenStore

log = logging.getLogger(__name__)

SCAN_INTERVAL_S = 10.0
#: At most this many footprints go into one RequestFulfilled event.
MAX_PFS_PER_ANSWER = 100


class PactHost:
    """Everything PACT needs besides the HTTP routes; thread-safe for the API's workers."""

    def __init__(self, service: AccountingServiceLike, clients: PactClients, *,
                 state_dir: str | Path | None = None, public_url: str | None = None,
                 require_https: bool = True, scan_interval_s: float = SCAN_INTERVAL_S,
                 retry_base_s: float = 10.0, limiter: AuthLimiter | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.clients = clients
        self.public_url = (clients.public_url or public_url or "https://localhost").rstrip("/")
        self.require_https = require_https
        self.scan_interval_s = scan_interval_s
        state = Path(state_dir) if state_dir is not None else None
        if state is not None:
            state.mkdir(parents=True, exist_ok=True)
        self.tokens = TokenStore(state / "pact-tokens.sqlite" if state else None, clock=clock)
        self.limiter = limiter or AuthLimiter()
        self.published = PublishedStore(state / "pact-published.sqlite" if state else None)
        self.outbox = Outbox(state / "pact-outbox.sqlite" if state else None, retry_base_s=retry_base_s,
                             clock=clock)
        self.publisher = Publisher(service, self.published, products=clients.products,
                                   schema_url=lambda: self.schema_url, notify=self._announce, clock=clock)
        self.clock = clock
        self._work = threading.Lock()  # one publisher/delivery pass at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recomputes: list[tuple[str, int, int, str | None]] = []

    @property
    def schema_url(self) -> str:
        return self.public_url + EXTENSION_PATH

    @property
    def events_source(self) -> str:
        return self.public_url + "/3/events"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="pact-host", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.outbox.wake.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def close(self) -> None:
        self.stop()
        for part in (self.tokens, self.published):
            part.close()

    def _run(self) -> None:
        next_scan = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_scan:
                next_scan = time.monotonic() + self.scan_interval_s
                self.run_once(deliver=False)
            self.deliver_due()
            pending = self.outbox.next_due_s()
            wait = min(next_scan - time.monotonic(), pending if pending is not None else 3600.0)
            self.outbox.wake.wait(max(0.05, wait))
            self.outbox.wake.clear()

    def run_once(self, *, deliver: bool = True) -> list[str]:
        """One pass: recomputations asked for, a publication scan, then due deliveries."""
        with self._work:
            done: list[str] = []
            while self._recomputes and engines_restored(self.service):
                site_id, start_ms, end_ms, spec = self._recomputes.pop(0)
                done += self.publisher.recomputed(site_id, start_ms, end_ms, spec)
            try:
                if engines_restored(self.service):  # the next scan publishes what the restore brings
                    done += self.publisher.scan()
            except Exception:
                log.exception("PACT: publication scan failed")
        if deliver:
            self.deliver_due()
        return done

    def recomputed(self, site_id: str, start_ms: int, end_ms: int, dataset_spec: str | None) -> None:
        """An explicit recomputation happened: revise the published months it touches (soon,
        on the host's thread, not on the request's)."""
        self._recomputes.append((site_id, start_ms, end_ms, dataset_spec))
        self.outbox.wake.set()

    def publish_shipment(self, document: dict[str, Any], *, site_id: str, product_id: str,
                         period: tuple[int, int], shipment_id: str, supersedes: str | None = None) -> Published:
        """Publish a shipment line's footprint (`accounting.shipments`), announced like a month's."""
        row = self.published.publish(document, site_id=site_id, product_id=product_id, period=period,
                                     created_ms=int(self.clock() * 1000), figures=figures(document),
                                     live_revision=0, dataset=None, supersedes=supersedes,
                                     shipment_id=shipment_id)
        self._announce([row.id] + ([supersedes] if supersedes else []), site_id, product_id)
        return row

    # -- what partners may see -------------------------------------------------------------

    def visible(self, client: PactClient, item: Published) -> bool:
        return client.may_see(item.site_id, item.product_id)

    def select(self, client: PactClient, criteria: Criteria, upto_seq: int | None = None) -> tuple[list[Published], bool]:
        """(granted footprints matching `criteria` in publication order, whether some matched
        that the client may not see)."""
        matching = [p for p in self.published.all(upto_seq) if criteria.matches(p.document)]
        granted = [p for p in matching if self.visible(client, p)]
        return granted, len(granted) < len(matching)

    # -- events -------------------------------------------------------------------------

    def _announce(self, pf_ids: list[str], site_id: str, product_id: str) -> None:
        """Queue a Published event for every partner with an events endpoint granted the product."""
        for client in self.clients:
            if client.events is not None and client.may_see(site_id, product_id):
                self.outbox.add(client.client_id, "event",
                                events.published(pf_ids, self.events_source, int(self.clock() * 1000)))

    def request(self, client: PactClient, event: dict[str, Any]) -> None:
        """Accept a RequestCreated event for asynchronous answering."""
        self.outbox.add(client.client_id, "request", event)

    def _answer(self, client: PactClient, request: dict[str, Any]) -> dict[str, Any]:
        incoming = events.parse(request)
        now = int(self.clock() * 1000)
        found, hidden = self.select(client, incoming.criteria or Criteria())
        active = [p for p in found if p.status == "Active"] or found
        if active:
            return events.fulfilled(incoming.id, [p.document for p in active[-MAX_PFS_PER_ANSWER:]],
                                    self.events_source, now)
        if hidden:
            return events.rejected(incoming.id, "AccessDenied",
                                   "the requested footprints are not shared with this client", self.events_source, now)
        return events.rejected(incoming.id, "NotFound",
                               "no published footprint matches the request (only closed months with "
                               "production are published)", self.events_source, now)

    def deliver_due(self) -> int:
        """Answer and deliver every due outbox row; how many were delivered."""
        delivered = 0
        for row in self.outbox.due():
            if self._stop.is_set():
                break
            delivered += self._deliver(row)
        return delivered

    def _deliver(self, row: OutboxRow) -> int:
        client = self.clients.get(row.client_id)
        if client is None or client.events is None:
            self.outbox.failed(row, f"client {row.client_id!r} has no events endpoint configured (any more)")
            return 0
        body = row.body
        try:
            if row.kind == "request":
                body = self._answer(client, row.body)
                self.outbox.answered(row.seq, body)
            self.outbox.send(client.events, body)
        except (DeliveryError, events.EventError) as exc:
            self.outbox.failed(row, str(exc))
            return 0
        except Exception as exc:  # never let one event stop the thread
            log.exception("PACT: delivering event %d", row.seq)
            self.outbox.failed(row, repr(exc))
            return 0
        self.outbox.delivered(row.seq)
        log.info("PACT: delivered %s to %s", body.get("type"), client.client_id)
        return 1

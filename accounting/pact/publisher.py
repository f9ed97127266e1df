"""Which footprints are published, and how a published one is revised.

The unit of publication is a product's calendar month (site time zone). A month is published
once it is closed: it has ended and the engine has closed its last hour (the record is no
longer `provisional`). A month without production is not published. A published footprint is
never changed; a revision is a new footprint:

- late readings reopen hours of a published month (the record's `revision` grows): the month
  is computed again, from the live engine, or, when the published footprint came from a
  recomputation, by recomputing the month with the same factor dataset version;
- an explicit recomputation (`POST /api/v1/recompute`, optionally with a new factor version)
  recomputes every published month it touches with that dataset.

If the figures differ, a new footprint is published with `precedingPfIds` naming the older
ones, the old one becomes Deprecated, and every partner granted the product is sent a
Published event (new and deprecated ids). If they do not, nothing is published.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from accounting.api import windows
from accounting.api.deps import site_tz
from accounting.api.responses import plain
from accounting.api.types import AccountingServiceLike
from accounting.pact.document import PactProduct, product_footprint, publishable
from accounting.pact.published import Published, PublishedStore
from tanji.methods import dataset_ref
from tanji.site import Product, Site

log = logging.getLogger(__name__)

#: Months looked at, counting back from the current one.
HORIZON_MONTHS = 24
VALIDITY_DAYS = 365
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Period:
    site: Site
    product: Product
    start_ms: int
    end_ms: int


def closed_months(site: Site, now_ms: int, horizon: int = HORIZON_MONTHS) -> list[tuple[int, int]]:
    """The site's calendar months that ended before now, newest first."""
    tz = site_tz(site)
    out: list[tuple[int, int]] = []
    start, _ = windows.window_bounds("month", now_ms, tz)
    for _ in range(horizon):
        prev_start, prev_end = windows.window_bounds("month", start - 1, tz)
        out.append((prev_start, prev_end))
        start = prev_start
    return out


def _month(period: Period) -> str:
    """The period's month as the site names it (YYYY-MM, local time)."""
    return datetime.fromtimestamp(period.start_ms / 1000, site_tz(period.site)).strftime("%Y-%m")


def figures(document: dict[str, Any]) -> str:
    """What makes two footprints of a period different: the pcf block and the extension data
    (minus the engine's revision counter); ids, dates and comments are not figures."""
    data = {k: v for k, v in document["extensions"][0]["data"].items() if k != "revision"}
    return json.dumps({"pcf": document["pcf"], "data": data, "classes": document.get("productClassifications")},
                      sort_keys=True, separators=(",", ":"))


class Publisher:
    """Publishes closed months of every product and their revisions into a `PublishedStore`.

    `notify(ids, site_id, product_id)` is called after each publication (the host turns it
    into Published events). Not thread-safe: one thread (the host's) calls `scan` and
    `recomputed`.
    """

    def __init__(self, service: AccountingServiceLike, store: PublishedStore, *,
                 products: dict[tuple[str, str], PactProduct] | None = None,
                 schema_url: Callable[[], str], notify: Callable[[list[str], str, str], None] | None = None,
                 validity_days: int = VALIDITY_DAYS, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.store = store
        self.products = products or {}
        self.schema_url = schema_url
        self.notify = notify or (lambda ids, site, product: None)
        self.validity_days = validity_days
        self.clock = clock
        self._told: set[tuple[str, str, int, str]] = set()  # reasons already logged

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def periods(self) -> list[Period]:
        now = self._now_ms()
        return [Period(site, product, start, end)
                for site in (self.service.sites[k] for k in sorted(self.service.sites))
                for start, end in closed_months(site, now)
                for product in site.products]

    def scan(self) -> list[str]:
        """Publish what closed since the last scan and what late readings revised; the new ids."""
        published: list[str] = []
        for period in self.periods():
            try:
                published += self._scan_period(period)
            except Exception:  # one product's trouble must not stop the others
                log.exception("PACT: cannot publish %s/%s for %d", period.site.id, period.product.id,
                              period.start_ms)
        return published

    def _record(self, period: Period) -> dict[str, Any] | None:
        found = self.service.footprints(period.site.id, start_ms=period.start_ms, end_ms=period.end_ms,
                                        product_id=period.product.id)
        return plain(found[0]) if found else None

    def _scan_period(self, period: Period) -> list[str]:
        record = self._record(period)
        if record is None or record.get("provisional"):
            return []
        latest = self.store.latest(period.site.id, period.product.id, period.start_ms)
        revision = int(record.get("revision") or 0)
        if latest is None:
            return self._publish(period, record, None, revision, None)
        if revision <= latest.live_revision:
            return []
        if latest.dataset is not None:  # it came from a recomputation: recompute with that dataset
            recomputed = self._recompute(period, latest.dataset)
            if recomputed is None:
                return []
            record = recomputed
        note = f"Revision of {latest.id}: late readings reopened hours of the period."
        return self._publish(period, record, latest, revision, latest.dataset, note)

    def recomputed(self, site_id: str, start_ms: int, end_ms: int, dataset_spec: str | None) -> list[str]:
        """After an explicit recomputation of [start_ms, end_ms): revise every published month it
        touches with that dataset (the live one when `dataset_spec` is None)."""
        out: list[str] = []
        for period in self.periods():
            if period.site.id != site_id or period.end_ms <= start_ms or period.start_ms >= end_ms:
                continue
            latest = self.store.latest(site_id, period.product.id, period.start_ms)
            if latest is None or latest.status != "Active":
                continue
            record = self._recompute(period, dataset_spec)
            if record is None:
                continue
            live = self._record(period)
            revision = int((live or {}).get("revision") or 0)
            note = (f"Revision of {latest.id}: recomputed with factor dataset {record.get('dataset_id')} "
                    f"version {record.get('dataset_version')}.")
            out += self._publish(period, record, latest, revision,
                                 dataset_ref(record.get('dataset_id'), record.get('dataset_version')), note)
        return out

    def _recompute(self, period: Period, dataset_spec: str | None) -> dict[str, Any] | None:
        recompute = getattr(self.service, "recompute", None)
        if recompute is None:
            return None
        result = recompute(period.site.id, start_ms=period.start_ms, end_ms=period.end_ms,
                           dataset_version=dataset_spec)
        for fp in result.get("footprints", []):
            if fp.get("product_id") == period.product.id:
                return plain({**fp, "window_start_ms": period.start_ms, "window_end_ms": period.end_ms})
        return None

    def _publish(self, period: Period, record: dict[str, Any], latest: Published | None, revision: int,
                 dataset: str | None, note: str | None = None) -> list[str]:
        declared = self.products.get((period.site.id, period.product.id), PactProduct())
        reason = publishable(record, declared)
        if reason is not None:
            if latest is not None and latest.status == "Active":
                # The period no longer has a footprint (e.g. its units were corrected away).
                self.store.deprecate(latest.id)
                self.notify([latest.id], period.site.id, period.product.id)
                return [latest.id]
            key = (period.site.id, period.product.id, period.start_ms, reason)
            if key not in self._told:
                self._told.add(key)
                level = logging.DEBUG if not record.get("units") else logging.WARNING
                log.log(level, "PACT: %s/%s %s not published: %s", period.site.id, period.product.id,
                        _month(period), reason)
            return []
        now = self._now_ms()
        preceding = (latest.preceding + [latest.id]) if latest is not None else None
        document = product_footprint(
            pf_id=str(uuid.uuid4()), created_ms=now, site=period.site, product=period.product,
            record=record, declared=declared,
            validity_ms=(period.end_ms, period.end_ms + self.validity_days * DAY_MS),
            schema_url=self.schema_url(), preceding=preceding, revision_note=note)
        document = plain(document)
        if latest is not None and latest.figures == figures(document):
            self.store.note_revision(latest.id, revision)  # same figures: nothing to publish
            return []
        row = self.store.publish(document, site_id=period.site.id, product_id=period.product.id,
                                 period=(period.start_ms, period.end_ms), created_ms=now,
                                 figures=figures(document), live_revision=revision, dataset=dataset,
                                 supersedes=latest.id if latest is not None else None)
        log.info("PACT: published %s for %s/%s %s%s", row.id, period.site.id, period.product.id, _month(period),
                 f" (replaces {latest.id})" if latest is not None else "")
        ids = [row.id] + ([latest.id] if latest is not None else [])
        self.notify(ids, period.site.id, period.product.id)
        return [row.id]

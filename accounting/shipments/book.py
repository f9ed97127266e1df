"""The shipment book: record, check, issue and supersede shipments; what the API calls.

    book = ShipmentBook(service, state_dir="/var/lib/tanji", pact=host)
    app = create_app(service, pact=host, shipments=book)   # the app starts and stops the book

Lifecycle of a shipment:
- **draft**: recorded (over the API or a CSV import), checked, its units drawn from lots and
  held; its figures are computed live from the lots' records on each read; a draft can be
  deleted (its units are freed).
- **issued**: `issue` freezes the figures into document version 1 (the JSON stored exactly as
  issued, the printable page rendered from it, one PACT footprint per line published); nothing
  of it changes afterwards.
- **superseded**: when the figures of its lots change — late readings revise a lot's hours
  (its record's `revision` grows; found by a scan every `scan_interval_s` of the shipments
  whose lots ended within `live_horizon_days`), or `POST /api/v1/recompute` recomputes a period
  its lots are in,
  with that factor dataset — a new version is issued from the new figures with the same draws,
  the old one is marked superseded (its PACT footprints Deprecated, the new ones naming them in
  `precedingPfIds`). Same figures: nothing is issued.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accounting.api.types import AccountingServiceLike, engines_restored
from accounting.errors import (
    ShipmentError,
    ShipmentInputError,
    ShipmentIssuedError,
    UnknownProductError,
    UnknownShipmentError,
)
from accounting.pact.document import EXTENSION_PATH, PactProduct
from accounting.shipments import figures as fig
from accounting.shipments.csv_import import parse_csv
from accounting.shipments.declaration import Declaration, declaration_from_dict, parse_declaration
from accounting.shipments.drawing import Draw, draw_lines
from accounting.shipments.lots import Lot, Lots, product_of, whole_units
from accounting.shipments.pact import line_footprint, why_not
from accounting.shipments.recompute import recomputed_records
from accounting.shipments.store import ShipmentStore
from tanji.methods import dataset_ref

log = logging.getLogger(__name__)

SCAN_INTERVAL_S = 30.0
#: A lot listing returns at most this many (the newest).
MAX_LOTS_LISTED = 500
LIVE_HORIZON_DAYS = 35
DAY_MS = 86_400_000


def figures_key(lines: list[dict[str, Any]]) -> str:
    """What makes two versions' figures different: every figure of every line and lot, not the
    revision counters or the provisional flag."""
    def strip(record: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in record.items() if k not in ("revision", "provisional", "lots")}
        out["lots"] = [{k: v for k, v in lot.items() if k not in ("revision", "provisional")}
                       for lot in record["lots"]]
        return out
    return json.dumps([strip(r) for r in lines], sort_keys=True, separators=(",", ":"), default=float)


class ShipmentBook:
    """Shipments of a deployment over the service's footprint records; thread-safe."""

    def __init__(self, service: AccountingServiceLike, *, state_dir: str | Path | None = None,
                 pact: Any = None, scan_interval_s: float = SCAN_INTERVAL_S,
                 live_horizon_days: float = LIVE_HORIZON_DAYS, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        state = Path(state_dir) if state_dir is not None else None
        if state is not None:
            state.mkdir(parents=True, exist_ok=True)
        self.store = ShipmentStore(state / "shipments.sqlite" if state else None)
        self.pact = pact
        self.scan_interval_s = scan_interval_s
        self.live_horizon_ms = int(live_horizon_days * DAY_MS)
        self.clock = clock
        self._lock = threading.RLock()
        self._recomputes: list[tuple[str, int, int, str | None]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="shipments", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.store.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the scan must go on whatever one pass met
                log.exception("shipments: scan failed")
            self._wake.wait(self.scan_interval_s)
            self._wake.clear()

    def run_once(self) -> list[tuple[str, int]]:
        """Recomputations asked for, then a scan of live revisions; the versions issued."""
        done: list[tuple[str, int]] = []
        if not engines_restored(self.service):  # starting: the next pass scans the restored engines
            return done
        with self._lock:
            while self._recomputes:
                done += self._recomputed(*self._recomputes.pop(0))
            done += self.scan()
        return done

    # -- recording ------------------------------------------------------------------------

    def create(self, document: Any, *, issue: bool = False) -> dict[str, Any]:
        """Check and record one shipment as a draft (issued at once with `issue`)."""
        decl = parse_declaration(document, self.service.sites)
        self._record([decl])
        return self.issue(decl.shipment_id) if issue else self.get(decl.shipment_id)

    def import_csv(self, text: str, *, site_id: str | None = None, issue: bool = False) -> list[dict[str, Any]]:
        """Record every shipment of a CSV export, all or none (errors name the line)."""
        decls = parse_csv(text, self.service.sites, site_id)
        self._record(decls)
        return [self.issue(d.shipment_id) if issue else self.get(d.shipment_id) for d in decls]

    def _record(self, decls: list[Declaration]) -> None:
        with self._lock:
            lots = Lots(self.service, self._now_ms())
            pending: dict[tuple[str, str, str], dict[str, int]] = {}

            def shipped(site: str, product: str, lot: str) -> dict[str, int]:
                return {**self.store.shipped(site, product, lot), **pending.get((site, product, lot), {})}

            rows = []
            for decl in decls:
                site = self.service.sites[decl.site_id]
                try:
                    draws = draw_lines(decl, site, lots, shipped)
                except ShipmentError as exc:
                    source = decl.notes.get("source")
                    raise type(exc)(f"{source} (shipment {decl.shipment_id}): {exc}" if source
                                    else f"shipment {decl.shipment_id}: {exc}") from None
                for d in draws:
                    mine = pending.setdefault(d.lot.key(), {})
                    mine[decl.shipment_id] = mine.get(decl.shipment_id, 0) + d.units
                rows.append((decl.to_dict(), [_draw_row(i, d) for i, d in enumerate(draws)]))
            self.store.add(rows, self._now_ms())
        for decl in decls:
            log.info("shipment %s recorded (draft): %s", decl.shipment_id,
                     ", ".join(f"{ln.product_id} x {ln.quantity}" for ln in decl.lines))

    def delete(self, shipment_id: str) -> None:
        with self._lock:
            self.store.delete_draft(shipment_id)

    # -- reading --------------------------------------------------------------------------

    def list(self, site_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        out = []
        for row in self.store.shipments(site_id, status):
            decl = row.pop("declaration")
            totals = self.store.document(row["shipment_id"])[0]["totals"] if row["status"] == "issued" else None
            out.append({**row, "kind": decl.get("kind"), "totals": totals, "destination": decl["destination"], "buyer": decl["buyer"],
                        "lines": [{"product_id": ln["product_id"], "quantity": ln["quantity"]} for ln in decl["lines"]],
                        "units": sum(ln["quantity"] for ln in decl["lines"]),
                        "superseded_versions": sum(1 for v in row["versions"] if v["status"] == "superseded")})
        return out

    def lots(self, site_id: str, product_id: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """The product's closed lots that ended in [start_ms, end_ms), oldest first, with their units,
        what recorded shipments draw from each and what is left: what an export clerk ships from."""
        site = self.service.sites[site_id]
        if product_id not in {p.id for p in site.products}:
            raise UnknownProductError(f"site {site_id} makes no product {product_id!r}; its products: "
                                      f"{', '.join(sorted(p.id for p in site.products))}")
        lots = Lots(self.service, self._now_ms())
        out = []
        for lot in lots.candidates(site, product_id, start_ms, end_ms)[-MAX_LOTS_LISTED:]:
            record = lots.record(lot) or {}
            shipped = self.store.shipped(*lot.key())
            units = whole_units(record)
            out.append({"kind": lot.kind, "lot_id": lot.lot_id, "start_ms": lot.start_ms, "end_ms": lot.end_ms,
                        "units": units, "shipped": shipped, "left": units - sum(shipped.values()),
                        "provisional": bool(record.get("provisional")),
                        "kgco2e_per_unit_location": record.get("kgco2e_per_unit_location"),
                        "kgco2e_per_unit_market": record.get("kgco2e_per_unit_market")})
        return out

    def get(self, shipment_id: str) -> dict[str, Any]:
        """The shipment with its figures: a draft's computed now, an issued one's as issued."""
        row = self.store.shipment(shipment_id)
        versions = self.store.versions(shipment_id)
        out = {"shipment_id": shipment_id, "site_id": row["site_id"], "status": row["status"],
               "version": row["version"], "declaration": row["declaration"], "created_ms": row["created_ms"],
               "versions": versions}
        if row["status"] == "issued":
            doc, *_ = self.store.document(shipment_id)
            out |= {"issued_ms": doc["issued_ms"], "lines": doc["lines"], "totals": doc["totals"], "pact": doc["pact"]}
        else:
            lines = self._lines(row, Lots(self.service, self._now_ms()))
            out |= {"lines": lines, "totals": fig.totals(lines), "pact": []}
        return out

    def document(self, shipment_id: str, version: int | None = None) -> dict[str, Any]:
        """An issued version exactly as issued, with its current status."""
        doc, _, _, _ = self.store.document(shipment_id, version)
        return doc

    def pact_footprints(self, shipment_id: str, version: int | None = None) -> list[dict[str, Any]]:
        doc = self.document(shipment_id, version)
        if self.pact is None:
            return []
        out = []
        for item in doc.get("pact", []):
            if item.get("id"):
                found = self.pact.published.get(item["id"])
                if found is not None:
                    out.append(found.document)
        return out

    def _draws(self, row: dict[str, Any]) -> list[Draw]:
        return [Draw(d["line"], Lot(d["site_id"], d["product_id"], d["lot_kind"], d["lot_id"], d["start_ms"],
                                    d["end_ms"], True), d["units"], d["lot_units"], d["rule"]) for d in row["draws"]]

    def _lines(self, row: dict[str, Any], lots: Lots) -> list[dict[str, Any]]:
        decl = declaration_from_dict(row["declaration"])
        site = self.service.sites[decl.site_id]
        draws = self._draws(row)
        out = []
        for n, line in enumerate(decl.lines):
            mine = [d for d in draws if d.line == n]
            records = [lots.record(d.lot) or {} for d in mine]
            out.append(fig.line_record(shipment_id=decl.shipment_id, line_no=n, site_id=site.id,
                                       product=product_of(site, line.product_id), quantity=line.quantity,
                                       draws=mine, records=records))
        return out

    # -- issuing --------------------------------------------------------------------------

    def issue(self, shipment_id: str) -> dict[str, Any]:
        """Freeze a draft's figures into document version 1 (and its PACT footprints)."""
        with self._lock:
            row = self.store.shipment(shipment_id)
            if row["status"] != "draft":
                raise ShipmentIssuedError(f"shipment {shipment_id!r} is already issued (version {row['version']}); "
                                          "an issued shipment is immutable")
            lines = self._lines(row, Lots(self.service, self._now_ms()))
            open_lots = [f"{ln['product_id']} {lot['kind']} {lot['lot_id']}" for ln in lines for lot in ln["lots"]
                         if lot["provisional"]]
            if open_lots:
                raise ShipmentInputError(f"shipment {shipment_id}: figures still provisional for {', '.join(open_lots)} "
                                         "(an hour closes 15 minutes after its end); issue it once they are closed")
            self._issue(row, lines, None, None, None)
        return self.get(shipment_id)

    def _issue(self, row: dict[str, Any], lines: list[dict[str, Any]], previous: dict[str, Any] | None,
               dataset: str | None, reason: str | None) -> int:
        now = self._now_ms()
        sid = row["shipment_id"]
        decl = row["declaration"]
        site = self.service.sites[row["site_id"]]
        version = (previous["version"] + 1) if previous else 1
        pact_rows, documents = self._pact(site, decl, lines, version, previous, now)
        document = {
            "shipment_id": sid, "version": version, "status": "issued", "issued_ms": now,
            "site": {"id": site.id, "name": site.name, "province": site.province, "timezone": site.timezone},
            "declaration": decl, "lines": lines, "totals": fig.totals(lines), "dataset": dataset,
            "supersedes": previous["version"] if previous else None, "reason": reason, "pact": pact_rows,
        }
        self.store.issue(sid, document, figures_key(lines), now, dataset,
                         supersedes=previous["version"] if previous else None)
        for line, doc, supersedes in documents:
            try:
                self.pact.publish_shipment(doc, site_id=site.id, product_id=line["product_id"],
                                           period=(int(line["window_start_ms"]), int(line["window_end_ms"])),
                                           shipment_id=sid, supersedes=supersedes)
            except Exception:
                log.exception("shipment %s: PACT footprint of line %d not published", sid, int(line["line"]) + 1)
        log.info("shipment %s: version %d issued%s", sid, version,
                 f" (supersedes version {previous['version']}: {reason})" if previous else "")
        return version

    def _pact(self, site: Any, decl: dict[str, Any], lines: list[dict[str, Any]], version: int,
              previous: dict[str, Any] | None, now: int) -> tuple[list[dict[str, Any]], list[tuple[dict, dict, str | None]]]:
        """PACT rows for the document, and the footprints to publish (line record, document)."""
        rows: list[dict[str, Any]] = []
        documents: list[tuple[dict, dict, str | None]] = []
        old = {r["line"]: r.get("id") for r in (previous or {}).get("pact", [])}
        for line in lines:
            n = int(line["line"]) + 1
            if self.pact is None:
                rows.append({"line": n, "id": None, "reason": "no PACT host in this deployment"})
                continue
            declared = self.pact.clients.products.get((site.id, line["product_id"]), PactProduct())
            reason = why_not(line, declared)
            if reason is not None:
                rows.append({"line": n, "id": None, "reason": reason})
                continue
            pf_id = str(uuid.uuid4())
            preceding = None
            if old.get(n):
                before = self.pact.published.get(old[n])
                preceding = (before.preceding if before else []) + [old[n]]
            doc = line_footprint(pf_id=pf_id, created_ms=now, site=site, product=product_of(site, line["product_id"]),
                                 record=line, declaration=decl, version=version, declared=declared,
                                 public_url=self.pact.public_url, energy_schema_url=self.pact.public_url + EXTENSION_PATH,
                                 preceding=preceding)
            rows.append({"line": n, "id": pf_id, "supersedes": old.get(n)})
            documents.append((line, doc, old.get(n)))
        return rows, documents

    # -- superseding ----------------------------------------------------------------------

    def recomputed(self, site_id: str, start_ms: int, end_ms: int, dataset_spec: str | None) -> None:
        """An explicit recomputation happened: re-issue the shipments whose lots it touches (soon,
        on the book's thread)."""
        self._recomputes.append((site_id, start_ms, end_ms, dataset_spec))
        self._wake.set()

    def scan(self) -> list[tuple[str, int]]:
        """Supersede issued shipments whose lots' hours were revised since issue and whose figures
        changed with it (within the horizon)."""
        done: list[tuple[str, int]] = []
        now = self._now_ms()
        lots = Lots(self.service, now)
        for sid, _ in self.store.issued():
            try:
                row = self.store.shipment(sid)
                previous, key, dataset, _ = self.store.document(sid)
                if max((d["end_ms"] for d in row["draws"]), default=0) < now - self.live_horizon_ms:
                    continue
                # Only revised hours (late readings) re-open an issued shipment: market-based figures
                # of a matching window still open (annual, monthly) move with every new hour of it,
                # which is not a change of the batch.
                if not self._revised(previous, row, lots):
                    continue
                lines = self._recomputed_lines(row, dataset) if dataset is not None else self._lines(row, lots)
                if lines is None or any(ln["provisional"] for ln in lines) or figures_key(lines) == key:
                    continue
                changed = self._changed_lots(previous["lines"], lines)
                reason = f"late readings revised the figures of {changed}"
                done.append((sid, self._issue(row, lines, previous, dataset, reason)))
            except Exception:
                log.exception("shipments: cannot re-check %s", sid)
        return done

    def _revised(self, previous: dict[str, Any], row: dict[str, Any], lots: Lots) -> bool:
        before = {(ln["line"], lot["lot_id"]): lot["revision"] for ln in previous["lines"] for lot in ln["lots"]}
        for d in self._draws(row):
            rec = lots.record(d.lot) or {}
            if int(rec.get("revision") or 0) > before.get((d.line, d.lot.lot_id), 0):
                return True
        return False

    def _recomputed_lines(self, row: dict[str, Any], dataset: str | None) -> list[dict[str, Any]] | None:
        draws = self._draws(row)
        records = recomputed_records(self.service, row["site_id"], [d.lot for d in draws], dataset)
        if records is None:
            return None
        lots = Lots(self.service, self._now_ms())
        for d in draws:
            lots.put(d.lot, records.get(d.lot.key()))
        return self._lines(row, lots)

    def _recomputed(self, site_id: str, start_ms: int, end_ms: int, spec: str | None) -> list[tuple[str, int]]:
        done: list[tuple[str, int]] = []
        for sid, _ in self.store.issued():
            try:
                row = self.store.shipment(sid)
                if row["site_id"] != site_id or not any(d["end_ms"] > start_ms and d["start_ms"] < end_ms
                                                        for d in row["draws"]):
                    continue
                previous, key, _, _ = self.store.document(sid)
                lines = self._recomputed_lines(row, spec)
                if lines is None or figures_key(lines) == key:
                    continue
                used = sorted({f"{ln['dataset_id']} version {ln['dataset_version']}" for ln in lines})
                reason = f"recomputed with factor dataset {', '.join(used)}"
                dataset = spec or dataset_ref(lines[0]['dataset_id'], lines[0]['dataset_version'])
                done.append((sid, self._issue(row, lines, previous, dataset, reason)))
            except Exception:
                log.exception("shipments: cannot recompute %s", sid)
        return done

    @staticmethod
    def _changed_lots(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
        old = {(ln["line"], lot["lot_id"]): lot for ln in before for lot in ln["lots"]}
        changed = []
        for ln in after:
            for lot in ln["lots"]:
                prev = old.get((ln["line"], lot["lot_id"]))
                if prev is None or prev.get("kgco2e_per_unit_location") != lot.get("kgco2e_per_unit_location") \
                        or prev.get("kgco2e_per_unit_market") != lot.get("kgco2e_per_unit_market"):
                    changed.append(f"{ln['product_id']} {lot['kind']} {lot['lot_id']}")
        return ", ".join(changed) or "its lots"


def _draw_row(seq: int, d: Draw) -> dict[str, Any]:
    return {"line": d.line, "seq": seq, "site_id": d.lot.site_id, "product_id": d.lot.product_id,
            "lot_kind": d.lot.kind, "lot_id": d.lot.lot_id, "start_ms": d.lot.start_ms, "end_ms": d.lot.end_ms,
            "units": d.units, "lot_units": d.lot_units, "rule": d.rule}


__all__ = ["ShipmentBook", "UnknownShipmentError"]

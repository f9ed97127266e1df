"""A small in-memory accounting service for the API's unit tests.

It loads the real demo site file and makes up footprints (the engine's own `ProductFootprint`
records, so their fields are the real ones) that move when `tick()` is called,
so tests can watch the API and the stream follow a service without MQTT, a store or numba.
It implements the whole `accounting.api.types` interface, write capabilities included, with
the same rules the real ledger enforces (a certificate serial is claimed once).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accounting.api import windows
from accounting.api.deps import site_tz
from accounting.api.types import Listener
from accounting.engine.engine import ProductFootprint
from accounting.errors import CertificateAlreadyClaimedError, FactorDatasetError, InstrumentError
from accounting.factors.dataset import dataset_from_dict, default_registry
from accounting.store.alarms import AlarmStore
from tanji.methods import parse_dataset_ref
from tanji.site import Site, load_site

SITE_FILE = Path(__file__).resolve().parents[2] / "firmware-config" / "sites" / "cq-battery.yaml"
HOUR_MS = 3_600_000


@dataclass
class FakeStats:
    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    seq_gaps: dict[str, int] = field(default_factory=dict)
    last_message_ms: int | None = None
    # Like the real IngestStats: a lock that must never reach the JSON encoder.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return {"received": self.received, "accepted": self.accepted, "duplicates": self.duplicates,
                    "quarantined_by_reason": dict(self.quarantined_by_reason),
                    "seq_gaps": dict(self.seq_gaps), "last_message_ms": self.last_message_ms}


class FakeService:
    def __init__(self, site: Site | None = None) -> None:
        site = site or load_site(SITE_FILE)
        self.sites = {site.id: site}
        self.stats = FakeStats()
        self.cycle = 0
        self.calls: list[dict[str, Any]] = []
        self.batches: dict[str, list[str]] = {"20260101": ["pack-48v-100ah"]}  # batch number → products
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._datasets = [{"dataset_id": "cn-mee-national-co2", "version": "2022",
                           "publisher": "MEE & NBS", "unit": "kgCO2/kWh", "gas_basis": "co2",
                           "granularity": "annual"}]
        self._certificates: dict[str, dict[str, Any]] = {}
        # Closed months: production only from the start of the month before last (two closed
        # months with production), hours of a window revised `revisions[start_ms]` times, and
        # a window's numbers scaled by `factor_scale[dataset]` in a recomputation.
        now = int(time.time() * 1000)
        this_month, _ = windows.window_bounds("month", now, site_tz(site))
        last_month, _ = windows.window_bounds("month", this_month - 1, site_tz(site))
        self.production_from_ms, _ = windows.window_bounds("month", last_month - 1, site_tz(site))
        self.revisions: dict[int, int] = {}
        self.energy_scale: dict[int, float] = {}
        self.recomputations: list[dict[str, Any]] = []
        self.log = AlarmStore()  # the real operator's log, in memory
        self.stopped: set[str] = set()  # cost centres whose line is stopped (test control)
        self._contracts: dict[str, dict[str, Any]] = {}

    # -- read interface ----------------------------------------------------------------------
    def footprints(self, site_id: str | None = None, *, start_ms: int, end_ms: int,
                   product_id: str | None = None, batch_id: str | None = None) -> list[dict]:
        self.calls.append({"site_id": site_id, "start_ms": start_ms, "end_ms": end_ms,
                           "product_id": product_id, "batch_id": batch_id})
        # As the engine does: a batch is a number some line's PLC showed in its batch_id register,
        # and only the products of that line have a footprint for it.
        batch_products = None if batch_id is None else self.batches.get(batch_id)
        if batch_id is not None and batch_products is None:
            return []
        out = []
        for site in self.sites.values():
            if site_id not in (None, site.id):
                continue
            for i, p in enumerate(site.products):
                if product_id not in (None, p.id) or (batch_products is not None and p.id not in batch_products):
                    continue
                units = 0.0 if end_ms <= self.production_from_ms else 10.0 * (self.cycle + 1) * (i + 1)
                energy = (25.0 * (self.cycle + 1) * (i + 1) + 3.0 * self.cycle ** 1.5) * self.energy_scale.get(start_ms, 1.0)
                loc = energy * 0.2268
                mkt = loc * 0.6
                out.append(ProductFootprint(**{
                    "product_id": p.id, "site_id": site.id, "window_start_ms": start_ms, "window_end_ms": end_ms,
                    "units": units, "energy_kwh": energy,
                    "kgco2e_location": loc, "kgco2e_market": mkt,
                    "kgco2e_per_unit_location": loc / units if units else None,
                    "kgco2e_per_unit_market": mkt / units if units else None,
                    "upstream_kgco2e_per_unit": p.upstream_kgco2e_per_unit,
                    "dataset_id": "cn-mee-regional-co2", "dataset_version": "2022",
                    "gas_basis": "co2", "factor_region": "Southwest", "matching_mode": site.matching_mode, "residual_mix": "unavailable",
                    "share_metered": 0.8, "share_allocated": 0.15, "share_estimated": 0.05,
                    "primary_data_share": 0.95, "uncertainty_pct_95": 5.4,
                    "provisional": end_ms > int(time.time() * 1000),
                    "revision": self.revisions.get(start_ms, 0), "renewable_share": 0.4, "hourly_matched_share": None,
                    "uncovered_basis": "grid_average", "factor_selection": "pinned",
                    "covered_pv_kwh": 0.0, "covered_contract_kwh": 0.0, "covered_gec_kwh": 0.4 * energy,
                    "kgco2e_per_battery_kwh_market": (mkt / units / p.declared_unit_kwh
                                                      if p.declared_unit_kwh and units else None),
                    "batch_id": batch_id, "boundary": "gate-to-gate",
                    "pcf_kgco2e_per_unit_market": mkt / units if units else None,
                    "battery_kwh_per_unit": p.declared_unit_kwh,
                    "kgco2e_eu_battery_electricity": loc,
                    "kgco2e_per_battery_kwh_eu": (loc / units / p.declared_unit_kwh
                                                  if p.declared_unit_kwh and units else None),
                }).to_dict())
        return out

    def meter_status(self, site_id: str | None = None) -> list[dict]:
        """Submeter i draws 40 + 10 i kW (+ the cycle), 5 kW while its line is stopped; PLCs say
        whether their line runs."""
        now = int(time.time() * 1000)

        def values(i: int, m: Any) -> dict[str, float]:
            if m.role == "production_counter":
                return {"units_total": 1000.0 + self.cycle, "line_running": float(m.cost_centre not in self.stopped)}
            return {"power_kw": 5.0 if m.cost_centre in self.stopped else 40.0 + 10 * i + self.cycle}

        return [{"meter": m.id, "site": s.id, "gateway": m.gateway, "role": m.role,
                 "last_ts_ms": now - 500, "last_values": values(i, m),
                 "last_quality": "good", "readings": 100 + self.cycle, "comm_errors": 0}
                for s in self.sites.values() if site_id in (None, s.id) for i, m in enumerate(s.meters)]

    def reading_flags(self, site_id: str, meter: str, *, start_ms: int, end_ms: int) -> dict:
        """The fake feeds no engine: no channel has flagged readings (the real one is tested in
        tests/ingest/test_clock_counters.py)."""
        return {"site_id": site_id, "meter": meter, "start_ms": start_ms, "end_ms": end_ms, "channels": []}

    def gateway_status(self) -> list[dict]:
        return [{"site": s.id, "gateway": g.id, "status": None, "seq_gaps": 0}
                for s in self.sites.values() for g in s.gateways]

    def hourly_series(self, site_id: str, start_ms: int, end_ms: int) -> list[dict]:
        site = self.sites[site_id]
        first = start_ms - start_ms % HOUR_MS
        return [{"hour_start_ms": t, "consumption_kwh": 100.0 + self.cycle,
                 "cost_centres_kwh": {c.id: 20.0 + j for j, c in enumerate(site.cost_centres)},
                 "kgco2e_location": 22.68, "kgco2e_market": 13.6, "covered_kwh": 40.0}
                for t in range(first, min(end_ms, first + 48 * HOUR_MS), HOUR_MS)]

    def grid_factors(self, site_id: str, start_ms: int, end_ms: int) -> dict:
        first = start_ms - start_ms % HOUR_MS
        return {"dataset_id": "cn-mee-regional-co2", "dataset_version": "2022", "publisher": "MEE",
                "publication_date": "2024-12", "source_reference": "MEE 2024 announcement", "unit": "kgCO2/kWh",
                "gas_basis": "co2", "granularity": "annual", "region": "Southwest", "matching_mode": "annual",
                "uncertainty_pct_95": 5.0, "residual_mix": False, "uncovered_basis": "grid_average",
                "factor_selection": "pinned",
                "hours": [{"hour_start_ms": t, "location_kg_per_kwh": 0.2268, "residual_kg_per_kwh": None}
                          for t in range(first, end_ms, HOUR_MS)]}

    def alarms(self, site_id: str | None = None, *, active: bool | None = None, since_ms: int | None = None,
               limit: int = 200) -> list[dict]:
        return self.log.alarms(site_id, active=active, since_ms=since_ms, limit=limit)

    def acknowledge_alarm(self, alarm_id: int, by: str, note: str = "") -> dict:
        return self.log.acknowledge(alarm_id, by, note)

    def plant_changes(self, site_id: str | None = None, *, since_ms: int | None = None,
                      until_ms: int | None = None, limit: int = 100) -> list[dict]:
        return self.log.changes(site_id, since_ms=since_ms, until_ms=until_ms, limit=limit)

    def add_listener(self, callback: Listener) -> None:
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    # -- write capabilities ------------------------------------------------------------------
    def factor_datasets(self) -> list[dict]:
        return list(self._datasets)

    def add_factor_dataset(self, document: dict) -> dict:
        dataset_from_dict(document)  # the real registry's validation
        key = (document["dataset_id"], document["version"])
        if any((d["dataset_id"], d["version"]) == key for d in self._datasets):
            raise FactorDatasetError(f"dataset {key[0]} version {key[1]} is already loaded")
        self._datasets.append(document)
        return document

    def factor_dataset(self, spec: str) -> dict:
        """The newest loaded version the reference names (the real catalogue merges a series)."""
        dataset_id, versions = parse_dataset_ref(spec)
        found = [d for d in self._datasets
                 if d["dataset_id"] == dataset_id and (not versions or d["version"] in versions)]
        if not found:
            raise FactorDatasetError(f"no factor dataset {spec!r}")
        return {**found[-1], "ref": spec}

    def factor_diff(self, site_id: str, old: str, new: str, *, start_ms: int, end_ms: int) -> dict:
        before, after = self.factor_dataset(old), self.factor_dataset(new)
        return {"site_id": site_id, "old": before["ref"], "new": after["ref"], "start_ms": start_ms,
                "end_ms": end_ms, "products": []}

    def market_rules(self, site_id: str) -> dict:
        return {"matching_mode": self.sites[site_id].matching_mode}

    def import_certificates(self, site_id: str, text: str) -> list[dict]:
        rows = [line.split(",") for line in text.splitlines()[1:] if line.strip()]
        if any(len(r) < 2 for r in rows):
            raise InstrumentError("a certificate list row needs serial,generation_month,...")
        return [self.add_certificate({"serial": r[0], "site_id": site_id, "generation_month": r[1]})
                for r in rows]

    def certificates(self, site_id: str | None = None) -> list[dict]:
        return [c for c in self._certificates.values() if site_id in (None, c.get("site_id"))]

    def add_certificate(self, certificate: dict) -> dict:
        serial = certificate["serial"]
        if serial in self._certificates:
            raise CertificateAlreadyClaimedError(serial, self._certificates[serial].get("site_id") or "?")
        self._certificates[serial] = certificate
        return certificate

    def contracts(self, site_id: str | None = None) -> list[dict]:
        return [c for c in self._contracts.values() if site_id in (None, c.get("site_id"))]

    def add_contract(self, contract: dict) -> dict:
        if contract["contract_id"] in self._contracts:
            raise InstrumentError(f"contract {contract['contract_id']!r} is already held")
        self._contracts[contract["contract_id"]] = contract
        return contract

    def technologies(self, site_id: str) -> dict:
        ds = default_registry().get("cn-electricity-carbon-footprint")
        return {"site_id": site_id, "dataset_id": ds.dataset_id, "dataset_version": ds.version,
                "gas_basis": ds.gas_basis, "kgco2e_per_kwh": dict(ds.technology_factors), "any_technology": False}

    def recompute(self, site_id: str, *, start_ms: int, end_ms: int,
                  dataset_version: str | None = None) -> dict:
        """Like the real one: footprints of the period with that dataset version (here: the
        version's number scales emissions, so another version gives other figures)."""
        version = (dataset_version or "2022").rpartition("@")[2]
        scale = 1.0 + (int(version) - 2022) / 10 if version.isdigit() else 1.0
        fps = self.footprints(site_id, start_ms=start_ms, end_ms=end_ms)
        for fp in fps:
            fp["dataset_version"] = version
            for key in ("kgco2e_location", "kgco2e_market", "kgco2e_per_unit_location", "kgco2e_per_unit_market",
                        "pcf_kgco2e_per_unit_market", "kgco2e_per_battery_kwh_market"):
                if fp[key] is not None:
                    fp[key] *= scale
        result = {"site_id": site_id, "start_ms": start_ms, "end_ms": end_ms,
                  "dataset_version": version, "revision": len(self.recomputations) + 1, "footprints": fps}
        self.recomputations.append(result)
        return result

    # -- test controls -----------------------------------------------------------------------
    def tick(self, kinds: tuple[str, ...] = ("footprints", "meters")) -> None:
        """One ingest cycle: numbers move, listeners hear about it."""
        self.cycle += 1
        self.stats.received += 7
        self.stats.accepted += 7
        self.stats.last_message_ms = int(time.time() * 1000)
        with self._lock:
            listeners = list(self._listeners)
        for kind in kinds:
            for callback in listeners:
                callback({"type": kind})

"""Lot records recomputed from stored readings with a given factor dataset version.

`POST /api/v1/recompute` recomputes a period into a new result; a shipment issued from lots in
that period is re-issued from its lots' records under the same dataset. This reads the stored
readings around the lots and runs `Engine.recompute` (the live engine is untouched) exactly as
`accounting.recompute` does for a period, then asks the recomputed engine for each lot's record.
A service without a store and engines (the API's test fake) cannot recompute: None.
"""

from __future__ import annotations

from typing import Any

from accounting.api.responses import plain
from accounting.recompute import LOOKAHEAD_MS, LOOKBACK_MS, resolve_dataset
from accounting.shipments.lots import BATCH, Lot


def recomputed_records(service: Any, site_id: str, lots: list[Lot],
                       dataset_spec: str | None) -> dict[tuple[str, str, str], dict[str, Any] | None] | None:
    """{lot key: record} under `dataset_spec` (the live dataset when None), or None."""
    if not lots or not all(hasattr(service, a) for a in ("engine", "store", "factor_catalogue", "engines")):
        return None
    engine = service.engine(site_id)
    dataset = resolve_dataset(service.factor_catalogue, engine.dataset, dataset_spec)
    lo = min(lot.start_ms for lot in lots) - LOOKBACK_MS
    hi = max(lot.end_ms for lot in lots) + LOOKAHEAD_MS
    # streamed from the store, without the live engines' lock (as accounting.recompute does)
    chunks = service.store.iter_channel_arrays(site_id, engine.channel_keys, max(0, lo), hi)
    fresh = engine.recompute(chunks, dataset, retain_readings=False).engine
    out: dict[tuple[str, str, str], dict[str, Any] | None] = {}
    for lot in lots:
        found = fresh.footprints(lot.start_ms, lot.end_ms, batch_id=lot.lot_id if lot.kind == BATCH else None)
        match = [fp.to_dict() for fp in found if fp.product_id == lot.product_id]
        out[lot.key()] = plain(match[0]) if match else None
    return out

"""Plain-JSON views of site files: what a dashboard or a customer may see of a plant.

Broker credentials, spool paths and meter addresses stay out: they are deployment details,
and an API is not the place to publish where a plant's RS-485 gateways listen.
"""

from __future__ import annotations

from typing import Any

from tanji.site import Meter, Product, Site


def meter_dict(meter: Meter) -> dict[str, Any]:
    return {"id": meter.id, "gateway": meter.gateway, "role": meter.role,
            "cost_centre": meter.cost_centre, "model": meter.profile.model,
            "accuracy_class": meter.profile.accuracy_class, "poll_period_s": meter.poll_period_s}


def product_dict(site: Site, product: Product) -> dict[str, Any]:
    return {"id": product.id, "site_id": site.id, "name": product.name,
            "cost_centre": product.cost_centre, "mass_kg": product.mass_kg,
            "declared_unit_kwh": product.declared_unit_kwh,
            "upstream_kgco2e_per_unit": product.upstream_kgco2e_per_unit,
            "counter_meter": product.counter_meter}


def site_dict(site: Site) -> dict[str, Any]:
    return {
        "id": site.id, "name": site.name, "province": site.province,
        "grid_region": site.grid_region, "timezone": site.timezone,
        "matching_mode": site.matching_mode, "factor_dataset": site.factor_dataset,
        "gateways": [{"id": g.id, "meters": [m.id for m in g.meters]} for g in site.gateways],
        "meters": [meter_dict(m) for m in site.meters],
        "cost_centres": [{"id": c.id, "kind": c.kind, "name": c.name,
                          "allocation_key": c.allocation_key} for c in site.cost_centres],
        "products": [product_dict(site, p) for p in site.products],
    }

"""Plain-JSON views of site files: what a dashboard or a customer may see of a plant.

The views are the response models of `accounting.api.models`, filled by field name from the
`tanji.site` objects, so a field is made public by naming it there, once. Broker credentials,
spool paths and meter addresses stay out: they are deployment details, and an API is not the
place to publish where a plant's RS-485 gateways listen.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from accounting.api.models import CostCentreInfo, GatewayInfo, MeterInfo, ProductInfo, SiteInfo
from tanji.site import Meter, Product, Site


def _view(view: type[BaseModel], obj: object, /, **derived: Any) -> dict[str, Any]:
    """`view`'s fields, each from `derived` when given there, else the attribute of that name."""
    return {name: derived[name] if name in derived else getattr(obj, name) for name in view.model_fields}


def meter_dict(meter: Meter) -> dict[str, Any]:
    return _view(MeterInfo, meter, model=meter.profile.model, accuracy_class=meter.profile.accuracy_class)


def product_dict(site: Site, product: Product) -> dict[str, Any]:
    return _view(ProductInfo, product, site_id=site.id)


def site_dict(site: Site) -> dict[str, Any]:
    return _view(SiteInfo, site,
                 gateways=[_view(GatewayInfo, g, meters=[m.id for m in g.meters]) for g in site.gateways],
                 meters=[meter_dict(m) for m in site.meters],
                 cost_centres=[_view(CostCentreInfo, c) for c in site.cost_centres],
                 products=[product_dict(site, p) for p in site.products])

"""Response models: the OpenAPI contract of the v1 API.

Models built here from site files are enforced (`response_model`); their field names are the
public view of a site file (`accounting.api.sites` fills them by name from `tanji.site`).
Footprints come from the engine and are only *documented* by `Footprint` (`responses=`),
derived field by field from the engine's `ProductFootprint`, the one definition of a
footprint record: validating them again on the way out would turn any new engine field or
type into a 500 on a control-room screen.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from accounting.engine.engine import ProductFootprint


class Health(BaseModel):
    status: str = Field(description="`ok`; `degraded` while the store refuses writes (nothing is lost, ingest "
                                    "waits); `failed` (HTTP 503) once an ingest stage has died")
    problems: list[str] = Field(default_factory=list, description="what is not ok, for an operator")
    version: str
    now_ms: int
    uptime_s: float
    sites: list[str]
    ingest: str = Field(description="`live`, `stale` (no message for 60 s) or `waiting` (none yet)")
    stats: dict[str, Any]


class MeterInfo(BaseModel):
    id: str
    gateway: str
    role: str
    cost_centre: str | None
    model: str = Field(description="the meter profile's model")
    accuracy_class: str | None = Field(description="the meter profile's accuracy class")
    poll_period_s: float


class ProductInfo(BaseModel):
    id: str
    site_id: str
    name: str
    cost_centre: str
    mass_kg: float | None
    declared_unit_kwh: float | None = Field(description="battery energy per unit (EU battery regulation declared unit)")
    upstream_kgco2e_per_unit: float | None
    counter_meter: str


class GatewayInfo(BaseModel):
    id: str
    meters: list[str] = Field(description="ids of the meters it polls")


class CostCentreInfo(BaseModel):
    id: str
    kind: str
    name: str
    allocation_key: str


class SiteInfo(BaseModel):
    id: str
    name: str
    province: str
    grid_region: str | None
    timezone: str
    matching_mode: str
    factor_dataset: str | None
    gateways: list[GatewayInfo]
    meters: list[MeterInfo]
    cost_centres: list[CostCentreInfo]
    products: list[ProductInfo]


#: The fields of a footprint record, in the engine's order.
FOOTPRINT_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ProductFootprint))
_FOOTPRINT_DOCS = {
    "kgco2e_per_unit_location": "null while no unit was produced",
    "kgco2e_per_unit_market": "null while no unit was produced",
    "hourly_matched_share": "hourly mode: share of consumption matched hour by hour by PV and "
                            "instruments (no grid carbon-free term)",
    "uncovered_basis": "residual_mix, fossil_only or grid_average",
    "factor_selection": "latest_per_hour or pinned",
    "boundary": "gate-to-gate (metered electricity) or cradle-to-gate (plus the declared upstream stage)",
    "pcf_kgco2e_per_unit_market": "product carbon footprint per unit over `boundary`, market-based "
                                  "(what PACT publishes)",
    "kgco2e_per_battery_kwh_eu": "EU battery regulation figure: grid mix or direct connection, no "
                                 "certificates; per kWh of declared battery energy",
    "kgco2e_per_battery_kwh_market": "the market-based figure on the same boundary and unit",
}


def _footprint_model() -> type[BaseModel]:
    hints = typing.get_type_hints(ProductFootprint)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(ProductFootprint):
        default = f.default if f.default is not dataclasses.MISSING else ...
        fields[f.name] = (hints[f.name], Field(default, description=_FOOTPRINT_DOCS.get(f.name)))
    return create_model("Footprint", __config__=ConfigDict(extra="allow"),
                        __doc__="One product's footprint over a window, as the engine computed it "
                                "(ACCOUNTING.md §5).", **fields)


Footprint = _footprint_model()

FOOTPRINT_LIST: dict[int | str, dict[str, Any]] = {
    200: {"model": list[Footprint], "description": "footprints, one per (site, product)"}}

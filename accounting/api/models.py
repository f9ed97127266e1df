"""Response models: the OpenAPI contract of the v1 API.

Models built here from site files are enforced (`response_model`). Footprints come from the
engine and are only *documented* by `Footprint` (`responses=`): validating them again on the
way out would turn any new engine field or type into a 500 on a control-room screen.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    status: str = Field(description="`ok` while the process serves")
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
    model: str
    accuracy_class: str | None
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
    meters: list[str]


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


class Footprint(BaseModel):
    """One product's footprint over a window, as the engine computed it (ACCOUNTING.md §5)."""

    model_config = ConfigDict(extra="allow")
    site_id: str
    product_id: str
    window_start_ms: int
    window_end_ms: int
    units: float
    energy_kwh: float
    kgco2e_location: float | None
    kgco2e_market: float | None
    kgco2e_per_unit_location: float | None = Field(description="null while no unit was produced")
    kgco2e_per_unit_market: float | None
    upstream_kgco2e_per_unit: float | None
    dataset_id: str | None
    dataset_version: str | None
    matching_mode: str | None
    share_metered: float | None
    share_allocated: float | None
    share_estimated: float | None
    primary_data_share: float | None
    uncertainty_pct_95: float | None
    provisional: bool | None
    revision: int | None
    renewable_share: float | None
    hourly_matched_share: float | None = Field(None, description="hourly mode: share of consumption matched "
                                               "hour by hour by PV and instruments (no grid carbon-free term)")
    uncovered_basis: str | None = Field(None, description="residual_mix, fossil_only or grid_average")
    factor_selection: str | None = Field(None, description="latest_per_hour or pinned")
    boundary: str | None = Field(None, description="gate-to-gate (metered electricity) or cradle-to-gate (plus the declared upstream stage)")
    pcf_kgco2e_per_unit_market: float | None = Field(None, description="product carbon footprint per unit over `boundary`, market-based (what PACT publishes)")
    battery_kwh_per_unit: float | None = None
    kgco2e_per_battery_kwh_eu: float | None = Field(None, description="EU battery regulation figure: grid mix or direct connection, no certificates; per kWh of declared battery energy")
    kgco2e_per_battery_kwh_market: float | None = Field(None, description="the market-based figure on the same boundary and unit")


FOOTPRINT_LIST: dict[int | str, dict[str, Any]] = {
    200: {"model": list[Footprint], "description": "footprints, one per (site, product)"}}

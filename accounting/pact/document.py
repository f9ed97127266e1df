"""A footprint record as a PACT v3 `ProductFootprint`: mapping only, no figure computed here.

Every number comes from the engine's record (`accounting.engine.engine.ProductFootprint`):
the PCF per declared unit is the record's `pcf_kgco2e_per_unit_market` (the market-based
footprint per unit over its boundary, upstream included when declared), so PACT, the API, the
CSV, the label and the dashboard show one figure.

Declared unit: a product with a battery energy is declared per pack in kWh of battery energy
(`declaredUnitOfMeasurement` "kilowatt hour", `declaredUnitAmount` the pack's kWh): the PCF
and the mass are those of `declaredUnitAmount` kWh, i.e. of one pack. Others are declared per
piece. Boundary: a gate-to-gate electricity footprint says so in `boundaryProcessesDescription`,
`exemptedEmissionsDescription` and `comment`, and its `exemptedEmissionsPercent` is the share
the plant declared for the excluded stages (`PactProduct.exempted_emissions_pct`): without a
declared share such a footprint is not published at all (see `publisher`), never as "0 %".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tanji.site import Product, Site

SPEC_VERSION = "3.0.3"
EXTENSION_SPEC_VERSION = "2.0.0"
#: Where the extension's JSON Schema is served (below the host's public URL).
EXTENSION_PATH = "/pact/extensions/tanji-energy-provenance/1.0.0/schema.json"
#: The record fields carried in the extension, the audit trail of the PCF.
EXTENSION_FIELDS = (
    "units", "energy_kwh", "kgco2e_location", "kgco2e_market", "kgco2e_per_unit_location",
    "kgco2e_per_unit_market", "upstream_kgco2e_per_unit", "pcf_kgco2e_per_unit_market", "boundary",
    "battery_kwh_per_unit", "kgco2e_per_battery_kwh_eu", "kgco2e_per_battery_kwh_market",
    "dataset_id", "dataset_version", "gas_basis", "factor_region", "matching_mode", "residual_mix",
    "share_metered", "share_allocated", "share_estimated", "primary_data_share", "uncertainty_pct_95",
    "renewable_share", "hourly_matched_share", "factor_selection", "uncovered_basis", "revision",
    "evidence_root", "evidence_batches", "evidence_complete", "dataset_digest", "instruments_root")


@dataclass(frozen=True)
class PactProduct:
    """What the plant declares about a product for PACT beyond the site file.

    `classifications`: product classification URNs (e.g. `urn:pact:productclassification:hs:850760`);
    `exempted_emissions_pct`: for a gate-to-gate footprint, the share of the product's
    cradle-to-gate emissions outside factory electricity (a screening estimate), required to
    publish it; for a cradle-to-gate one, emissions left out of the declared upstream (default 0).
    """

    classifications: tuple[str, ...] = ()
    exempted_emissions_pct: float | None = None


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decimal(value: float) -> str:
    """A PACT decimal string (no exponent, no sign on zero), 6 decimals at most."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def company_urn(site: Site) -> str:
    return f"urn:tanji:site:{site.id}"


def product_urn(site: Site, product: Product) -> str:
    return f"urn:tanji:product:{site.id}:{product.id}"


def declared_unit(product: Product) -> tuple[str, float]:
    """(declaredUnitOfMeasurement, declaredUnitAmount) of a product."""
    if product.declared_unit_kwh:
        return "kilowatt hour", product.declared_unit_kwh
    return "piece", 1.0


def publishable(record: dict[str, Any], declared: PactProduct) -> str | None:
    """Why a closed period's record cannot be published (None: it can)."""
    if not record.get("units"):
        return "no unit was produced in the period"
    if record.get("pcf_kgco2e_per_unit_market") is None:
        return "the record has no footprint per unit"
    if record.get("boundary") != "cradle-to-gate" and declared.exempted_emissions_pct is None:
        return ("gate-to-gate electricity footprint without a declared share of the excluded stages "
                "(exempted_emissions_pct in the PACT clients file)")
    return None


def product_footprint(*, pf_id: str, created_ms: int, site: Site, product: Product, record: dict[str, Any],
                      declared: PactProduct, validity_ms: tuple[int, int], schema_url: str,
                      preceding: list[str] | None = None, revision_note: str | None = None) -> dict[str, Any]:
    """The v3 ProductFootprint of one closed period's footprint record."""
    unit, amount = declared_unit(product)
    pcf = float(record["pcf_kgco2e_per_unit_market"])  # per unit = per declaredUnitAmount x unit
    mass = product.mass_kg or 0.0
    start, end = int(record["window_start_ms"]), int(record["window_end_ms"])
    gate = record.get("boundary") != "cradle-to-gate"
    if gate:
        boundary = ("Gate-to-gate, electricity only: electricity metered at the plant (grid import, "
                    "on-site PV, certificates and green-power contracts by the market-based method). "
                    "Not a cradle-to-gate footprint: materials, purchased parts, other energy, "
                    "transport, packaging and waste are outside this boundary.")
        exempted = float(declared.exempted_emissions_pct or 0.0)
        exempted_text = (f"Every stage other than factory electricity is excluded; the plant "
                         f"declares their share of the cradle-to-gate footprint as {decimal(exempted)} % "
                         "(screening estimate, not measured by Tanji).")
    else:
        boundary = ("Cradle-to-gate: a static upstream part per unit (bill of materials x supplier "
                    "PCFs or background factors, declared in the site file) plus the electricity "
                    "metered at the plant, market-based.")
        exempted = float(declared.exempted_emissions_pct or 0.0)
        exempted_text = ("Emissions left out of the declared upstream part: "
                         f"{decimal(exempted)} % as declared by the plant.")
    comment = (f"Tanji footprint of {product.id} at {site.id} for {iso(start)} to {iso(end)} (closed "
               f"period): {record.get('units', 0):g} units, {record.get('energy_kwh', 0):.3f} kWh. "
               f"Per {decimal(amount)} {unit} (one unit). Market-based electricity emissions "
               f"(matching mode {record.get('matching_mode')}, residual mix {record.get('residual_mix')}), "
               f"factor dataset {record.get('dataset_id')} version {record.get('dataset_version')}. "
               "Product carbon content is not assessed (fossilCarbonContent reported 0). "
               "The location-based figures and the data quality are in the tanji extension.")
    if revision_note:
        comment += " " + revision_note
    pcf_block: dict[str, Any] = {
        "declaredUnitOfMeasurement": unit,
        "declaredUnitAmount": decimal(amount),
        "productMassPerDeclaredUnit": decimal(mass),
        "referencePeriodStart": iso(start),
        "referencePeriodEnd": iso(end),
        "geographyCountry": "CN",
        "boundaryProcessesDescription": boundary,
        "pcfExcludingBiogenicUptake": decimal(pcf),
        "pcfIncludingBiogenicUptake": decimal(pcf),
        "fossilGhgEmissions": decimal(pcf),
        "fossilCarbonContent": "0",
        "ipccCharacterizationFactors": ["AR6"],
        "crossSectoralStandards": ["ISO14067", "GHGP-Product", "PACT-3.0"],
        "exemptedEmissionsPercent": decimal(exempted),
        "exemptedEmissionsDescription": exempted_text,
        "packagingEmissionsIncluded": False,
        "allocationRulesDescription": (
            "Sub-metering first; utilities and unmetered energy shared by the site file's keys; a line's "
            "energy split among its products by units, mass or standard time (ISO 14067 order)."),
        "primaryDataShare": decimal(100 * float(record.get("primary_data_share") or 0.0)),
        "secondaryEmissionFactorSources": [
            {"name": str(record.get("dataset_id")), "version": str(record.get("dataset_version"))}],
    }
    document: dict[str, Any] = {
        "id": pf_id,
        "specVersion": SPEC_VERSION,
        "created": iso(created_ms),
        "status": "Active",
        "validityPeriodStart": iso(validity_ms[0]),
        "validityPeriodEnd": iso(validity_ms[1]),
        "companyName": site.name or site.id,
        "companyIds": [company_urn(site)],
        "productDescription": f"{product.name} (made at {site.name or site.id})",
        "productIds": [product_urn(site, product)],
        "productNameCompany": product.name or product.id,
        "comment": comment,
        "pcf": pcf_block,
        "extensions": [{
            "specVersion": EXTENSION_SPEC_VERSION,
            "dataSchema": schema_url,
            "data": {k: record.get(k) for k in EXTENSION_FIELDS},
        }],
    }
    if preceding:
        document["precedingPfIds"] = list(preceding)
    if declared.classifications:
        document["productClassifications"] = list(declared.classifications)
    return document

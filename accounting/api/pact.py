"""PACT Technical Specifications v3: the data-exchange API a customer's PACT client pulls from.

- `POST /auth/token`: OAuth2 client credentials (form-encoded `grant_type=client_credentials`,
  client id and secret by HTTP Basic or as form fields) → a bearer token valid for an hour;
- `GET /3/footprints` (ListFootprints, `limit` and a `Link: <…>; rel="next"` header for paging,
  `productId` filter) and `GET /3/footprints/{id}` (GetFootprint).

Each product has one footprint per calendar month (site time zone); the current month is
served month-to-date and says so in `comment`. The id is a UUID derived from
(site, product, month), so a customer asking again gets the same footprint, with `version`
following the engine's revision of the hours it covers.

How a Tanji footprint becomes a PACT one (ProductFootprint v3 field names):
- declared unit: products with a battery energy (`declared_unit_kwh`) are declared per kWh of
  battery energy (the EU battery regulation's unit), others per piece;
- `pcfExcludingBiogenicUptake` = market-based gate-to-gate electricity emissions per declared
  unit, plus the static upstream part when the site file declares one (cradle-to-gate). The
  location-based figure and the audit trail go into a Tanji data-model extension;
- electricity emissions are fossil GHG; biogenic uptake is none; product carbon content is not
  assessed (reported 0, stated in `comment`).
"""

from __future__ import annotations

import base64
import binascii
import math
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from accounting.api import windows
from accounting.api.deps import selected_sites, service, site_tz
from accounting.api.responses import TanjiJSONResponse
from accounting.api.types import AccountingServiceLike
from accounting.pact.clients import PactClients
from accounting.pact.ratelimit import AuthLimiter
from accounting.pact.tokens import TokenStore
from tanji.site import Product, Site

SPEC_VERSION = "3.0.0"
#: GetFootprint resolves ids of this many past months (the current one included).
MONTHS_SERVED = 24
#: ListFootprints lists the current and the previous month.
MONTHS_LISTED = 2
MAX_LIMIT = 1000
#: Namespace of footprint ids: uuid5(namespace, "site/product/month-start-ms").
ID_NAMESPACE = uuid.UUID("6b1c7f3e-3c55-4a43-9f2c-7a1d2f0e9b61")
EXTENSION_SCHEMA = "urn:tanji:pact-extension:energy-provenance:1"

router = APIRouter(tags=["PACT v3"])


@dataclass(frozen=True)
class Period:
    site: Site
    product: Product
    start_ms: int
    end_ms: int

    @property
    def id(self) -> str:
        return str(uuid.uuid5(ID_NAMESPACE, f"{self.site.id}/{self.product.id}/{self.start_ms}"))


@dataclass
class PactAuth:
    """Who may log in (clients), their tokens, and the limiter of failed logins."""

    clients: PactClients
    tokens: TokenStore
    limiter: AuthLimiter


class PactError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def pact_error_response(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PactError)
    return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Basic realm="tanji-pact"'} if status == 401 else {}
    return JSONResponse({"error": error, "error_description": description}, status_code=status,
                        headers=headers)


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (urllib.parse.unquote(client_id), urllib.parse.unquote(secret)) if sep else None


_TOKEN_FORM = {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
    "schema": {"type": "object", "required": ["grant_type"], "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "client_id": {"type": "string"}, "client_secret": {"type": "string"},
        "scope": {"type": "string"}}}}}}}


@router.post("/auth/token", openapi_extra=_TOKEN_FORM, summary="PACT Action Authenticate (client credentials)",
             responses={200: {"description": "access token"}, 400: {"description": "bad request"},
                        401: {"description": "invalid client"}})
async def token(request: Request) -> JSONResponse:
    """OAuth2 client-credentials grant; credentials by HTTP Basic (preferred) or form fields."""
    body = await request.body()
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return _oauth_error(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
    grant = form.get("grant_type", [""])[0]
    if grant != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
    credentials = _basic_credentials(request.headers.get("authorization"))
    if credentials is None and "client_id" in form:
        credentials = (form["client_id"][0], form.get("client_secret", [""])[0])
    if credentials is None:
        return _oauth_error(401, "invalid_client", "give client credentials by HTTP Basic authentication")
    client_id, secret = credentials
    host: PactAuth = request.app.state.pact_auth
    address = request.client.host if request.client else "?"
    claimed = client_id if host.clients.get(client_id) is not None else None
    wait = host.limiter.wait_s(claimed, address)
    if wait > 0:
        return JSONResponse({"error": "invalid_request",
                             "error_description": f"too many attempts; retry in {math.ceil(wait)} s"},
                            status_code=429, headers={"Retry-After": str(math.ceil(wait))})
    client = host.clients.verify(client_id, secret)
    if client is None:
        host.limiter.failed(claimed, address)
        return _oauth_error(401, "invalid_client", "Client authentication failed")
    host.limiter.succeeded(client.client_id)
    issued = host.tokens.issue(client.client_id)
    return JSONResponse({"access_token": issued, "token_type": "Bearer", "expires_in": host.tokens.lifetime_s},
                        headers={"Cache-Control": "no-store"})


def require_pact_token(request: Request) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise PactError(400, "BadRequest", "missing bearer token: get one from POST /auth/token")
    checked = request.app.state.pact_auth.tokens.check(value.strip())
    if checked is None:
        raise PactError(400, "BadRequest", "Invalid token provided")
    if checked[0] == "expired":
        raise PactError(401, "TokenExpired", "the access token expired: get a new one from POST /auth/token")


Service = Annotated[AccountingServiceLike, Depends(service)]


def _months(site: Site, count: int, now_ms: int) -> list[tuple[int, int]]:
    """The last `count` calendar months of the site, newest first, the current one cut at now."""
    tz = site_tz(site)
    out: list[tuple[int, int]] = []
    at = now_ms
    for _ in range(count):
        start, end = windows.window_bounds("month", at, tz)
        out.append((start, min(end, now_ms)))
        at = start - 1
    return out


def periods(svc: AccountingServiceLike, months: int, now_ms: int) -> list[Period]:
    return [Period(site, product, start, end)
            for site in selected_sites(svc, None)
            for start, end in _months(site, months, now_ms)
            for product in site.products]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decimal(value: float) -> str:
    """A PACT decimal string (no exponent, no sign on zero)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def product_footprint(period: Period, fp: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The PACT v3 ProductFootprint of one Tanji footprint dict."""
    site, product = period.site, period.product
    per_unit = fp.get("kgco2e_per_unit_market")
    upstream = product.upstream_kgco2e_per_unit
    per_unit_total = (per_unit or 0.0) + (upstream or 0.0)
    battery_kwh = product.declared_unit_kwh
    if battery_kwh:
        unit, amount, per_declared = "kilowatt hour", battery_kwh, per_unit_total / battery_kwh
        mass = (product.mass_kg or 0.0) / battery_kwh
    else:
        unit, amount, per_declared, mass = "piece", 1.0, per_unit_total, product.mass_kg or 0.0
    boundary = ("cradle-to-gate: static upstream part per unit from the bill of materials plus "
                "metered gate-to-gate electricity" if upstream else
                "gate-to-gate: electricity metered at the plant (purchased grid electricity, "
                "on-site PV, green certificates); upstream materials not included")
    provisional = bool(fp.get("provisional")) or period.end_ms >= now_ms
    comment = (f"Tanji live footprint of {product.id} at {site.id}, {_iso(period.start_ms)} to "
               f"{_iso(period.end_ms)}{' (month to date, provisional)' if provisional else ''}; "
               f"{fp.get('units', 0):g} units. Market-based electricity emissions "
               f"(matching mode {fp.get('matching_mode')}, residual mix {fp.get('residual_mix')}), "
               f"factor dataset {fp.get('dataset_id')} version {fp.get('dataset_version')}. "
               "Product carbon content not assessed (fossilCarbonContent reported 0)."
               + ("" if per_unit is not None else " No unit produced in the period: emissions per unit unknown, reported 0."))
    return {
        "id": period.id,
        "specVersion": SPEC_VERSION,
        "version": int(fp.get("revision") or 0),
        "created": _iso(now_ms),
        "status": "Active",
        "companyName": site.name or site.id,
        "companyIds": [f"urn:tanji:site:{site.id}"],
        "productDescription": product.name,
        "productIds": [f"urn:tanji:product:{site.id}:{product.id}"],
        "productNameCompany": product.name,
        "comment": comment,
        "pcf": {
            "declaredUnitOfMeasurement": unit,
            "declaredUnitAmount": _decimal(amount),
            "productMassPerDeclaredUnit": _decimal(mass),
            "referencePeriodStart": _iso(period.start_ms),
            "referencePeriodEnd": _iso(period.end_ms),
            "geographyCountry": "CN",
            "pcfExcludingBiogenicUptake": _decimal(per_declared),
            "pcfIncludingBiogenicUptake": _decimal(per_declared),
            "fossilGhgEmissions": _decimal(per_declared),
            "fossilCarbonContent": "0",
            "ipccCharacterizationFactors": ["AR6"],
            "crossSectoralStandards": ["ISO14067", "GHGP-Product", "PACT-3.0"],
            "exemptedEmissionsPercent": "0",
            "packagingEmissionsIncluded": False,
            "boundaryProcessesDescription": boundary,
            "primaryDataShare": _decimal(100 * (fp.get("primary_data_share") or 0.0)),
            "secondaryEmissionFactorSources": [
                {"name": str(fp.get("dataset_id")), "version": str(fp.get("dataset_version"))}],
        },
        "extensions": [{
            "specVersion": "2.0.0",
            "dataSchema": EXTENSION_SCHEMA,
            "data": {k: fp.get(k) for k in (
                "units", "energy_kwh", "kgco2e_location", "kgco2e_market", "kgco2e_per_unit_location",
                "kgco2e_per_unit_market", "upstream_kgco2e_per_unit", "dataset_id", "dataset_version",
                "gas_basis", "matching_mode", "residual_mix", "share_metered", "share_allocated",
                "share_estimated", "uncertainty_pct_95", "renewable_share", "hourly_matched_share",
                "provisional", "revision", "factor_region", "factor_selection", "uncovered_basis")},
        }],
    }


def _footprint_for(svc: AccountingServiceLike, period: Period, now_ms: int) -> dict[str, Any]:
    found = svc.footprints(period.site.id, start_ms=period.start_ms, end_ms=max(period.end_ms, period.start_ms + 1),
                           product_id=period.product.id)
    fp = found[0] if found else {"units": 0.0, "revision": 0, "provisional": True}
    return product_footprint(period, fp, now_ms)


@router.get("/3/footprints", dependencies=[Depends(require_pact_token)], response_class=TanjiJSONResponse,
            summary="PACT Action ListFootprints", responses={400: {"description": "bad or missing token"}})
def list_footprints(request: Request, svc: Service,
                    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
                    offset: Annotated[int, Query(ge=0, le=1_000_000, description="continuation from the Link header")] = 0,
                    productId: Annotated[str | None, Query(max_length=200)] = None) -> JSONResponse:  # noqa: N803 (PACT name)
    """The current and previous month of every product, newest first; paged with `limit`."""
    now = windows.now_ms()
    chosen = [p for p in periods(svc, MONTHS_LISTED, now)
              if productId is None or productId in (p.product.id, f"urn:tanji:product:{p.site.id}:{p.product.id}")]
    page = chosen[offset:offset + limit]
    body = {"data": [_footprint_for(svc, p, now) for p in page]}
    headers = {}
    if offset + limit < len(chosen):
        query = urllib.parse.urlencode({k: v for k, v in (("limit", limit), ("offset", offset + limit),
                                                          ("productId", productId)) if v is not None})
        headers["Link"] = f'<{request.url.replace(query=query)}>; rel="next"'
    return TanjiJSONResponse(body, headers=headers)


@router.get("/3/footprints/{footprint_id}", dependencies=[Depends(require_pact_token)],
            response_class=TanjiJSONResponse, summary="PACT Action GetFootprint",
            responses={400: {"description": "bad or missing token"}, 404: {"description": "NoSuchFootprint"}})
def get_footprint(svc: Service, footprint_id: str) -> dict[str, Any]:
    now = windows.now_ms()
    for period in periods(svc, MONTHS_SERVED, now):
        if period.id == footprint_id:
            return {"data": _footprint_for(svc, period, now)}
    raise PactError(404, "NoSuchFootprint", f"Footprint with ID {footprint_id!r} does not exist")

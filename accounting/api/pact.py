"""PACT Technical Specifications v3.0.3: the HTTP actions a partner's host system calls.

- `GET /.well-known/openid-configuration`: the OpenID provider document (`token_endpoint`);
- `POST /auth/token` (Action Authenticate): OAuth2 client credentials by HTTP Basic (or form
  fields) → a bearer token for an hour; failed logins rate limited (`accounting.pact.ratelimit`);
- `GET /3/footprints` (Action ListFootprints): the published footprints the client is granted,
  every v3 filter, `limit` and an absolute `Link: <…>; rel="next"` for the next page;
- `GET /3/footprints/{id}` (Action GetFootprint);
- `POST /3/events` (Action Events): CloudEvents in structured mode; a RequestCreated event is
  answered later with a RequestFulfilled or RequestRejected event to the client's registered
  events endpoint; Published/Fulfilled/Rejected events are checked and acknowledged;
- `GET /pact/extensions/tanji-energy-provenance/1.0.0/schema.json`: the JSON Schema of the
  data model extension every footprint carries (its `dataSchema` points here).

Only published footprints are served (`accounting.pact.publisher`: closed months, immutable,
revisions as new footprints). Errors are v3 error responses `{"code", "message"}` with the v3
status codes; nothing here answers a framework 422. Every action refuses plain HTTP (the spec:
HTTPS only) unless the host was built with `require_https=False`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import urllib.parse
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from accounting.pact import events
from accounting.pact.clients import PactClient
from accounting.pact.document import EXTENSION_PATH
from accounting.pact.filters import Criteria, FilterError
from accounting.pact.host import PactHost

router = APIRouter(tags=["PACT v3"])

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PAGING = ("limit", "offset", "asof")
_SCHEMA_TEXT = resources.files("accounting.pact").joinpath("tanji-energy-provenance.schema.json").read_text()


class PactError(Exception):
    """A v3 error response: `code` from the v3 error codes, with its status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def pact_error_response(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PactError)
    return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status, headers=exc.headers)


def _host(request: Request) -> PactHost:
    return request.app.state.pact


def _https(request: Request) -> None:
    if _host(request).require_https and request.url.scheme != "https":
        raise PactError(400, "BadRequest", "PACT is served over HTTPS only: use the https:// URL")


def _oauth_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> JSONResponse:
    extra = {"WWW-Authenticate": 'Basic realm="tanji-pact"'} if status == 401 else {}
    return JSONResponse({"error": error, "error_description": description}, status_code=status,
                        headers={**extra, **(headers or {}), "Cache-Control": "no-store"})


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (urllib.parse.unquote(client_id), urllib.parse.unquote(secret)) if sep else None


def _base(request: Request) -> str:
    """The absolute base URL the client used (scheme and `Host` of this request)."""
    return str(request.base_url).rstrip("/")


@router.get("/.well-known/openid-configuration", summary="OpenID provider configuration (token endpoint)")
def openid_configuration(request: Request) -> dict[str, Any]:
    """Where to get a token: v3 clients SHOULD look here first, then fall back to /auth/token."""
    base = _base(request)
    return {"issuer": base, "token_endpoint": f"{base}/auth/token",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["token"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["none"],
            "scopes_supported": ["footprint:list", "footprint:read"]}


_TOKEN_FORM = {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
    "schema": {"type": "object", "required": ["grant_type"], "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "client_id": {"type": "string"}, "client_secret": {"type": "string"},
        "scope": {"type": "string"}}}}}}}


@router.post("/auth/token", openapi_extra=_TOKEN_FORM, summary="PACT Action Authenticate (client credentials)",
             responses={200: {"description": "access token"}, 400: {"description": "bad request"},
                        401: {"description": "invalid client"}, 429: {"description": "too many attempts"}})
async def token(request: Request) -> JSONResponse:
    """OAuth2 client-credentials grant; credentials by HTTP Basic (preferred) or form fields."""
    host = _host(request)
    if host.require_https and request.url.scheme != "https":
        return _oauth_error(400, "invalid_request", "PACT is served over HTTPS only: use the https:// URL")
    body = await request.body()
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return _oauth_error(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
    if form.get("grant_type", [""])[0] != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
    credentials = _basic_credentials(request.headers.get("authorization"))
    if credentials is None and "client_id" in form:
        credentials = (form["client_id"][0], form.get("client_secret", [""])[0])
    if credentials is None:
        return _oauth_error(401, "invalid_client", "give client credentials by HTTP Basic authentication")
    client_id, secret = credentials
    address = request.client.host if request.client else "?"
    claimed = client_id if host.clients.get(client_id) is not None else None
    wait = host.limiter.wait_s(claimed, address)
    if wait > 0:
        return _oauth_error(429, "invalid_request", f"too many attempts; retry in {math.ceil(wait)} s",
                            {"Retry-After": str(math.ceil(wait))})
    client = host.clients.verify(client_id, secret)
    if client is None:
        host.limiter.failed(claimed, address)
        return _oauth_error(401, "invalid_client", "Client authentication failed")
    host.limiter.succeeded(client.client_id)
    issued = host.tokens.issue(client.client_id)
    return JSONResponse({"access_token": issued, "token_type": "Bearer", "expires_in": host.tokens.lifetime_s},
                        headers={"Cache-Control": "no-store"})


def _client(request: Request) -> PactClient:
    """The client behind the bearer token (HTTPS only; 401 for a missing, unknown or expired token)."""
    _https(request)
    host = _host(request)
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    if scheme.lower() != "bearer" or not value.strip():
        raise PactError(401, "BadRequest", "missing bearer token: get one from POST /auth/token",
                        {"WWW-Authenticate": "Bearer"})
    checked = host.tokens.check(value.strip())
    if checked is None:
        raise PactError(401, "BadRequest", "Invalid token provided", challenge)
    if checked[0] == "expired":
        raise PactError(401, "TokenExpired", "The specified access token has expired: get a new one from "
                        "POST /auth/token", challenge)
    client = host.clients.get(checked[1])
    if client is None:  # removed from the clients file since the token was issued
        raise PactError(401, "BadRequest", "Invalid token provided", challenge)
    return client


def _int(value: str | None, name: str, default: int, minimum: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise PactError(400, "BadRequest", f"{name}={value!r} is not an integer") from None
    if number < minimum:
        raise PactError(400, "BadRequest", f"{name} must be at least {minimum}")
    return number


def _param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema,
            **({"explode": True} if schema.get("type") == "array" else {})}


_STRINGS = {"type": "array", "items": {"type": "string"}}
_LIST_PARAMETERS = {"parameters": [
    _param("limit", "footprints per page (at most 1000)", {"type": "integer", "minimum": 1}),
    _param("productId", "product URNs, OR-ed, case-insensitive", _STRINGS),
    _param("companyId", "company URNs, OR-ed, case-insensitive", _STRINGS),
    _param("geography", "country, subdivision or region, OR-ed", _STRINGS),
    _param("classification", "classification URNs, OR-ed", _STRINGS),
    _param("validOn", "valid at this date-time", {"type": "string", "format": "date-time"}),
    _param("validAfter", "validity starts after", {"type": "string", "format": "date-time"}),
    _param("validBefore", "validity ends before", {"type": "string", "format": "date-time"}),
    _param("status", "Active or Deprecated", {"type": "string"}),
]}


@router.get("/3/footprints", summary="PACT Action ListFootprints", openapi_extra=_LIST_PARAMETERS,
            responses={200: {"description": "{data: [ProductFootprint]}"}, 400: {"description": "BadRequest"},
                       401: {"description": "invalid or expired token"}, 403: {"description": "AccessDenied"}})
def list_footprints(request: Request) -> JSONResponse:
    """Published footprints the client is granted (Active and Deprecated), oldest first; every
    v3 filter (arrays OR-ed, criteria AND-ed, case-insensitive); `limit` (at most 1000 a page)
    and an absolute `Link` to the next page, valid as long as the host runs and beyond."""
    client = _client(request)
    host = _host(request)
    params = list(request.query_params.multi_items())
    names = {k.lower() for k, _ in params}
    if "$filter" in names or "filter" in names:
        raise PactError(400, "NotImplemented", "the OData $filter of v2 is not supported in v3; use the v3 "
                        "filter parameters (productId, companyId, geography, classification, validOn, "
                        "validAfter, validBefore, status)")
    single = {k.lower(): v for k, v in params if k.lower() in PAGING}
    limit = min(_int(single.get("limit"), "limit", DEFAULT_LIMIT, 1), MAX_LIMIT)
    offset = _int(single.get("offset"), "offset", 0, 0)
    asof = _int(single.get("asof"), "asof", host.published.last_seq(), 0)
    try:
        criteria = Criteria.parse(params)
    except FilterError as exc:
        raise PactError(400, "BadRequest", str(exc)) from None
    found, hidden = host.select(client, criteria, upto_seq=asof)
    if not found and hidden:
        raise PactError(403, "AccessDenied", "Access denied: these footprints are not shared with this client")
    page = found[offset:offset + limit]
    headers = {}
    if offset + limit < len(found):
        keep = [(k, v) for k, v in params if k.lower() not in PAGING]
        query = urllib.parse.urlencode(keep + [("limit", limit), ("offset", offset + limit), ("asof", asof)])
        headers["Link"] = f'<{_base(request)}/3/footprints?{query}>; rel="next"'
    return JSONResponse({"data": [p.document for p in page]}, headers=headers)


@router.get("/3/footprints/{footprint_id}", summary="PACT Action GetFootprint",
            responses={200: {"description": "{data: ProductFootprint}"}, 400: {"description": "BadRequest"},
                       401: {"description": "invalid or expired token"}, 403: {"description": "AccessDenied"},
                       404: {"description": "NotFound"}})
def get_footprint(request: Request, footprint_id: str) -> JSONResponse:
    """One footprint by id, also when Deprecated (its successor names it in precedingPfIds)."""
    client = _client(request)
    if not events.is_uuid(footprint_id):
        raise PactError(400, "BadRequest", f"{footprint_id!r} is not a footprint id (a UUID)")
    found = _host(request).published.get(footprint_id.lower())
    if found is None:
        raise PactError(404, "NotFound", f"Footprint with ID {footprint_id!r} does not exist")
    if not _host(request).visible(client, found):
        raise PactError(403, "AccessDenied", "Access denied: this footprint is not shared with this client")
    return JSONResponse({"data": found.document})


@router.post("/3/events", summary="PACT Action Events (CloudEvents, structured content mode)",
             responses={200: {"description": "accepted (empty body)"}, 400: {"description": "BadRequest"},
                        401: {"description": "invalid or expired token"}})
async def post_event(request: Request) -> Response:
    client = _client(request)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in events.MEDIA_TYPES:
        raise PactError(400, "BadRequest", "send the event as application/cloudevents+json (structured mode)")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise PactError(400, "BadRequest", "the body is not JSON") from None
    try:
        event = events.parse(body)
    except events.EventError as exc:
        raise PactError(400, "BadRequest", str(exc)) from None
    if event.type == events.REQUEST_CREATED:
        if client.events is None:
            raise PactError(400, "BadRequest", f"client {client.client_id!r} has no events endpoint registered "
                            "with this host: its answer could not be delivered")
        if not client.events.accepts_source(event.source):
            raise PactError(400, "BadRequest", f"source {event.source!r} is not the events endpoint registered "
                            f"for client {client.client_id!r}")
        _host(request).request(client, body)
    return Response(status_code=200)


@router.get(EXTENSION_PATH, summary="JSON Schema of Tanji's PACT data model extension", include_in_schema=True)
def extension_schema() -> Response:
    """Public (no token): partners validate the extension data against it."""
    return Response(_SCHEMA_TEXT, media_type="application/schema+json",
                    headers={"Cache-Control": "public, max-age=86400"})

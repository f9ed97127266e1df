"""Export shipments over HTTP: record (JSON or CSV), list, read, issue, print, PACT.

Routes translate HTTP to `accounting.shipments.ShipmentBook` calls; the figures are the book's
(from the engine's footprint records), the page and the PACT footprints are views of the issued
document. Writes need the API token. Errors: malformed input and unknown products 422,
over-shipping 422, a batch already shipped and a shipment id used twice 409, an unknown
shipment 404 — each with what to do in `detail`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from accounting.api import windows
from accounting.api.auth import Writer
from accounting.api.deps import selected_sites
from accounting.api.shipment_page import render_document
from accounting.shipments.pact import SCHEMA, SCHEMA_PATH

if TYPE_CHECKING:
    from accounting.shipments.book import ShipmentBook

router = APIRouter(prefix="/api/v1/shipments", tags=["shipments"])
schema_router = APIRouter(tags=["shipments"])

Status = Literal["draft", "issued"]
EXAMPLE = {"shipment_id": "500120250612000123", "date": "2025-06-20", "destination": "DE",
           "buyer": "Speicher GmbH", "lines": [
               {"product_id": "pack-48v-100ah", "quantity": 300,
                "batches": [{"batch_id": "250731", "quantity": 200}, {"batch_id": "250732", "quantity": 100}]},
               {"product_id": "ess-5kwh", "quantity": 40}]}


def _book(request: Request) -> ShipmentBook:
    return request.app.state.shipments


@router.get("", summary="Shipments with their status (draft, issued; superseded versions counted)")
def list_shipments(request: Request, site: Annotated[str | None, Query(max_length=64)] = None,
                   status: Status | None = None) -> list[dict[str, Any]]:
    return _book(request).list(site, status)


@router.get("/lots", summary="Closed lots (batches, or days) of a product: units made, shipped, left")
def lots(request: Request, product: Annotated[str, Query(max_length=64)],
         site: Annotated[str | None, Query(max_length=64)] = None,
         start: Annotated[str | None, Query(max_length=40, description="epoch ms or ISO 8601; default 31 days ago")] = None,
         end: Annotated[str | None, Query(max_length=40, description="epoch ms or ISO 8601; default now")] = None,
         ) -> list[dict[str, Any]]:
    """Lots that ended in [start, end), oldest first (at most the newest 500)."""
    book = _book(request)
    chosen = selected_sites(book.service, site)
    if len(chosen) != 1:
        raise HTTPException(422, f"site: required (this deployment has sites {', '.join(s.id for s in chosen)})")
    now = windows.now_ms()
    try:
        start_ms = windows.parse_instant(start, "start") if start else now - 31 * 86_400_000
        end_ms = windows.parse_instant(end, "end") if end else now
    except windows.WindowError as exc:
        raise HTTPException(422, str(exc)) from None
    return book.lots(chosen[0].id, product, start_ms, end_ms)


@router.post("", status_code=201, dependencies=[Writer],
             summary="Record a shipment (export declaration or invoice) as a draft, or issue it at once")
def create_shipment(request: Request, shipment: Annotated[dict[str, Any], Body(examples=[EXAMPLE])],
                    issue: bool = False) -> dict[str, Any]:
    """Lines draw on the named batches, the rest first-in-first-out from closed batches (or
    production days). Refused when a unit would be shipped twice or was never produced."""
    return _book(request).create(shipment, issue=issue)


@router.post("/import", status_code=201, dependencies=[Writer],
             summary="Record the shipments of a CSV export (logistics / ERP), all or none",
             openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}})
async def import_shipments(request: Request, site: Annotated[str | None, Query(max_length=64)] = None,
                           issue: bool = False) -> list[dict[str, Any]]:
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(422, "the CSV must be UTF-8 (a spreadsheet's 'CSV UTF-8' export)") from None
    return _book(request).import_csv(text, site_id=site, issue=issue)


@router.get("/{shipment_id}", summary="One shipment with its footprint (a draft's computed now, an issued one's as issued)")
def get_shipment(request: Request, shipment_id: str) -> dict[str, Any]:
    return _book(request).get(shipment_id)


@router.delete("/{shipment_id}", status_code=204, dependencies=[Writer], summary="Delete a draft (frees its units)")
def delete_shipment(request: Request, shipment_id: str) -> None:
    _book(request).delete(shipment_id)


@router.post("/{shipment_id}/issue", dependencies=[Writer],
             summary="Issue a draft: its figures become document version 1, immutable, and PACT footprints")
def issue_shipment(request: Request, shipment_id: str) -> dict[str, Any]:
    return _book(request).issue(shipment_id)


@router.get("/{shipment_id}/versions/{version}", summary="An issued document version exactly as issued")
def shipment_version(request: Request, shipment_id: str, version: int) -> dict[str, Any]:
    return _book(request).document(shipment_id, version)


@router.get("/{shipment_id}/pact", summary="The PACT v3 footprints of an issued version, one per line")
def shipment_pact(request: Request, shipment_id: str, version: int | None = None) -> dict[str, Any]:
    return {"data": _book(request).pact_footprints(shipment_id, version)}


@router.get("/{shipment_id}/document", response_class=HTMLResponse,
            summary="Printable shipment document for the buyer (中文 / English)")
def shipment_document(request: Request, shipment_id: str, version: int | None = None) -> HTMLResponse:
    book = _book(request)
    row = book.get(shipment_id)
    if row["status"] == "draft":
        raise HTTPException(409, f"shipment {shipment_id!r} is a draft: issue it first "
                                 f"(POST /api/v1/shipments/{shipment_id}/issue)")
    doc = book.document(shipment_id, version)
    return HTMLResponse(render_document(doc, book.service.sites[doc["site"]["id"]]))


@schema_router.get(SCHEMA_PATH, include_in_schema=False)
def shipment_extension_schema() -> dict[str, Any]:
    return SCHEMA

"""PACT v3 events (CloudEvents 1.0, structured content mode): checking those that arrive,
building those that leave.

Event types are the v3.0.3 OpenAPI ones (`org.wbcsd.pact.ProductFootprint.<Name>Event.3`);
the names of the specification's prose (`org.wbcsd.pathfinder.ProductFootprintRequest.Created.v1`
and friends) are accepted on the way in as the same events. What leaves uses the OpenAPI names.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from accounting.pact.document import iso
from accounting.pact.filters import Criteria, FilterError

PUBLISHED = "org.wbcsd.pact.ProductFootprint.PublishedEvent.3"
REQUEST_CREATED = "org.wbcsd.pact.ProductFootprint.RequestCreatedEvent.3"
REQUEST_FULFILLED = "org.wbcsd.pact.ProductFootprint.RequestFulfilledEvent.3"
REQUEST_REJECTED = "org.wbcsd.pact.ProductFootprint.RequestRejectedEvent.3"
#: Accepted type names → the event they are.
TYPES = {
    PUBLISHED: PUBLISHED, "org.wbcsd.pathfinder.ProductFootprint.Published.v1": PUBLISHED,
    REQUEST_CREATED: REQUEST_CREATED,
    "org.wbcsd.pathfinder.ProductFootprintRequest.Created.v1": REQUEST_CREATED,
    REQUEST_FULFILLED: REQUEST_FULFILLED,
    "org.wbcsd.pathfinder.ProductFootprintRequest.Fulfilled.v1": REQUEST_FULFILLED,
    REQUEST_REJECTED: REQUEST_REJECTED,
    "org.wbcsd.pathfinder.ProductFootprintRequest.Rejected.v1": REQUEST_REJECTED,
}
CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"
MEDIA_TYPES = ("application/cloudevents+json", "application/json")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_PF_IDS = 1000


class EventError(ValueError):
    """The event is not a valid PACT v3 event; the message says why (400 BadRequest)."""


def is_uuid(text: Any) -> bool:
    return isinstance(text, str) and bool(_UUID.match(text))


@dataclass(frozen=True)
class IncomingEvent:
    type: str
    id: str
    source: str
    data: dict[str, Any]
    criteria: Criteria | None = None  # of a RequestCreated event


def parse(body: Any) -> IncomingEvent:
    """Check an event against the v3 schema and its type's rules."""
    if not isinstance(body, dict):
        raise EventError("the body must be a JSON object (a CloudEvent in structured content mode)")
    for key in ("specversion", "id", "source", "type", "time", "data"):
        if key not in body:
            raise EventError(f"the event has no {key!r}")
    if body["specversion"] != "1.0":
        raise EventError(f"specversion must be '1.0', got {body['specversion']!r}")
    for key in ("id", "source", "type", "time"):
        if not isinstance(body[key], str) or not body[key].strip() or len(body[key]) > 2000:
            raise EventError(f"{key} must be a non-empty string")
    kind = TYPES.get(body["type"])
    if kind is None:
        raise EventError(f"unknown event type {body['type']!r}; expected one of {sorted(set(TYPES.values()))}")
    data = body["data"]
    if not isinstance(data, dict):
        raise EventError("data must be a JSON object")
    criteria = None
    if kind == PUBLISHED:
        ids = data.get("pfIds")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_PF_IDS:
            raise EventError("data.pfIds must be a non-empty list of footprint ids")
        bad = [i for i in ids if not is_uuid(i)]
        if bad:
            raise EventError(f"data.pfIds must be UUIDs, got {bad[0]!r}")
    elif kind == REQUEST_CREATED:
        try:
            criteria = Criteria.parse(data.items())
        except FilterError as exc:
            raise EventError(f"data: {exc}") from None
        if "comment" in data and not isinstance(data["comment"], str):
            raise EventError("data.comment must be a string")
    else:
        if not isinstance(data.get("requestEventId"), str) or not data["requestEventId"]:
            raise EventError("data.requestEventId must be the id of the request event")
        if kind == REQUEST_FULFILLED and not (isinstance(data.get("pfs"), list) and data["pfs"]):
            raise EventError("data.pfs must be a non-empty list of ProductFootprints")
        if kind == REQUEST_REJECTED and not (isinstance(data.get("error"), dict)
                                             and {"code", "message"} <= data["error"].keys()):
            raise EventError("data.error must be an error object with code and message")
    return IncomingEvent(kind, body["id"], body["source"], data, criteria)


def envelope(kind: str, source: str, data: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """A CloudEvent leaving this host."""
    return {"type": kind, "specversion": "1.0", "id": str(uuid.uuid4()), "source": source,
            "time": iso(now_ms), "data": data}


def published(pf_ids: list[str], source: str, now_ms: int) -> dict[str, Any]:
    return envelope(PUBLISHED, source, {"pfIds": pf_ids}, now_ms)


def fulfilled(request_id: str, pfs: list[dict[str, Any]], source: str, now_ms: int) -> dict[str, Any]:
    return envelope(REQUEST_FULFILLED, source, {"requestEventId": request_id, "pfs": pfs}, now_ms)


def rejected(request_id: str, code: str, message: str, source: str, now_ms: int) -> dict[str, Any]:
    return envelope(REQUEST_REJECTED, source, {"requestEventId": request_id,
                                               "error": {"code": code, "message": message}}, now_ms)

"""The v3 filter criteria of ListFootprints and of a RequestCreated event, and how they match.

Within a criterion the values are OR-ed, across criteria AND-ed; every comparison of ids,
geographies, classifications and status is case-insensitive (v3.0.3 parameters), and so are
the parameter names (`productid=` is `productId=`, as in the spec's own example). A date is
ISO 8601; without an offset it is UTC. Validity: `validityPeriodStart`/`End` when present,
else three years from `referencePeriodEnd` (v3 lifecycle).

- `validOn=t`: start <= t <= end;  `validAfter=t`: start > t;  `validBefore=t`: end < t;
- `status` must be Active or Deprecated; any other value matches nothing (an empty list, as
  the conformance tests expect), an empty value is no filter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

LIST_CRITERIA = ("productId", "companyId", "geography", "classification")
DATE_CRITERIA = ("validOn", "validAfter", "validBefore")
CRITERIA = (*LIST_CRITERIA, *DATE_CRITERIA, "status")
_CANONICAL = {name.lower(): name for name in CRITERIA}
#: Values per criterion and characters per value a request may carry.
MAX_VALUES = 100
MAX_VALUE_CHARS = 500
THREE_YEARS_MS = 3 * 365 * 86_400_000 + 86_400_000  # allows a leap day


class FilterError(ValueError):
    """A criterion is malformed; the message says which and why (400 BadRequest)."""


def parse_time(value: str, name: str) -> int:
    """ISO 8601 → epoch ms (UTC when no offset is given)."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(f"{name}={value!r} is not an ISO 8601 date-time (e.g. 2025-04-01T00:00:00Z)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


@dataclass(frozen=True)
class Criteria:
    """Parsed criteria; None or empty means "not given"."""

    product_ids: frozenset[str] = frozenset()
    company_ids: frozenset[str] = frozenset()
    geography: frozenset[str] = frozenset()
    classification: frozenset[str] = frozenset()
    valid_on: int | None = None
    valid_after: int | None = None
    valid_before: int | None = None
    status: str | None = None

    @classmethod
    def parse(cls, pairs: Iterable[tuple[str, Any]]) -> Criteria:
        """From (name, value) pairs: a query string's, or a RequestCreated event's data items
        (a value may then be a list). Names outside the criteria are left to the caller."""
        lists: dict[str, set[str]] = {name: set() for name in LIST_CRITERIA}
        single: dict[str, str] = {}
        for raw_name, raw_value in pairs:
            name = _CANONICAL.get(raw_name.lower())
            if name is None:
                continue
            values = raw_value if isinstance(raw_value, list) else [raw_value]
            if len(values) > MAX_VALUES:
                raise FilterError(f"{name} has more than {MAX_VALUES} values")
            for value in values:
                if not isinstance(value, str):
                    raise FilterError(f"{name} values must be strings, got {value!r}")
                if len(value) > MAX_VALUE_CHARS:
                    raise FilterError(f"a {name} value is longer than {MAX_VALUE_CHARS} characters")
                if not value.strip():
                    continue  # an empty value is no criterion
                if name in lists:
                    lists[name].add(value.strip().lower())
                elif name in single and single[name] != value:
                    raise FilterError(f"{name} is given twice with different values")
                else:
                    single[name] = value
            if sum(len(v) for v in lists.values()) > MAX_VALUES * 4:
                raise FilterError("too many filter values")
        dates = {name: parse_time(single[name], name) if name in single else None for name in DATE_CRITERIA}
        return cls(frozenset(lists["productId"]), frozenset(lists["companyId"]), frozenset(lists["geography"]),
                   frozenset(lists["classification"]), dates["validOn"], dates["validAfter"],
                   dates["validBefore"], single["status"].strip().lower() if "status" in single else None)

    def matches(self, document: dict[str, Any]) -> bool:
        def lower(values: Any) -> set[str]:
            return {str(v).lower() for v in values or ()}

        if self.product_ids and not self.product_ids & lower(document.get("productIds")):
            return False
        if self.company_ids and not self.company_ids & lower(document.get("companyIds")):
            return False
        if self.classification and not self.classification & lower(document.get("productClassifications")):
            return False
        pcf = document.get("pcf") or {}
        if self.geography and not self.geography & lower(
                pcf.get(k) for k in ("geographyCountry", "geographyRegionOrSubregion",
                                     "geographyCountrySubdivision") if pcf.get(k)):
            return False
        if self.status is not None and self.status != str(document.get("status", "")).lower():
            return False
        if self.valid_on is None and self.valid_after is None and self.valid_before is None:
            return True
        start, end = validity(document)
        if self.valid_on is not None and not start <= self.valid_on <= end:
            return False
        if self.valid_after is not None and not start > self.valid_after:
            return False
        return self.valid_before is None or end < self.valid_before


def validity(document: dict[str, Any]) -> tuple[int, int]:
    """(start, end) of a footprint's validity period in epoch ms."""
    if document.get("validityPeriodStart") and document.get("validityPeriodEnd"):
        return (parse_time(document["validityPeriodStart"], "validityPeriodStart"),
                parse_time(document["validityPeriodEnd"], "validityPeriodEnd"))
    ref_end = parse_time(document["pcf"]["referencePeriodEnd"], "referencePeriodEnd")
    return ref_end, ref_end + THREE_YEARS_MS

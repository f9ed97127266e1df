"""What the API needs from the accounting service, as a Protocol.

The API depends on this interface, not on `accounting.service.AccountingService`, so the unit
tests can drive it with a small in-memory fake and the demo with the real ingest service.
The read part is the interface agreed with the ingest service; the write part (certificates,
factor datasets, recompute) is optional: a service without it makes the write endpoints answer
501 with a message saying so, rather than pretending to have stored something.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from tanji.site import Site

#: An update event from the service: ``{"type": "footprints" | "meters", ...}``.
Event = dict[str, Any]
Listener = Callable[[Event], None]


@runtime_checkable
class AccountingServiceLike(Protocol):
    """The read interface every service behind the API offers."""

    sites: dict[str, Site]

    def footprints(self, site_id: str | None = None, *, start_ms: int, end_ms: int,
                   product_id: str | None = None, batch_id: str | None = None) -> list[dict]: ...

    def meter_status(self, site_id: str | None = None) -> list[dict]: ...

    def gateway_status(self) -> list[dict]: ...

    def hourly_series(self, site_id: str, start_ms: int, end_ms: int) -> list[dict]: ...

    def add_listener(self, callback: Listener) -> None: ...

    def remove_listener(self, callback: Listener) -> None: ...


@runtime_checkable
class FactorDatasetsLike(Protocol):
    """Factor datasets: listing them is read-only, loading a new version is a write."""

    def factor_datasets(self) -> list[dict]: ...

    def add_factor_dataset(self, document: dict) -> dict: ...


@runtime_checkable
class CertificatesLike(Protocol):
    """The green-certificate ledger; registering a certificate is a write, a serial is unique."""

    def certificates(self, site_id: str | None = None) -> list[dict]: ...

    def add_certificate(self, certificate: dict) -> dict: ...


@runtime_checkable
class ReadingFlagsLike(Protocol):
    """Per-reading data-quality flags of one meter over a period (the live service has them)."""

    def reading_flags(self, site_id: str, meter: str, *, start_ms: int, end_ms: int) -> dict: ...


@runtime_checkable
class RecomputeLike(Protocol):
    """Explicit recomputation of a period: its output is a new, versioned result."""

    def recompute(self, site_id: str, *, start_ms: int, end_ms: int,
                  dataset_version: str | None = None) -> dict: ...


@runtime_checkable
class FactorToolsLike(Protocol):
    """Factor versions shown in full, their effect on a site's products, the site's market rules,
    and certificate lists imported at once (`accounting.api.factors`)."""

    def factor_dataset(self, spec: str) -> dict: ...

    def factor_diff(self, site_id: str, old: str, new: str, *, start_ms: int, end_ms: int) -> dict: ...

    def market_rules(self, site_id: str) -> dict: ...

    def import_certificates(self, site_id: str, text: str) -> list[dict]: ...


@runtime_checkable
class GridFactorsLike(Protocol):
    """The grid factors in effect: the dataset's provenance and each hour's factors (kg/kWh)."""

    def grid_factors(self, site_id: str, start_ms: int, end_ms: int) -> dict: ...


@runtime_checkable
class OperatorLogLike(Protocol):
    """The operator's durable log: alarms with their acknowledgements, and what changed.

    `acknowledge_alarm` raises `accounting.errors.UnknownAlarmError` for an unknown id."""

    def alarms(self, site_id: str | None = None, *, active: bool | None = None, since_ms: int | None = None,
               limit: int = 200) -> list[dict]: ...

    def acknowledge_alarm(self, alarm_id: int, by: str, note: str = "") -> dict: ...

    def plant_changes(self, site_id: str | None = None, *, since_ms: int | None = None,
                      until_ms: int | None = None, limit: int = 100) -> list[dict]: ...


@runtime_checkable
class ContractsLike(Protocol):
    """Green-power contracts; holding one is a write, its bundled GEC serials are claimed once."""

    def contracts(self, site_id: str | None = None) -> list[dict]: ...

    def add_contract(self, contract: dict) -> dict: ...


@runtime_checkable
class TechnologiesLike(Protocol):
    """The technology names a site's certificates and contracts may carry (its dataset's)."""

    def technologies(self, site_id: str) -> dict: ...


@runtime_checkable
class ReadinessLike(Protocol):
    """`{"ready": bool, "restored": bool, ..., "reasons": [...]}` (accounting.ingest.readiness)."""

    def readiness(self) -> dict: ...


def engines_restored(service: object) -> bool:
    """Can the service's engines be asked for footprints yet? Background scans (PACT publication,
    shipments) start with the HTTP server, before the engines are restored from the checkpoints and
    the store; asked earlier they would fail on every site. A service without readiness (a tool,
    the API's test fake) has nothing to restore."""
    return not isinstance(service, ReadinessLike) or bool(service.readiness().get("restored", True))

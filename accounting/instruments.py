"""Market instruments: green certificates (GEC, 绿证), green-power contracts (绿电交易), deliverability.

On-site PV needs no instrument object: it is metered, hourly by nature, and its
self-consumption is computed from the meters by the engine.

A certificate is claimed in a :class:`GecLedger` when it is put into a site's
:class:`InstrumentPortfolio` (retired for that site), not when a footprint is computed: the
claim is then made once, and every footprint and recomputation of that site reuses it. A second
claim of the same serial — by another site, another portfolio, or the same one again — raises
:class:`~accounting.errors.CertificateAlreadyClaimedError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from accounting.errors import CertificateAlreadyClaimedError, InstrumentError
from accounting.factors.regions import canonical_province, grid_region_for_province, is_mainland

#: Energy certified by one GEC.
GEC_KWH = 1000.0

Deliverability = Literal["mainland", "regional"]


@dataclass(frozen=True)
class GreenCertificate:
    """One GEC: 1 MWh generated in ``generation_month`` (``"YYYY-MM"``), no hour."""

    serial: str
    generation_month: str
    technology: str
    province: str

    def __post_init__(self) -> None:
        parts = self.generation_month.split("-")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 1 <= int(parts[1]) <= 12:
            raise InstrumentError(f"GEC {self.serial}: generation_month must be YYYY-MM")


@dataclass(frozen=True)
class Claim:
    """A serial retired for a claimant (normally ``site:<site_id>``)."""

    serial: str
    claimant: str
    note: str = ""


class GecLedger:
    """Registry of certificates and of their claims; one per deployment, shared by all sites."""

    def __init__(self) -> None:
        self._certificates: dict[str, GreenCertificate] = {}
        self._claims: dict[str, Claim] = {}

    def register(self, certificates: Iterable[GreenCertificate]) -> None:
        """Make certificates known. Re-registering an identical certificate is harmless."""
        for cert in certificates:
            known = self._certificates.get(cert.serial)
            if known is not None and known != cert:
                raise InstrumentError(f"serial {cert.serial!r} registered with different data")
            self._certificates[cert.serial] = cert

    def certificate(self, serial: str) -> GreenCertificate:
        """The registered certificate with this serial."""
        try:
            return self._certificates[serial]
        except KeyError:
            raise InstrumentError(f"unknown certificate serial {serial!r}") from None

    def claim(self, serials: Iterable[str], claimant: str, note: str = "") -> list[GreenCertificate]:
        """Claim serials for ``claimant``, all or none.

        Raises :class:`CertificateAlreadyClaimedError` if any serial was claimed before (by
        anyone) or appears twice in ``serials``.
        """
        serials = list(serials)
        certs = [self.certificate(s) for s in serials]
        seen: set[str] = set()
        for s in serials:
            if s in self._claims:
                raise CertificateAlreadyClaimedError(s, self._claims[s].claimant)
            if s in seen:
                raise CertificateAlreadyClaimedError(s, claimant)
            seen.add(s)
        for s in serials:
            self._claims[s] = Claim(s, claimant, note)
        return certs

    def claimant_of(self, serial: str) -> str | None:
        """Who claimed a serial, or ``None``."""
        claim = self._claims.get(serial)
        return claim.claimant if claim else None

    def claims(self) -> list[Claim]:
        """All claims, in claim order (for persistence and audit)."""
        return list(self._claims.values())


@dataclass(frozen=True)
class GreenPowerContract:
    """A green-power purchase with its settlement data and bundled GECs.

    ``deliveries`` are ``(period, kWh)``: for ``hourly`` settlement the period is the UTC epoch
    ms of the hour start, for ``monthly`` it is ``"YYYY-MM"`` in the site's civil calendar.
    """

    contract_id: str
    technology: str
    province: str
    granularity: Literal["hourly", "monthly"]
    deliveries: tuple[tuple[int | str, float], ...]
    bundled_gec_serials: tuple[str, ...] = ()
    earmark: str | None = None

    def __post_init__(self) -> None:
        if self.granularity not in ("hourly", "monthly"):
            raise InstrumentError(f"contract {self.contract_id}: bad granularity")
        for period, kwh in self.deliveries:
            if kwh < 0:
                raise InstrumentError(f"contract {self.contract_id}: negative delivery")
            if self.granularity == "hourly" and (not isinstance(period, int) or period % 3_600_000):
                raise InstrumentError(f"contract {self.contract_id}: hourly periods are hour-start ms")
            if self.granularity == "monthly" and not isinstance(period, str):
                raise InstrumentError(f"contract {self.contract_id}: monthly periods are YYYY-MM")


@dataclass(frozen=True)
class HeldCertificate:
    """A certificate in a portfolio, optionally earmarked to a cost centre or product id."""

    certificate: GreenCertificate
    earmark: str | None = None


@dataclass
class InstrumentPortfolio:
    """The instruments a site holds. Adding an instrument claims its certificates in the ledger."""

    site_id: str
    ledger: GecLedger
    certificates: list[HeldCertificate] = field(default_factory=list)
    contracts: list[GreenPowerContract] = field(default_factory=list)

    @property
    def claimant(self) -> str:
        """The ledger claimant name of this site."""
        return f"site:{self.site_id}"

    def add_certificates(self, serials: Iterable[str], *, earmark: str | None = None) -> None:
        """Claim unbundled GECs for this site (atomically) and hold them."""
        for cert in self.ledger.claim(serials, self.claimant, note="unbundled"):
            self.certificates.append(HeldCertificate(cert, earmark))

    def add_contract(self, contract: GreenPowerContract) -> None:
        """Hold a green-power contract; its bundled GECs are claimed so they cannot be reused."""
        if any(c.contract_id == contract.contract_id for c in self.contracts):
            raise InstrumentError(f"contract {contract.contract_id!r} already in the portfolio")
        self.ledger.claim(contract.bundled_gec_serials, self.claimant,
                          note=f"bundled with {contract.contract_id}")
        self.contracts.append(contract)


def deliverable(instrument_province: str, site_grid_region: str, rule: Deliverability) -> bool:
    """Whether an instrument's generation lies within the site's market boundary.

    ``mainland``: generated anywhere on the China mainland grid. ``regional``: in addition,
    generated in the site's regional grid.
    """
    if rule not in ("mainland", "regional"):
        raise InstrumentError(f"bad deliverability rule {rule!r}")
    if not is_mainland(instrument_province):
        return False
    if rule == "regional":
        return grid_region_for_province(canonical_province(instrument_province)) == site_grid_region
    return True

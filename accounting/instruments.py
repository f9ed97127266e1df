"""Market instruments: green certificates (GEC, 绿证), green-power contracts (绿电交易), deliverability.

On-site PV needs no instrument object: it is metered, hourly by nature, and its
self-consumption is computed from the meters by the engine.

The rules of the national GEC system (发改能源〔2023〕1044号, NDRC, MoF and NEA, July 2023;
NEA, 《可再生能源绿色电力证书核发和交易规则》, 2024-09-05), as Tanji applies them:

- 1 GEC = 1,000 kWh (`GEC_KWH`).
- Tradable certificates are issued for grid-fed renewable energy; certificates for a project's
  self-consumed energy (自发自用) and for conventional hydro older than 2023 are issued but not
  tradable: they stay with the generating project's owner (`tradable=False`).
- A certificate is valid for two years counted from its production month (inclusive);
  certificates for energy produced before 2024-01-01 are valid until the end of 2025
  (`valid_until_month`). A claim outside that window is refused with the reason.
- A certificate declared for consumption, or expired, is cancelled (核销): Tanji records the
  cancellation with its date, claimant and the consumption period it is used for (`Claim`).
- A certificate issued for the site's own metered PV self-consumption certifies energy the
  engine already counts as PV self-consumption: it is recorded and cancelled, but covers
  nothing more (`HeldCertificate.counted` is False).

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

from accounting.errors import (
    CertificateAlreadyClaimedError,
    CertificateExpiredError,
    CertificateNotTransferableError,
    CertificateNotYetValidError,
    InstrumentError,
)
from accounting.factors.regions import canonical_province, grid_region_for_province, is_mainland

#: Energy certified by one GEC.
GEC_KWH = 1000.0
#: Validity of a GEC in months, counted from its production month inclusive (NEA 2024 rules).
GEC_VALIDITY_MONTHS = 24
#: Certificates for energy produced before this month are valid until `GEC_TRANSITION_VALID_UNTIL`.
GEC_TRANSITION_BEFORE = "2024-01"
GEC_TRANSITION_VALID_UNTIL = "2025-12"

Deliverability = Literal["mainland", "regional"]


def _month_index(month: str) -> int:
    year, mon = month.split("-")
    return int(year) * 12 + int(mon) - 1


def _month_name(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


@dataclass(frozen=True)
class GreenCertificate:
    """One GEC: 1 MWh generated in ``generation_month`` (``"YYYY-MM"``), no hour.

    ``tradable``: False for certificates of self-consumed energy and old conventional hydro,
    which only the generating project's owner may use. ``project_id``: the generating
    project's code on the national platform (建档立卡), when known.
    """

    serial: str
    generation_month: str
    technology: str
    province: str
    tradable: bool = True
    project_id: str = ""

    def __post_init__(self) -> None:
        parts = self.generation_month.split("-")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 1 <= int(parts[1]) <= 12:
            raise InstrumentError(f"GEC {self.serial}: generation_month must be YYYY-MM")

    @property
    def valid_until_month(self) -> str:
        """The last month (``YYYY-MM``, inclusive) in which the certificate may be used."""
        if self.generation_month < GEC_TRANSITION_BEFORE:
            return GEC_TRANSITION_VALID_UNTIL
        return _month_name(_month_index(self.generation_month) + GEC_VALIDITY_MONTHS - 1)

    def check_valid(self, on_month: str) -> None:
        """Refuse a use in ``on_month`` (``YYYY-MM``) outside the validity, with the reason."""
        if on_month < self.generation_month:
            raise CertificateNotYetValidError(
                f"GEC {self.serial} is not valid yet on {on_month}: it certifies energy produced in "
                f"{self.generation_month}, and a certificate is valid from its production month")
        if on_month > self.valid_until_month:
            rule = ("certificates for energy produced before 2024 are valid until the end of 2025"
                    if self.generation_month < GEC_TRANSITION_BEFORE else
                    "a certificate is valid for two years from its production month")
            raise CertificateExpiredError(
                f"GEC {self.serial} (produced {self.generation_month}) expired after "
                f"{self.valid_until_month} ({rule}); the platform cancels (核销) expired certificates")


@dataclass(frozen=True)
class Claim:
    """A serial retired (核销, cancelled) for a claimant (normally ``site:<site_id>``): when, and
    for which consumption period (``period``: ``YYYY`` or ``YYYY-MM`` of the matching window)."""

    serial: str
    claimant: str
    note: str = ""
    cancelled_ms: int | None = None
    period: str | None = None


def check_transferable(cert: GreenCertificate, own_projects: Iterable[str]) -> bool:
    """Whether a site may use ``cert``; returns True when the certificate is the site's own.

    A non-tradable certificate may only be used by the owner of the project that produced it
    (the site lists its own projects); anyone else's is refused with the reason."""
    own = bool(cert.project_id) and cert.project_id in set(own_projects)
    if not cert.tradable and not own:
        raise CertificateNotTransferableError(
            f"GEC {cert.serial} is not tradable (issued for self-consumed energy or old hydro) and its "
            f"project {cert.project_id or '(not given)'} is not one of this site's own generation "
            "projects: only the generating project's owner may use it")
    return own


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

    def claim(self, serials: Iterable[str], claimant: str, note: str = "", *,
              cancelled_ms: int | None = None, period: str | None = None) -> list[GreenCertificate]:
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
            self._claims[s] = Claim(s, claimant, note, cancelled_ms, period)
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
    signed_date: str | None = None

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
    """A certificate in a portfolio, optionally earmarked to a cost centre or product id.

    ``counted`` is False for a certificate of the site's own metered PV self-consumption: it is
    cancelled for the site, but its energy is already the PV self-consumption (``reason`` says so).
    """

    certificate: GreenCertificate
    earmark: str | None = None
    counted: bool = True
    reason: str = ""


#: Why an own-PV certificate covers nothing more.
OWN_PV_REASON = ("issued for the site's own metered PV generation: its energy is already counted as "
                 "PV self-consumption, so it is cancelled but not counted a second time")


@dataclass
class InstrumentPortfolio:
    """The instruments a site holds. Adding an instrument claims its certificates in the ledger.

    ``own_generation_projects``: GEC project codes of the site's own metered PV.
    ``legacy_contracts_signed_before``: contracts signed before this date (``YYYY-MM-DD``) keep
    their monthly settlement under hourly matching (the Scope 2 revision's legacy clause).
    """

    site_id: str
    ledger: GecLedger
    certificates: list[HeldCertificate] = field(default_factory=list)
    contracts: list[GreenPowerContract] = field(default_factory=list)
    own_generation_projects: tuple[str, ...] = ()
    legacy_contracts_signed_before: str | None = None

    def is_legacy(self, contract: GreenPowerContract) -> bool:
        """Whether a contract falls under the legacy clause (signed before the site's cutoff)."""
        return (self.legacy_contracts_signed_before is not None and contract.signed_date is not None
                and contract.signed_date < self.legacy_contracts_signed_before)

    @property
    def claimant(self) -> str:
        """The ledger claimant name of this site."""
        return f"site:{self.site_id}"

    def add_certificates(self, serials: Iterable[str], *, earmark: str | None = None,
                         cancelled_ms: int | None = None, period: str | None = None) -> None:
        """Claim unbundled GECs for this site (atomically) and hold them. A non-tradable
        certificate of another project is refused; one of the site's own PV is held uncounted."""
        serials = list(serials)
        own = {s: check_transferable(self.ledger.certificate(s), self.own_generation_projects) for s in serials}
        for cert in self.ledger.claim(serials, self.claimant, note="unbundled",
                                      cancelled_ms=cancelled_ms, period=period):
            counted = not (own[cert.serial] and not cert.tradable)
            self.certificates.append(HeldCertificate(cert, earmark, counted, "" if counted else OWN_PV_REASON))

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

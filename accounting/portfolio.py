"""The instruments every site holds, claimed once in one ledger and kept durably.

`Portfolios` is the service's side of `accounting.instruments`: one `GecLedger` for the whole
deployment, one `InstrumentPortfolio` per site, and the `LedgerStore` that makes every claim
durable. A certificate is validated first (month, province, technology, earmark), then
claimed in the database (which refuses a serial claimed before — by any site, product or
earlier process), and only then held in memory; a restart replays the stored claims, so a
serial claimed before a restart is still refused after it. Recomputations reuse the site's
portfolio and never claim anything again (ACCOUNTING.md §4).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from accounting.errors import CertificateAlreadyClaimedError, InstrumentError
from accounting.factors.dataset import FactorDataset
from accounting.factors.regions import canonical_province
from accounting.instruments import (
    GEC_KWH,
    OWN_PV_REASON,
    GecLedger,
    GreenCertificate,
    GreenPowerContract,
    InstrumentPortfolio,
    check_transferable,
)
from accounting.store.ledger import LedgerStore
from tanji.civil_calendar import DEFAULT_TIMEZONE, civil_month, civil_zone
from tanji.site import Site

#: Energy one GEC certifies, in MWh.
GEC_MWH = GEC_KWH / 1000.0


def _earmarks(site: Site) -> set[str]:
    return {c.id for c in site.cost_centres} | {p.id for p in site.products}


#: Columns of the certificate list CSV (`Portfolios.import_certificates`; docs/accounting.md §4).
CERTIFICATE_CSV_COLUMNS = ("serial", "generation_month", "technology", "province", "tradable",
                           "project_id", "earmark")
_TRUE = {"1", "true", "yes", "y", "可交易"}
_FALSE = {"0", "false", "no", "n", "不可交易"}


#: A national GEC code has 32 characters: the generating project's 建档立卡 code (17), then the
#: production date, a sequence number, the energy class and the trading class (15) — as the
#: platform's operator describes it (易碳家 / 中国碳交易网, 2025-03-26). The per-field widths of
#: the last 15 are not published, so Tanji reads only the project code from it.
GEC_CODE_LENGTH = 32
GEC_PROJECT_CODE_LENGTH = 17


def project_of(serial: str, given: str) -> str:
    """The generating project of a certificate: the given code, checked against a national
    32-character serial when it is one, else the serial's first 17 characters."""
    if len(serial) != GEC_CODE_LENGTH or not serial.isalnum():
        return given
    code = serial[:GEC_PROJECT_CODE_LENGTH]
    if given and given != code:
        raise InstrumentError(f"GEC {serial}: project_id {given!r} is not the project code its serial carries "
                              f"({code!r}, the first {GEC_PROJECT_CODE_LENGTH} characters of a national GEC code)")
    return code


def _civil_month(ms: int) -> str:
    """The month on the calendar of China's certificate registry (Beijing time), whatever the site's zone."""
    return civil_month(ms, civil_zone(DEFAULT_TIMEZONE))


def _period(month: str, matching_mode: str) -> str:
    """The consumption period a certificate is declared for: its matching window."""
    return month[:4] if matching_mode == "annual" else month


def _month_of(period: int | str, granularity: str) -> str:
    return str(period) if granularity == "monthly" else _civil_month(int(period))


class Portfolios:
    """Per-site instrument portfolios over one ledger, restored from and written to `store`."""

    def __init__(self, sites: Iterable[Site], store: LedgerStore,
                 clock: Callable[[], int] | None = None) -> None:
        self.sites = {s.id: s for s in sites}
        self.store = store
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.ledger = GecLedger()
        self._portfolios = {
            sid: InstrumentPortfolio(sid, self.ledger,
                                     own_generation_projects=site.market.own_generation_projects,
                                     legacy_contracts_signed_before=site.market.legacy_contracts_signed_before)
            for sid, site in self.sites.items()}
        self._restore()

    def _restore(self) -> None:
        """Hold again every claim and contract the store kept (claims of unknown sites stay in
        the ledger, so their serials are still refused)."""
        bundled: set[str] = set()
        for doc in self.store.contracts():
            contract = self._contract(doc)
            self.ledger.register(self._bundled(contract, doc))
            bundled.update(contract.bundled_gec_serials)
            portfolio = self._portfolios.get(doc["site_id"])
            if portfolio is not None:
                portfolio.add_contract(contract)
            else:
                self.ledger.claim(contract.bundled_gec_serials, f"site:{doc['site_id']}")
        for row in self.store.claims():
            if row["serial"] in bundled:
                continue
            detail = row.get("detail") or {}
            cert = GreenCertificate(row["serial"], row["generation_month"], row["technology"], row["province"],
                                    tradable=bool(detail.get("tradable", True)),
                                    project_id=str(detail.get("project_id") or ""))
            self.ledger.register([cert])
            portfolio = self._portfolios.get(row["site_id"])
            if portfolio is not None:
                portfolio.add_certificates([cert.serial], earmark=row["earmark"],
                                           cancelled_ms=row["claimed_ms"], period=detail.get("period"))
            else:
                self.ledger.claim([cert.serial], row["claimant"])

    def portfolio(self, site_id: str) -> InstrumentPortfolio:
        return self._portfolios[site_id]

    # -- certificates ----------------------------------------------------------------------

    def check_certificate(self, doc: Mapping[str, Any], dataset: FactorDataset) -> GreenCertificate:
        """Validate a certificate for its site (and the site's live dataset); nothing is claimed."""
        site = self._site(doc.get("site_id"))
        serial = str(doc.get("serial") or "").strip()
        if not serial:
            raise InstrumentError("a certificate needs a serial")
        mwh = float(doc.get("mwh", GEC_MWH) or GEC_MWH)
        if mwh != GEC_MWH:
            raise InstrumentError(f"GEC {serial}: a GEC certifies exactly {GEC_MWH:g} MWh, not {mwh:g}; "
                                  "register one serial per MWh")
        tradable = doc.get("tradable", True)
        if not isinstance(tradable, bool):
            raise InstrumentError(f"GEC {serial}: tradable must be true or false, not {tradable!r}")
        cert = GreenCertificate(serial, str(doc.get("generation_month", "")), str(doc.get("technology", "")),
                                canonical_province(str(doc.get("province", ""))), tradable=tradable,
                                project_id=project_of(serial, str(doc.get("project_id") or "").strip()))
        # the rules first: a certificate used outside its validity, or a non-tradable one of
        # another project, is refused with the reason before anything else is looked at
        cert.check_valid(_civil_month(self.clock()))
        check_transferable(cert, site.market.own_generation_projects)
        dataset.technology_factor(cert.technology)  # a lifecycle dataset must know the technology
        earmark = doc.get("earmark")
        if earmark is not None and earmark not in _earmarks(site):
            raise InstrumentError(f"GEC {serial}: earmark {earmark!r} is no cost centre or product of "
                                  f"site {site.id}; known: {', '.join(sorted(_earmarks(site)))}")
        claimant = self.ledger.claimant_of(serial) or self.store.claimant_of(serial)
        if claimant is not None:
            raise CertificateAlreadyClaimedError(serial, claimant)
        return cert

    def add_certificate(self, doc: Mapping[str, Any], dataset: FactorDataset) -> dict[str, Any]:
        """Claim (cancel, 核销) one GEC for its site, durably, then hold it. Returns its listing row."""
        return self.add_certificates([doc], dataset)[0]

    def add_certificates(self, docs: list[Mapping[str, Any]], dataset: FactorDataset) -> list[dict[str, Any]]:
        """Claim several GECs, all or none: each is checked (validity, tradability, serial not
        claimed before, not twice in the list), then all are cancelled in one transaction."""
        certs = [self.check_certificate(doc, dataset) for doc in docs]
        seen: set[str] = set()
        for cert in certs:
            if cert.serial in seen:
                raise CertificateAlreadyClaimedError(cert.serial, "an earlier row of the same list")
            seen.add(cert.serial)
        now = self.clock()
        rows = []
        for doc, cert in zip(docs, certs, strict=True):
            site = self.sites[str(doc["site_id"])]
            own = cert.project_id in site.market.own_generation_projects if cert.project_id else False
            counted = not (own and not cert.tradable)
            rows.append({"serial": cert.serial, "site_id": site.id, "claimant": f"site:{site.id}",
                         "generation_month": cert.generation_month, "technology": cert.technology,
                         "province": cert.province, "mwh": GEC_MWH, "earmark": doc.get("earmark"),
                         "contract_id": None, "claimed_ms": now,
                         "detail": {"tradable": cert.tradable, "project_id": cert.project_id,
                                    "period": _period(cert.generation_month, site.matching_mode),
                                    "valid_until_month": cert.valid_until_month, "counted": counted,
                                    "reason": "" if counted else OWN_PV_REASON}})
        self.store.claim(rows)
        for row, cert in zip(rows, certs, strict=True):
            self.ledger.register([cert])
            self._portfolios[row["site_id"]].add_certificates(
                [cert.serial], earmark=row["earmark"], cancelled_ms=now, period=row["detail"]["period"])
        return [self._listing(r) for r in rows]

    def import_certificates(self, site_id: str, text: str, dataset: FactorDataset) -> list[dict[str, Any]]:
        """Claim a certificate list given as CSV (`CERTIFICATE_CSV_COLUMNS`, header first), all or none.

        The national platform's own export format is not publicly documented, so Tanji reads
        this documented CSV; an error names the line and the fix."""
        reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in CERTIFICATE_CSV_COLUMNS[:4] if c not in header]
        unknown = [c for c in header if c not in CERTIFICATE_CSV_COLUMNS]
        if missing or unknown:
            raise InstrumentError(f"certificate CSV line 1: header {', '.join(header) or '(none)'}; "
                                  f"missing {', '.join(missing) or 'nothing'}, unknown {', '.join(unknown) or 'nothing'}; "
                                  f"use the columns {', '.join(CERTIFICATE_CSV_COLUMNS)}")
        docs: list[dict[str, Any]] = []
        for line, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            tradable = row.get("tradable", "") or "true"
            if tradable.lower() not in _TRUE | _FALSE:
                raise InstrumentError(f"certificate CSV line {line}: tradable is {tradable!r}; write true or false")
            doc: dict[str, Any] = {"site_id": site_id, "serial": row.get("serial", ""),
                                   "generation_month": row.get("generation_month", ""),
                                   "technology": row.get("technology", ""), "province": row.get("province", ""),
                                   "tradable": tradable.lower() in _TRUE, "project_id": row.get("project_id", ""),
                                   "earmark": row.get("earmark") or None}
            try:
                self.check_certificate(doc, dataset)
            except Exception as exc:  # every bad row names its line; nothing is claimed
                if isinstance(exc, CertificateAlreadyClaimedError):
                    raise CertificateAlreadyClaimedError(exc.serial, f"{exc.claimed_by} (CSV line {line})") from None
                raise type(exc)(f"certificate CSV line {line}: {exc}") from None
            docs.append(doc)
        if not docs:
            raise InstrumentError("certificate CSV has a header but no certificates")
        return self.add_certificates(docs, dataset)

    def certificates(self, site_id: str | None = None) -> list[dict[str, Any]]:
        """Claimed certificates (unbundled and bundled with a contract) of one site or all."""
        return [self._listing(r) for r in self.store.claims(site_id) if r["site_id"] in self.sites]

    @staticmethod
    def _listing(row: Mapping[str, Any]) -> dict[str, Any]:
        detail = row.get("detail") or {}
        month = row["generation_month"]
        return {"serial": row["serial"], "site_id": row["site_id"], "generation_month": month,
                "technology": row["technology"], "province": row["province"], "mwh": row["mwh"],
                "earmark": row["earmark"], "contract_id": row["contract_id"], "claimed_ms": row["claimed_ms"],
                "tradable": detail.get("tradable", True), "project_id": detail.get("project_id") or None,
                "valid_until_month": detail.get("valid_until_month")
                or GreenCertificate(row["serial"], month, row["technology"], row["province"]).valid_until_month,
                "cancellation": {"status": "cancelled (核销)", "cancelled_ms": row["claimed_ms"],
                                 "claimant": row.get("claimant") or f"site:{row['site_id']}",
                                 "period": detail.get("period") or month[:4]},
                "counted": detail.get("counted", True), "reason": detail.get("reason", "")}

    # -- green-power contracts -------------------------------------------------------------

    def add_contract(self, doc: Mapping[str, Any], dataset: FactorDataset) -> dict[str, Any]:
        """Hold a green-power contract and claim its bundled GECs, durably.

        ``doc``: contract_id, site_id, technology, province, granularity (hourly|monthly),
        deliveries [[period, kWh], ...], optional bundled_gec_serials and earmark.
        """
        site = self._site(doc.get("site_id"))
        contract = self._contract(doc)
        dataset.technology_factor(contract.technology)
        if contract.earmark is not None and contract.earmark not in _earmarks(site):
            raise InstrumentError(f"contract {contract.contract_id}: earmark {contract.earmark!r} is no "
                                  f"cost centre or product of site {site.id}")
        portfolio = self._portfolios[site.id]
        if any(c.contract_id == contract.contract_id for c in portfolio.contracts) or any(
                d["contract_id"] == contract.contract_id for d in self.store.contracts()):
            raise InstrumentError(f"contract {contract.contract_id!r} is already held")
        certs = self._bundled(contract, doc)
        for cert in certs:
            claimant = self.ledger.claimant_of(cert.serial) or self.store.claimant_of(cert.serial)
            if claimant is not None:
                raise CertificateAlreadyClaimedError(cert.serial, claimant)
        now = int(time.time() * 1000)
        stored = {"contract_id": contract.contract_id, "site_id": site.id, "technology": contract.technology,
                  "province": contract.province, "granularity": contract.granularity,
                  "deliveries": [list(d) for d in contract.deliveries],
                  "bundled_gec_serials": list(contract.bundled_gec_serials), "earmark": contract.earmark,
                  "signed_date": contract.signed_date}
        self.store.claim([{"serial": c.serial, "site_id": site.id, "claimant": portfolio.claimant,
                           "generation_month": c.generation_month, "technology": c.technology,
                           "province": c.province, "mwh": GEC_MWH, "earmark": contract.earmark,
                           "contract_id": contract.contract_id, "claimed_ms": now} for c in certs],
                         contract=stored)
        self.ledger.register(certs)
        portfolio.add_contract(contract)
        return stored

    def contracts(self, site_id: str | None = None) -> list[dict[str, Any]]:
        return [d for d in self.store.contracts(site_id) if d["site_id"] in self.sites]

    @staticmethod
    def _contract(doc: Mapping[str, Any]) -> GreenPowerContract:
        try:
            granularity = str(doc["granularity"])
            deliveries = tuple((int(p) if granularity == "hourly" else str(p), float(k))
                               for p, k in doc["deliveries"])
            return GreenPowerContract(
                contract_id=str(doc["contract_id"]), technology=str(doc["technology"]),
                province=canonical_province(str(doc["province"])), granularity=granularity,  # type: ignore[arg-type]
                deliveries=deliveries,
                bundled_gec_serials=tuple(str(s) for s in doc.get("bundled_gec_serials") or ()),
                earmark=doc.get("earmark"), signed_date=doc.get("signed_date"))
        except (KeyError, TypeError, ValueError) as exc:
            raise InstrumentError(f"malformed contract: {exc}") from None

    @staticmethod
    def _bundled(contract: GreenPowerContract, doc: Mapping[str, Any]) -> list[GreenCertificate]:
        """The bundled GECs, generated in ``generation_month`` or the first delivery's month."""
        if not contract.bundled_gec_serials:
            return []
        month = doc.get("generation_month") or (
            _month_of(contract.deliveries[0][0], contract.granularity) if contract.deliveries else None)
        if month is None:
            raise InstrumentError(f"contract {contract.contract_id}: bundled GECs need a generation_month")
        return [GreenCertificate(s, str(month), contract.technology, contract.province)
                for s in contract.bundled_gec_serials]

    def _site(self, site_id: object) -> Site:
        site = self.sites.get(str(site_id))
        if site is None:
            raise InstrumentError(f"no site {site_id!r}; known sites: {', '.join(sorted(self.sites))}")
        return site

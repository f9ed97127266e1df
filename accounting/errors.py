"""Errors raised by the accounting core.

Every failure that concerns the numbers derives from :class:`AccountingError`, so a caller
(the ingest service, the API) can catch one class and still tell the cases apart by subclass.
Data-quality problems that do not stop the computation (a negative unmetered remainder, an
implausible reading) are *flags* on the results, not exceptions.
"""

from __future__ import annotations

from tanji.errors import TanjiError


class AccountingError(Exception):
    """Base class of every accounting error."""


class TopologyError(AccountingError):
    """The site topology is inconsistent (unknown cost centre, duplicate id, missing channel)."""


class UnknownChannelError(AccountingError, KeyError):
    """A (meter_id, channel) key or channel index is not part of the topology."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "unknown channel"


class ReadingError(AccountingError):
    """A batch of readings is malformed (length mismatch, non-finite timestamp)."""


class StoreRejectedError(AccountingError):
    """The reading store refuses these rows for good (their content, not the store's state):
    retrying cannot help, so ingest finds the message they came from and quarantines it."""


class FactorDatasetError(AccountingError):
    """A factor dataset is malformed, or a different dataset is registered under the same version."""


class FactorVersionConflictError(FactorDatasetError):
    """Different content was offered under a dataset id and version already loaded (append-only)."""


class UnknownRegionError(FactorDatasetError, KeyError):
    """A province or grid region is not known, or a dataset has no factor for the region."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown region"


class MissingFactorError(FactorDatasetError):
    """A factor needed for an hour or a technology is absent from the dataset."""


class InstrumentError(AccountingError):
    """A market instrument (certificate, contract) is malformed or unknown."""


class CertificateAlreadyClaimedError(InstrumentError):
    """A green certificate serial was claimed before; a serial can be claimed only once."""

    def __init__(self, serial: str, claimed_by: str) -> None:
        super().__init__(f"certificate {serial!r} is already claimed by {claimed_by!r}")
        self.serial = serial
        self.claimed_by = claimed_by


class CertificateValidityError(InstrumentError):
    """A certificate used outside its validity (GEC rules: two years from the production month)."""


class CertificateExpiredError(CertificateValidityError):
    """The certificate's validity ended before the claim date; the platform cancels it (核销)."""


class CertificateNotYetValidError(CertificateValidityError):
    """The claim date is before the certificate's production month."""


class CertificateNotTransferableError(InstrumentError):
    """A non-tradable certificate claimed by someone other than the generating project's owner."""


class CheckpointError(AccountingError):
    """A checkpoint cannot be restored (corrupt, or made for another topology or dataset)."""


class EvidenceLogError(AccountingError, TanjiError):
    """The evidence log (signed batches' bytes in the state directory) is damaged, or a reference
    names a record it does not hold (`accounting.store.evidence_log`). A `TanjiError` too: the
    CLI prints its message (what is wrong, where, what to do) instead of a traceback."""


class SourceUnavailableError(AccountingError):
    """The reading store cannot answer now (down, or readings acknowledged but still queued
    for it); an engine keeps the late readings that needed it and tries again later."""


class ShipmentError(AccountingError):
    """A shipment (export declaration or invoice) cannot be recorded as given."""


class ShipmentInputError(ShipmentError):
    """A shipment document or CSV row is malformed (missing field, bad date, unknown country)."""


class UnknownProductError(ShipmentError):
    """A shipment line names a product the site does not make."""


class OverShippedError(ShipmentError):
    """More units asked than were produced (in closed batches) and not yet shipped."""


class BatchAlreadyShippedError(ShipmentError):
    """A named batch's units are already drawn by other shipments: a unit is shipped once."""


class ShipmentExistsError(ShipmentError):
    """A shipment with this id (declaration or invoice number) is already recorded."""


class ShipmentIssuedError(ShipmentError):
    """An issued shipment is immutable: it can only be superseded by a recomputation."""


class UnknownShipmentError(ShipmentError, KeyError):
    """No shipment with this id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown shipment"


class UnknownAlarmError(AccountingError, KeyError):
    """No alarm has this id (an acknowledgement of an alarm that does not exist)."""

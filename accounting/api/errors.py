"""Mapping accounting errors to HTTP: the caller's mistake is a 4xx with the reason, never a 500.

The service raises `accounting.errors` subclasses for bad input it could only detect itself
(a certificate serial already claimed, a malformed factor dataset); each maps to the status
that tells a client what to do next.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from accounting import errors as acc

#: Most specific first: the first matching class decides.
STATUS: tuple[tuple[type[Exception], int], ...] = (
    (acc.CertificateAlreadyClaimedError, 409),
    (acc.FactorVersionConflictError, 409),
    (acc.BatchAlreadyShippedError, 409),
    (acc.ShipmentExistsError, 409),
    (acc.ShipmentIssuedError, 409),
    (acc.UnknownShipmentError, 404),
    (acc.UnknownRegionError, 422),
    (acc.UnknownChannelError, 404),
    (acc.UnknownAlarmError, 404),
    (acc.AccountingError, 422),
)


def install_error_handlers(app: FastAPI) -> None:
    async def accounting_error(_: Request, exc: Exception) -> JSONResponse:
        status = next(code for cls, code in STATUS if isinstance(exc, cls))
        return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=status)

    app.add_exception_handler(acc.AccountingError, accounting_error)

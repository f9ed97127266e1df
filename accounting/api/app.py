"""Assembling the application: routers, error handlers and middleware, in one place.

`create_app(service)` is the only entry point. The demo, the accounting CLI, the tests and the
benchmark all build the app here, so what is tested is what is served.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accounting.api import (
    alarms,
    contracts,
    dashboard,
    docs,
    drilldown,
    factors,
    history,
    metrics,
    overview,
    recompute,
    reference,
    reports,
    stream,
    v1,
)
from accounting.api import pact as pact_routes
from accounting.api import shipments as shipment_routes
from accounting.api.errors import install_error_handlers
from accounting.api.limits import BodyLimit
from accounting.api.read_access import ReadAccess
from accounting.api.responses import TanjiJSONResponse
from accounting.api.starting import StartingUp
from accounting.api.stream import StreamHub
from accounting.api.types import AccountingServiceLike, ReadinessLike
from accounting.pact.clients import PactClients
from accounting.pact.host import PactHost

if TYPE_CHECKING:  # accounting.shipments reads the API's helpers: imported when an app is made
    from accounting.shipments import ShipmentBook

#: The dashboard loads only from this server (a plant has no internet; no CDN may sneak in).
CONTENT_SECURITY_POLICY = ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                           "style-src 'self'; script-src 'self'; frame-ancestors 'none'")


class SecurityHeaders:
    """Adds the content security policy and no-sniff headers to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def middleware(service: AccountingServiceLike | None = None, read_tokens: tuple[str, ...] = ()) -> list[Middleware]:
    """The middleware stack, outermost first: body limits before anything reads a body, the
    read token before any route answers, and 503 for data routes while the service starts."""
    restored = ((lambda: not service.readiness().get("starting", False))
                if isinstance(service, ReadinessLike) else (lambda: True))
    return [Middleware(BodyLimit), Middleware(SecurityHeaders), Middleware(ReadAccess, tokens=read_tokens),
            Middleware(StartingUp, restored=restored)]


def create_app(service: AccountingServiceLike, *, api_token: str | None = None,
               pact_clients: dict[str, str] | PactClients | None = None, pact: PactHost | None = None,
               pact_state_dir: str | Path | None = None, shipments: ShipmentBook | None = None,
               read_token: str | None = None) -> FastAPI:
    """The Tanji HTTP application over `service`.

    api_token: bearer token required by the write endpoints (certificates, contracts, factor
        datasets, recompute); None disables writes (they answer 403).
    pact: the deployment's PACT host (clients, published footprints, events; see
        `accounting.pact.host`), started and stopped with the app. Without one, a host is made
        of `pact_clients` (a clients file read with `PactClients.from_file`, or client id →
        secret with every grant; None accepts no client) keeping its state in `pact_state_dir`
        (None: in memory).
    read_token: when given, every read of the dashboard and API needs it (or the API token);
        probes and PACT stay open (accounting.api.read_access). None leaves reads open.
    """

    hub = StreamHub(service)
    if pact is None:
        clients = pact_clients if isinstance(pact_clients, PactClients) else PactClients.from_secrets(pact_clients or {})
        pact = PactHost(service, clients, state_dir=pact_state_dir)
    if shipments is None:
        from accounting.shipments import ShipmentBook
        shipments = ShipmentBook(service, state_dir=pact_state_dir, pact=pact)
    elif shipments.pact is None:
        shipments.pact = pact

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        pact.start()
        shipments.start()
        try:
            yield
        finally:
            shipments.stop()
            pact.stop()
            await hub.stop()

    app = FastAPI(
        title="Tanji API",
        summary="Live, auditable product carbon footprints from factory electricity meters.",
        version="1",
        default_response_class=TanjiJSONResponse,
        middleware=middleware(service, tuple(t for t in (read_token, api_token) if t and read_token)),
        lifespan=lifespan,
        docs_url=None,  # served by `docs` from this package: no CDN, no inline script
        redoc_url=None,
    )
    app.state.service = service
    app.state.api_token = api_token
    app.state.stream_hub = hub
    app.state.pact = pact
    app.state.shipments = shipments
    install_error_handlers(app)
    app.add_exception_handler(pact_routes.PactError, pact_routes.pact_error_response)
    app.include_router(v1.router)
    app.include_router(stream.router)
    app.include_router(reference.router)
    app.include_router(factors.router)
    app.include_router(contracts.router)
    app.include_router(recompute.router)
    app.include_router(reports.router)
    app.include_router(shipment_routes.router)
    app.include_router(shipment_routes.schema_router)
    app.include_router(pact_routes.router)
    app.include_router(overview.router)
    app.include_router(history.router)
    app.include_router(drilldown.router)
    app.include_router(alarms.router)
    app.include_router(dashboard.router)
    app.include_router(metrics.router)
    app.include_router(docs.router)
    app.mount("/dashboard", dashboard.static_files(), name="dashboard")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    return app

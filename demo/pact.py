"""The demo's PACT host: a local CA and certificate, one client, the products declared.

Production reads all of this from files (`tanji accounting --pact-clients FILE --tls-cert FILE
--tls-key FILE`); the demo makes it up, announces it, and keeps its state in the work
directory. `--pact-clients FILE` replaces the demo client with the file's clients (e.g. to
point events at a test partner).
"""

from __future__ import annotations

from pathlib import Path

from accounting.api.types import AccountingServiceLike
from accounting.pact.clients import PactClients
from accounting.pact.document import PactProduct
from accounting.pact.host import PactHost
from accounting.pact.tls import TlsFiles, local_ca

CLIENT = ("demo", "demo")
#: Lithium-ion accumulators (HS 8507.60). The exempted share is an illustrative screening value
#: for pack assembly: cells and materials dominate a pack's cradle-to-gate footprint.
CLASSIFICATION = "urn:pact:productclassification:hs:850760"
EXEMPTED_PCT = 97.0


def demo_products(service: AccountingServiceLike) -> dict[tuple[str, str], PactProduct]:
    return {(s.id, p.id): PactProduct((CLASSIFICATION,), EXEMPTED_PCT)
            for s in service.sites.values() for p in s.products}


def demo_host(service: AccountingServiceLike, workdir: Path, public_url: str,
              clients_file: str | None = None, scan_interval_s: float = 10.0) -> tuple[PactHost, TlsFiles]:
    """The PACT host of the demo and its TLS files (a local CA made once in `workdir/tls`)."""
    tls = local_ca(workdir / "tls")
    if clients_file:
        clients = PactClients.from_file(clients_file)
        if not clients.products:
            clients.products.update(demo_products(service))
    else:
        clients = PactClients.from_secrets(dict([CLIENT]), products=demo_products(service))
    host = PactHost(service, clients, state_dir=workdir / "pact", public_url=public_url,
                    scan_interval_s=scan_interval_s)
    return host, tls

"""Helpers for the audit tests: a site file whose gateway registers a key, and signed batches
made by the gateway's own spool (the code that signs in production)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gateway.service import encode_batch_body
from gateway.signing_key import SigningKey, generate_key
from gateway.spool import Spool
from tanji.site import Site, load_site
from tanji.wire import Reading
from tests.gateway.conftest import simulated_site

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def keyed_site(tmp_path: Path, broker_port: int, mode: str = "required", key: SigningKey | None = None,
               **gateway: Any) -> tuple[Path, Site, SigningKey]:
    """`simulated_site` with `signatures: mode` and the gateway's key made and registered."""
    path, _ = simulated_site(tmp_path, broker_port, **gateway)
    doc = yaml.safe_load(path.read_text())
    spool = Path(doc["gateways"][0]["spool_path"])
    key = key or generate_key(Path(f"{spool}.key"))
    doc["site"]["signatures"] = mode
    doc["gateways"][0]["keys"] = [{"public_key": key.public_key}]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, load_site(path), key


def signed_payloads(tmp_path: Path, key: SigningKey | None, n_batches: int, per_batch: int = 3,
                    start_ms: int = T0, site: str = "test-site", gateway: str = "gw-1",
                    meter: str = "incomer") -> list[bytes]:
    """`n_batches` consecutive batches of `meter`'s energy readings, signed and chained by a gateway spool."""
    spool = Spool(tmp_path / f"sign-{start_ms}-{n_batches}.sqlite", signer=key, site=site, gateway=gateway)
    out = []
    for b in range(n_batches):
        spool.add([Reading(meter, start_ms + (b * per_batch + i) * 1000, "good",
                           {"energy_import_kwh": 1000.0 + b * per_batch + i, "power_kw": 60.0})
                   for i in range(per_batch)])
        batch = spool.next_batch(per_batch)
        out.append(encode_batch_body(site, gateway, batch.seq, batch.body, backlog=False,
                                     sent_ms=start_ms + 60_000, sig=batch.sig))
    spool.close()
    return out


def altered(payload: bytes, kwh: float = 9999.0) -> bytes:
    """The same batch, signature and all, with its first reading's energy changed (valid framing)."""
    body = json.loads(payload)
    body["readings"][0]["values"]["energy_import_kwh"] = kwh
    return encode_batch_body(body["site"], body["gateway"], body["seq"],
                             json.dumps(body["readings"], separators=(",", ":")), backlog=body["backlog"],
                             sent_ms=body["sent_ms"], sig=json.dumps(body["sig"], separators=(",", ":")))


def plant_site(tmp_path: Path, mode: str = "required") -> tuple[Path, Site, SigningKey]:
    """`keyed_site` with a product counted by the PLC: a site whose footprints can be audited."""
    path, _, key = keyed_site(tmp_path, 1883, mode=mode)
    doc = yaml.safe_load(path.read_text())
    doc["products"] = [{"id": "widget", "name": "Widget", "cost_centre": "line-a",
                        "counter": {"meter": "plc-a", "channel": "units_total"}}]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, load_site(path), key


def plant_payloads(tmp_path: Path, key: SigningKey | None, hours: int = 2, step_s: int = 60,
                   per_batch: int = 30, start_ms: int = T0, incomer_replaced_at: int | None = None) -> list[bytes]:
    """Signed batches of the plant site's three meters every `step_s` for `hours` (steady load).
    With `incomer_replaced_at` (a poll number), the incomer is replaced 1 kWh after that poll's
    predecessor by a meter reading 6.0 (`INCOMER_REPLACEMENT`): the same load, other registers."""
    spool = Spool(tmp_path / f"plant-{start_ms}.sqlite", signer=key, site="test-site", gateway="gw-1")
    out = []
    n = hours * 3600 // step_s + 1
    for i in range(n):
        ts = start_ms + i * step_s * 1000
        kwh = 1000.0 + i * 2.0
        if incomer_replaced_at is not None and i >= incomer_replaced_at:
            kwh = 7.0 + (i - incomer_replaced_at) * 2.0  # old final: 1 kWh on; new initial 6.0
        spool.add([Reading("incomer", ts, "good", {"energy_import_kwh": kwh, "power_kw": 120.0}),
                   Reading("line-a-meter", ts, "good", {"energy_import_kwh": 500.0 + i * 1.5, "power_kw": 90.0}),
                   Reading("plc-a", ts, "good", {"units_total": 100 + i * 3})])
    while (batch := spool.next_batch(per_batch)) is not None:
        out.append(encode_batch_body("test-site", "gw-1", batch.seq, batch.body, backlog=False,
                                     sent_ms=start_ms + hours * 3_600_000, sig=batch.sig))
    spool.close()
    return out

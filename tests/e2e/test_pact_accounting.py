"""PACT v3 against the production command, configured as docs/api.md and docs/deploy.md show:

    tanji accounting --config SITE --broker HOST:PORT --store sqlite:… --state-dir … \\
        --http-port 8443 --pact-clients pact.yaml --tls-cert server.pem --tls-key server-key.pem

Real Mosquitto; readings of last month and this one published over MQTT as a gateway sends
them. Two clients with different grants (403 AccessDenied across them), one with an events
endpoint (a real partner server receiving Published events), filters, invalid and expired
tokens, late readings for the closed month (a revision: new footprint, old one Deprecated,
event), and a restart after which the same footprints are served and the old token works.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from accounting.pact import events
from accounting.pact.clients import hash_secret
from accounting.pact.tls import local_ca
from tanji import wire
from tanji.site import load_site
from tests import pact_reference
from tests.ingest.traffic import Publisher
from tests.pact_partner import CLIENT_ID, CLIENT_SECRET, Partner
from tests.services import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
SITE_FILE = REPO / "firmware-config" / "sites" / "cq-battery.yaml"
SECRETS = {"acme": "acme-secret-0123456789abc", "beta": "beta-secret-0123456789abc"}
PACK = "urn:tanji:product:cq-battery:pack-48v-100ah"
ESS = "urn:tanji:product:cq-battery:ess-5kwh"
STEP_MS = 15 * 60_000
OFFSET_MS = 7 * 60_000  # readings at :07, :22, :37, :52 — none on a month boundary
KW = {"line-a-meter": 60.0, "line-b-meter": 80.0, "air-meter": 20.0, "hvac-meter": 40.0}
UNITS_PER_STEP = {"plc-a": 15.0, "plc-b": 10.0}


def month_start_ms(now_ms: int, back: int) -> int:
    local = datetime.fromtimestamp(now_ms / 1000, ZoneInfo("Asia/Shanghai"))
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for _ in range(back):
        first = (first - timedelta(days=1)).replace(day=1)
    return int(first.timestamp() * 1000)


def values(meter: str, k: int) -> dict[str, float]:
    """Counters after k steps: submeters at constant power, the incomer their sum + 20 kW."""
    hours = k * STEP_MS / 3_600_000
    if meter in UNITS_PER_STEP:
        return {"units_total": UNITS_PER_STEP[meter] * k, "batch_id": 7.0}
    kw = sum(KW.values()) + 20.0 if meter == "incomer" else KW[meter]
    return {"energy_import_kwh": 1000.0 + kw * hours, "energy_export_kwh": 0.0}


class Accounting:
    def __init__(self, tmp: Path, broker_port: int) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.log = tmp / "accounting.log"
        tls = local_ca(tmp / "tls")  # a deployment uses its own CA's certificate; the test makes one
        self.ca = tls.ca
        self.argv = [sys.executable, "-m", "tanji", "accounting", "--config", str(SITE_FILE),
                     "--broker", f"127.0.0.1:{broker_port}", "--client-id", "tanji-accounting-pact-test",
                     "--store", f"sqlite:{tmp / 'data' / 'tanji.sqlite'}", "--state-dir", str(tmp / "state"),
                     "--http-port", str(self.port), "--pact-clients", str(tmp / "pact.yaml"),
                     "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONPATH": str(REPO)})
        wait_for_port(self.port, timeout_s=240)
        # HTTP answers from the start; data routes once the service is ready (docs/deploy.md §3).
        deadline = time.monotonic() + 240
        with self.client() as c:
            while c.get("/api/v1/ready").status_code != 200:
                assert time.monotonic() < deadline, self.log.read_text()[-3000:]
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"https://127.0.0.1:{self.port}", timeout=30,
                            verify=ssl.create_default_context(cafile=str(self.ca)))


@pytest.fixture
def partner() -> Iterator[Partner]:
    with Partner() as p:
        yield p


@pytest.fixture
def accounting(tmp_path: Path, mosquitto, partner: Partner) -> Iterator[Accounting]:
    (tmp_path / "acme-events.secret").write_text(CLIENT_SECRET + "\n")
    (tmp_path / "pact.yaml").write_text(f"""# PACT clients of the Chongqing plant (docs/api.md)
products:
  cq-battery/pack-48v-100ah: {{classifications: ['urn:pact:productclassification:hs:850760'], exempted_emissions_pct: 97}}
  cq-battery/ess-5kwh: {{classifications: ['urn:pact:productclassification:hs:850760'], exempted_emissions_pct: 96}}
clients:
  - id: acme
    secret_hash: {hash_secret(SECRETS["acme"])}
    grants: [cq-battery/pack-48v-100ah]
    events:
      url: {partner.url}/3/events
      client_id: {CLIENT_ID}
      client_secret_file: acme-events.secret
  - id: beta
    secret_hash: {hash_secret(SECRETS["beta"])}
    grants: [cq-battery/ess-5kwh]
""")
    a = Accounting(tmp_path, mosquitto.port)
    a.start()
    try:
        yield a
    finally:
        a.stop()


def login(c: httpx.Client, client_id: str) -> dict[str, str]:
    r = c.post("/auth/token", data={"grant_type": "client_credentials"}, auth=(client_id, SECRETS[client_id]))
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def wait_list(c: httpx.Client, headers: dict[str, str], count: int, **params) -> list[dict]:
    deadline = time.monotonic() + 180
    while True:
        data = c.get("/3/footprints", headers=headers, params=params).json()["data"]
        if len(data) >= count:
            return data
        assert time.monotonic() < deadline, f"{len(data)} footprints, expected {count}"
        time.sleep(1)


@pytest.mark.timeout(900)
def test_pact_v3_against_tanji_accounting(accounting: Accounting, mosquitto, partner: Partner) -> None:
    site = load_site(SITE_FILE)
    gateway = site.gateways[0].id
    now = int(time.time() * 1000)
    first = month_start_ms(now, 1) + OFFSET_MS
    steps = (now - 5 * 60_000 - first) // STEP_MS
    meters = [m.id for m in site.meters]
    batches = []
    # seq 0 is held back: the late batch below (a batch that reaches accounting after later ones,
    # as a replay does; a later seq with an older stamp is a clock gone backwards, quarantined)
    for seq, k0 in enumerate(range(0, steps + 1, 20), start=1):
        readings = [{"meter": m, "ts_ms": first + k * STEP_MS, "quality": "good", "values": values(m, k)}
                    for k in range(k0, min(k0 + 20, steps + 1)) for m in meters]
        batches.append((wire.readings_topic(site.id, gateway), wire.encode_batch(site.id, gateway, seq, readings)))
    publisher = Publisher("127.0.0.1", mosquitto.port, client_id="pact-test-gateway")
    try:
        publisher.publish_all(batches)

        with accounting.client() as c:
            # Two closed footprints (one per product for last month), each client sees its own.
            acme, beta = login(c, "acme"), login(c, "beta")
            [pack] = wait_list(c, acme, 1)
            [ess] = wait_list(c, beta, 1)
            assert pack["productIds"] == [PACK] and ess["productIds"] == [ESS]
            for pf in (pack, ess):
                pact_reference.validate(pf)
                assert pf["pcf"]["referencePeriodStart"] == datetime.fromtimestamp(
                    month_start_ms(now, 1) / 1000, ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")
            # Grants: the other client's footprint is 403 AccessDenied, by id and by filter.
            denied = c.get(f"/3/footprints/{ess['id']}", headers=acme)
            assert (denied.status_code, denied.json()["code"]) == (403, "AccessDenied")
            denied = c.get("/3/footprints", headers=acme, params={"productId": ESS})
            assert (denied.status_code, denied.json()["code"]) == (403, "AccessDenied")
            assert c.get(f"/3/footprints/{pack['id']}", headers=acme).json()["data"] == pack
            # Filters: something and nothing.
            assert wait_list(c, acme, 1, companyId="URN:TANJI:SITE:CQ-BATTERY", status="active") == [pack]
            assert c.get("/3/footprints", headers=acme, params={"companyId": "urn:bogus:x"}).json()["data"] == []
            assert c.get("/3/footprints", headers=acme, params={"validAfter": "2099-12-31T23:59:59Z"}).json()["data"] == []
            # Tokens: invalid 401 BadRequest; expired (its expiry moved in the state file) 401 TokenExpired.
            bad = c.get("/3/footprints", headers={"Authorization": "Bearer not-a-token"})
            assert (bad.status_code, bad.json()["code"]) == (401, "BadRequest")
            expiring = login(c, "beta")
            with sqlite3.connect(accounting.tmp / "state" / "pact-tokens.sqlite") as db:
                db.execute("UPDATE tokens SET expires_ms = 0 WHERE digest = ?",
                           (hashlib.sha256(expiring["Authorization"][7:].encode()).digest(),))
            expired = c.get("/3/footprints", headers=expiring)
            assert (expired.status_code, expired.json()["code"]) == (401, "TokenExpired")
            # acme has an events endpoint: its footprint was announced; beta's was not sent to acme.
            [announced] = partner.wait_for(1)
            pact_reference.validate(announced, "PublishedEvent")
            assert announced["data"]["pfIds"] == [pack["id"]]

            # Late readings for the closed month: line A's energy moves across the month's end.
            boundary = month_start_ms(now, 0)
            k = (boundary - first) // STEP_MS  # the last reading before the boundary
            before, after = values("line-a-meter", k), values("line-a-meter", k + 1)
            late_value = before["energy_import_kwh"] + 0.9 * (after["energy_import_kwh"] - before["energy_import_kwh"])
            late = [{"meter": "line-a-meter", "ts_ms": boundary - 60_000, "quality": "good",
                     "values": {"energy_import_kwh": late_value, "energy_export_kwh": 0.0}}]
            publisher.publish_all([(wire.readings_topic(site.id, gateway),
                                    wire.encode_batch(site.id, gateway, 0, late))])
            data = wait_list(c, acme, 2)
            new = next(pf for pf in data if pf.get("precedingPfIds"))
            old = next(pf for pf in data if pf["id"] == pack["id"])
            assert new["precedingPfIds"] == [pack["id"]] and old["status"] == "Deprecated"
            assert {**old, "status": "Active"} == pack  # nothing but the status changed
            assert float(new["pcf"]["pcfExcludingBiogenicUptake"]) > float(pack["pcf"]["pcfExcludingBiogenicUptake"])
            pact_reference.validate(new)
            revised = partner.wait_for(2)[1]
            assert revised["type"] == events.PUBLISHED and revised["data"]["pfIds"] == [new["id"], pack["id"]]
            served = c.get("/3/footprints", headers=acme).content

        # Restart: identical footprints, and the token issued before still works.
        accounting.stop()
        accounting.start()
        with accounting.client() as c:
            deadline = time.monotonic() + 120
            while (r := c.get("/3/footprints", headers=acme)).status_code != 200:
                assert time.monotonic() < deadline, r.text
                time.sleep(1)
            assert r.content == served
    finally:
        publisher.client.loop_stop()
        publisher.client.disconnect()

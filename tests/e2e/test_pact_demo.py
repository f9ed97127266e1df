"""PACT v3 against the real `tanji demo`, as a partner's system uses it.

The demo runs as documented (`tanji demo --pact-clients FILE`): its simulated plant's past
gives a closed month, published as one footprint per product; a partner (tests/pact_partner.py,
a real HTTP server) receives its events. Checked here: HTTPS only, the local CA it prints,
discovery, every footprint valid against the official schema, filters that match something
and nothing, invalid and expired tokens, events both ways, immutability while new readings
arrive, a recompute with another factor version (new footprint, old Deprecated, Published
event), the same numbers in the API, CSV, battery report, label and PACT, and a restart after
which the same footprints are served byte for byte and the old token still works.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sqlite3
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from accounting.api.reports import csv_decimals
from accounting.pact import events
from accounting.pact.clients import hash_secret
from accounting.pact.filters import parse_time
from tests import pact_reference
from tests.demo_process import DemoProcess
from tests.pact_partner import CLIENT_ID, CLIENT_SECRET, Partner

SECRET = "demo-partner-secret-0123456789"
PACK = "urn:tanji:product:cq-battery:pack-48v-100ah"
ESS = "urn:tanji:product:cq-battery:ess-5kwh"


class Demo(DemoProcess):
    """The demo with the partner's PACT client file, spoken to over its HTTPS port."""

    def __init__(self, workdir: Path, clients: Path) -> None:
        super().__init__(workdir, "--pact-clients", str(clients))

    def client(self) -> httpx.Client:
        ca = ssl.create_default_context(cafile=str(self.workdir / "data" / "tls" / "ca.pem"))
        return httpx.Client(base_url=self.https, verify=ca, timeout=30)


@pytest.fixture(scope="module")
def partner() -> Iterator[Partner]:
    with Partner() as p:
        yield p


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, partner: Partner) -> Iterator[Demo]:
    workdir = tmp_path_factory.mktemp("pact-demo")
    clients = workdir / "pact.yaml"
    clients.write_text(f"""# the demo's PACT clients: a partner with an events endpoint
clients:
  - id: partner
    secret_hash: {hash_secret(SECRET, iterations=1000)}
    grants: ['*']
    events:
      url: {partner.url}/3/events
      client_id: {CLIENT_ID}
      client_secret: {CLIENT_SECRET}
""")
    d = Demo(workdir, clients)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def token(c: httpx.Client) -> dict[str, str]:
    r = c.post("/auth/token", data={"grant_type": "client_credentials"}, auth=("partner", SECRET))
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def footprints(c: httpx.Client, headers: dict[str, str], **params) -> list[dict]:
    deadline = time.monotonic() + 120
    while True:  # the first publication scan runs as the demo starts
        r = c.get("/3/footprints", headers=headers, params=params)
        assert r.status_code == 200, r.text
        if r.json()["data"] or params or time.monotonic() > deadline:
            return r.json()["data"]
        time.sleep(1)


@pytest.mark.timeout(900)
def test_pact_v3_against_the_demo(demo: Demo, partner: Partner) -> None:
    text = demo.log.read_text()
    assert f"local CA    {demo.workdir / 'data' / 'tls' / 'ca.pem'}" in text
    with demo.client() as c:
        # Authenticate: discovery, client credentials, HTTPS only.
        discovery = c.get("/.well-known/openid-configuration").json()
        assert discovery["token_endpoint"] == f"{demo.https}/auth/token"
        headers = token(c)
        with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port: no answer at all
            httpx.post(f"http://127.0.0.1:{demo.https_port}/auth/token", data={"grant_type": "client_credentials"},
                       auth=("partner", SECRET), timeout=10)
        plain = httpx.post(f"{demo.http}/auth/token", data={"grant_type": "client_credentials"},
                           auth=("partner", SECRET), timeout=10)
        assert plain.status_code == 400 and "access_token" not in plain.json()
        assert httpx.get(f"{demo.http}/3/footprints", headers=headers, timeout=10).status_code == 400

        # ListFootprints: the closed month of both products, valid v3, GetFootprint finds them.
        data = footprints(c, headers)
        assert len(data) >= 2 and {pf["productIds"][0] for pf in data} == {PACK, ESS}
        for pf in data:
            pact_reference.validate(pf)
            one = c.get(f"/3/footprints/{pf['id']}", headers=headers)
            assert one.status_code == 200 and one.json()["data"] == pf
        pack = next(pf for pf in data if pf["productIds"] == [PACK])
        assert (pack["pcf"]["declaredUnitOfMeasurement"], pack["pcf"]["declaredUnitAmount"]) == ("kilowatt hour", "5.12")
        assert pack["pcf"]["productMassPerDeclaredUnit"] == "42"  # one 5.12 kWh pack weighs 42 kg

        # Filters that match something and nothing.
        assert {pf["id"] for pf in footprints(c, headers, productId=PACK.upper())} == {pack["id"]}
        assert footprints(c, headers, productId="urn:bogus:x") == []
        assert len(footprints(c, headers, geography="CN")) == len(data)
        assert footprints(c, headers, geography="XX") == []
        assert len(footprints(c, headers, validOn=pack["validityPeriodStart"])) >= 1
        assert footprints(c, headers, validBefore="1900-01-01T00:00:00Z") == []
        page = c.get("/3/footprints", headers=headers, params={"limit": 1})
        assert page.headers["link"].startswith(f"<{demo.https}/3/footprints?")

        # Error codes: invalid token, unknown id, expired token (its expiry moved in the demo's store).
        bad = c.get("/3/footprints", headers={"Authorization": "Bearer invalid-access-token"})
        assert (bad.status_code, bad.json()["code"]) == (401, "BadRequest")
        missing = c.get(f"/3/footprints/{uuid.uuid4()}", headers=headers)
        assert (missing.status_code, missing.json()["code"]) == (404, "NotFound")
        expiring = token(c)
        with sqlite3.connect(demo.workdir / "data" / "pact" / "pact-tokens.sqlite") as db:
            db.execute("UPDATE tokens SET expires_ms = 0 WHERE digest = ?",
                       (hashlib.sha256(expiring["Authorization"][7:].encode()).digest(),))
        expired = c.get("/3/footprints", headers=expiring)
        assert (expired.status_code, expired.json()["code"]) == (401, "TokenExpired")

        # Events: the publications reached the partner as Published events ...
        published = partner.wait_for(len(data))
        assert {i for e in published if e["type"] == events.PUBLISHED for i in e["data"]["pfIds"]} >= {
            pf["id"] for pf in data}
        # ... and a request is answered asynchronously, fulfilled or rejected.
        for product, expected in ((ESS, events.REQUEST_FULFILLED), ("urn:pact:null", events.REQUEST_REJECTED)):
            request = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": partner.url,
                       "time": "2026-01-01T00:00:00Z", "type": events.REQUEST_CREATED,
                       "data": {"productId": [product], "comment": "Please send PCF data."}}
            r = c.post("/3/events", headers={**headers, "Content-Type": events.CONTENT_TYPE}, json=request)
            assert (r.status_code, r.content) == (200, b"")
            deadline = time.monotonic() + 120
            while not [e for e in partner.events if e["data"].get("requestEventId") == request["id"]]:
                assert time.monotonic() < deadline, "no answer to the request"
                time.sleep(0.5)
            [answer] = [e for e in partner.events if e["data"].get("requestEventId") == request["id"]]
            assert answer["type"] == expected
            pact_reference.validate(answer, "RequestFulfilledEvent" if expected == events.REQUEST_FULFILLED
                                    else "RequestRejectedEvent")

        # Immutability while readings arrive: the published footprints do not move.
        accepted = httpx.get(f"{demo.http}/api/v1/health", timeout=10).json()["stats"]["accepted"]
        deadline = time.monotonic() + 120
        while httpx.get(f"{demo.http}/api/v1/health", timeout=10).json()["stats"]["accepted"] <= accepted + 50:
            assert time.monotonic() < deadline, "no new readings"
            time.sleep(1)
        assert footprints(c, headers) == data

        # One footprint record: the API, CSV, battery report, label and PACT show the same numbers.
        ext = pack["extensions"][0]["data"]
        window = {"start": str(_ms(pack["pcf"]["referencePeriodStart"])), "end": str(_ms(pack["pcf"]["referencePeriodEnd"]))}
        [api] = httpx.get(f"{demo.http}/api/v1/footprints", params={**window, "product": "pack-48v-100ah"},
                          timeout=30).json()
        for key in ("pcf_kgco2e_per_unit_market", "kgco2e_per_unit_market", "kgco2e_per_battery_kwh_eu",
                    "kgco2e_per_battery_kwh_market", "energy_kwh", "units"):
            assert api[key] == pytest.approx(ext[key], rel=1e-12), key
        assert float(pack["pcf"]["pcfExcludingBiogenicUptake"]) == pytest.approx(api["pcf_kgco2e_per_unit_market"], abs=5e-7)
        rows = list(csv.DictReader(io.StringIO(httpx.get(f"{demo.http}/api/v1/reports/footprints.csv",
                                                         params=window, timeout=30).content.decode("utf-8-sig"))))
        row = next(r for r in rows if r["product_id"] == "pack-48v-100ah")
        battery = [b for b in httpx.get(f"{demo.http}/api/v1/reports/battery", params=window, timeout=30).json()
                   if b["product_id"] == "pack-48v-100ah"][0]
        label = httpx.get(f"{demo.http}/api/v1/reports/label/cq-battery/pack-48v-100ah", params=window, timeout=30).text
        for key in ("kgco2e_per_battery_kwh_eu", "kgco2e_per_battery_kwh_market", "pcf_kgco2e_per_unit_market"):
            assert float(row[key]) == round(api[key], csv_decimals(key)), key  # the CSV rounds for Excel
        assert battery["kgco2e_per_battery_kwh_eu"] == api["kgco2e_per_battery_kwh_eu"]
        assert battery["kgco2e_per_battery_kwh_market"] == api["kgco2e_per_battery_kwh_market"]
        assert f"{api['kgco2e_per_battery_kwh_eu']:,.3f}" in label and f"{api['pcf_kgco2e_per_unit_market']:,.3f}" in label
        # The EU figure ignores contractual instruments: with none held it is the location-based one.
        assert api["kgco2e_per_battery_kwh_eu"] == pytest.approx(api["kgco2e_per_unit_location"] / 5.12, rel=1e-9)

        # A recompute with another factor version: a new footprint, the old one Deprecated, an event.
        r = httpx.post(f"{demo.http}/api/v1/recompute", headers={"Authorization": "Bearer demo-token"},
                       json={"site_id": "cq-battery", **window, "dataset_version": "cn-mee-regional-co2@2022"},
                       timeout=120)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 120
        while len(footprints(c, headers)) < len(data) + 2:
            assert time.monotonic() < deadline, "the recompute published nothing"
            time.sleep(1)
        after = {pf["id"]: pf for pf in footprints(c, headers)}
        revised = [pf for pf in after.values() if pf.get("precedingPfIds")]
        assert len(revised) == 2
        for new in revised:
            pact_reference.validate(new)
            old = after[new["precedingPfIds"][-1]]
            assert old["status"] == "Deprecated" and new["status"] == "Active"
            assert {**old, "status": "Active"} in data
            assert new["pcf"]["secondaryEmissionFactorSources"] == [{"name": "cn-mee-regional-co2", "version": "2022"}]
        for new in revised:
            assert _wait_published(partner, new), "no Published event for the revision"
        before_restart = c.get("/3/footprints", headers=headers).content

    # Restart: the same footprints, byte for byte, and the token from before still works.
    demo.stop()
    demo.start()
    with demo.client() as c:
        assert c.get("/3/footprints", headers=headers).content == before_restart


def _ms(iso: str) -> int:
    return parse_time(iso, "t")


def _wait_published(partner: Partner, new: dict) -> bool:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(set(e["data"].get("pfIds", [])) >= {new["id"], new["precedingPfIds"][-1]}
               for e in partner.events if e["type"] == events.PUBLISHED):
            return True
        time.sleep(0.5)
    return False


def test_the_https_port_speaks_only_tls(demo: Demo) -> None:
    context = ssl.create_default_context(cafile=str(demo.workdir / "data" / "tls" / "ca.pem"))
    with urllib.request.urlopen(f"{demo.https}/pact/extensions/tanji-energy-provenance/1.0.0/schema.json",
                                context=context, timeout=10) as r:
        assert r.status == 200
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{demo.https_port}/3/footprints", timeout=10)

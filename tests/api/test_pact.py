"""PACT v3.0.3 clause by clause, over the test service (the real processes: tests/e2e/test_pact_*.py).

Every footprint and event checked here is validated against the official schema read from
../shared/pact (tests/pact_reference.py).
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator

import jsonschema
import pytest
from fastapi.testclient import TestClient

from accounting.api import create_app
from accounting.pact import events
from accounting.pact.clients import EventsTarget, PactClient, PactClients, hash_secret
from accounting.pact.document import EXTENSION_PATH, PactProduct
from accounting.pact.host import PactHost
from accounting.pact.ratelimit import AuthLimiter
from tests import pact_reference
from tests.api.fake import FakeService
from tests.pact_partner import CLIENT_ID, CLIENT_SECRET, Partner

SECRET = "demo-secret-0123456789"
PRODUCTS = {("cq-battery", "pack-48v-100ah"): PactProduct(("urn:pact:productclassification:hs:850760",), 97.0),
            ("cq-battery", "ess-5kwh"): PactProduct(("urn:pact:productclassification:hs:850760",), 96.0)}
BASE = "https://testserver"


class Clock:
    def __init__(self) -> None:
        import time
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def make_host(service: FakeService, partner: Partner | None = None, clock: Clock | None = None,
              state_dir=None, grants: tuple[str, ...] = ("*",)) -> PactHost:
    target = (EventsTarget(f"{partner.url}/3/events", partner.url, CLIENT_ID, CLIENT_SECRET)
              if partner is not None else None)
    clients = PactClients([PactClient("demo", hash_secret(SECRET, iterations=1000), grants, target),
                           PactClient("other", hash_secret(SECRET, iterations=1000), ("*",))],
                          public_url=BASE, products=PRODUCTS)
    return PactHost(service, clients, state_dir=state_dir, retry_base_s=0.01, clock=clock or Clock(),
                    limiter=AuthLimiter(clock=clock or Clock()), scan_interval_s=3600)


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def host(service: FakeService) -> PactHost:
    host = make_host(service)
    host.run_once()
    return host


@pytest.fixture
def client(service: FakeService, host: PactHost) -> Iterator[TestClient]:
    with TestClient(create_app(service, api_token="t", pact=host), base_url=BASE) as c:
        yield c


def login(c: TestClient, client_id: str = "demo") -> dict[str, str]:
    r = c.post("/auth/token", data={"grant_type": "client_credentials"}, auth=(client_id, SECRET))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and r.headers["cache-control"] == "no-store"
    return {"Authorization": f"Bearer {body['access_token']}"}


def listing(c: TestClient, headers: dict[str, str], **params) -> list[dict]:
    r = c.get("/3/footprints", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()["data"]


# -- Authenticate --------------------------------------------------------------------------------

def test_openid_configuration_names_the_token_endpoint(client: TestClient) -> None:
    doc = client.get("/.well-known/openid-configuration").json()
    assert doc["token_endpoint"] == f"{BASE}/auth/token" and "client_credentials" in doc["grant_types_supported"]
    r = client.post(doc["token_endpoint"].removeprefix(BASE), data={"grant_type": "client_credentials"},
                    auth=("demo", SECRET))
    assert r.status_code == 200


def test_credentials_by_basic_or_form_fields_and_refusals(client: TestClient) -> None:
    assert login(client)
    form = {"grant_type": "client_credentials", "client_id": "demo", "client_secret": SECRET}
    assert client.post("/auth/token", data=form).status_code == 200
    for data, auth, status, error in (
            ({"grant_type": "client_credentials"}, ("demo", "wrong"), 401, "invalid_client"),
            ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
            ({"grant_type": "password"}, ("demo", SECRET), 400, "unsupported_grant_type")):
        r = client.post("/auth/token", data=data, auth=auth)
        assert (r.status_code, r.json()["error"]) == (status, error)


def test_plain_http_is_refused(service: FakeService, host: PactHost) -> None:
    with TestClient(create_app(service, pact=host), base_url="http://testserver") as c:
        r = c.post("/auth/token", data={"grant_type": "client_credentials"}, auth=("demo", SECRET))
        assert r.status_code == 400 and "access_token" not in r.json()
        r = c.get("/3/footprints")
        assert r.status_code == 400 and "data" not in r.json() and r.json()["code"] == "BadRequest"


def test_invalid_and_expired_tokens_are_401(service: FakeService) -> None:
    clock = Clock()
    host = make_host(service, clock=clock)
    with TestClient(create_app(service, pact=host), base_url=BASE) as c:
        for headers in ({}, {"Authorization": "Bearer invalid-access-token"}, {"Authorization": "Basic eDp5"}):
            for method, path in (("GET", "/3/footprints"), ("GET", f"/3/footprints/{uuid.uuid4()}"),
                                 ("POST", "/3/events")):
                r = c.request(method, path, headers=headers)
                assert r.status_code == 401 and r.json()["code"] == "BadRequest", (headers, path)
        headers = login(c)
        assert c.get("/3/footprints", headers=headers).status_code == 200
        clock.t += 3601
        r = c.get("/3/footprints", headers=headers)
        assert (r.status_code, r.json()["code"]) == (401, "TokenExpired")


# -- ListFootprints / GetFootprint ---------------------------------------------------------------

def test_only_closed_months_with_production_are_published(client: TestClient, service: FakeService) -> None:
    data = listing(client, login(client))
    # Two products x the two closed months with production; not the current month, not the
    # months without production before them.
    assert len(data) == 4
    for pf in data:
        pact_reference.validate(pf)
        assert pf["status"] == "Active" and "version" not in pf and "precedingPfIds" not in pf
        start = pf["pcf"]["referencePeriodStart"]
        assert pf["validityPeriodStart"] == pf["pcf"]["referencePeriodEnd"]
    assert all(pf["pcf"]["referencePeriodEnd"] <= pf["created"] for pf in data)
    assert len({(pf["productIds"][0], pf["pcf"]["referencePeriodStart"]) for pf in data}) == 4
    assert start


def test_declared_unit_is_the_pack_and_figures_are_the_records(client: TestClient, service: FakeService) -> None:
    pf = listing(client, login(client), productId="urn:tanji:product:cq-battery:pack-48v-100ah")[0]
    pcf, data = pf["pcf"], pf["extensions"][0]["data"]
    assert (pcf["declaredUnitOfMeasurement"], pcf["declaredUnitAmount"]) == ("kilowatt hour", "5.12")
    # PCF and mass of declaredUnitAmount x unit, i.e. of one 5.12 kWh pack: not per single kWh.
    assert pcf["productMassPerDeclaredUnit"] == "42"
    assert float(pcf["pcfExcludingBiogenicUptake"]) == pytest.approx(data["pcf_kgco2e_per_unit_market"], abs=1e-6)
    start = int(pf["extensions"][0]["data"]["revision"] is not None)
    assert start == 1


def test_gate_to_gate_footprints_say_so(client: TestClient) -> None:
    for pf in listing(client, login(client)):
        pcf = pf["pcf"]
        assert pcf["boundaryProcessesDescription"].startswith("Gate-to-gate, electricity only")
        assert "Not a cradle-to-gate" in pcf["boundaryProcessesDescription"]
        assert float(pcf["exemptedEmissionsPercent"]) in (97.0, 96.0)
        assert pf["extensions"][0]["data"]["boundary"] == "gate-to-gate"


def test_gate_to_gate_without_a_declared_exemption_is_not_published(service: FakeService) -> None:
    host = PactHost(service, PactClients.from_secrets({"demo": SECRET}, public_url=BASE), scan_interval_s=3600)
    assert host.run_once() == [] and host.published.all() == []


def test_get_footprint_and_v3_error_codes(client: TestClient) -> None:
    headers = login(client)
    pf = listing(client, headers)[0]
    r = client.get(f"/3/footprints/{pf['id']}", headers=headers)
    assert r.status_code == 200 and r.json()["data"] == pf
    pact_reference.validate(r.json()["data"])
    r = client.get(f"/3/footprints/{uuid.uuid4()}", headers=headers)
    assert (r.status_code, r.json()["code"]) == (404, "NotFound")
    r = client.get("/3/footprints/non-existent-id", headers=headers)
    assert (r.status_code, r.json()["code"]) == (400, "BadRequest")
    for params, status, code in (({"limit": "0"}, 400, "BadRequest"), ({"limit": "abc"}, 400, "BadRequest"),
                                 ({"offset": "-1"}, 400, "BadRequest"), ({"validOn": "yesterday"}, 400, "BadRequest"),
                                 ({"$filter": "created ge '2023-01-15T10:15:30Z'"}, 400, "NotImplemented")):
        r = client.get("/3/footprints", headers=headers, params=params)
        assert (r.status_code, r.json()["code"]) == (status, code), params
        assert set(r.json()) == {"code", "message"}
    # A huge limit is no error: the host MAY return fewer.
    assert len(listing(client, headers, limit="100000")) == 4


FILTERS = [  # (params, expected count of the 4 footprints)
    ({"productId": "urn:tanji:product:cq-battery:ess-5kwh"}, 2),
    ({"productId": "URN:TANJI:PRODUCT:CQ-BATTERY:ESS-5KWH"}, 2),
    ({"productid": "urn:tanji:product:cq-battery:ess-5kwh"}, 2),
    ([("productId", "urn:tanji:product:cq-battery:ess-5kwh"), ("productId", "urn:tanji:product:cq-battery:pack-48v-100ah")], 4),
    ({"productId": "urn:bogus:product:x"}, 0),
    ({"companyId": "urn:tanji:site:cq-battery"}, 4),
    ([("companyId", "urn:uuid:other"), ("companyId", "urn:tanji:site:CQ-BATTERY")], 4),
    ({"companyId": "urn:bogus:company:x"}, 0),
    ({"geography": "CN"}, 4), ({"geography": "cn"}, 4), ({"geography": "XX"}, 0),
    ({"classification": "urn:pact:productclassification:hs:850760"}, 4),
    ({"classification": "urn:bogus:classification:x"}, 0),
    ({"classification": ""}, 4),
    ({"status": "Active"}, 4), ({"status": "active"}, 4), ({"status": "Deprecated"}, 0), ({"status": "Bogus"}, 0),
    ({"validOn": "1900-01-01T00:00:00Z"}, 0), ({"validAfter": "2099-12-31T23:59:59Z"}, 0),
    ({"validBefore": "1900-01-01T00:00:00Z"}, 0), ({"validAfter": "2000-01-01T00:00Z"}, 4),
    ({"validBefore": "2100-01-01T00:00:00+08:00"}, 4),
    ([("companyId", "urn:bogus:company:x"), ("productId", "urn:tanji:product:cq-battery:ess-5kwh")], 0),
    ([("status", "Active"), ("productId", "urn:tanji:product:cq-battery:ess-5kwh")], 2),
]


@pytest.mark.parametrize(("params", "count"), FILTERS)
def test_every_v3_filter(client: TestClient, params, count: int) -> None:
    data = listing(client, login(client), **({} if isinstance(params, list) else params)) if not isinstance(
        params, list) else client.get("/3/footprints", headers=login(client), params=params).json()["data"]
    assert len(data) == count


def test_validity_filters_around_one_footprint(client: TestClient) -> None:
    headers = login(client)
    pf = listing(client, headers)[0]
    start, end = pf["validityPeriodStart"], pf["validityPeriodEnd"]
    on = listing(client, headers, validOn=start)
    assert pf["id"] in [p["id"] for p in on]
    assert all(p["validityPeriodStart"] <= start <= p["validityPeriodEnd"] for p in on)
    assert pf["id"] in [p["id"] for p in listing(client, headers, validAfter="2000-01-01T00:00:00Z")]
    assert pf["id"] not in [p["id"] for p in listing(client, headers, validAfter=start)]
    assert pf["id"] not in [p["id"] for p in listing(client, headers, validBefore=end)]
    assert pf["id"] in [p["id"] for p in listing(client, headers, validBefore="2099-01-01T00:00:00Z")]


def test_pagination_links_are_absolute_and_stable(client: TestClient, service: FakeService, host: PactHost) -> None:
    headers = login(client)
    seen, url, pages = [], "/3/footprints?limit=1&geography=CN", 0
    first_link = None
    while url:
        r = client.get(url, headers=headers)
        assert r.status_code == 200
        assert len(r.json()["data"]) <= 1
        seen += [pf["id"] for pf in r.json()["data"]]
        link = r.headers.get("link")
        pages += 1
        if link:
            target, rel = link.split(";", 1)
            assert rel.strip() == 'rel="next"' and target.startswith("<https://testserver/3/footprints?")
            first_link = first_link or target.strip("<>")
            assert "geography=CN" in target
            url = target.strip("<>").removeprefix(BASE)
        else:
            url = None
        if pages == 2:  # a new publication meanwhile does not change the paged set
            service.revisions[service.production_from_ms] = 1
            service.tick()
            host.run_once()
    assert len(seen) == len(set(seen)) == 4
    again = client.get(first_link.removeprefix(BASE), headers=headers).json()["data"]
    assert again == client.get(first_link.removeprefix(BASE), headers=headers).json()["data"]
    assert len(listing(client, headers)) == 6  # 4 + the revision's new footprints of 2 products


def test_grants_decide_what_a_client_sees(service: FakeService) -> None:
    host = make_host(service, grants=("cq-battery/ess-5kwh",))
    host.run_once()
    with TestClient(create_app(service, pact=host), base_url=BASE) as c:
        headers = login(c)
        mine = listing(c, headers)
        assert {pf["productIds"][0] for pf in mine} == {"urn:tanji:product:cq-battery:ess-5kwh"}
        hidden = [p for p in host.published.all() if p.product_id == "pack-48v-100ah"][0]
        r = c.get(f"/3/footprints/{hidden.id}", headers=headers)
        assert (r.status_code, r.json()["code"]) == (403, "AccessDenied")
        r = c.get("/3/footprints", headers=headers, params={"productId": "urn:tanji:product:cq-battery:pack-48v-100ah"})
        assert (r.status_code, r.json()["code"]) == (403, "AccessDenied")
        assert listing(c, headers, productId="urn:bogus:x") == []
        assert len(listing(c, login(c, "other"))) == 4


# -- lifecycle ----------------------------------------------------------------------------------

def test_published_footprints_never_change_and_revisions_deprecate(client: TestClient, service: FakeService,
                                                                  host: PactHost) -> None:
    headers = login(client)
    before = {pf["id"]: pf for pf in listing(client, headers)}
    service.tick()  # new readings: the live numbers move
    host.run_once()
    assert {pf["id"]: pf for pf in listing(client, headers)} == before
    # Late readings reopen hours of the older closed month: a new footprint, the old one Deprecated.
    month = service.production_from_ms
    service.revisions[month] = 1
    new_ids = host.run_once()
    assert len(new_ids) == 2
    after = {pf["id"]: pf for pf in listing(client, headers)}
    for new_id in new_ids:
        new = after[new_id]
        pact_reference.validate(new)
        [old_id] = new["precedingPfIds"]
        old = after[old_id]
        assert old["status"] == "Deprecated" and new["status"] == "Active"
        assert {**old, "status": "Active"} == before[old_id]  # nothing else of it changed
        assert new["pcf"]["pcfExcludingBiogenicUptake"] != old["pcf"]["pcfExcludingBiogenicUptake"]
        assert new["pcf"]["referencePeriodStart"] == old["pcf"]["referencePeriodStart"]
    assert len(listing(client, headers, status="Deprecated")) == 2
    # The same revision again publishes nothing more.
    assert host.run_once() == []


def test_a_recompute_with_a_new_factor_version_revises_published_months(client: TestClient, service: FakeService,
                                                                        host: PactHost) -> None:
    headers = login(client)
    before = listing(client, headers)
    month = service.production_from_ms
    r = client.post("/api/v1/recompute", headers={"Authorization": "Bearer t"},
                    json={"site_id": "cq-battery", "start": str(month), "end": str(month + 86_400_000),
                          "dataset_version": "2024"})
    assert r.status_code == 200
    new_ids = host.run_once()
    assert len(new_ids) == 2
    data = {pf["id"]: pf for pf in listing(client, headers)}
    for new_id in new_ids:
        new = data[new_id]
        assert new["pcf"]["secondaryEmissionFactorSources"][0]["version"] == "2024"
        assert data[new["precedingPfIds"][0]]["status"] == "Deprecated"
        assert "recomputed with factor dataset" in new["comment"]
    assert len(data) == len(before) + 2
    # Late readings for a month published from a recomputation are recomputed with its dataset.
    service.revisions[month] = 1
    service.tick()
    again = host.run_once()
    assert len(again) == 2
    assert all(data2["pcf"]["secondaryEmissionFactorSources"][0]["version"] == "2024"
               for data2 in (host.published.get(i).document for i in again))


def test_published_footprints_are_served_identically_after_a_restart(service: FakeService, tmp_path) -> None:
    host = make_host(service, state_dir=tmp_path)
    host.run_once()
    with TestClient(create_app(service, pact=host), base_url=BASE) as c:
        headers = login(c)
        first = c.get("/3/footprints", headers=headers).content
    host.close()
    service.tick()
    again = make_host(service, state_dir=tmp_path)
    assert again.run_once() == []  # nothing new: the published ones are not recomputed
    with TestClient(create_app(service, pact=again), base_url=BASE) as c:
        # The token issued before the restart still works.
        assert c.get("/3/footprints", headers=headers).content == first


# -- the extension ------------------------------------------------------------------------------

def test_extension_schema_is_served_and_the_data_follows_it(client: TestClient) -> None:
    schema = client.get(EXTENSION_PATH)
    assert schema.status_code == 200 and schema.headers["content-type"].startswith("application/schema+json")
    for pf in listing(client, login(client)):
        ext = pf["extensions"][0]
        assert ext["dataSchema"] == BASE + EXTENSION_PATH
        jsonschema.Draft202012Validator(schema.json()).validate(ext["data"])


# -- events -------------------------------------------------------------------------------------

def event(kind: str, data: dict, source: str) -> dict:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": source, "time": "2025-05-19T10:30:00Z",
            "type": kind, "data": data}


def post_event(c: TestClient, headers: dict, body) -> object:
    return c.post("/3/events", headers={**headers, "Content-Type": "application/cloudevents+json; charset=UTF-8"},
                  json=body)


def test_request_created_is_fulfilled_or_rejected_asynchronously(service: FakeService) -> None:
    with Partner() as partner:
        host = make_host(service, partner)
        host.run_once()
        with TestClient(create_app(service, pact=host), base_url=BASE) as c:
            headers = login(c)
            asked = event(events.REQUEST_CREATED, {"productId": ["urn:tanji:product:cq-battery:ess-5kwh"],
                                                   "comment": "Please send PCF data for this year."}, partner.url)
            r = post_event(c, headers, asked)
            assert (r.status_code, r.content) == (200, b"")
            bogus = event("org.wbcsd.pathfinder.ProductFootprintRequest.Created.v1",
                          {"productId": ["urn:pact:null"]}, f"//127.0.0.1:{partner.port}/3/events")
            assert post_event(c, headers, bogus).status_code == 200
            partner.wait_for(6)  # the 4 Published events of the first scan, then the 2 answers
        answers = [e for e in partner.events if e["type"] != events.PUBLISHED]
        fulfilled, rejected = sorted(answers, key=lambda e: e["type"] != events.REQUEST_FULFILLED)
        pact_reference.validate(fulfilled, "RequestFulfilledEvent")
        pact_reference.validate(rejected, "RequestRejectedEvent")
        assert fulfilled["type"] == events.REQUEST_FULFILLED and fulfilled["data"]["requestEventId"] == asked["id"]
        assert {pf["productIds"][0] for pf in fulfilled["data"]["pfs"]} == {"urn:tanji:product:cq-battery:ess-5kwh"}
        assert rejected["data"]["requestEventId"] == bogus["id"] and rejected["data"]["error"]["code"] == "NotFound"
        assert partner.logins == 1 and partner.rejected == []


def test_publications_are_announced_with_published_events(service: FakeService) -> None:
    with Partner() as partner:
        host = make_host(service, partner)
        first = host.run_once()
        received = partner.wait_for(4)
        for e in received:
            pact_reference.validate(e, "PublishedEvent")
        assert sorted(i for e in received for i in e["data"]["pfIds"]) == sorted(first)
        service.revisions[service.production_from_ms] = 1
        service.tick()
        new = host.run_once()
        revised = partner.wait_for(6)[4:]
        for e, new_id in zip(revised, new, strict=True):
            old = host.published.get(new_id).preceding[-1]
            assert e["data"]["pfIds"] == [new_id, old]


@pytest.mark.parametrize(("body", "why"), [
    (lambda s: event(events.PUBLISHED, {"pfIds": ["urn:gtin:4712345060507"]}, s), "UUID"),
    (lambda s: event(events.PUBLISHED, {"pfIds": []}, s), "non-empty"),
    (lambda s: event("org.example.Unknown", {}, s), "unknown event type"),
    (lambda s: {k: v for k, v in event(events.PUBLISHED, {"pfIds": [str(uuid.uuid4())]}, s).items() if k != "time"}, "time"),
    (lambda s: {**event(events.PUBLISHED, {"pfIds": [str(uuid.uuid4())]}, s), "specversion": "0.3"}, "specversion"),
    (lambda s: event(events.REQUEST_CREATED, {"productId": ["urn:x"]}, "https://evil.example"), "source"),
    (lambda s: event(events.REQUEST_CREATED, {"validOn": "soon"}, s), "validOn"),
    (lambda s: event(events.REQUEST_FULFILLED, {"requestEventId": "x", "pfs": []}, s), "pfs"),
    (lambda s: [1, 2], "JSON object"),
])
def test_invalid_events_are_400(service: FakeService, body, why: str) -> None:
    with Partner() as partner:
        host = make_host(service, partner)
        with TestClient(create_app(service, pact=host), base_url=BASE) as c:
            r = post_event(c, login(c), body(partner.url))
            assert (r.status_code, r.json()["code"]) == (400, "BadRequest")
            assert why in r.json()["message"]
            assert [row for row in host.outbox.rows() if row.kind == "request" or
                    row.body.get("type") != events.PUBLISHED] == []


def test_a_published_event_from_a_partner_is_acknowledged(service: FakeService, host: PactHost) -> None:
    with TestClient(create_app(service, pact=host), base_url=BASE) as c:
        headers = login(c)
        r = post_event(c, headers, event(events.PUBLISHED, {"pfIds": [str(uuid.uuid4())]}, "https://p.example"))
        assert (r.status_code, r.content) == (200, b"")
        r = c.post("/3/events", headers={**headers, "Content-Type": "text/plain"}, content=b"{}")
        assert (r.status_code, r.json()["code"]) == (400, "BadRequest")
        # A client without a registered events endpoint cannot ask for an asynchronous answer.
        r = post_event(c, headers, event(events.REQUEST_CREATED, {"productId": ["urn:x"]}, "https://p.example"))
        assert (r.status_code, r.json()["code"]) == (400, "BadRequest")


def test_undelivered_events_are_retried_with_backoff_across_a_restart(service: FakeService, tmp_path) -> None:
    partner = Partner()  # not started: the partner is down
    clock = Clock()
    host = make_host(service, partner, clock=clock, state_dir=tmp_path)
    published = host.run_once()
    pending = host.outbox.rows("pending")
    assert len(pending) == 4 and all(r.attempts == 1 and r.last_error for r in pending)
    delays = [r.next_ms - int(clock.t * 1000) for r in pending]
    clock.t += 1
    host.deliver_due()
    assert all(r.attempts == 2 for r in host.outbox.rows("pending"))
    later = [r.next_ms - int(clock.t * 1000) for r in host.outbox.rows("pending")]
    assert min(later) > max(delays)  # the wait grows
    host.close()
    # Restart with the partner back: the same events are delivered, once each.
    partner.start()
    try:
        again = make_host(service, partner, clock=clock, state_dir=tmp_path)
        clock.t += 3600
        assert again.deliver_due() == 4
        received = partner.wait_for(4)
        assert sorted(i for e in received for i in e["data"]["pfIds"]) == sorted(published)
        assert again.outbox.rows("pending") == [] and len(again.outbox.rows("delivered")) == 4
        clock.t += 72 * 3600
        assert again.deliver_due() == 0 and len(partner.events) == 4
    finally:
        partner.stop()


def test_events_not_delivered_for_72_hours_are_abandoned(service: FakeService) -> None:
    clock = Clock()
    host = make_host(service, Partner(), clock=clock)
    host.run_once()
    for _ in range(100):
        clock.t += 2 * 3600
        host.deliver_due()
    assert host.outbox.rows("pending") == [] and len(host.outbox.rows("abandoned")) == 4


def test_link_keeps_every_filter(client: TestClient) -> None:
    headers = login(client)
    r = client.get("/3/footprints", headers=headers,
                   params=[("limit", "1"), ("productId", "urn:tanji:product:cq-battery:ess-5kwh"), ("status", "Active")])
    target = r.headers["link"].split(">")[0].lstrip("<")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
    assert query["productId"] == ["urn:tanji:product:cq-battery:ess-5kwh"] and query["status"] == ["Active"]

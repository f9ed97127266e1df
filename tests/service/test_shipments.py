"""Shipments on the real AccountingService (SQLite store, real engine) through the HTTP app.

A plant whose batches are checkable by hand: one incomer, one line making `widget`, the
remainder by units (so the line takes all the energy), dataset cn-mee-regional-co2@2022
(Southwest 0.2268 kgCO2/kWh, CO2 basis: market = location without instruments). Every 10 minutes
the incomer and the PLC are read; the PLC's batch register shows 101 in hour 0, 102 in hour 1,
103 in hour 2, 104 in hour 3 (still running). Readings end at 4:00, so hours 0-2 are closed.

| hour | kWh | units | batch | kgCO2/unit |
| --- | --- | --- | --- | --- |
| 0 | 200 | 50 | 101 | 200 x 0.2268 / 50 = 0.90720 |
| 1 | 100 | 80 | 102 | 100 x 0.2268 / 80 = 0.28350 |
| 2 | 150 | 60 | 103 | 150 x 0.2268 / 60 = 0.56700 |
| 3 | 100 | 70 | 104 (open) | |
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from accounting.api import create_app
from accounting.service import AccountingService
from accounting.shipments import ShipmentBook
from accounting.store.base import StoredReading
from accounting.store.checkpoints import CheckpointStore
from accounting.store.sqlite import SqliteStore
from tanji.site import load_site

TOKEN = "ship-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SW_2022 = 0.2268
T0 = 1_748_736_000_000  # 2025-06-01T00:00Z = 08:00 in Chongqing
HOUR_MS = 3_600_000
KWH = [200.0, 100.0, 150.0, 100.0]
UNITS = [50, 80, 60, 70]
PER_UNIT = {"101": 200 * SW_2022 / 50, "102": 100 * SW_2022 / 80, "103": 150 * SW_2022 / 60}

SITE_YAML = """
site:
  id: s-plant
  name: Shipment test plant
  province: Chongqing
  timezone: Asia/Shanghai
  matching_mode: annual
  factor_dataset: cn-mee-regional-co2@2022
  remainder_key: units
broker: {host: 127.0.0.1, port: 1883}
gateways:
  - id: gw-s
    spool_path: /tmp/unused-s.sqlite
    meters:
      - {id: incomer, role: grid_import, profile: eastron-sdm630, host: 127.0.0.1, port: 5020, unit_id: 1, ct_ratio: 40, poll_period_s: 600}
      - {id: plc-a, role: production_counter, cost_centre: line-a, profile: generic-plc-counter, host: 127.0.0.1, port: 5021, unit_id: 1, poll_period_s: 600}
cost_centres:
  - {id: line-a, kind: production, name: Line A}
products:
  - {id: widget, name: Widget, cost_centre: line-a, counter: {meter: plc-a, channel: units_total, batch_meter: plc-a}, declared_unit_kwh: 2.0}
"""


def readings(withhold: int | None = None) -> list[StoredReading]:
    """Every reading of the plant; `withhold`: the incomer's reading number k left out."""
    rows = []
    energy, units = 1000.0, 0.0
    for k in range(25):  # 0:00 .. 4:00 every 10 minutes
        ts = T0 + k * 600_000
        hour = min(k // 6, 3)
        if k:
            energy += KWH[(k - 1) // 6] / 6
            units += UNITS[(k - 1) // 6] / 6
        if k != withhold:
            rows.append(StoredReading("s-plant", "gw-s", "incomer", ts, "good", {"energy_import_kwh": energy}))
        rows.append(StoredReading("s-plant", "gw-s", "plc-a", ts, "good",
                                  {"units_total": units, "batch_id": 101.0 + hour}))
    return rows


class Plant:
    def __init__(self, tmp: Path, withhold: int | None = None) -> None:
        (tmp / "site.yaml").write_text(SITE_YAML)
        self.tmp = tmp
        self.site = load_site(tmp / "site.yaml")
        store = SqliteStore(tmp / "tanji.sqlite")
        store.write_readings(readings(withhold))
        store.close()
        self.client: TestClient | None = None

    def start(self) -> TestClient:
        self.service = AccountingService([self.site], SqliteStore(self.tmp / "tanji.sqlite"),
                                         checkpoints=CheckpointStore(self.tmp / "checkpoints.sqlite"))
        self.service.restore()  # the engine from the store; no broker needed for these checks
        # the plant's readings are of 2025: every issued shipment is within the live horizon
        self.book = ShipmentBook(self.service, state_dir=self.tmp, scan_interval_s=3600, live_horizon_days=36500)
        self.client = TestClient(create_app(self.service, api_token=TOKEN, shipments=self.book))
        self.client.__enter__()
        return self.client

    def stop(self) -> None:
        if self.client is not None:
            self.client.__exit__(None, None, None)
            self.book.close()
            self.service.store.close()
            self.client = None


@pytest.fixture
def plant(tmp_path: Path) -> Iterator[Plant]:
    p = Plant(tmp_path)
    p.start()
    yield p
    p.stop()


def ship(client: TestClient, body: dict, **params) -> object:
    return client.post("/api/v1/shipments", json=body, headers=AUTH, params=params)


def base(sid: str, lines: list[dict]) -> dict:
    return {"shipment_id": sid, "date": "2025-06-02", "destination": "DE", "buyer": "Speicher GmbH", "lines": lines}


def test_batches_served_and_listed(plant: Plant) -> None:
    runs = plant.service.batch_runs("s-plant")
    assert [(r["batch_id"], r["closed"]) for r in runs] == [(101.0, True), (102.0, True), (103.0, True), (104.0, False)]
    fp = plant.client.get("/api/v1/footprints/batches/102", params={"start": T0, "end": T0 + 5 * HOUR_MS}).json()
    assert fp[0]["units"] == pytest.approx(80)
    assert fp[0]["kgco2e_per_unit_location"] == pytest.approx(PER_UNIT["102"])


def test_named_batches_by_hand(plant: Plant) -> None:
    """30 units of batch 101 and 50 of batch 102: 30 x 0.9072 + 50 x 0.2835 = 27.216 + 14.175 = 41.391."""
    r = ship(plant.client, base("DEC-1", [{"product_id": "widget", "quantity": 80,
                                           "batches": [{"batch_id": "101", "quantity": 30},
                                                       {"batch_id": 102, "quantity": 50}]}]))
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["status"] == "draft"
    line = s["lines"][0]
    assert line["kgco2e_location"] == pytest.approx(41.391)
    assert line["kgco2e_market"] == pytest.approx(41.391)  # no instruments, CO2 basis
    assert line["kgco2e_per_unit_location"] == pytest.approx(41.391 / 80)
    assert line["energy_kwh"] == pytest.approx(30 / 50 * 200 + 50 / 80 * 100)  # 120 + 62.5
    assert [lot["lot_id"] for lot in line["lots"]] == ["101", "102"]
    assert [lot["units_shipped"] for lot in line["lots"]] == [30, 50]
    assert line["dataset_versions"] == ["cn-mee-regional-co2@2022"]
    assert line["evidence"] == []
    # EU battery figure: grid electricity at the grid mix, per kWh of the declared 2 kWh per unit
    assert line["kgco2e_per_battery_kwh_eu"] == pytest.approx(41.391 / 80 / 2.0)
    assert s["totals"]["kgco2e_location"] == pytest.approx(41.391)


def test_fifo_over_closed_batches(plant: Plant) -> None:
    """60 units without batches: all 50 of batch 101 (oldest), then 10 of 102; 103 is untouched."""
    s = ship(plant.client, base("DEC-F", [{"product_id": "widget", "quantity": 60}])).json()
    lots = s["lines"][0]["lots"]
    assert [(lot["lot_id"], lot["units_shipped"], lot["rule"]) for lot in lots] == [("101", 50, "fifo"), ("102", 10, "fifo")]
    assert s["lines"][0]["kgco2e_location"] == pytest.approx(50 * PER_UNIT["101"] + 10 * PER_UNIT["102"])
    # the next FIFO shipment starts where this one stopped
    s2 = ship(plant.client, base("DEC-F2", [{"product_id": "widget", "quantity": 75}])).json()
    assert [(lot["lot_id"], lot["units_shipped"]) for lot in s2["lines"][0]["lots"]] == [("102", 70), ("103", 5)]


def test_refusals(plant: Plant) -> None:
    c = plant.client
    assert ship(c, base("DEC-A", [{"product_id": "widget", "quantity": 40, "batches": [{"batch_id": "101", "quantity": 40}]}])).status_code == 201
    # double shipping: batch 101 made 50, 40 are shipped by DEC-A
    r = ship(c, base("DEC-B", [{"product_id": "widget", "quantity": 20, "batches": [{"batch_id": "101", "quantity": 20}]}]))
    assert r.status_code == 409, r.text
    assert "10 left" in r.json()["detail"] and "DEC-A: 40" in r.json()["detail"]
    assert r.json()["error"] == "BatchAlreadyShippedError"
    # over-shipping: closed batches made 190, 40 shipped
    r = ship(c, base("DEC-C", [{"product_id": "widget", "quantity": 151}]))
    assert r.status_code == 422 and "only 150 produced" in r.json()["detail"], r.text
    r = ship(c, base("DEC-C", [{"product_id": "widget", "quantity": 81, "batches": [{"batch_id": "102", "quantity": 81}]}]))
    assert r.status_code == 422 and "the batch made 80" in r.json()["detail"], r.text
    # unknown product, unknown batch, open batch, same id twice, bad country
    r = ship(c, base("DEC-D", [{"product_id": "gadget", "quantity": 1}]))
    assert r.status_code == 422 and "no product 'gadget'" in r.json()["detail"] and "widget" in r.json()["detail"]
    r = ship(c, base("DEC-D", [{"product_id": "widget", "quantity": 1, "batches": ["999"]}]))
    assert r.status_code == 422 and "never showed batch number 999" in r.json()["detail"]
    r = ship(c, base("DEC-D", [{"product_id": "widget", "quantity": 1, "batches": ["104"]}]))
    assert r.status_code == 422 and "still in production" in r.json()["detail"]
    r = ship(c, base("DEC-A", [{"product_id": "widget", "quantity": 1}]))
    assert r.status_code == 409 and "already recorded" in r.json()["detail"]
    r = ship(c, {**base("DEC-E", [{"product_id": "widget", "quantity": 1}]), "destination": "XX"})
    assert r.status_code == 422 and "ISO 3166-1" in r.json()["detail"]
    assert c.post("/api/v1/shipments", json=base("DEC-Z", [{"product_id": "widget", "quantity": 1}])).status_code == 401
    # nothing of the refused ones was recorded, DEC-A's units are still its own
    assert [s["shipment_id"] for s in c.get("/api/v1/shipments").json()] == ["DEC-A"]
    # deleting the draft frees its units
    assert c.delete("/api/v1/shipments/DEC-A", headers=AUTH).status_code == 204
    assert ship(c, base("DEC-B", [{"product_id": "widget", "quantity": 50, "batches": ["101"]}])).status_code == 201


def test_csv_import_all_or_none(plant: Plant) -> None:
    good = ("报关单号,出口日期,运抵国,境外收货人,产品编号,数量,批次号\r\n"
            "DEC-10,2025-06-02,DEU,Speicher GmbH,widget,30,101\r\n"
            "DEC-10,2025-06-02,DEU,Speicher GmbH,widget,20,102\r\n"
            "INV-11,2025-06-02,FR,Stockage SA,widget,10,\r\n")
    bad = good + "INV-12,2025-06-02,FR,Stockage SA,widget,500,\r\n"
    r = plant.client.post("/api/v1/shipments/import", content=bad.encode(), headers={**AUTH, "Content-Type": "text/csv"})
    assert r.status_code == 422 and "CSV lines 5" in r.json()["detail"] and "INV-12" in r.json()["detail"], r.text
    assert plant.client.get("/api/v1/shipments").json() == []
    r = plant.client.post("/api/v1/shipments/import", content=("\ufeff" + good).encode(),
                          headers={**AUTH, "Content-Type": "text/csv"})
    assert r.status_code == 201, r.text
    dec, inv = r.json()
    assert dec["declaration"]["destination"] == "DE"
    assert dec["lines"][0]["units"] == 50
    assert [(lot["lot_id"], lot["units_shipped"]) for lot in dec["lines"][0]["lots"]] == [("101", 30), ("102", 20)]
    # FIFO skips what DEC-10 (same import) took from batch 101
    assert [(lot["lot_id"], lot["units_shipped"]) for lot in inv["lines"][0]["lots"]] == [("101", 10)]
    r = plant.client.post("/api/v1/shipments/import", content=b"shipment_id,date\r\nX,2025-06-02\r\n",
                          headers={**AUTH, "Content-Type": "text/csv"})
    assert r.status_code == 422 and "missing column(s) destination, buyer, product_id, quantity" in r.json()["detail"]


def test_issue_immutable_durable_and_document(plant: Plant, tmp_path: Path) -> None:
    c = plant.client
    ship(c, base("DEC-I", [{"product_id": "widget", "quantity": 40, "batches": [{"batch_id": "103", "quantity": 40}]}]))
    r = c.post("/api/v1/shipments/DEC-I/issue", headers=AUTH)
    assert r.status_code == 200, r.text
    issued = r.json()
    assert issued["status"] == "issued" and issued["version"] == 1
    assert issued["lines"][0]["kgco2e_location"] == pytest.approx(40 * PER_UNIT["103"])
    assert c.post("/api/v1/shipments/DEC-I/issue", headers=AUTH).status_code == 409
    assert c.delete("/api/v1/shipments/DEC-I", headers=AUTH).status_code == 409
    doc = c.get("/api/v1/shipments/DEC-I/versions/1").json()
    page = c.get("/api/v1/shipments/DEC-I/document")
    assert page.status_code == 200 and "报关单号" in page.text and "DEC-I" in page.text
    assert f"{40 * PER_UNIT['103']:,.1f}" in page.text
    assert "Germany" in page.text and "读数未签名" in page.text
    # stored durably, byte for byte: a restart serves the same document
    plant.stop()
    plant.start()
    assert plant.client.get("/api/v1/shipments/DEC-I/versions/1").json() == doc
    listed = plant.client.get("/api/v1/shipments").json()
    assert [(s["shipment_id"], s["status"], s["version"]) for s in listed] == [("DEC-I", "issued", 1)]
    # its units stay shipped after the restart
    r = ship(plant.client, base("DEC-J", [{"product_id": "widget", "quantity": 21, "batches": [{"batch_id": "103", "quantity": 21}]}]))
    assert r.status_code == 409 and "20 left" in r.json()["detail"]


def test_recompute_supersedes(plant: Plant) -> None:
    """POST /api/v1/recompute with another factor version: a new version, the old superseded."""
    c = plant.client
    ship(c, base("DEC-R", [{"product_id": "widget", "quantity": 50, "batches": ["101"]}]), issue="true")
    r = c.post("/api/v1/recompute", headers=AUTH,
               json={"site_id": "s-plant", "start": str(T0), "end": str(T0 + 3 * HOUR_MS), "dataset_version": "2023"})
    assert r.status_code == 200, r.text
    plant.book.run_once()  # (or the book's thread, woken by the recompute, got there first)
    s = c.get("/api/v1/shipments/DEC-R").json()
    assert s["version"] == 2 and s["status"] == "issued"
    assert [v["status"] for v in s["versions"]] == ["superseded", "issued"]
    sw_2023 = s["lines"][0]["kgco2e_location"] / 200
    assert s["lines"][0]["dataset_version"] == "2023" and sw_2023 != pytest.approx(SW_2022)
    old = c.get("/api/v1/shipments/DEC-R/versions/1").json()
    assert old["status"] == "superseded" and old["superseded_by"] == 2
    assert old["lines"][0]["kgco2e_location"] == pytest.approx(200 * SW_2022)
    page = c.get("/api/v1/shipments/DEC-R/document", params={"version": 1}).text
    assert "SUPERSEDED" in page
    # the same recompute again changes nothing
    c.post("/api/v1/recompute", headers=AUTH,
           json={"site_id": "s-plant", "start": str(T0), "end": str(T0 + 3 * HOUR_MS), "dataset_version": "2023"})
    assert plant.book.run_once() == []


def test_late_reading_supersedes(tmp_path: Path) -> None:
    """The incomer's 2:00 reading arrives late: until then the 1:50-2:10 delta is spread over
    hours 1 and 2 (hour 1: 5 x 100/6 + (100/6 + 150/6)/2 = 104.17 kWh); the late reading puts
    100 kWh in hour 1. Batch 102's figures change: the issued shipment drawing on it gets a new
    version, the old one is superseded."""
    plant = Plant(tmp_path, withhold=12)
    c = plant.start()
    try:
        ship(c, base("DEC-L", [{"product_id": "widget", "quantity": 10, "batches": [{"batch_id": "102", "quantity": 10}]}]),
             issue="true")
        assert plant.book.run_once() == []
        before = c.get("/api/v1/shipments/DEC-L").json()["lines"][0]
        assert before["kgco2e_location"] == pytest.approx(10 / 80 * (500 / 6 + 250 / 12) * SW_2022)
        late = [r for r in readings() if r.meter == "incomer" and r.ts_ms == T0 + 2 * HOUR_MS]
        plant.service.engines.feed({"s-plant": late})  # as ingest delivers a stored late reading
        assert plant.book.run_once() == [("DEC-L", 2)]
        s = c.get("/api/v1/shipments/DEC-L").json()
        assert s["lines"][0]["kgco2e_location"] == pytest.approx(10 * PER_UNIT["102"])
        assert [v["status"] for v in s["versions"]] == ["superseded", "issued"]
        assert "late readings revised the figures of widget batch 102" in \
            c.get("/api/v1/shipments/DEC-L/versions/2").json()["reason"]
        assert plant.book.run_once() == []
    finally:
        plant.stop()


def test_pact_footprints_of_a_shipment(tmp_path: Path) -> None:
    from accounting.pact.clients import PactClients
    from accounting.pact.document import PactProduct
    from accounting.pact.host import PactHost
    from tests import pact_reference

    p = Plant(tmp_path)
    p.start()
    p.stop()
    service = AccountingService([p.site], SqliteStore(tmp_path / "tanji.sqlite"))
    service.restore()
    host = PactHost(service, PactClients.from_secrets({"buyer": "buyer-secret-0123456789"},
                                                      products={("s-plant", "widget"): PactProduct((), 90.0)}),
                    require_https=False)
    book = ShipmentBook(service, pact=host, scan_interval_s=3600)
    with TestClient(create_app(service, api_token=TOKEN, pact=host, shipments=book)) as c:
        r = ship(c, base("DEC-P", [{"product_id": "widget", "quantity": 50, "batches": ["101"]}]), issue="true")
        assert r.status_code == 201, r.text
        pf = c.get("/api/v1/shipments/DEC-P/pact").json()["data"]
        assert len(pf) == 1
        doc = pf[0]
        assert "urn:tanji:shipment:s-plant:DEC-P:1" in doc["productIds"]
        assert doc["extensions"][1]["data"]["shipment_id"] == "DEC-P"
        # per declared unit (2 kWh = one unit): the batch's market figure per unit
        assert float(doc["pcf"]["pcfExcludingBiogenicUptake"]) == pytest.approx(PER_UNIT["101"], abs=1e-6)
        pact_reference.validate(doc)
        assert c.get("/pact/extensions/tanji-shipment/1.0.0/schema.json").json()["$id"] == "tanji-shipment/1.0.0"
        token = c.post("/auth/token", data={"grant_type": "client_credentials"},
                       auth=("buyer", "buyer-secret-0123456789")).json()["access_token"]
        listed = c.get("/3/footprints", params={"productId": "urn:tanji:shipment:s-plant:DEC-P:1"},
                       headers={"Authorization": f"Bearer {token}"}).json()["data"]
        assert [d["id"] for d in listed] == [doc["id"]]
        # the monthly publisher does not take a shipment's footprint for the month's
        assert host.published.latest("s-plant", "widget", T0) is None
    book.close()
    service.store.close()


def test_dashboard_lists_shipments(plant: Plant) -> None:
    """The dashboard's shipments panel is served and reads the list with statuses and totals."""
    c = plant.client
    assert 'id="shipments-panel"' in c.get("/").text
    js = c.get("/dashboard/shipments.js")
    assert js.status_code == 200 and "/api/v1/shipments" in js.text
    ship(c, base("DEC-D1", [{"product_id": "widget", "quantity": 5, "batches": ["101"]}]))
    ship(c, base("DEC-D2", [{"product_id": "widget", "quantity": 5, "batches": ["102"]}]), issue="true")
    rows = {s["shipment_id"]: s for s in c.get("/api/v1/shipments").json()}
    assert rows["DEC-D1"]["status"] == "draft" and rows["DEC-D1"]["totals"] is None
    assert rows["DEC-D2"]["status"] == "issued"
    assert rows["DEC-D2"]["totals"]["kgco2e_location"] == pytest.approx(5 * PER_UNIT["102"])
    assert [s["shipment_id"] for s in c.get("/api/v1/shipments", params={"status": "draft"}).json()] == ["DEC-D1"]


def test_background_scans_wait_for_the_restore(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """PACT publication and shipment scans start with the HTTP server, before the engines are
    restored: asked then they failed on every site (a KeyError traceback per product and scan)."""
    import logging

    from accounting.api.types import engines_restored
    from accounting.pact.clients import PactClients
    from accounting.pact.document import PactProduct
    from accounting.pact.host import PactHost

    Plant(tmp_path)  # its readings in the store
    service = AccountingService([load_site(tmp_path / "site.yaml")], SqliteStore(tmp_path / "tanji.sqlite"))
    host = PactHost(service, PactClients.from_secrets({"buyer": "buyer-secret-0123456789"},
                                                      products={("s-plant", "widget"): PactProduct((), 90.0)}),
                    require_https=False)
    book = ShipmentBook(service, pact=host, scan_interval_s=3600)
    assert not engines_restored(service)
    with caplog.at_level(logging.ERROR):
        assert host.run_once() == [] and book.run_once() == []
        service.restore()
        assert engines_restored(service)  # from here on the scans ask the engines
        assert host.run_once() == [] and book.run_once() == []  # nothing closed within the horizon
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

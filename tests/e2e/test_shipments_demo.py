"""Export shipments against the real `tanji demo`, through its public HTTP API only.

The demo (started as the README says, in a process of its own) has a month of history of the
Chongqing bonded-zone battery-pack plant, whose line PLCs show batch numbers. A clerk lists
the closed batches of the 48 V pack, records a shipment taking 100 units of one batch and the
whole of another, and issues it. The shipment's figures are checked against a calculation by
hand from the two batches' own footprints (`GET /api/v1/footprints/batches/{id}`):

    kgCO2e = Σ units shipped from batch i × batch i's kgCO2e per unit      (location, market)
    per unit = kgCO2e / units;  shares: weighted by the energy shipped from each batch
    uncertainty: the batches' absolute uncertainties added linearly
    EU battery figure = Σ units_i × batch i's EU figure / units

Then the refusals: the same batch shipped again (409), more units than closed batches hold
(422), a product the plant does not make (422); the printable document and the PACT
footprints of the issued shipment; the dashboard's list; a recompute with another factor version
(a new document, the old one superseded); a restart serves the same documents.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests import pact_reference
from tests.demo_process import DemoProcess

TOKEN = "demo-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PACK = "pack-48v-100ah"


class Demo(DemoProcess):
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.http, timeout=60)


def batch_record(c: httpx.Client, batch_id: str) -> dict:
    r = c.get(f"/api/v1/footprints/batches/{batch_id}", params={"product": PACK})
    assert r.status_code == 200, r.text
    [record] = r.json()
    return record


@pytest.mark.timeout(900)
def test_shipment_from_two_demo_batches_by_hand(tmp_path: Path) -> None:
    demo = Demo(tmp_path)
    demo.start()
    try:
        with demo.client() as c:
            lots = c.get("/api/v1/shipments/lots", params={"product": PACK}).json()
            closed = [lot for lot in lots if not lot["provisional"] and lot["units"] > 100]
            assert len(closed) >= 2, lots[-5:]
            a, b = closed[0], closed[1]  # the oldest two: a clerk's first-in-first-out pick
            ra, rb = batch_record(c, a["lot_id"]), batch_record(c, b["lot_id"])
            assert round(ra["units"]) == a["units"] and round(rb["units"]) == b["units"]
            qa, qb = 100, b["units"]
            quantity = qa + qb
            body = {"shipment_id": "500120250612000123", "kind": "declaration", "date": time.strftime("%Y-%m-%d"),
                    "destination": "DE", "buyer": "Speicher GmbH",
                    "lines": [{"product_id": PACK, "quantity": quantity,
                               "batches": [{"batch_id": a["lot_id"], "quantity": qa}, {"batch_id": b["lot_id"]}]}]}
            r = c.post("/api/v1/shipments", json=body, headers=AUTH, params={"issue": "true"})
            assert r.status_code == 201, r.text
            shipment = r.json()
            assert shipment["status"] == "issued" and shipment["version"] == 1
            line = shipment["lines"][0]

            # by hand, from the two batch records
            loc = qa * ra["kgco2e_per_unit_location"] + qb * rb["kgco2e_per_unit_location"]
            mkt = qa * ra["kgco2e_per_unit_market"] + qb * rb["kgco2e_per_unit_market"]
            fa, fb = qa / ra["units"], qb / rb["units"]
            energy = fa * ra["energy_kwh"] + fb * rb["energy_kwh"]
            metered = (fa * ra["energy_kwh"] * ra["share_metered"] + fb * rb["energy_kwh"] * rb["share_metered"]) / energy
            estimated = (fa * ra["energy_kwh"] * ra["share_estimated"]
                         + fb * rb["energy_kwh"] * rb["share_estimated"]) / energy
            unc = 100 * (fa * ra["kgco2e_location"] * ra["uncertainty_pct_95"]
                         + fb * rb["kgco2e_location"] * rb["uncertainty_pct_95"]) / 100 / loc
            eu = (qa * ra["kgco2e_per_battery_kwh_eu"] + qb * rb["kgco2e_per_battery_kwh_eu"]) / quantity
            assert line["units"] == quantity
            assert line["kgco2e_location"] == pytest.approx(loc, rel=1e-9)
            assert line["kgco2e_market"] == pytest.approx(mkt, rel=1e-9)
            assert line["kgco2e_per_unit_location"] == pytest.approx(loc / quantity, rel=1e-9)
            assert line["kgco2e_per_unit_market"] == pytest.approx(mkt / quantity, rel=1e-9)
            assert line["energy_kwh"] == pytest.approx(energy, rel=1e-9)
            assert line["share_metered"] == pytest.approx(metered, abs=1e-12)
            assert line["share_estimated"] == pytest.approx(estimated, abs=1e-12)
            assert line["uncertainty_pct_95"] == pytest.approx(unc, rel=1e-9)
            assert line["kgco2e_per_battery_kwh_eu"] == pytest.approx(eu, rel=1e-9)
            assert line["dataset_versions"] == sorted({f"{r['dataset_id']}@{r['dataset_version']}" for r in (ra, rb)})
            assert [(lot["lot_id"], lot["units_shipped"]) for lot in line["lots"]] == [(a["lot_id"], qa), (b["lot_id"], qb)]
            assert shipment["totals"]["kgco2e_location"] == pytest.approx(loc, rel=1e-9)

            # refusals, each with what to do
            again = {**body, "shipment_id": "INV-2025-0002",
                     "lines": [{"product_id": PACK, "quantity": 1, "batches": [b["lot_id"]]}]}
            r = c.post("/api/v1/shipments", json=again, headers=AUTH)
            assert r.status_code == 409, r.text
            assert "500120250612000123" in r.json()["detail"] and "shipped once" in r.json()["detail"]
            more = {**body, "shipment_id": "INV-2025-0003", "lines": [{"product_id": PACK, "quantity": 10_000_000}]}
            r = c.post("/api/v1/shipments", json=more, headers=AUTH)
            assert r.status_code == 422 and "not yet shipped" in r.json()["detail"], r.text
            unknown = {**body, "shipment_id": "INV-2025-0004", "lines": [{"product_id": "cell-lfp-280ah", "quantity": 5}]}
            r = c.post("/api/v1/shipments", json=unknown, headers=AUTH)
            assert r.status_code == 422 and "no product 'cell-lfp-280ah'" in r.json()["detail"], r.text
            assert [s["shipment_id"] for s in c.get("/api/v1/shipments").json()] == ["500120250612000123"]
            lots_after = {lot["lot_id"]: lot for lot in c.get("/api/v1/shipments/lots", params={
                "product": PACK, "start": a["end_ms"], "end": b["end_ms"] + 1}).json()}
            assert lots_after[a["lot_id"]]["left"] == a["units"] - qa and lots_after[b["lot_id"]]["left"] == 0

            # the printable document and the PACT footprints show the same figures
            page = c.get("/api/v1/shipments/500120250612000123/document")
            assert page.status_code == 200 and "报关单号" in page.text
            assert f"{loc:,.1f}" in page.text and f"{mkt:,.1f}" in page.text
            [pf] = c.get("/api/v1/shipments/500120250612000123/pact").json()["data"]
            pact_reference.validate(pf)
            assert "urn:tanji:shipment:cq-battery:500120250612000123:1" in pf["productIds"]
            assert float(pf["pcf"]["pcfExcludingBiogenicUptake"]) == pytest.approx(line["pcf_kgco2e_per_unit_market"],
                                                                                   abs=1e-6)
            # the dashboard lists it with its status
            assert 'id="shipments-panel"' in c.get("/").text
            [listed] = c.get("/api/v1/shipments").json()
            assert (listed["status"], listed["version"]) == ("issued", 1)

            # a recompute of the batches' period with another factor version: a new document,
            # the old one superseded (its PACT footprint Deprecated), figures from that version
            live_version = line["dataset_version"]
            other = "2023.1" if live_version != "2023.1" else "2024"
            r = c.post("/api/v1/recompute", headers=AUTH, json={
                "site_id": "cq-battery", "start": str(a["start_ms"]), "end": str(b["end_ms"]),
                "dataset_version": other})
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 300  # the book's thread takes it up (the demo scans every 10 s)
            while c.get("/api/v1/shipments/500120250612000123").json()["version"] == 1:
                assert time.monotonic() < deadline, demo.log.read_text()[-3000:]
                time.sleep(1)
            v2 = c.get("/api/v1/shipments/500120250612000123").json()
            assert [v["status"] for v in v2["versions"]] == ["superseded", "issued"]
            assert v2["lines"][0]["dataset_version"] == other
            assert v2["lines"][0]["kgco2e_location"] != pytest.approx(loc)
            v1 = c.get("/api/v1/shipments/500120250612000123/versions/1").json()
            assert v1["status"] == "superseded" and v1["lines"][0]["kgco2e_location"] == pytest.approx(loc, rel=1e-9)
            assert "SUPERSEDED" in c.get("/api/v1/shipments/500120250612000123/document", params={"version": 1}).text
            [old_pf] = c.get("/api/v1/shipments/500120250612000123/pact", params={"version": 1}).json()["data"]
            [new_pf] = c.get("/api/v1/shipments/500120250612000123/pact").json()["data"]
            assert old_pf["status"] == "Deprecated" and new_pf["precedingPfIds"] == [old_pf["id"]]
            pact_reference.validate(new_pf)
            issued = c.get("/api/v1/shipments/500120250612000123/versions/1").text
        demo.stop()
        demo.start()  # the same work directory: shipments are durable
        with demo.client() as c:
            assert c.get("/api/v1/shipments/500120250612000123/versions/1").text == issued
            r = c.post("/api/v1/shipments", json=again, headers=AUTH)
            assert r.status_code == 409, r.text
    finally:
        demo.stop()

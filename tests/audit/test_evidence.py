"""Every footprint names the evidence it rests on: the Merkle root over the signed readings'
chain segments, the factor dataset's digest and the instruments' root; the carbon label and the
PACT extension show them."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from accounting.api.app import create_app
from accounting.audit.evidence import segments_from_batches, segments_root, window_segments
from accounting.audit.merkle import merkle_root
from accounting.ingest.subscriber import InboundMessage
from accounting.pact.document import EXTENSION_FIELDS
from accounting.service import AccountingService
from accounting.store.influx import InfluxStore
from accounting.store.sqlite import SqliteStore
from tests.audit.batches import T0, plant_payloads, plant_site

TOPIC = "tanji/v1/test-site/gw-1/readings"
HOUR = 3_600_000


def fed_service(tmp_path, mode: str = "required", store=None):
    _, site, key = plant_site(tmp_path, mode)
    store = store if store is not None else SqliteStore(tmp_path / "acc.sqlite")
    service = AccountingService([site], store, broker_port=1)  # never connected
    service.restore()
    payloads = plant_payloads(tmp_path, key if mode != "off" else None)
    service.pipeline.run_cycle([InboundMessage(TOPIC, p, 0, 0, T0 + 3 * HOUR, 0) for p in payloads])
    return service, payloads


def test_rfc6962_merkle_root():
    # RFC 6962 §2.1: the empty tree, one leaf, and the split at the largest power of two below n
    import hashlib
    h = lambda b: hashlib.sha256(b).digest()  # noqa: E731
    assert merkle_root([]) == h(b"").hex()
    assert merkle_root([b"a"]) == h(b"\x00a").hex()
    three = h(b"\x01" + h(b"\x01" + h(b"\x00a") + h(b"\x00b")) + h(b"\x00c"))
    assert merkle_root([b"a", b"b", b"c"]) == three.hex()


@pytest.mark.parametrize("kind", ["sqlite", "influx"])
def test_a_footprint_names_its_evidence(tmp_path, request, kind):
    store = None
    if kind == "influx":
        influx = request.getfixturevalue("influx")
        store = InfluxStore(influx.url, token="t", org="tanji", bucket=influx.db, spill_dir=tmp_path / "spill",
                            evidence_dir=tmp_path / "evidence")
    service, _ = fed_service(tmp_path, store=store)
    [record] = service.footprints("test-site", start_ms=T0, end_ms=T0 + HOUR)
    assert record["units"] > 0
    segments = window_segments(service.store, "test-site", T0, T0 + HOUR)
    assert record["evidence_root"] == segments_root(segments)
    # the same rule over the batches in hand gives the same root (what `tanji audit verify` does)
    batches = service.store.read_batches("test-site", T0 - 24 * HOUR, T0 + 3 * HOUR)
    assert segments_root(segments_from_batches(batches, T0, T0 + HOUR)) == record["evidence_root"]
    assert record["evidence_complete"] is True and record["evidence_batches"] == segments[0].present
    assert record["dataset_digest"] == service.engine("test-site").dataset.digest
    assert record["instruments_root"] == merkle_root([])
    # a different window rests on a different segment
    [later] = service.footprints("test-site", start_ms=T0 + HOUR, end_ms=T0 + 2 * HOUR)
    assert later["evidence_root"] != record["evidence_root"]

    client = TestClient(create_app(service))
    label = client.get("/api/v1/reports/label/test-site/widget", params={"start": T0, "end": T0 + HOUR}).text
    assert record["evidence_root"][:16] in label and record["dataset_digest"][:16] in label
    assert {"evidence_root", "evidence_complete", "dataset_digest", "instruments_root"} <= set(EXTENSION_FIELDS)


def test_unsigned_readings_have_no_evidence_root(tmp_path):
    service, _ = fed_service(tmp_path, mode="off")
    [record] = service.footprints("test-site", start_ms=T0, end_ms=T0 + HOUR)
    assert record["evidence_root"] is None and record["evidence_complete"] is False
    assert record["dataset_digest"] == service.engine("test-site").dataset.digest
    client = TestClient(create_app(service))
    assert "readings not signed" in client.get("/api/v1/reports/label/test-site/widget",
                                               params={"start": T0, "end": T0 + HOUR}).text
    json.dumps(record)


@pytest.mark.parametrize("body", [b"", b"\n", b"m v=1 1767225600000", b"m v=1 1767225600000\nm v=2 1767225601000\n"])
def test_a_cycles_first_request_carries_its_points_then_its_readings_as_ns(body):
    """The batch points ride at the head of the readings' first request, which goes at ns
    precision (`write_with_evidence`): the readings' ms stamps get six zeros, the points stay."""
    from accounting.store.influx_evidence import ms_to_ns

    head = b'batch,site=s seq=1i 1767225600000000001\n'
    expected = b"\n".join(line + b"000000" for line in body.rstrip(b"\n").split(b"\n") if line)
    assert ms_to_ns(body) == expected
    assert ms_to_ns(body, head) == head + expected

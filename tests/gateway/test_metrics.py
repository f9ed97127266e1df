"""`/metrics` of the gateway (its own port) and of the accounting service, read by
prometheus_client's parser (an independent reader of the text format), values checked
against the same process's health."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.service import GatewayService
from tanji.site import load_site
from tests.gateway.conftest import write_site
from tests.services import free_port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.timeout(60)
def test_gateway_metrics_match_its_health(tmp_path, mosquitto, plant_factory, collector_factory):
    port, metrics_port = free_port(), free_port()
    site = load_site(write_site(tmp_path, [
        {"id": "incomer", "profile": "eastron-sdm630", "host": "127.0.0.1", "port": port, "unit_id": 1,
         "poll_period_s": 0.1},
        {"id": "dead", "profile": "eastron-sdm630", "host": "127.0.0.1", "port": port, "unit_id": 9,
         "poll_period_s": 0.1, "timeout_s": 0.2}], mosquitto.port, metrics_port=metrics_port))
    plant = plant_factory(site)
    plant.inject("dead", "offline")
    collector = collector_factory(mosquitto.host, mosquitto.port)
    service = GatewayService(site, spool_path=tmp_path / "spool.sqlite", status_interval_s=0.5)
    service.start()
    try:
        collector.wait_for(lambda: len(collector.readings()) > 20)
        # Freeze the counters: stop polling for a moment by reading both in one event-loop hop.
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        health = service.health()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/other", timeout=5)
    finally:
        service.stop()
    got = samples(text)
    g = (("gateway", "gw-1"),)
    for meter in ("incomer", "dead"):
        labels = tuple(sorted((*g, ("meter", meter))))
        assert abs(got[("tanji_gateway_polls_total", labels)] - health["meters"][meter]["polls"]) <= 2
    assert got[("tanji_gateway_poll_errors_total", tuple(sorted((*g, ("meter", "incomer")))))] == 0
    assert got[("tanji_gateway_meter_consecutive_errors", tuple(sorted((*g, ("meter", "dead")))))] >= 1
    assert got[("tanji_gateway_connected", g)] == 1
    assert got[("tanji_gateway_publish_latency_seconds_count", g)] > 0
    assert got[("tanji_gateway_acked_readings_total", g)] > 0
    line = next(k for k in got if k[0] == "tanji_gateway_line_timeouts_total")
    assert got[line] >= 1 and dict(line[1])["line"].endswith(f"127.0.0.1:{port}")


def test_accounting_metrics_are_prometheus_text(tmp_path):
    from fastapi.testclient import TestClient

    from accounting.api.app import create_app
    from accounting.service import AccountingService
    from accounting.store.sqlite import SqliteStore

    site = load_site(write_site(tmp_path, [{"id": "incomer", "profile": "eastron-sdm630", "host": "127.0.0.1",
                                            "port": 5020, "unit_id": 1}], 1883))
    service = AccountingService([site], SqliteStore(tmp_path / "t.sqlite"), broker_port=1)  # never started
    service.stats.received, service.stats.accepted = 7, 1400
    service.stats.quarantined_by_reason["schema"] += 3
    with TestClient(create_app(service)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = samples(response.text)
    assert got[("tanji_ingest_messages_total", ())] == 7
    assert got[("tanji_ingest_readings_accepted_total", ())] == 1400
    assert got[("tanji_ingest_quarantined_total", (("reason", "schema"),))] == 3
    assert ("tanji_ingest_inbox_messages", ()) in got


def test_the_operations_dashboard_uses_metrics_that_exist():
    """Every tanji_* name in docker/grafana/dashboards/tanji-operations.json is exposed."""
    import json
    import re

    from accounting.api.metrics import families as accounting_families
    from gateway.metrics import families as gateway_families
    from tanji.metrics_text import Histogram
    from tests.gateway.conftest import REPO

    class Service:  # only what the accounting families read
        stats = __import__("accounting.ingest.stats", fromlist=["IngestStats"]).IngestStats()

        class pipeline:  # noqa: N801 - stands in for the service's ingest pipeline
            class source:  # noqa: N801
                confirms_sent = 0

                class inbox:  # noqa: N801
                    @staticmethod
                    def qsize():
                        return 0

        def meter_status(self):
            return []

    health = {"meters": {"m": {"polls": 1, "errors": 0, "consecutive_errors": 0, "overruns": 0,
                               "last_duration_ms": 1.0}}}
    exposed = {f.name for f in gateway_families("gw", health, {"l": {"requests": 1, "timeouts": 0, "connects": 1}},
                                                Histogram())}
    exposed |= {f.name for f in accounting_families(Service())}
    exposed |= {f"{name}_bucket" for name in exposed}
    dashboard = json.loads((REPO / "docker" / "grafana" / "dashboards" / "tanji-operations.json").read_text())
    used = {name for p in dashboard["panels"] for t in p["targets"] for name in re.findall(r"tanji_\w+", t["expr"])}
    assert used and used <= exposed, used - exposed
    assert all(p["datasource"]["uid"] == "tanji-prometheus" for p in dashboard["panels"])

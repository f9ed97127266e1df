"""`GET /metrics`: the accounting service in the Prometheus text format.

Ingest rates (messages received, readings accepted, duplicates), quarantine counts by reason,
sequence gaps per gateway, confirmations sent to gateways, the time spent per pipeline stage,
the inbox depth, and engine lag (how far the newest reading the engine has taken lags behind
now, per site). Read from the service's own counters (IngestStats, status); nothing is
computed for it. Unauthenticated like /health: it holds counts, no readings.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tanji.metrics_text import CONTENT_TYPE, Family, render

router = APIRouter()


def families(service: Any) -> list[Family]:
    stats = service.stats.to_dict()
    out = [
        Family("tanji_ingest_messages_total", "counter", "Readings messages received from the broker.").add(
            stats["received"]),
        Family("tanji_ingest_readings_accepted_total", "counter", "Readings stored for the first time.").add(
            stats["accepted"]),
        Family("tanji_ingest_readings_duplicate_total", "counter", "Readings dropped as already stored.").add(
            stats["duplicates"]),
        Family("tanji_ingest_cycles_total", "counter", "Ingest cycles run.").add(stats["cycles"]),
    ]
    quarantined = Family("tanji_ingest_quarantined_total", "counter", "Messages quarantined, by reason.")
    for reason, n in sorted(stats["quarantined_by_reason"].items()):
        quarantined.add(n, {"reason": reason})
    if not quarantined.samples:
        quarantined.add(0, {"reason": "none"})
    gaps = Family("tanji_ingest_seq_gaps_total", "counter", "Batches missing in a gateway's sequence.")
    for gateway, n in sorted(stats["seq_gaps"].items()):
        gaps.add(n, {"gateway": gateway})
    stages = Family("tanji_ingest_stage_seconds_total", "counter", "Seconds spent per ingest stage.")
    for stage, s in sorted(stats["stage_s"].items()):
        stages.add(s, {"stage": stage})
    out += [quarantined, gaps, stages]
    now_ms = time.time() * 1000
    last = stats.get("last_message_ms")
    out.append(Family("tanji_ingest_last_message_age_seconds", "gauge",
                      "Seconds since the newest message arrived (NaN before the first).").add(
                          (now_ms - last) / 1000 if last else float("nan")))
    subscriber = getattr(getattr(service, "pipeline", None), "source", None)
    if subscriber is not None:
        out.append(Family("tanji_ingest_inbox_messages", "gauge", "Messages received, not yet admitted.").add(
            subscriber.inbox.qsize()))
        out.append(Family("tanji_ingest_confirmations_total", "counter",
                          "Batch confirmations sent to gateways (end-to-end delivery).").add(
                              getattr(subscriber, "confirms_sent", 0)))
    lag = Family("tanji_engine_lag_seconds", "gauge",
                 "Now minus the newest reading the engine has taken, per site.")
    newest: dict[str, int] = {}
    for row in service.meter_status():
        ts = row.get("last_ts_ms")
        if ts is not None:
            site = row.get("site") or row.get("site_id") or ""
            newest[site] = max(newest.get(site, 0), ts)
    for site, ts in sorted(newest.items()):
        lag.add((now_ms - ts) / 1000, {"site": site})
    out.append(lag)
    return out


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(render(families(request.app.state.service)), media_type=CONTENT_TYPE)

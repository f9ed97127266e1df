"""The gateway's Prometheus endpoint: `GET /metrics` on an optional port (`metrics_port`).

Operators watch fleets of gateways with Prometheus; this serves, in the text exposition
format, what the status topic carries (polls and errors per meter, spool depth and age,
publish refusals, confirmations) plus per-line request counts and the PUBACK latency
histogram. A tiny asyncio HTTP responder on the gateway's own event loop: no web framework
on the edge box. Anything but `GET /metrics` gets 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from tanji.metrics_text import CONTENT_TYPE, Family, Histogram, render

log = logging.getLogger("tanji.gateway.metrics")


def families(gateway: str, health: dict[str, Any], lines: dict[str, dict[str, int]],
             latency: Histogram) -> list[Family]:
    """The gateway's metric families from its health dict (the status topic's content)."""
    g = {"gateway": gateway}
    per_meter = health.get("meters", {})
    polls = Family("tanji_gateway_polls_total", "counter", "Polls made, per meter (failed ones included).")
    errors = Family("tanji_gateway_poll_errors_total", "counter", "Polls that got no usable answer, per meter.")
    failing = Family("tanji_gateway_meter_consecutive_errors", "gauge",
                     "Failed polls in a row, per meter (0 while the meter answers).")
    overruns = Family("tanji_gateway_poll_overruns_total", "counter", "Poll ticks skipped because a poll overran.")
    duration = Family("tanji_gateway_poll_duration_seconds", "gauge", "Duration of the last poll, per meter.")
    for meter, m in per_meter.items():
        labels = {**g, "meter": meter}
        polls.add(m["polls"], labels)
        errors.add(m["errors"], labels)
        failing.add(m["consecutive_errors"], labels)
        overruns.add(m["overruns"], labels)
        duration.add(m["last_duration_ms"] / 1000, labels)
    requests = Family("tanji_gateway_line_requests_total", "counter", "Requests sent on a line (bus or endpoint).")
    timeouts = Family("tanji_gateway_line_timeouts_total", "counter", "Requests on a line that got no answer.")
    connects = Family("tanji_gateway_line_connects_total", "counter", "Connections opened to a line.")
    for line, stats in lines.items():
        labels = {**g, "line": line}
        requests.add(stats["requests"], labels)
        timeouts.add(stats["timeouts"], labels)
        connects.add(stats["connects"], labels)
    simple = [
        ("tanji_gateway_spool_depth_readings", "gauge", "Readings in the spool not yet confirmed.", "spool_depth"),
        ("tanji_gateway_spool_bytes", "gauge", "Bytes the spool's pages use.", "spool_bytes"),
        ("tanji_gateway_spool_dropped_total", "counter", "Readings dropped by the spool's size policy.", "spool_dropped"),
        ("tanji_gateway_published_batches_total", "counter", "Batches handed to the broker.", "published_batches"),
        ("tanji_gateway_acked_readings_total", "counter", "Readings the broker acknowledged.", "acked_readings"),
        ("tanji_gateway_confirmed_readings_total", "counter",
         "Readings accounting confirmed stored (they left the spool).", "confirmed_readings"),
        ("tanji_gateway_publish_refused_total", "counter",
         "Batches the broker refused (MQTT 5 reason code >= 128, e.g. 135 not authorized).", "publish_refused"),
        ("tanji_gateway_republished_batches_total", "counter",
         "Batches published again because they were never confirmed.", "republished_batches"),
        ("tanji_gateway_awaiting_confirmation_batches", "gauge",
         "Batches the broker acknowledged that accounting has not confirmed yet.", "awaiting_confirmation"),
        ("tanji_gateway_inflight_batches", "gauge", "Batches published and not yet acknowledged.", "inflight_batches"),
        ("tanji_gateway_spool_write_errors_total", "counter", "Failed spool writes (disk full, read-only).",
         "spool_write_errors"),
        ("tanji_gateway_unspooled_dropped_total", "counter",
         "Readings dropped from memory while the spool could not be written.", "unspooled_dropped"),
    ]
    out = [polls, errors, failing, overruns, duration, requests, timeouts, connects]
    for name, kind, text, key in simple:
        out.append(Family(name, kind, text).add(health.get(key) or 0, g))
    out.append(Family("tanji_gateway_spool_oldest_age_seconds", "gauge",
                      "Age of the oldest reading not yet confirmed (publish lag).").add(
                          (health.get("publish_lag_ms") or 0) / 1000, g))
    out.append(Family("tanji_gateway_connected", "gauge", "1 while connected to the broker.").add(
        bool(health.get("connected")), g))
    alarm = Family("tanji_gateway_alarm", "gauge", "1 while an alarm is raised, by kind.")
    alarm.add(bool(health.get("spool_alarm")), {**g, "kind": "spool"})
    alarm.add(health.get("publish_refused_alarm") is not None, {**g, "kind": "publish_refused"})
    alarm.add(health.get("spool_set_aside") is not None, {**g, "kind": "spool_set_aside"})
    out.append(alarm)
    out.append(latency.family("tanji_gateway_publish_latency_seconds",
                              "From handing a batch to the broker to its PUBACK.", g))
    return out


class MetricsServer:
    """`GET /metrics` on host:port, answered from `collect()` on the gateway's event loop."""

    def __init__(self, host: str, port: int, collect: Callable[[], str]) -> None:
        self.host = host
        self.port = port
        self.collect = collect
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readuntil(b"\r\n\r\n")
            method, path = (request.split(b"\r\n", 1)[0].split(b" ") + [b"", b""])[:2]
            if method == b"GET" and path.split(b"?")[0] == b"/metrics":
                body, status, kind = self.collect().encode(), "200 OK", CONTENT_TYPE
            else:
                body, status, kind = b"only GET /metrics here\n", "404 Not Found", "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


def exposition(gateway: str, health: dict[str, Any], lines: dict[str, dict[str, int]], latency: Histogram) -> str:
    return render(families(gateway, health, lines, latency))

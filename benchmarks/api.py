"""API benchmark: live-stream fan-out latency and footprint endpoint throughput.

Starts the API in a subprocess (so clients and server do not share a GIL) over the in-process
fake service of the tests, which signals an update every `--tick` seconds, or measures a
running server given with `--url` (e.g. `tanji demo --http-port 8080`, updates from real
ingest). Prints progress lines, then as its LAST line one JSON object:

- ``p99_update_latency_s`` (and p50, max): from the service signalling an update to a
  WebSocket client receiving the message, over `--clients` (default 50) concurrent clients;
- ``single_client_p99_update_latency_s``: the same with one client (baseline, same run);
- ``requests_per_s``: `GET /api/v1/footprints` (live window) with `--concurrency` clients;
- ``health_requests_per_s``: `GET /api/v1/health` the same way (baseline: the framework floor),
  and ``footprints_vs_health`` their ratio;
- ``machine``: the machine's baseline measured in the same run (benchmarks/machine.py).

Usage: ``.venv/bin/python benchmarks/api.py [--clients 50] [--seconds 10] [--url URL]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import websockets

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import machine_baseline  # noqa: E402
from tests.services import free_port, wait_for_port  # noqa: E402


def serve(port: int, tick_s: float) -> None:
    """Server mode (run in the subprocess): the API over the fake service, ticking."""
    import uvicorn

    from accounting.api import create_app
    from tests.api.fake import FakeService

    service = FakeService()

    def tick() -> None:
        while True:
            time.sleep(tick_s)
            service.tick()

    threading.Thread(target=tick, daemon=True).start()
    uvicorn.run(create_app(service), host="127.0.0.1", port=port, log_level="warning")


async def _client(url: str, seconds: float, latencies: list[float], ready: asyncio.Event,
                  connected: list[int]) -> None:
    async with websockets.connect(url, max_size=None, open_timeout=30) as ws:
        connected[0] += 1
        await ready.wait()
        deadline = time.time() + seconds
        while (left := deadline - time.time()) > 0:
            try:
                text = await asyncio.wait_for(ws.recv(), timeout=left)
            except TimeoutError:
                break
            now_ms = time.time() * 1000
            message = json.loads(text)
            event_ms = message.get("event_ms")
            # The overview is a summary sent at most once a second by design: not an update latency.
            if event_ms is not None and message.get("type") != "overview":
                latencies.append((now_ms - event_ms) / 1000)


async def stream_latency(base: str, clients: int, seconds: float) -> list[float]:
    url = base.replace("http", "ws", 1) + "/api/v1/stream"
    latencies: list[float] = []
    ready = asyncio.Event()
    connected = [0]
    tasks = [asyncio.create_task(_client(url, seconds, latencies, ready, connected)) for _ in range(clients)]
    while connected[0] < clients:
        await asyncio.sleep(0.05)
        for t in tasks:
            if t.done() and t.exception():
                raise t.exception()
    ready.set()
    await asyncio.gather(*tasks)
    return latencies


async def throughput(url: str, concurrency: int, seconds: float) -> float:
    count = 0
    async with httpx.AsyncClient(timeout=30) as client:
        await client.get(url)  # warm up
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                r = await client.get(url)
                r.raise_for_status()
                count += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - start)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def measure(base: str, clients: int, seconds: float, concurrency: int) -> dict[str, float | int]:
    print(f"stream: 1 client, {seconds:g} s", flush=True)
    single = asyncio.run(stream_latency(base, 1, seconds))
    print(f"stream: {clients} clients, {seconds:g} s", flush=True)
    many = asyncio.run(stream_latency(base, clients, seconds))
    print(f"http: footprints and health, {concurrency} concurrent, {seconds:g} s each", flush=True)
    rps = asyncio.run(throughput(base + "/api/v1/footprints", concurrency, seconds))
    health = asyncio.run(throughput(base + "/api/v1/health", concurrency, seconds))
    return {
        "clients": clients,
        "updates_received": len(many),
        "p50_update_latency_s": round(quantile(many, 0.50), 4),
        "p99_update_latency_s": round(quantile(many, 0.99), 4),
        "max_update_latency_s": round(max(many, default=float("nan")), 4),
        "single_client_p99_update_latency_s": round(quantile(single, 0.99), 4),
        "requests_per_s": round(rps, 1),
        "health_requests_per_s": round(health, 1),
        "footprints_vs_health": round(rps / health, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--tick", type=float, default=0.5, help="fake service update period (s)")
    parser.add_argument("--url", help="measure this running server instead of starting one")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.tick)
        return
    machine = machine_baseline()
    if args.url:
        result = {"server": args.url, **measure(args.url.rstrip("/"), args.clients, args.seconds, args.concurrency)}
    else:
        port = free_port()
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--tick", str(args.tick)],
                                start_new_session=True)
        try:
            wait_for_port(port, timeout_s=60)
            result = {"server": "fake service, subprocess", "tick_s": args.tick,
                      **measure(f"http://127.0.0.1:{port}", args.clients, args.seconds, args.concurrency)}
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    print(json.dumps({**result, "machine": machine}))


if __name__ == "__main__":
    main()

"""How many meter polls per second one simulator process serves, with 1,000 meters in it.

One `tanji simulate` process serves a generated site of 1,000 meters (SDM630, ADW300, EM24,
UMG 604 and PLC counters; 5 TCP ports x 200 unit ids). This process polls them round-robin
over several connections for a few seconds, each poll one request for the block a gateway
would read. The baseline, measured in the same run, is the same process serving a single
meter, so the ratio shows what 1,000 meters cost compared with one.

Prints, as its last line, one JSON object: {"meter_polls_per_s": ..., ...}.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.services import free_port, wait_for_port  # noqa: E402

# model → (function code, first address, register count) of one gateway-like poll
POLLS = {
    "eastron-sdm630": (4, 0, 76),
    "acrel-adw300": (3, 20, 46),
    "carlo-gavazzi-em24": (4, 0, 64),
    "janitza-umg604": (3, 19000, 78),
    "generic-plc-counter": (3, 0, 7),
}
UNITS_PER_PORT = 200
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS_PER_PORT = 2


def site_text(meters: int, ports: list[int]) -> str:
    models = list(POLLS)
    rows = []
    for i in range(meters):
        model = models[i % len(models)]
        role = ("grid_import" if i == 0 else
                "production_counter, cost_centre: line" if model == "generic-plc-counter" else
                "submeter, cost_centre: line")
        rows.append(f"      - {{id: m{i:04d}, role: {role}, profile: {model}, host: 127.0.0.1, "
                    f"port: {ports[i // UNITS_PER_PORT]}, unit_id: {i % UNITS_PER_PORT + 1}, ct_ratio: 20}}")
    return ("site: {id: bench, province: Jiangsu}\ngateways:\n  - id: gw-bench\n    meters:\n"
            + "\n".join(rows) + "\ncost_centres:\n  - {id: line, kind: production}\n")


async def poll(port: int, units: list[tuple[int, str]], deadline: float) -> int:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
    await client.connect()
    done = 0
    try:
        while time.monotonic() < deadline:
            for unit, model in units:
                fc, address, count = POLLS[model]
                read = client.read_input_registers if fc == 4 else client.read_holding_registers
                response = await read(address, count=count, device_id=unit)
                if response.isError():
                    raise RuntimeError(f"unit {unit} answered {response}")
                done += 1
                if time.monotonic() >= deadline:
                    break
    finally:
        client.close()
    return done


async def measure(ports: list[int], meters: int) -> float:
    models = list(POLLS)
    tasks = []
    deadline = time.monotonic() + SECONDS
    for p, port in enumerate(ports):
        units = [(i % UNITS_PER_PORT + 1, models[i % len(models)])
                 for i in range(p * UNITS_PER_PORT, min(meters, (p + 1) * UNITS_PER_PORT))]
        for c in range(CONNECTIONS_PER_PORT):
            tasks.append(poll(port, units[c::CONNECTIONS_PER_PORT] or units, deadline))
    started = time.monotonic()
    total = sum(await asyncio.gather(*tasks))
    return total / (time.monotonic() - started)


def serve_and_measure(meters: int) -> float:
    ports = [free_port() for _ in range((meters + UNITS_PER_PORT - 1) // UNITS_PER_PORT)]
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "bench-site.yaml"
        site.write_text(site_text(meters, ports))
        proc = subprocess.Popen([sys.executable, "-m", "tanji", "--log-level", "WARNING", "simulate", str(site)],
                                cwd=REPO, start_new_session=True)
        try:
            for port in ports:
                wait_for_port(port, timeout_s=60)
            return asyncio.run(measure(ports, meters))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)


def main() -> None:
    baseline = serve_and_measure(1)
    fleet = serve_and_measure(1000)
    print(f"1 meter: {baseline:.0f} polls/s; 1000 meters: {fleet:.0f} polls/s", file=sys.stderr)
    print(json.dumps({"meter_polls_per_s": round(fleet), "meters": 1000, "seconds": SECONDS,
                      "baseline_one_meter_polls_per_s": round(baseline),
                      "ratio_to_baseline": round(fleet / baseline, 3)}))


if __name__ == "__main__":
    main()

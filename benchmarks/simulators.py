"""How many meter polls per second one simulator process serves, with 1,000 meters in it.

One `tanji simulate` process serves a generated site of 1,000 meters (SDM630, ADW300, EM24,
UMG 604 and PLC counters; 5 TCP ports x 200 unit ids). This process polls them round-robin
over several connections for a few seconds, each poll the requests of the gateway's read plan
for that model (one or two blocks). The baseline, measured in the same run, is the same process serving a single
meter, so the ratio shows what 1,000 meters cost compared with one.

Prints, as its last line, one JSON object: {"meter_polls_per_s": ..., ...}, with the machine's
baseline measured in the same run under ``machine`` (benchmarks/machine.py).
Usage: ``.venv/bin/python benchmarks/simulators.py [--meters 1000] [--seconds 5]``
"""

from __future__ import annotations

import argparse
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

from benchmarks.machine import machine_baseline  # noqa: E402
from gateway.read_plan import plan_for_profile  # noqa: E402
from tanji.profile import load_profiles  # noqa: E402
from tests.services import free_port, wait_for_port  # noqa: E402

MODELS = ("eastron-sdm630", "acrel-adw300", "carlo-gavazzi-em24", "janitza-umg604", "generic-plc-counter")
# model → the requests (function code, first address, register count) of one poll: the gateway's read plan
POLLS = {model: [(r.function_code, r.address, r.count) for r in plan_for_profile(profile)]
         for model, profile in load_profiles().items() if model in MODELS}
UNITS_PER_PORT = 200
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS_PER_PORT = 2


def site_text(meters: int, ports: list[int]) -> str:
    models = list(MODELS)
    rows = []
    for i in range(meters):
        model = models[i % len(models)]
        role = ("grid_import" if i == 0 else
                "production_counter, cost_centre: line" if model == "generic-plc-counter" else
                "submeter, cost_centre: line")
        rows.append(f"      - {{id: m{i:04d}, role: {role}, profile: {model}, host: 127.0.0.1, "
                    f"port: {ports[i // UNITS_PER_PORT]}, unit_id: {i % UNITS_PER_PORT + 1}, ct_ratio: 20}}")
    # remainder by units: a one-meter site has no line submeter to share it by energy
    return ("site: {id: bench, province: Jiangsu, remainder_key: units}\ngateways:\n  - id: gw-bench\n    meters:\n"
            + "\n".join(rows) + "\ncost_centres:\n  - {id: line, kind: production}\n")


async def poll(port: int, units: list[tuple[int, str]], deadline: float) -> int:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
    await client.connect()
    done = 0
    try:
        while time.monotonic() < deadline:
            for unit, model in units:
                for fc, address, count in POLLS[model]:
                    read = client.read_input_registers if fc == 4 else client.read_holding_registers
                    response = await read(address, count=count, device_id=unit)
                    if response.isError():
                        raise RuntimeError(f"unit {unit} ({model}) answered {response}")
                done += 1
                if time.monotonic() >= deadline:
                    break
    finally:
        client.close()
    return done


async def measure(ports: list[int], meters: int, seconds: float) -> float:
    models = list(MODELS)
    tasks = []
    deadline = time.monotonic() + seconds
    for p, port in enumerate(ports):
        units = [(i % UNITS_PER_PORT + 1, models[i % len(models)])
                 for i in range(p * UNITS_PER_PORT, min(meters, (p + 1) * UNITS_PER_PORT))]
        for c in range(CONNECTIONS_PER_PORT):
            tasks.append(poll(port, units[c::CONNECTIONS_PER_PORT] or units, deadline))
    started = time.monotonic()
    total = sum(await asyncio.gather(*tasks))
    return total / (time.monotonic() - started)


def serve_and_measure(meters: int, seconds: float) -> float:
    ports = [free_port() for _ in range((meters + UNITS_PER_PORT - 1) // UNITS_PER_PORT)]
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "bench-site.yaml"
        site.write_text(site_text(meters, ports))
        proc = subprocess.Popen([sys.executable, "-m", "tanji", "--log-level", "WARNING", "simulate", str(site)],
                                cwd=REPO, start_new_session=True)
        try:
            for port in ports:
                deadline = time.monotonic() + 60
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"tanji simulate exited with code {proc.returncode} (see its output)")
                    try:
                        wait_for_port(port, timeout_s=0.5)
                        break
                    except TimeoutError:
                        if time.monotonic() > deadline:
                            raise
            return asyncio.run(measure(ports, meters, seconds))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000, help="meters in the simulator (default 1000)")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="polling time per measurement")
    args = parser.parse_args()
    machine = machine_baseline()
    baseline = serve_and_measure(1, args.seconds)
    fleet = serve_and_measure(args.meters, args.seconds)
    print(f"1 meter: {baseline:.0f} polls/s; {args.meters} meters: {fleet:.0f} polls/s", file=sys.stderr)
    print(json.dumps({"meter_polls_per_s": round(fleet), "meters": args.meters, "seconds": args.seconds,
                      "baseline_one_meter_polls_per_s": round(baseline),
                      "ratio_to_baseline": round(fleet / baseline, 3), "machine": machine}))


if __name__ == "__main__":
    main()

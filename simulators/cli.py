"""`tanji simulate`: serve one meter for a quick check, or a whole plant from a scenario or site file.

    tanji simulate --model eastron-sdm630 --port 5020 [--unit-id 1]
    tanji simulate --model acrel-adw300 --transport rtu --serial /dev/pts/7 --unit-id 3
    tanji simulate --model dlt645-2007 --port 5030 --address 000012345678
    tanji simulate simulators/scenarios/cq-battery.yaml [--speed 60] [--seed 7] [--truth-out truth.json]

Runs until interrupted (Ctrl-C or SIGTERM); with --truth-out, the ground truth is written
every few seconds and at exit.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from simulators.plant import PlantSimulator
from simulators.scenario import Scenario, load_scenario
from tanji import dlt645
from tanji.profile import load_profiles
from tanji.site import Broker, Bus, Gateway, Meter, Site

log = logging.getLogger("tanji.simulate")
TRUTH_EVERY_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `tanji simulate` (called by tanji/cli.py)."""
    parser.add_argument("file", nargs="?", metavar="SCENARIO_OR_SITE_FILE",
                        help="a scenario (simulators/scenarios/*.yaml) or a site file: serve the whole plant")
    parser.add_argument("--model", help="serve one device of this profile (firmware-config/profiles/*.yaml)")
    parser.add_argument("--port", type=int, default=5020, help="TCP port for --model (default 5020)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on for --model (default 127.0.0.1)")
    parser.add_argument("--unit-id", type=int, default=1, help="Modbus unit id for --model (default 1)")
    parser.add_argument("--address", default="000000000001",
                        help="12-digit address of a DL/T 645 --model (default 000000000001); over TCP it is "
                             "served as a device server in transparent mode")
    parser.add_argument("--transport", choices=("tcp", "rtu"), default="tcp", help="for --model (default tcp)")
    parser.add_argument("--serial", help="serial device for --transport rtu, e.g. /dev/pts/7")
    parser.add_argument("--baudrate", type=int, default=9600, help="for --transport rtu (default 9600)")
    parser.add_argument("--ct-ratio", type=float, default=1.0, help="CT ratio the --model meter is wired for")
    parser.add_argument("--speed", type=float, help="plant seconds per real second (default: the scenario's, 1)")
    parser.add_argument("--seed", type=int, help="random seed (default: the scenario's, 0)")
    parser.add_argument("--truth-out", metavar="FILE", help="write the ground truth (JSON) here, periodically and at exit")


def single_device_site(model: str, args: argparse.Namespace) -> Scenario:
    """A one-device plant: a meter (grid incomer), a PV inverter or a PLC counter, by profile."""
    profiles = load_profiles()
    if model not in profiles:
        raise SystemExit(f"tanji simulate: no profile {model!r}; known: {', '.join(sorted(profiles))}")
    profile = profiles[model]
    names = {r.name for r in profile.registers}
    role = ("production_counter" if "units_total" in names else
            "pv" if "energy_generated_kwh" in names else "grid_import")
    rtu = args.transport == "rtu"
    if rtu and not args.serial:
        raise SystemExit("tanji simulate: --transport rtu needs --serial DEVICE (e.g. a pty from socat)")
    meter = Meter(id="meter", gateway="gw", profile=profile, role=role, transport=args.transport,
                  unit_id=args.unit_id, poll_period_s=1.0, cost_centre=None,
                  host=None if rtu else args.host, port=None if rtu else args.port,
                  bus="bus" if rtu else None, ct_ratio=args.ct_ratio,
                  address=dlt645.check_address(args.address) if profile.protocol == "dlt645" else None)
    buses = (Bus(id="bus", device=args.serial, baudrate=args.baudrate),) if rtu else ()
    gateway = Gateway(id="gw", meters=(meter,), buses=buses, spool_path="", spool_max_mb=1.0,
                      batch_max_readings=1, publish_interval_s=1.0)
    site = Site(id="single", name=model, province="", grid_region=None, timezone="Asia/Shanghai",
                matching_mode="annual", factor_dataset=None, broker=Broker(), gateways=(gateway,),
                cost_centres=(), products=(), file=f"<--model {model}>")
    return Scenario(site=site)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code."""
    if bool(args.model) == bool(args.file):
        raise SystemExit("tanji simulate: give either --model MODEL or a SCENARIO_OR_SITE_FILE")
    scenario = single_device_site(args.model, args) if args.model else load_scenario(args.file)
    plant = PlantSimulator(scenario, seed=args.seed, time_scale=args.speed)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    plant.start()
    log.info("plant %s: %d devices, seed %d, speed %g; Ctrl-C to stop", scenario.site.id, len(plant.devices),
             plant.seed, plant.clock.time_scale)
    try:
        while not stop.wait(TRUTH_EVERY_S):
            if args.truth_out:
                plant.truth().write(args.truth_out)
    finally:
        plant.stop()
        if args.truth_out:
            plant.truth().write(args.truth_out)
            log.info("ground truth written to %s", args.truth_out)
    return 0

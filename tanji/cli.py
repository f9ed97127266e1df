"""The `tanji` command: one entry point, a subcommand per part.

Each part owns its subcommand in its own `cli.py` (`add_arguments(parser)` and `run(args)`),
imported only when chosen: `tanji gateway` on an edge box must not pay for (or need)
numpy, numba or FastAPI.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from tanji.errors import TanjiError

# subcommand → (module, one-line help); modules are imported lazily.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("tanji.demo", "run a simulated plant, gateway, accounting and dashboard on this machine"),
    "simulate": ("simulators.cli", "serve simulated meters, PLC counters and PV over Modbus TCP/RTU"),
    "gateway": ("gateway.cli", "poll Modbus meters, spool readings durably and publish them over MQTT"),
    "accounting": ("accounting.cli", "ingest readings from MQTT, compute footprints, serve the API"),
    "check": ("tanji.check", "validate a site file or meter profiles and print what they define"),
    "broker-config": ("tanji.broker_config", "generate Mosquitto users, ACL and config for a site's gateways"),
}

_EXTRA = {"numpy": "accounting", "numba": "accounting", "fastapi": "accounting", "uvicorn": "accounting",
          "influxdb_client": "accounting", "amqtt": "accounting", "pymodbus": "gateway", "paho": "gateway"}


def _load(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in _EXTRA:
            sys.exit(f"tanji: this command needs {top}; install it with: pip install 'tanji[{_EXTRA[top]}]'")
        raise


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tanji", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log verbosity (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen subcommand's module is imported; the others keep a bare parser so
        # `tanji --help` lists them without importing their dependencies.
        if name == chosen:
            _load(module).add_arguments(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S")
    module = _load(SUBCOMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except TanjiError as exc:
        print(f"tanji {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

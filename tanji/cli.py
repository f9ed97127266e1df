"""The `tanji` command: one entry point, a subcommand per part.

Each part owns its subcommand in its own `cli.py` (`add_arguments(parser)` and `run(args)`),
imported only when chosen: `tanji gateway` on an edge box must not pay for (or need)
numpy, numba or FastAPI.

Conventions every subcommand gets from here: options in any position (`tanji gateway
--config s.yaml status --log-level DEBUG`), `--version`, log lines stamped with the local time
and its UTC offset, a quiet exit when the reader of stdout goes away (`tanji ... | head`), and
exit codes an operator can script: 0 fine, 1 what a status command reports is down, 2 a
configuration error (named by file, line and fix), 130 interrupted, 141 stdout closed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from datetime import datetime
from importlib import metadata
from typing import Any

from tanji.errors import TanjiError

# subcommand → (module, one-line help); modules are imported lazily.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo.cli", "run a simulated plant, gateway, accounting and dashboard on this machine"),
    "simulate": ("simulators.cli", "serve simulated meters, PLC counters and PV over Modbus TCP/RTU"),
    "gateway": ("gateway.cli", "poll Modbus meters, spool readings durably and publish them over MQTT"),
    "accounting": ("accounting.cli", "ingest readings from MQTT, compute footprints, serve the API"),
    "factors": ("accounting.factors.cli", "list, show, import and diff emission factor versions"),
    "audit": ("accounting.audit.cli", "export a site's footprint evidence as a bundle, verify a bundle offline"),
    "check": ("tanji.check", "validate site files and meter profiles (a whole deployment at once)"),
    "broker-config": ("tanji.broker_config", "generate Mosquitto users, ACL and config for a site's gateways"),
}

_EXTRA = {"numpy": "accounting", "numba": "accounting", "fastapi": "accounting", "uvicorn": "accounting",
          "influxdb_client": "accounting", "amqtt": "accounting", "pymodbus": "gateway", "paho": "gateway"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
EPILOG = """\
`tanji COMMAND --help` lists a command's options, and the environment variables it reads.

environment (every command):
  TANJI_LOG_LEVEL     default of --log-level
  TANJI_PROFILES_DIR  meter profile directory (default: firmware-config/profiles beside the
                      sources, or <prefix>/share/tanji/profiles in an installed copy)

exit codes: 0 fine; 1 what a status command reports is down; 2 a configuration error (it
names file, line and fix); 130 interrupted; 141 stdout was closed (`| head`)."""
EXIT_DOWN = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141  # what a shell reports for a C program killed by SIGPIPE


def version() -> str:
    try:
        return metadata.version("tanji")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def env_option(parser: argparse.ArgumentParser, *flags: str, env: str, help: str, **kwargs: Any) -> None:
    """An option that falls back to the environment variable `env`, which its help names.

    For secrets' file names and TLS paths: a container or a systemd `EnvironmentFile=` sets
    them without putting anything on the command line.
    """
    default = os.environ.get(env) or kwargs.pop("default", None)
    parser.add_argument(*flags, default=default, help=f"{help} [env {env}]", **kwargs)


class _Parser(argparse.ArgumentParser):
    """A subcommand's parser: options and positionals may come in any order.

    argparse alone takes `tanji gateway --config s.yaml status` as the default action followed
    by an unrecognised `status`; intermixed parsing reads it as an operator means it.
    """

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 - argparse's signature
        if self._intermixing or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _common_options(defaults: bool) -> argparse.ArgumentParser:
    """--log-level and --version, accepted before and after the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", choices=LOG_LEVELS, type=str.upper,
                        default="INFO" if defaults else argparse.SUPPRESS,
                        help="log verbosity (default INFO) [env TANJI_LOG_LEVEL]")
    common.add_argument("--version", action="version", version=f"tanji {version()}",
                        help="print the version and exit")
    return common


def _load(module: str):  # noqa: ANN202 - a module
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in _EXTRA:
            sys.exit(f"tanji: this command needs {top}; install it with: pip install 'tanji[{_EXTRA[top]}]'")
        raise


def build_parser(argv: list[str], *, load_all: bool = False) -> argparse.ArgumentParser:
    """The whole command line; only the chosen subcommand's module is imported (all with load_all)."""
    parser = argparse.ArgumentParser(prog="tanji", description=__doc__.splitlines()[0] if __doc__ else None,
                                     parents=[_common_options(True)], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text, parents=[_common_options(False)],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        # `tanji --help` lists every command without importing their dependencies.
        if load_all or name == chosen:
            loaded = _load(module)
            loaded.add_arguments(sp)
            # The module's docstring is its manual: usage lines and what the command does.
            sp.epilog = "\n".join((loaded.__doc__ or "").splitlines()[1:]).strip("\n") or None
    return parser


class LocalTimeFormatter(logging.Formatter):
    """ISO 8601 local time with its UTC offset: `2025-03-01T08:00:00.123+08:00`.

    The dashboard shows the site's time with its offset; a log line without one cannot be put
    next to it (or next to the gateway's UTC epoch milliseconds) without guessing.
    """

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


def configure_logging(level: str) -> None:
    """Log lines to stderr; a host that already set up logging (a test run, an embedding) keeps its own."""
    root = logging.getLogger()
    root.setLevel(level)
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(LocalTimeFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)


def _pipe_closed() -> int:
    """stdout's reader went away (`tanji ... | head`): stop quietly, like any Unix tool."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
    return EXIT_PIPE_CLOSED


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("TANJI_LOG_LEVEL") and not any(a.startswith("--log-level") for a in argv):
        argv = ["--log-level", os.environ["TANJI_LOG_LEVEL"], *argv]
    try:
        args = build_parser(argv).parse_args(argv)
        configure_logging(args.log_level)
        module = _load(SUBCOMMANDS[args.command][0])
        try:
            code = int(module.run(args) or 0)
        except TanjiError as exc:
            print(f"tanji {args.command}: {exc}", file=sys.stderr)
            code = EXIT_CONFIG
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _pipe_closed()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

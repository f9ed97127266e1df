"""`tanji accounting`: ingest readings from MQTT into a store and the engine, serve the API.

    tanji accounting --config firmware-config/sites/cq-battery.yaml --store sqlite:/var/lib/tanji/tanji.sqlite
    TANJI_INFLUX_TOKEN=... tanji accounting --config site.yaml --store influx \\
        --influx-url http://influx:8086 --influx-org plant --influx-bucket tanji --share-group accounting

Several instances with the same --share-group split the sites' readings between them (MQTT
shared subscriptions); each needs its own --client-id, stable across restarts, so the broker
keeps its session (and its unacknowledged messages) while it is down.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from pathlib import Path

from accounting.embedded_broker import EmbeddedBroker
from accounting.service import AccountingService
from accounting.store.base import ReadingStore
from accounting.store.checkpoints import CheckpointStore
from tanji.errors import ConfigError
from tanji.site import load_site

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", required=True, metavar="SITE_FILE",
                        help="a site file (repeat for several sites)")
    parser.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker (default: the first site file's broker)")
    parser.add_argument("--embedded-broker", action="store_true",
                        help="run an in-process MQTT broker (amqtt) on --broker's address")
    parser.add_argument("--broker-username", metavar="NAME",
                        help="MQTT user of this accounting instance (see `tanji broker-config`)")
    parser.add_argument("--broker-password-file", metavar="FILE",
                        help="file holding that user's password (the password never goes on the command line)")
    parser.add_argument("--broker-tls", action="store_true", help="connect to the broker over TLS")
    parser.add_argument("--broker-ca-file", metavar="FILE", help="CA certificate that signed the broker's certificate")
    parser.add_argument("--client-id", help="MQTT client id; keep it stable so the broker keeps the session")
    parser.add_argument("--share-group", metavar="NAME", help="MQTT shared-subscription group (several instances)")
    parser.add_argument("--store", default="sqlite:tanji.sqlite", metavar="sqlite:PATH|influx",
                        help="reading store (default sqlite:tanji.sqlite)")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="engine checkpoints and the InfluxDB spill queue (default: beside the SQLite file, "
                             "or ./tanji-state)")
    parser.add_argument("--influx-url", default="http://127.0.0.1:8086", metavar="URL",
                        help="InfluxDB for --store influx (default http://127.0.0.1:8086); its token comes from "
                             "the environment variable TANJI_INFLUX_TOKEN, never the command line")
    parser.add_argument("--influx-org", default="tanji", metavar="ORG", help="InfluxDB organisation (default tanji)")
    parser.add_argument("--influx-bucket", default="tanji", metavar="BUCKET", help="InfluxDB bucket (default tanji)")
    parser.add_argument("--influx-database", help="database for InfluxQL reads (default: the bucket's name)")
    parser.add_argument("--influx-gzip-level", type=int, choices=range(10), metavar="0-9",
                        help="gzip level of writes (default: 1, or 0 when InfluxDB is on loopback)")
    parser.add_argument("--checkpoint-interval", type=float, default=60.0, metavar="SECONDS",
                        help="how often the engines are checkpointed, bounding the replay after a restart "
                             "(default 60)")
    parser.add_argument("--http-host", default="127.0.0.1", metavar="ADDRESS",
                        help="address the HTTP API and dashboard listen on (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, metavar="PORT",
                        help="serve the HTTP API and dashboard on this port (default: no HTTP)")
    parser.add_argument("--pact-clients", metavar="FILE",
                        help="PACT clients file (docs/api.md): who may log in at /auth/token and pull which "
                             "footprints; without it every PACT login answers 401")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="serve HTTPS with this certificate (PEM, chain included; needs --tls-key); PACT "
                             "answers over HTTPS only")
    parser.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert (PEM, unencrypted)")


def _broker(args: argparse.Namespace, default_host: str, default_port: int) -> tuple[str, int]:
    if not args.broker:
        return default_host, default_port
    host, sep, port = args.broker.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError("--broker", None, "", f"{args.broker!r} is not HOST:PORT", "e.g. --broker 127.0.0.1:1883")
    return host, int(port)


def _store(args: argparse.Namespace) -> tuple[ReadingStore, Path]:
    if args.store.startswith("sqlite:"):
        from accounting.store.sqlite import SqliteStore
        path = Path(args.store.removeprefix("sqlite:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        state = Path(args.state_dir) if args.state_dir else path.parent
        return SqliteStore(path), state
    if args.store == "influx":
        from accounting.store.influx import InfluxStore
        state = Path(args.state_dir or "tanji-state")
        return InfluxStore(args.influx_url, token=os.environ.get("TANJI_INFLUX_TOKEN", ""), org=args.influx_org,
                           bucket=args.influx_bucket, database=args.influx_database,
                           gzip_level=args.influx_gzip_level, spill_dir=state / "influx-spill"), state
    raise ConfigError("--store", None, "", f"unknown store {args.store!r}", "use sqlite:PATH or influx")


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(path, None, "", f"cannot read the broker password file: {exc.strerror}",
                          "check --broker-password-file and that this user may read it") from None


def run(args: argparse.Namespace) -> int:
    stop = _StopSignal()  # before anything starts: a SIGTERM during start-up still stops cleanly
    sites = [load_site(path) for path in args.config]
    host, port = _broker(args, sites[0].broker.host, sites[0].broker.port)
    broker = EmbeddedBroker(host, port) if args.embedded_broker else None
    if broker is not None:
        broker.start()
    store, state_dir = _store(args)
    state_dir.mkdir(parents=True, exist_ok=True)
    pact = _pact_setup(args)
    password = _read_secret(args.broker_password_file) if args.broker_password_file else None
    service = AccountingService(sites, store, broker_host=host, broker_port=port, client_id=args.client_id,
                                username=args.broker_username, password=password,
                                tls=args.broker_tls, ca_file=args.broker_ca_file,
                                share_group=args.share_group,
                                checkpoints=CheckpointStore(state_dir / "checkpoints.sqlite"),
                                checkpoint_interval_s=args.checkpoint_interval,
                                mqtt_version="3.1.1" if broker is not None else "5")  # amqtt: no MQTT 5
    service.start()
    log.info("accounting: %d site(s) from %s via %s:%d into %s", len(sites), ", ".join(args.config),
             host, port, args.store)
    try:
        if args.http_port and not stop.is_set():
            _serve_http(service, args, pact, state_dir, stop)
        else:
            stop.wait()
    finally:
        service.stop()  # the final checkpoint
        if broker is not None:
            broker.stop()
    return 0


class _StopSignal:
    """SIGTERM/SIGINT handled by the process for its whole life, so they always end in
    ``service.stop()`` and its final checkpoint. uvicorn installs its own handlers while it
    serves and, once shut down, restores these and raises the signal again; with the default
    handler restored (none installed) that killed the process (exit 143) before the stop."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.servers: list[object] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, *_: object) -> None:
        self._event.set()
        for server in self.servers:
            server.should_exit = True  # type: ignore[attr-defined]

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self) -> None:
        self._event.wait()


def _pact_setup(args: argparse.Namespace) -> tuple[object | None, dict[str, str]]:
    """(PACT clients or None, uvicorn TLS options), checked before anything starts."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert" if not args.tls_cert else "--tls-key", None, "",
                          "--tls-cert and --tls-key go together", "give both (or neither, for plain HTTP)")
    tls: dict[str, str] = {}
    if args.tls_cert:
        from accounting.pact.tls import server_ssl
        tls = server_ssl(args.tls_cert, args.tls_key)
    clients = None
    if args.pact_clients:
        from accounting.pact.clients import PactClients
        clients = PactClients.from_file(args.pact_clients)
    return clients, tls


def _serve_http(service: AccountingService, args: argparse.Namespace, pact: tuple[object | None, dict[str, str]],
                state_dir: Path, stop: _StopSignal) -> None:
    """Serve accounting.api when it is installed; uvicorn handles SIGTERM/SIGINT and returns."""
    try:
        from accounting.api.app import create_app
        from accounting.pact.clients import PactClients
        from accounting.pact.host import PactHost
    except ImportError as exc:
        log.warning("no HTTP API (%s); ingesting without one", exc)
        stop.wait()
        return
    import uvicorn
    clients, tls = pact
    scheme = "https" if tls else "http"
    shown = socket.gethostname() if args.http_host in ("0.0.0.0", "::", "") else args.http_host
    host = PactHost(service, clients if isinstance(clients, PactClients) else PactClients(), state_dir=state_dir,
                    public_url=f"{scheme}://{shown}:{args.http_port}")
    log.info("serving %s://%s:%d/ (PACT %s, %d client(s))", scheme, args.http_host, args.http_port,
             "over HTTPS" if tls else "refused: no --tls-cert, PACT is HTTPS only", len(host.clients))
    from accounting.shipments import ShipmentBook
    shipments = ShipmentBook(service, state_dir=state_dir, pact=host)  # shipments.sqlite beside the ledger
    server = uvicorn.Server(uvicorn.Config(create_app(service, pact=host, shipments=shipments), host=args.http_host,
                                           port=args.http_port, log_level="warning", **tls))
    stop.servers.append(server)
    if not stop.is_set():
        server.run()

"""`tanji accounting`: ingest readings from MQTT into a store and the engine, serve the API.

    tanji accounting --config /etc/tanji/site.yaml --store sqlite:/var/lib/tanji/tanji.sqlite \\
        --http-port 8443 --api-token-file /etc/tanji/secrets/api-token --tls-cert ... --tls-key ...
    TANJI_INFLUX_TOKEN=... tanji accounting --config site.yaml --store influx \\
        --influx-url http://influx:8086 --influx-org plant --influx-bucket tanji --share-group accounting
    tanji accounting status --url https://127.0.0.1:8443 --ca-file /etc/tanji/tls/ca.crt

Several instances with the same --share-group split the sites' readings between them (MQTT
shared subscriptions); each needs its own --client-id, stable across restarts, so the broker
keeps its session (and its unacknowledged messages) while it is down.

HTTP is served from the start: /api/v1/health answers while the engines are restored, and
/api/v1/ready answers 200 once the service is restored, subscribed and caught up (503 before;
`status` asks it and exits 0 or 1). Under systemd (Type=notify) the service reports READY=1 at
that moment. Secrets come from files (or the environment), never from the command line: a
file holding a placeholder such as `change-me` is refused at start.

environment:
  TANJI_INFLUX_TOKEN     InfluxDB token for --store influx
  TANJI_API_TOKEN_FILE   default of --api-token-file
  TANJI_READ_TOKEN_FILE  default of --read-token-file
  TANJI_PACT_CLIENTS     default of --pact-clients
  TANJI_TLS_CERT         default of --tls-cert
  TANJI_TLS_KEY          default of --tls-key
  NOTIFY_SOCKET          set by systemd for Type=notify units
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accounting.embedded_broker import EmbeddedBroker
from accounting.ingest.hot_path import log_passes
from accounting.pact.clients import PactClients
from accounting.pact.tls import server_ssl
from accounting.service import AccountingService
from accounting.store.checkpoints import CheckpointStore
from tanji.cli import EXIT_DOWN, env_option
from tanji.errors import ConfigError
from tanji.site import load_site
from tanji.systemd_notify import notify

if TYPE_CHECKING:
    from accounting.store.base import ReadingStore

log = logging.getLogger(__name__)
#: A secret shorter than this is refused: a generated one (`token_urlsafe(32)`) has 43 characters.
MIN_SECRET_CHARS = 16
#: Secrets shipped as examples (docker/.env.example, the systemd env file) start with this.
PLACEHOLDER = "change-me"
GENERATE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
#: How often the readiness watcher looks (it logs and notifies systemd on each change).
WATCH_S = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["run", "status"], default="run",
                        help="run the service (default), or ask a running one whether it is ready "
                             "(exit 0 ready, 1 not)")
    parser.add_argument("--config", action="append", metavar="SITE_FILE",
                        help="a site file (repeat for several sites); required to run")
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
                        help="engine checkpoints, the ledger, PACT tokens, the InfluxDB spill queue and, with "
                             "--store influx, the signed batches' bytes (evidence/) (default: beside the SQLite "
                             "file, or ./tanji-state)")
    parser.add_argument("--influx-url", default="http://127.0.0.1:8086", metavar="URL",
                        help="InfluxDB for --store influx (default http://127.0.0.1:8086); its token comes from "
                             "the environment variable TANJI_INFLUX_TOKEN, never the command line")
    parser.add_argument("--influx-org", default="tanji", metavar="ORG", help="InfluxDB organisation (default tanji)")
    parser.add_argument("--influx-bucket", default="tanji", metavar="BUCKET", help="InfluxDB bucket (default tanji)")
    parser.add_argument("--influx-database", help="database for InfluxQL reads (default: the bucket's name)")
    parser.add_argument("--influx-gzip-level", type=int, choices=range(10), metavar="0-9",
                        help="gzip level of writes (default: 1, or 0 when InfluxDB is on loopback)")
    parser.add_argument("--influx-concurrent-writes", type=int, default=2, choices=range(1, 9), metavar="1-8",
                        help="ingest cycles written to InfluxDB at once, each on its own connection (default 2; "
                             "1: one request at a time)")
    parser.add_argument("--checkpoint-interval", type=float, default=60.0, metavar="SECONDS",
                        help="how often the engines are checkpointed, bounding the replay after a restart "
                             "(default 60)")
    http = parser.add_argument_group("HTTP: dashboard, REST API, PACT")
    http.add_argument("--http-host", default="127.0.0.1", metavar="ADDRESS",
                      help="address the HTTP API and dashboard listen on (default 127.0.0.1)")
    http.add_argument("--http-port", type=int, metavar="PORT",
                      help="serve the HTTP API and dashboard on this port (0: any free port; the log says "
                           "which); default: no HTTP")
    env_option(http, "--api-token-file", env="TANJI_API_TOKEN_FILE", metavar="FILE",
               help="file holding the bearer token of the write endpoints (certificates, contracts, factor "
                    "datasets, recompute); without it every write answers 403")
    env_option(http, "--read-token-file", env="TANJI_READ_TOKEN_FILE", metavar="FILE",
               help="file holding the token every read of the dashboard and API needs (Bearer, or as the "
                    "password of HTTP Basic); without it reads are open to whoever reaches the port")
    env_option(http, "--pact-clients", env="TANJI_PACT_CLIENTS", metavar="FILE",
               help="PACT clients file (docs/api.md): who may log in at /auth/token and pull footprints; "
                    "without it every PACT login answers 401")
    env_option(http, "--tls-cert", env="TANJI_TLS_CERT", metavar="FILE",
               help="serve HTTPS with this certificate (PEM, chain included); needs --tls-key")
    env_option(http, "--tls-key", env="TANJI_TLS_KEY", metavar="FILE", help="private key of --tls-cert (PEM)")
    probe = parser.add_argument_group("status")
    probe.add_argument("--url", default="http://127.0.0.1:8080", metavar="URL",
                       help="status: the running service's base URL (default http://127.0.0.1:8080)")
    probe.add_argument("--ca-file", metavar="FILE", help="status: CA that signed an https --url's certificate")


def _broker(args: argparse.Namespace, default_host: str, default_port: int) -> tuple[str, int]:
    if not args.broker:
        return default_host, default_port
    host, sep, port = args.broker.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError("--broker", None, "", f"{args.broker!r} is not HOST:PORT", "e.g. --broker 127.0.0.1:1883")
    return host, int(port)


def refuse_placeholder(secret: str, source: str, what: str) -> str:
    """The secret, unless it is empty, an example placeholder or too short to be random."""
    if not secret:
        raise ConfigError(source, None, "", f"{what} is empty", f"write a secret into it: {GENERATE}")
    if secret.lower().startswith(PLACEHOLDER):
        raise ConfigError(source, None, "", f"{what} is still the placeholder {secret!r} of the example files",
                          f"replace it with a generated secret: {GENERATE}")
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(source, None, "", f"{what} has {len(secret)} characters, fewer than {MIN_SECRET_CHARS}",
                          f"use a generated secret: {GENERATE}")
    return secret


def read_secret(path: str, what: str, flag: str, *, check: bool = True) -> str:
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(path, None, "", f"cannot read the {what} file: {exc.strerror}",
                          f"check {flag} and that this user may read it") from None
    return refuse_placeholder(secret, path, f"the {what}") if check else secret


def _influx_token() -> str:
    """InfluxDB judges its own tokens (1.x without auth takes any); only an example placeholder is refused."""
    token = os.environ.get("TANJI_INFLUX_TOKEN", "")
    if token.lower().startswith(PLACEHOLDER):
        raise ConfigError("TANJI_INFLUX_TOKEN", None, "", f"the InfluxDB token is still the placeholder {token!r} "
                          "of the example files", "set the token of the bucket (influx auth create ...)")
    return token


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
        return InfluxStore(args.influx_url, token=_influx_token(), org=args.influx_org,
                           bucket=args.influx_bucket, database=args.influx_database,
                           gzip_level=args.influx_gzip_level, spill_dir=state / "influx-spill",
                           evidence_dir=state / "evidence",
                           concurrent_writes=getattr(args, "influx_concurrent_writes", 2)), state
    raise ConfigError("--store", None, "", f"unknown store {args.store!r}", "use sqlite:PATH or influx")


def _tls(args: argparse.Namespace) -> dict[str, str]:
    """uvicorn's TLS settings (accounting.pact.tls checks the pair loads); empty for plain HTTP."""
    if not args.tls_cert and not args.tls_key:
        return {}
    if not (args.tls_cert and args.tls_key):
        raise ConfigError("--tls-cert" if not args.tls_cert else "--tls-key", None, "",
                          "--tls-cert and --tls-key go together", "give both (or neither, for plain HTTP)")
    return server_ssl(args.tls_cert, args.tls_key)


def _pact_clients(path: str | None) -> PactClients | None:
    """The PACT clients file (accounting.pact.clients: hashed secrets, grants, event targets)."""
    return PactClients.from_file(path) if path is not None else None


def run(args: argparse.Namespace) -> int:
    if args.action == "status":
        return status(args.url, args.ca_file)
    if not args.config:
        raise ConfigError("--config", None, "", "no site file given", "add --config SITE_FILE (repeat for several sites)")
    stop = _StopSignal()  # before anything starts: a SIGTERM during start-up still stops cleanly
    sites = [load_site(path) for path in args.config]
    host, port = _broker(args, sites[0].broker.host, sites[0].broker.port)
    # Every secret and file is checked before anything starts: a bad one is a config error, now.
    api_token = read_secret(args.api_token_file, "API token", "--api-token-file") if args.api_token_file else None
    read_token = read_secret(args.read_token_file, "read token", "--read-token-file") if args.read_token_file else None
    tls = _tls(args)
    pact_clients = _pact_clients(args.pact_clients)
    password = (read_secret(args.broker_password_file, "broker password", "--broker-password-file", check=False)
                if args.broker_password_file else None)
    if (api_token or read_token or pact_clients) and args.http_port is None:
        log.warning("--api-token-file, --read-token-file and --pact-clients have no effect without --http-port")

    broker = EmbeddedBroker(host, port) if args.embedded_broker else None
    if broker is not None:
        broker.start()
    try:
        store, state_dir = _store(args)
        state_dir.mkdir(parents=True, exist_ok=True)
        open_evidence = getattr(store, "open_evidence", None)  # InfluxStore's evidence log (SQLite keeps it inside)
        if open_evidence is not None:
            open_evidence()  # damage in the evidence log is named now (an ALARM), before ingest starts
        service = AccountingService(sites, store, broker_host=host, broker_port=port, client_id=args.client_id,
                                    username=args.broker_username, password=password,
                                    tls=args.broker_tls, ca_file=args.broker_ca_file,
                                    share_group=args.share_group,
                                    checkpoints=CheckpointStore(state_dir / "checkpoints.sqlite"),
                                    checkpoint_interval_s=args.checkpoint_interval,
                                    mqtt_version="3.1.1" if broker is not None else "5")  # amqtt: no MQTT 5
        stop.watch(service.failed)
        log.info("accounting: %d site(s) from %s via %s:%d into %s", len(sites), ", ".join(args.config),
                 host, port, args.store)
        log_passes(log)
        if args.http_port is not None:
            code = _serve(service, args, stop, api_token=api_token, read_token=read_token,
                          pact_clients=pact_clients, tls=tls, state_dir=state_dir)
        else:
            code = _run_headless(service, stop)
        if service.failed.is_set():
            # Never a process that looks alive and ingests nothing: exit, and let the supervisor
            # (systemd Restart=, Docker restart:) start a fresh one, which resumes from the broker.
            log.critical("accounting exits because ingest stopped: %s", service.pipeline.failure)
            return 1
        return code
    finally:
        if broker is not None:
            broker.stop()


class _StopSignal:
    """SIGTERM/SIGINT handled by the process for its whole life, so they always end in
    ``service.stop()`` and its final checkpoint. uvicorn installs its own handlers while it
    serves and, once shut down, restores these and raises the signal again; with the default
    handler restored (none installed) that killed the process (exit 143) before the stop."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.servers: list[Any] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, *_: object) -> None:
        self._event.set()
        for server in self.servers:
            server.should_exit = True

    def watch(self, failed: threading.Event) -> None:
        """A dying ingest stage stops the process as a signal does (and it then exits 1)."""
        def run() -> None:
            failed.wait()
            self._handle()

        threading.Thread(target=run, name="accounting-watchdog", daemon=True).start()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self) -> None:
        self._event.wait()


class _Starter:
    """Starts the service off the main thread, so HTTP answers (503, and health) meanwhile."""

    def __init__(self, service: AccountingService, on_failure: Any) -> None:
        self.service = service
        self.on_failure = on_failure
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._start, name="accounting-start", daemon=True)

    def _start(self) -> None:
        try:
            self.service.start()
            self.started.set()
        except BaseException as exc:  # a service that cannot start takes the process down
            self.error = exc
            log.error("accounting failed to start: %s", exc, exc_info=not isinstance(exc, ConfigError))
            self.on_failure()


def _watch_readiness(service: AccountingService, stop: threading.Event, served: Any = None) -> None:
    """Log the URLs once HTTP is up (`served`: the uvicorn server), then every change of
    readiness; tell systemd the first time the service is ready."""
    was: bool | None = None
    if served is not None:
        while not served.started and not stop.wait(0.05):
            pass
        if stop.is_set():
            return
        port = served.servers[0].sockets[0].getsockname()[1]
        scheme = "https" if served.config.ssl_certfile else "http"
        for line in _urls(served.config.host, port, scheme):
            log.info("serving %s", line)
    while not stop.wait(WATCH_S):
        state = service.readiness()
        if state["ready"] == was:
            continue
        if state["ready"]:
            log.info("ready: restored, subscribed and caught up")
            if was is None or was is False:
                notify("READY=1", "STATUS=ready: ingesting")
        else:
            reasons = "; ".join(state["reasons"]) or "starting"
            (log.info if was is None else log.warning)("not ready: %s", reasons)
            notify(f"STATUS=not ready: {reasons}")
        was = state["ready"]


def _urls(host: str, port: int, scheme: str) -> list[str]:
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    base = f"{scheme}://{shown}:{port}"
    return [f"dashboard {base}/", f"API {base}/api/v1/ (docs {base}/docs)", f"readiness {base}/api/v1/ready",
            f"PACT {base}/3/footprints (token {base}/auth/token)"]


def _serve(service: AccountingService, args: argparse.Namespace, stop: _StopSignal, *, api_token: str | None, read_token: str | None,
           pact_clients: PactClients | None, tls: dict[str, str], state_dir: Path) -> int:
    import uvicorn

    from accounting.api.app import create_app
    from accounting.pact.host import PactHost

    scheme = "https" if tls else "http"
    shown = socket.gethostname() if args.http_host in ("0.0.0.0", "::", "") else args.http_host
    # Partners are told this URL (event sources, the extension schema) unless the clients file
    # names the public one (`public_url:`); with --http-port 0 only the clients file can.
    host = PactHost(service, pact_clients or PactClients(), state_dir=state_dir,
                    public_url=f"{scheme}://{shown}:{args.http_port}" if args.http_port else None)
    from accounting.shipments import ShipmentBook

    shipments = ShipmentBook(service, state_dir=state_dir, pact=host)  # shipments.sqlite beside the ledger
    app = create_app(service, api_token=api_token, pact=host, shipments=shipments, read_token=read_token)
    config = uvicorn.Config(app, host=args.http_host, port=args.http_port, log_level="warning", lifespan="on",
                            **tls)
    server = uvicorn.Server(config)
    starter = _Starter(service, lambda: setattr(server, "should_exit", True))
    log.info("writes %s; reads %s; PACT: %s", "need the API token" if api_token else "are disabled (403)",
             "need the read token" if read_token else "are open (no --read-token-file)",
             ("refused: PACT is HTTPS only (no --tls-cert)" if not tls else
              f"{len(pact_clients)} client(s)" if pact_clients is not None else "no client (no --pact-clients)"))
    stop_watch = threading.Event()
    watcher = threading.Thread(target=_watch_readiness, name="accounting-readiness", daemon=True,
                               args=(service, stop_watch, server))
    service.ready.starting = True  # before HTTP serves: data routes wait for the restore
    starter.thread.start()
    watcher.start()
    stop.servers.append(server)
    try:
        if not stop.is_set():
            server.run()  # returns on SIGTERM/SIGINT, or when the start-up failed
    finally:
        stop_watch.set()
        notify("STOPPING=1")
    if starter.error is not None:
        raise starter.error if isinstance(starter.error, ConfigError) else SystemExit(1)
    if not server.started and not stop.is_set():
        log.error("the HTTP server did not start on %s:%d (port in use?)", args.http_host, args.http_port)
    if starter.started.is_set():
        service.stop()
    else:
        log.warning("stopped while still starting: nothing was acknowledged, nothing is lost")
    return 0 if server.started or stop.is_set() else 1


def _run_headless(service: AccountingService, stop: _StopSignal) -> int:
    stop_watch = threading.Event()
    try:
        service.start()
        watcher = threading.Thread(target=_watch_readiness, args=(service, stop_watch),
                                   name="accounting-readiness", daemon=True)
        watcher.start()
        stop.wait()
    finally:
        stop_watch.set()
        notify("STOPPING=1")
        service.stop()  # the final checkpoint
    return 0


def status(url: str, ca_file: str | None) -> int:
    """Ask a running service's /api/v1/ready; print what it says; 0 when ready, 1 otherwise."""
    target = url.rstrip("/") + "/api/v1/ready"
    context = ssl.create_default_context(cafile=ca_file) if target.startswith("https:") else None
    try:
        with urllib.request.urlopen(target, timeout=10, context=context) as resp:
            body, code = json.loads(resp.read()), resp.status
    except urllib.error.HTTPError as exc:
        try:
            body, code = json.loads(exc.read() or b"{}"), exc.code
        except ValueError:
            body, code = {"reasons": [f"HTTP {exc.code} without a readiness document (not Tanji?)"]}, exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"DOWN: no answer from {target}: {getattr(exc, 'reason', exc)}")
        return EXIT_DOWN
    checks = ", ".join(f"{k} {body.get(k)}" for k in ("restored", "subscribed", "caught_up"))
    if code == 200 and body.get("ready"):
        print(f"ready ({checks})")
        return 0
    print(f"NOT READY ({checks}): {'; '.join(body.get('reasons') or [])}")
    return EXIT_DOWN

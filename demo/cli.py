"""`tanji demo`: a whole plant on one machine, the embedded default of DESIGN.md.

One process runs what production spreads over many boxes (`demo.stack`): a simulated plant
(by default the Chongqing battery-pack plant; `--scenario` picks another, such as the Jiangsu
electronics plant with its RS-485 bus), its gateway (with its SQLite spool), an embedded MQTT
broker (amqtt), the accounting service on an embedded SQLite store, and here the API and
dashboard over HTTP and HTTPS. Meters and broker get free ports and RS-485 buses a pty pair of
their own, so a demo never collides with a real installation on the same machine and needs no
serial port.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import uvicorn

from accounting.api.app import create_app
from accounting.api.queries import live_footprints
from accounting.pact.tls import server_ssl
from accounting.service import AccountingService
from accounting.shipments import ShipmentBook
from demo.pact import CLIENT, demo_host
from demo.stack import DemoStack
from simulators.scenario import load_scenario

log = logging.getLogger("tanji.demo")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIO = REPO / "simulators" / "scenarios" / "cq-battery.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: until Ctrl-C)")
    parser.add_argument("--http-port", type=int, default=8080, metavar="PORT", help="dashboard and API port (default 8080)")
    parser.add_argument("--http-host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--scenario", default=str(DEFAULT_SCENARIO), metavar="FILE",
                        help="simulator scenario (it names its site file); default: the Chongqing battery plant")
    parser.add_argument("--speed", type=float, default=None, metavar="X",
                        help="plant time runs X times faster than the clock (default: the scenario's)")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the plant (default: the scenario's)")
    parser.add_argument("--workdir", metavar="DIR", help="where the spool and store go (default: a temporary directory)")
    parser.add_argument("--api-token", default="demo-token", help="bearer token for the write endpoints (default demo-token)")
    parser.add_argument("--https-port", type=int, default=8443, metavar="PORT",
                        help="HTTPS port of the same API, where PACT is served (default 8443; the demo makes a "
                             "local CA and prints where it is)")
    parser.add_argument("--history-months", type=int, default=1, metavar="N",
                        help="simulate the plant's past from the start of N months back, so closed months "
                             "exist for PACT (default 1; 0: none). Skipped when the work directory has readings")
    parser.add_argument("--pact-clients", metavar="FILE",
                        help="PACT clients file (as for tanji accounting) instead of the demo client demo/demo")


def run(args: argparse.Namespace) -> int:
    # amqtt logs every session state change at INFO; an operator wants the plant's lines instead.
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tanji-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    with DemoStack(load_scenario(args.scenario), workdir, seed=args.seed, speed=args.speed,
                   history_months=args.history_months) as stack, ExitStack() as servers:
        assert stack.plant is not None and stack.service is not None
        service, site = stack.service, stack.site
        for line in stack.plant.describe():
            log.info("simulated plant: %s", line)
        # The listening sockets are bound first, so a port 0 (any free port) is known before the
        # URLs partners and the banner are told are made.
        try:
            plain, encrypted = (servers.enter_context(_listen(args.http_host, port))
                                for port in (args.http_port, args.https_port))
        except OSError as exc:
            log.error("cannot listen on %s (%s): is the port in use? choose another with --http-port/--https-port",
                      args.http_host, exc)
            return 1
        host = f"[{args.http_host}]" if ":" in args.http_host else args.http_host
        secure = f"https://{host}:{_bound_port(encrypted)}/"
        pact, tls = demo_host(service, workdir, secure.rstrip("/"), args.pact_clients)
        shipments = ShipmentBook(service, state_dir=workdir, pact=pact, scan_interval_s=10.0)
        app = create_app(service, api_token=args.api_token, pact=pact, shipments=shipments)
        # One app, two listeners: plain HTTP for the plant network (dashboard, REST; PACT refuses
        # plain HTTP) and HTTPS for partners. The first runs the app's lifespan for both.
        for sock, options in ((plain, {"lifespan": "on"}),
                              (encrypted, {"lifespan": "off", **server_ssl(tls.cert, tls.key)})):
            port = _bound_port(sock)
            server = uvicorn.Server(uvicorn.Config(app, host=args.http_host, port=port, log_level="warning",
                                                   **options))
            http = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"http-{port}", daemon=True)
            http.start()
            servers.callback(lambda s=server, t=http: (setattr(s, "should_exit", True), t.join(10)))
            deadline = time.monotonic() + 30
            while not server.started and http.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not server.started:
                log.error("the HTTP server did not start on %s:%d", args.http_host, port)
                return 1

        url = f"http://{host}:{_bound_port(plain)}/"
        print(f"Tanji demo: {site.name} ({site.id})", flush=True)
        print(f"  dashboard   {url}", flush=True)
        print(f"  footprints  {url}api/v1/footprints", flush=True)
        print(f"  API docs    {url}docs", flush=True)
        print(f"  PACT v3     {secure}3/footprints  (POST {secure}auth/token with client id "
              f"'{CLIENT[0]}', secret '{CLIENT[1]}'; closed months only)", flush=True)
        print(f"  local CA    {tls.ca}  (curl --cacert {tls.ca} {secure}.well-known/openid-configuration)",
              flush=True)
        print(f"  write token {args.api_token}   data in {workdir}", flush=True)
        print("  Ctrl-C stops." if args.duration is None else f"  stopping after {args.duration:g} s.", flush=True)
        _watch(service, stop, args.duration)
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (0: a free port the system picks), closed on exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _bound_port(sock: socket.socket) -> int:
    """The port a listening socket is bound to (the one chosen when 0 was asked for)."""
    return sock.getsockname()[1]


def _watch(service: AccountingService, stop: threading.Event, duration: float | None) -> None:
    """Wait, logging a progress line every 10 s so the operator sees the plant is alive.

    The figures are the dashboard's: every product over the live window (the local day so far).
    """
    end = time.monotonic() + duration if duration is not None else None
    while not stop.is_set():
        timeout = 10.0 if end is None else max(0.0, min(10.0, end - time.monotonic()))
        if stop.wait(timeout) or (end is not None and time.monotonic() >= end):
            return
        parts = [f"{f['product_id']} {f['kgco2e_per_unit_location']:.3f} kgCO2e/unit ({f['units']:.0f} units)"
                 for f in live_footprints(service) if f.get("units")]
        log.info("ingested %d readings; %s", service.stats.accepted, "; ".join(parts) or "no units yet")

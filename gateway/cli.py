"""`tanji gateway`: run one gateway of a site file, print its health, or make its signing key.

    tanji gateway --config SITE_FILE [--gateway ID] [--spool PATH] [--broker HOST:PORT]
    tanji gateway status --config SITE_FILE [--gateway ID] [--spool PATH] [--json]
    tanji gateway keygen --config SITE_FILE [--gateway ID] [--key-file PATH] [--rotate]

`keygen` makes the gateway's Ed25519 signing key (mode 0600, never overwritten) and prints
the lines that register its public key in the site file; `--rotate` keeps the old key file
as `<key>.retired-<time>` and makes a new one (docs/audit.md, key lifecycle).

`status` reads the health the running gateway writes next to its spool
(`<spool>.status.json`, refreshed every few seconds) and the spool itself, so it works on
the edge box without a broker. It exits 0 when the gateway runs, reaches its broker and
every meter answers, and 1 when any of that is down (scripts and monitoring can rely on it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from tanji.cli import EXIT_DOWN
from tanji.errors import ConfigError
from tanji.site import Site, load_site


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["run", "status", "keygen"], default="run",
                        help="run the gateway (default), print its health, or make its signing key")
    parser.add_argument("--config", required=True, metavar="SITE_FILE", help="the site file (YAML)")
    parser.add_argument("--gateway", metavar="ID", help="gateway id in the site file (default: the only one)")
    parser.add_argument("--spool", metavar="PATH", help="spool file (default: the gateway's spool_path)")
    parser.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker (default: the site file's broker)")
    parser.add_argument("--json", action="store_true", help="status: print the health as JSON (with `problems`, empty when all is well)")
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve Prometheus metrics on http://<metrics_host>:PORT/metrics "
                             "(default: the gateway's metrics_port in the site file; none)")
    parser.add_argument("--metrics-host", metavar="ADDRESS",
                        help="address the metrics listen on (default: the site file's metrics_host, 127.0.0.1)")
    parser.add_argument("--key-file", metavar="PATH",
                        help="keygen: where to write the private key (default: the gateway's signing_key_file, "
                             "else <spool>.key)")
    parser.add_argument("--rotate", action="store_true",
                        help="keygen: retire the existing key file (kept as <key>.retired-<time>) and make a new key")


def _gateway_id(site: Site, wanted: str | None) -> str:
    if wanted is not None:
        try:
            return site.gateway(wanted).id
        except KeyError as exc:
            raise ConfigError(site.file, None, "gateways", str(exc.args[0]), "pass --gateway with one of those ids") from None
    if len(site.gateways) != 1:
        raise ConfigError(site.file, None, "gateways", f"the site has {len(site.gateways)} gateways",
                          f"choose one with --gateway ({', '.join(g.id for g in site.gateways)})")
    return site.gateways[0].id


def _broker(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("--broker", None, "broker", f"{value!r} is not HOST:PORT", "write e.g. --broker 127.0.0.1:1883")
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    site = load_site(args.config)
    gateway_id = _gateway_id(site, args.gateway)
    spool = args.spool or site.gateway(gateway_id).spool_path
    if args.action == "status":
        return _status(spool, args.json)
    if args.action == "keygen":
        return _keygen(site, gateway_id, spool, args.key_file, args.rotate)
    from gateway.service import GatewayService

    service = GatewayService(site, gateway_id, spool_path=spool,
                             broker=_broker(args.broker) if args.broker else None,
                             metrics_port=args.metrics_port, metrics_host=args.metrics_host)

    async def main() -> None:
        task = asyncio.create_task(service.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return 0


def _keygen(site: Site, gateway_id: str, spool: str, key_file: str | None, rotate: bool) -> int:
    """Make the gateway's signing key and print how to register it (and, rotating, retire the old one)."""
    from gateway.service import key_file as default_key_file
    from gateway.signing_key import generate_key, load_key
    from tanji.gateway_keys import registration_snippet

    path = Path(key_file) if key_file else default_key_file(spool, site.gateway(gateway_id).signing_key_file)
    old = None
    if path.exists():
        if not rotate:
            raise ConfigError(str(path), None, "", "this gateway already has a signing key",
                              "keep it (it is registered in the site file), or make a new one with --rotate")
        old = load_key(path)
        retired = path.with_name(f"{path.name}.retired-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        os.replace(path, retired)
        print(f"retired key {old.key_id}: kept as {retired}")
    key = generate_key(path)
    print(f"new signing key {key.key_id} for gateway {gateway_id} of site {site.id}: {path} (mode 0600)")
    print(f"public key: {key.public_key}")
    print(f"register it in {site.file}:")
    print(registration_snippet(gateway_id, key.public_key), end="")
    if old is not None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print(f"      # and give the old key {old.key_id} its end: valid_until: {now}, then restart the gateway")
    print("then restart accounting and the gateway so both use it")
    return 0


#: A status file older than this means the gateway is not running (it rewrites it every 5 s).
STALE_AFTER_S = 30.0


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user (status run as root or as an operator)
        return True
    return True


def problems(health: dict[str, Any]) -> list[str]:
    """What is down, in words; empty when the gateway runs, reaches its broker and every meter answers."""
    out = []
    if health["status_age_s"] > STALE_AFTER_S or not _process_alive(int(health["pid"])):
        out.append(f"the gateway is not running (status {health['status_age_s']:.0f} s old, pid {health['pid']})")
    elif not health["connected"]:
        out.append("the broker is unreachable or refuses the gateway (readings wait in the spool)")
    failing = [name for name, m in health["meters"].items() if m["consecutive_errors"]]
    if failing:
        out.append(f"meters not answering: {', '.join(failing)}")
    if health.get("spool_alarm"):
        out.append("the spool is nearly full")
    return out


def _status(spool: str, as_json: bool) -> int:
    """Print the gateway's health; exit 0 when all is well, 1 when anything it reports is down."""
    from gateway.service import status_file

    path = status_file(spool)
    if not path.exists():
        print(f"no status at {path}: the gateway has not run with spool {spool}")
        return EXIT_DOWN
    health: dict[str, Any] = json.loads(path.read_text())
    if Path(spool).exists():
        # The spool is the truth about what is waiting, even when the gateway is down.
        db = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
        queued = db.execute("SELECT COUNT(*) FROM reading").fetchone()[0]
        batched = db.execute("SELECT COALESCE(SUM(n), 0) FROM batch").fetchone()[0]
        db.close()
        health["spool_depth"] = queued + batched
    age_s = (time.time() * 1000 - health["ts_ms"]) / 1000
    health["status_age_s"] = round(age_s, 1)
    down = problems(health)
    health["problems"] = down
    if as_json:
        print(json.dumps(health, indent=1))
        return EXIT_DOWN if down else 0
    print(f"gateway {health['gateway']} of site {health['site']} (pid {health['pid']}), status {age_s:.0f} s old")
    print(f"  broker connected: {health['connected']}   polls: {health['polls']}   poll errors: {health['poll_errors']}")
    print(f"  spool: {health['spool_depth']} readings waiting, {health['spool_bytes'] / 1e6:.1f} MB"
          f"{' (ALARM: nearly full)' if health.get('spool_alarm') else ''}, dropped {health.get('spool_dropped', 0)},"
          f" publish lag {health['publish_lag_ms'] / 1000:.1f} s")
    for meter, m in health["meters"].items():
        state = "ok" if not m["consecutive_errors"] else f"FAILING ({m['last_error']})"
        print(f"  {meter:<24} polls {m['polls']:>8}  errors {m['errors']:>6}  last {m['last_duration_ms']:>6} ms  {state}")
    for problem in down:
        print(f"DOWN: {problem}")
    print("OK" if not down else f"exit {EXIT_DOWN}: see DOWN above")
    return EXIT_DOWN if down else 0

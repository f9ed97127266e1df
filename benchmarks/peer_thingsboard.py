"""The ThingsBoard IoT Gateway as a peer of Tanji's gateway in benchmarks/gateway.py.

ThingsBoard's gateway (PyPI `thingsboard-gateway`, 3.8.x) is the open-source Python gateway a
factory would otherwise put between Modbus meters and an MQTT broker. It runs here from its
own virtual environment under a cache directory (`TANJI_BENCH_CACHE`, default
~/.cache/tanji-bench), created on first use, so none of its dependencies touch Tanji's.
Its Modbus connector pins pymodbus and pip-installs it at its first start unless present, so
the pinned version is installed with it up front.

It is configured as its documentation recommends for data that must survive a restart or a
broker outage: `storage.type: sqlite` (the persistent event storage; the default `memory`
loses everything on a restart), QoS 1, `reportStrategy: ON_RECEIVED` (every poll reported,
as Tanji reports every poll; the default on-change strategy would drop repeated values), and
the same meters as Tanji's gateway: one SDM630 per unit id, the profile's registers each read
as a 32-bit float (its Modbus connector reads every configured key with a request of its own),
no retries (a retried request would count twice at the benchmark's Modbus server, which counts
the polls answered; Tanji's gateway does not retry within a poll either).
Its MQTT client talks ThingsBoard's device API (`v1/gateway/telemetry`, `v1/gateway/connect`,
...) to whatever broker it is given; the benchmark gives it the same Mosquitto as Tanji's.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

from tanji.profile import MeterProfile

PACKAGE = "thingsboard-gateway>=3.8,<3.9"
PYMODBUS = "pymodbus==3.9.2"  # what thingsboard-gateway 3.8's Modbus connector requires
TELEMETRY_TOPIC = "v1/gateway/telemetry"


class PeerUnavailable(Exception):
    """The peer could not be installed here (no package index reachable, pip failed)."""


def cache_dir() -> Path:
    return Path(os.environ.get("TANJI_BENCH_CACHE", Path.home() / ".cache" / "tanji-bench"))


def is_installed() -> bool:
    return (cache_dir() / "tb-gateway" / ".installed").exists()


def ensure_installed() -> Path:
    """The peer's venv (created and installed on first use); returns its `thingsboard-gateway` script."""
    env_dir = cache_dir() / "tb-gateway"
    script = env_dir / "bin" / "thingsboard-gateway"
    marker = env_dir / ".installed"
    if script.exists() and marker.exists():
        return script
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    out = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", PACKAGE, PYMODBUS,
                          "pyserial", "pyserial-asyncio"], capture_output=True, text=True, timeout=1200)
    if out.returncode != 0 or not script.exists():
        raise PeerUnavailable(f"pip could not install {PACKAGE}: {out.stderr[-1000:]}")
    marker.write_text(PACKAGE + "\n")
    return script


def installed_version() -> str:
    python = cache_dir() / "tb-gateway" / "bin" / "python"
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('thingsboard-gateway'))"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def slave(profile: MeterProfile, host: str, port: int, unit_id: int, device: str, period_s: float) -> dict:
    """One meter in the Modbus connector's configuration: every profile register a float32 key."""
    fc = {"input": 4, "holding": 3}
    return {
        "host": host, "port": port, "type": "tcp", "method": "socket", "unitId": unit_id,
        "deviceName": device, "deviceType": profile.model, "timeout": 2, "byteOrder": "BIG", "wordOrder": "BIG",
        "retries": 0, "retryOnEmpty": False, "retryOnInvalid": False, "pollPeriod": int(period_s * 1000),
        "connectAttemptTimeMs": 500, "connectAttemptCount": 5, "waitAfterFailedAttemptsMs": 1000,
        "attributes": [], "attributeUpdates": [], "rpc": [],
        "timeseries": [{"tag": r.name, "type": "32float", "functionCode": fc[r.function], "objectsCount": 2,
                        "address": r.address} for r in profile.registers],
    }


def last_address(profile: MeterProfile) -> int:
    """The register the connector reads last in a poll (its answer completes the poll)."""
    return profile.registers[-1].address


def write_config(workdir: Path, broker_port: int, modbus_port: int, profile: MeterProfile, meters: list[tuple[str, int]],
                 period_s: float) -> Path:
    """The gateway's config directory (tb_gateway.json, modbus.json, logs.json) for `meters` (name, unit id)."""
    config = workdir / "config"
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    config.mkdir(parents=True, exist_ok=True)
    main = {
        "thingsboard": {
            "host": "127.0.0.1", "port": broker_port, "remoteShell": False, "remoteConfiguration": False,
            "latencyDebugMode": False, "statistics": {"enable": False, "statsSendPeriodInSeconds": 3600},
            "deviceFiltering": {"enable": False}, "maxPayloadSizeBytes": 8196, "minPackSendDelayMS": 50,
            "minPackSizeToSend": 500, "checkConnectorsConfigurationInSeconds": 3600, "handleDeviceRenaming": False,
            "security": {"type": "accessToken", "accessToken": "bench"}, "qos": 1,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False},
        },
        "storage": {
            "type": "sqlite", "data_file_path": str(workdir / "data" / "data.db"),
            "messages_ttl_check_in_hours": 1, "messages_ttl_in_days": 7, "max_read_records_count": 1000,
        },
        "grpc": {"enabled": False},
        "connectors": [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}],
    }
    (config / "tb_gateway.json").write_text(json.dumps(main, indent=2))
    modbus = {"master": {"slaves": [slave(profile, "127.0.0.1", modbus_port, unit, name, period_s)
                                    for name, unit in meters]},
              "slave": {}}
    (config / "modbus.json").write_text(json.dumps(modbus, indent=2))
    logs = {"version": 1, "disable_existing_loggers": False,
            "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "f", "level": "ERROR",
                                     "stream": "ext://sys.stderr"}},
            "loggers": {name: {"handlers": ["console"], "level": "ERROR", "propagate": False}
                        for name in ("service", "connector", "converter", "tb_connection", "storage", "extension",
                                     "database")},
            "root": {"level": "ERROR", "handlers": ["console"]}}
    (config / "logs.json").write_text(json.dumps(logs, indent=2))
    return config


NO_LIMITS = {"messages": "0:0,", "telemetryMessages": "0:0,", "telemetryDataPoints": "0:0,"}


class PlatformStandIn:
    """The one thing the gateway needs from a ThingsBoard server besides the broker: at connect it
    asks for its session limits (an RPC, `getSessionLimits`) and sends nothing until answered.
    This answers as a self-hosted ThingsBoard without rate limits does. Re-subscribes after a
    broker restart."""

    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-thingsboard-platform")
        self.client.on_connect = lambda client, *a: client.subscribe("v1/devices/me/rpc/request/+", 1)
        self.client.on_message = self._on_request
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_request(self, client, userdata, message) -> None:  # noqa: ANN001 (paho's callback)
        request_id = message.topic.rsplit("/", 1)[1]
        answer = {"rateLimits": NO_LIMITS, "gatewayRateLimits": NO_LIMITS, "maxInflightMessages": 100,
                  "maxPayloadSize": 65536}
        client.publish(f"v1/devices/me/rpc/response/{request_id}", json.dumps(answer), qos=1)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def stored_messages(workdir: Path) -> int:
    """Messages still in the gateway's SQLite event storage (stopped): taken, never delivered."""
    import sqlite3

    total = 0
    for db in (workdir / "data").glob("*.db"):
        with contextlib.closing(sqlite3.connect(db)) as conn, contextlib.suppress(sqlite3.OperationalError):
            total += conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    return total


def start(script: Path, config: Path, workdir: Path, log: Path) -> subprocess.Popen:
    """Start the gateway as its docs run it (the console script, config dir in TB_GW_CONFIG_DIR)."""
    env = {**os.environ, "TB_GW_CONFIG_DIR": str(config)}
    env.pop("PYTHONPATH", None)
    with open(log, "ab") as out:
        return subprocess.Popen([str(script)], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)


if __name__ == "__main__":  # install (or find) the peer: `python benchmarks/peer_thingsboard.py`
    print(ensure_installed(), installed_version(), file=sys.stderr)

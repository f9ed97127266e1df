"""docker/ and firmware-config/mosquitto/ stay in step with the code they deploy.

No Docker engine runs here, so the stack is checked where it can break silently: the compose
file must validate with Debian's docker-compose, the demo site file must describe the same
plant as the shipped one, the Grafana panels must query measurements and fields the
accounting store really writes, and the committed broker example must be what
`tanji broker-config` generates today.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tanji.cli import build_parser
from tanji.cli import main as tanji
from tanji.quantities import QUANTITIES
from tanji.site import Broker, load_site

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
SECRETS = ("TANJI_INFLUX_TOKEN", "INFLUXDB_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASSWORD")


def compose(*args: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install -y docker-compose)")
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([binary, "--env-file", str(env_file), "-f", str(DOCKER / "docker-compose.yml"), *args],
                          capture_output=True, text=True, env=env, cwd=DOCKER, timeout=60)


def test_compose_file_validates_with_the_example_env() -> None:
    result = compose("config", env_file=DOCKER / ".env.example")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"broker-init", "mosquitto", "influxdb", "accounting", "simulators", "gateway", "grafana",
                             "prometheus"}
    # The only MQTT port published to the host is the TLS one.
    assert [p["target"] for p in services["mosquitto"]["ports"]] == [8883]
    assert services["mosquitto"]["depends_on"]["broker-init"]["condition"] == "service_completed_successfully"


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose("config", env_file=empty)
    assert result.returncode != 0
    assert "set INFLUXDB_ADMIN_PASSWORD in docker/.env" in result.stderr or \
        "set TANJI_INFLUX_TOKEN in docker/.env" in result.stderr


def test_demo_site_is_the_shipped_plant_with_compose_addresses() -> None:
    shipped = load_site(REPO / "firmware-config" / "sites" / "cq-battery.yaml")
    demo = load_site(DOCKER / "sites" / "cq-battery.yaml")
    assert demo.broker == Broker(host="mosquitto", port=8883, tls=True, ca_file="/etc/tanji/certs/ca.crt",
                                 username="gw-cq-01", password_file="/etc/tanji/secrets/gw-cq-01.password")
    assert {m.host for m in demo.meters} == {"simulators"}
    moved = demo.with_meter_addresses({m.id: (m.host, m.port) for m in shipped.meters})
    assert dataclasses.replace(moved, broker=shipped.broker, file=shipped.file) == shipped, \
        "docker/sites/cq-battery.yaml must mirror firmware-config/sites/cq-battery.yaml except meter hosts " \
        "and broker: make the same change there"


def test_grafana_queries_what_the_store_writes() -> None:
    from accounting.engine.engine import ProductFootprint
    from accounting.store.influx import FOOTPRINTS, READINGS

    datasource = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "influxdb.yaml").read_text())
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "tanji-plant.json").read_text())
    fields = {READINGS: set(QUANTITIES), FOOTPRINTS: {f.name for f in dataclasses.fields(ProductFootprint)}}
    queries = [t["query"] for p in dashboard["panels"] for t in p["targets"]]
    assert queries and all(p["datasource"]["uid"] == uid for p in dashboard["panels"])
    for query in queries:
        measurement = re.search(r'FROM "(\w+)"', query).group(1)
        used = set(re.findall(r'\("(\w+)"\)', query))
        assert measurement in fields and used and used <= fields[measurement], query


def test_committed_broker_example_is_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the site file's path, as given, is quoted in the generated headers
    out = tmp_path / "out"
    assert tanji(["broker-config", "firmware-config/sites/cq-battery.yaml", "--out", str(out),
                  "--config-dir", "/etc/mosquitto/tanji"]) == 0
    example = REPO / "firmware-config" / "mosquitto" / "cq-battery"
    for name in ("acl", "mosquitto.conf"):
        assert (example / name).read_text() == (out / name).read_text(), \
            f"regenerate {example / name} (firmware-config/mosquitto/README.md)"


def test_numba_warm_up_compiles_every_engine_kernel_into_the_cache(tmp_path: Path) -> None:
    """What Dockerfile.accounting runs at build time; it breaks the build if the engine drifts."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    result = subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(DOCKER / "warm_numba.py"),
                             str(REPO / "firmware-config" / "sites" / "cq-battery.yaml")],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    for kernel in ("feed_channels", "allocate_hours", "match_market", "watch_rows"):
        assert kernel in result.stdout
    assert list((tmp_path / "numba-cache").rglob("*.nbi"))


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def _checked_secrets() -> list[str]:
    """The variables broker-init.sh hands to check-secrets.sh."""
    text = (DOCKER / "broker-init.sh").read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if "check-secrets.sh" in x and not x.startswith("#"))
    return line.split("check-secrets.sh", 1)[1].split()


def test_the_stack_refuses_the_placeholder_secrets_of_env_example(tmp_path: Path) -> None:
    """What docker/README.md promises: a copied .env.example does not start the stack."""
    example = _env_file(DOCKER / ".env.example")
    checked = _checked_secrets()
    placeholders = sorted(k for k, v in example.items() if v.startswith("change-me"))
    assert sorted(checked) == placeholders == sorted([*SECRETS, "TANJI_API_TOKEN", "TANJI_READ_TOKEN"])

    def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(DOCKER / "check-secrets.sh"), *checked], capture_output=True, text=True,
                              env={"PATH": os.environ["PATH"], **env}, timeout=30)

    refused = check(example)
    assert refused.returncode == 1
    for name in checked:
        assert f"check-secrets: {name} is still the placeholder '{example[name]}' from .env.example" in refused.stderr
    short = check({**{k: "x" * 40 for k in checked}, "TANJI_API_TOKEN": "short"})
    assert short.returncode == 1 and "TANJI_API_TOKEN has 5 characters, fewer than 16" in short.stderr
    generated = {k: f"{k.lower()}-{os.urandom(12).hex()}" for k in checked}
    assert check(generated).returncode == 0
    # broker-init runs the check first, and every service holding a secret waits for it.
    env_file = tmp_path / "good.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in generated.items()))
    services = yaml.safe_load(compose("config", env_file=env_file).stdout)["services"]
    assert set(services["broker-init"]["environment"]) == set(checked)
    for name in ("mosquitto", "influxdb", "accounting", "gateway", "grafana"):
        assert services[name]["depends_on"]["broker-init"]["condition"] == "service_completed_successfully", name


def test_accounting_runs_with_the_production_flags_and_reports_readiness() -> None:
    services = yaml.safe_load(compose("config", env_file=DOCKER / ".env.example").stdout)["services"]
    accounting = services["accounting"]
    args = build_parser(accounting["command"]).parse_args(accounting["command"])
    assert args.api_token_file == "/etc/tanji/secrets/api-token" and args.read_token_file == "/etc/tanji/secrets/read-token"
    assert args.pact_clients == "/etc/tanji/pact-clients.yaml" and args.tls_cert and args.tls_key
    assert [p["target"] for p in accounting["ports"]] == [args.http_port] == [8443]
    probe = accounting["healthcheck"]["test"]
    assert probe[:4] == ["CMD", "tanji", "accounting", "status"] and f"https://127.0.0.1:{args.http_port}" in probe
    # The demo gateway publishes only once accounting is subscribed: nothing is dropped on a fresh stack.
    gateway = services["gateway"]
    assert gateway["depends_on"]["accounting"]["condition"] == "service_healthy"
    assert gateway["healthcheck"]["test"][:4] == ["CMD", "tanji", "gateway", "status"]
    from accounting.pact.clients import PactClients

    assert len(PactClients.from_file(DOCKER / "pact-clients.yaml")) == 0

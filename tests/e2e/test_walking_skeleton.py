"""Issue 2's walking skeleton, every part a real process, as an integrator would run them:

`tanji simulate` (an Eastron SDM630 at its real register map, and a PLC counter, over Modbus TCP)
→ `tanji gateway` → real Mosquitto → two `tanji accounting` instances, one on the real
InfluxDB (through influxdb-client's write API) and one on the embedded SQLite store
→ `GET /api/v1/footprints` equals the hand calculation done from the readings read back from
each store (InfluxQL for InfluxDB, SQL for SQLite) with the shipped China factor.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.services import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
# China national electricity carbon footprint factor 2023 (MEE, NBS, NEA, Jan 2025), lifecycle basis.
FACTOR_KGCO2E_PER_KWH = 0.6205

SITE = """
site:
  id: e2e-site
  name: Walking skeleton plant
  province: Chongqing
  matching_mode: annual
  factor_dataset: cn-electricity-carbon-footprint@2023
broker: {{host: 127.0.0.1, port: {broker_port}}}
gateways:
  - id: gw-e2e
    spool_path: {spool}
    publish_interval_s: 0.2
    meters:
      - {{id: incomer, role: grid_import, profile: eastron-sdm630, host: 127.0.0.1, port: {meter_port}, unit_id: 1, ct_ratio: 40, poll_period_s: 0.5}}
      - {{id: line-meter, role: submeter, cost_centre: line, profile: eastron-sdm630, host: 127.0.0.1, port: {meter_port}, unit_id: 2, ct_ratio: 20, poll_period_s: 0.5}}
      - {{id: plc, role: production_counter, cost_centre: line, profile: generic-plc-counter, host: 127.0.0.1, port: {meter_port}, unit_id: 3, poll_period_s: 0.5}}
cost_centres:
  - {{id: line, kind: production, name: Assembly line}}
products:
  - {{id: widget, name: Widget, cost_centre: line, counter: {{meter: plc, channel: units_total}}}}
"""


def _tanji(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    out = open(log, "wb")  # noqa: SIM115 - closed with the process by the test's finaliser
    return subprocess.Popen([sys.executable, "-m", "tanji", *args], stdout=out, stderr=subprocess.STDOUT,
                            cwd=REPO, env={**os.environ, **(env or {})}, start_new_session=True)


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _wait_ready(port: int, timeout_s: float) -> None:
    """Until `/api/v1/ready` answers 200 (restored, subscribed, caught up)."""
    wait_for_port(port, timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _get_json(f"http://127.0.0.1:{port}/api/v1/ready")
            return
        except urllib.error.HTTPError:
            time.sleep(0.1)
        except (TimeoutError, urllib.error.URLError):  # no answer within 10 s (a loaded machine): ask again
            time.sleep(0.1)
    raise TimeoutError(f"accounting on port {port} not ready after {timeout_s} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_clear_of_hour_boundary(margin_s: float = 75.0) -> None:
    """The hand calculation gives one hour's energy to that hour's units; keep the run inside one hour."""
    into_hour = time.time() % 3600
    if into_hour > 3600 - margin_s:
        time.sleep(3600 - into_hour + 1)


def _hand_calculation(energy_kwh: float, units: float) -> dict[str, float]:
    return {"energy_kwh": energy_kwh, "units": units,
            "kgco2e_location": energy_kwh * FACTOR_KGCO2E_PER_KWH,
            "kgco2e_per_unit_location": energy_kwh * FACTOR_KGCO2E_PER_KWH / units}


def _delta(values: list[float]) -> float:
    """Energy between the first and the last reading of a counter that only rises (no reset here)."""
    assert values == sorted(values), "the simulated counters only rise in this test"
    return values[-1] - values[0]


@pytest.mark.timeout(300)
def test_sdm630_to_footprint_api_equals_hand_calculation(tmp_path, mosquitto, influx):
    _wait_clear_of_hour_boundary()
    meter_port = free_port()
    site_file = tmp_path / "site.yaml"
    site_file.write_text(SITE.format(broker_port=mosquitto.port, meter_port=meter_port, spool=tmp_path / "spool.sqlite"))
    http_influx, http_sqlite = free_port(), free_port()
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_tanji(["simulate", str(site_file), "--seed", "3"], tmp_path / "simulate.log"))
        wait_for_port(meter_port)
        procs.append(_tanji(["accounting", "--config", str(site_file), "--client-id", "acc-influx", "--store", "influx",
                             "--influx-url", influx.url, "--influx-bucket", influx.db, "--influx-org", "tanji",
                             "--state-dir", str(tmp_path / "state-influx"), "--http-port", str(http_influx)],
                            tmp_path / "accounting-influx.log", {"TANJI_INFLUX_TOKEN": "e2e-token"}))
        procs.append(_tanji(["accounting", "--config", str(site_file), "--client-id", "acc-sqlite",
                             "--store", f"sqlite:{tmp_path / 'tanji.sqlite'}", "--http-port", str(http_sqlite)],
                            tmp_path / "accounting-sqlite.log"))
        # As docs/deploy.md says: the gateway starts once accounting is ready (subscribed).
        _wait_ready(http_influx, 120)
        _wait_ready(http_sqlite, 120)
        gateway = _tanji(["gateway", "--config", str(site_file)], tmp_path / "gateway.log")
        procs.append(gateway)

        # Let the plant produce: wait until both instances report units, then a little longer.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            fps = [_get_json(f"http://127.0.0.1:{p}/api/v1/footprints") for p in (http_influx, http_sqlite)]
            if all(f and f[0]["units"] >= 3 for f in fps):
                break
            time.sleep(1)
        else:
            pytest.fail(f"no units after 90 s: {fps}")

        # Stop the gateway (it flushes its spool), then let accounting settle: nothing moves after this.
        _stop(gateway)
        assert gateway.returncode == 0, (tmp_path / "gateway.log").read_text()[-3000:]
        time.sleep(3)

        # The same readings in both stores: InfluxQL on InfluxDB, SQL on SQLite.
        def influx_values(meter: str, field: str) -> list[float]:
            res = influx.query(f"SELECT \"{field}\" FROM reading WHERE meter = '{meter}' AND \"{field}\" >= 0 "
                               "ORDER BY time", influx.db)
            return [row[1] for row in res["results"][0]["series"][0]["values"]]

        db = sqlite3.connect(tmp_path / "tanji.sqlite")

        def sqlite_values(meter: str, field: str) -> list[float]:
            return [v for (v,) in db.execute(f"SELECT {field} FROM readings WHERE meter = ? AND {field} IS NOT NULL "
                                             "ORDER BY ts_ms", (meter,))]

        for port, values in ((http_influx, influx_values), (http_sqlite, sqlite_values)):
            incomer = values("incomer", "energy_import_kwh")
            units = values("plc", "units_total")
            assert len(incomer) >= 10 and len(units) >= 10
            expected = _hand_calculation(_delta(incomer), _delta(units))
            footprints = _get_json(f"http://127.0.0.1:{port}/api/v1/footprints")
            assert isinstance(footprints, list) and len(footprints) == 1
            fp = footprints[0]
            assert fp["product_id"] == "widget"
            assert fp["dataset_id"] == "cn-electricity-carbon-footprint" and fp["dataset_version"] == "2023"
            assert fp["matching_mode"] == "annual"
            assert expected["energy_kwh"] > 0 and expected["units"] >= 3
            for key, value in expected.items():
                assert fp[key] == pytest.approx(value, rel=1e-9), (key, fp, expected)
        db.close()
    finally:
        for proc in reversed(procs):
            _stop(proc)

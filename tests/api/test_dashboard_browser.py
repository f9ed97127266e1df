"""Against the running demo (`tanji demo`: simulated plant → gateway → MQTT → accounting → API).

- In a real headless Chromium the dashboard loads, goes live and its numbers change without a
  reload. The page must load nothing from another host: the content security policy would
  block it and Chromium would log the violation, which fails the test.
- A PACT client pulls the demo's footprints with the credentials the demo announces, and every
  ProductFootprint passes the v3 schema checks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.api.browser import chromium
from tests.services import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
PACT_SCHEMA = json.loads((Path(__file__).parent / "pact_v3_schema.json").read_text())
LIVE_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The demo on a free port for the module's tests: (base URL, its console log)."""
    workdir = tmp_path_factory.mktemp("demo")
    port = free_port()
    log = workdir / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tanji", "demo", "--http-port", str(port),
                                 "--duration", "300", "--workdir", str(workdir / "data")],
                                cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        wait_for_port(port, timeout_s=120)
        yield f"http://127.0.0.1:{port}", log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _texts(driver, selector: str) -> list[str]:
    """Texts read in one script call: the page re-renders on every update, elements go stale."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent);", selector)


def _numbers(driver) -> list[str]:
    return _texts(driver, "#products [data-testid=energy], #products [data-testid=loc-per-unit], "
                          "#products [data-testid=units], #lines [data-testid=power]")


@pytest.mark.browser
def test_dashboard_goes_live_and_numbers_change(demo: tuple[str, Path]) -> None:
    base_url, _ = demo
    with chromium() as driver:
        driver.get(base_url + "/")
        wait = WebDriverWait(driver, LIVE_TIMEOUT_S, poll_frequency=0.5)
        wait.until(lambda d: d.find_element(By.ID, "conn").get_attribute("data-state") == "live")
        # Products show a number once the plant has produced something.
        wait.until(lambda d: any(t not in ("", "–") for t in _texts(d, "#products [data-testid=loc-per-unit]")))
        driver.execute_script("window.__noReload = true;")
        before = _numbers(driver)
        wait.until(lambda d: _numbers(d) != before)
        assert driver.execute_script("return window.__noReload === true;"), "the page reloaded"

        page = driver.find_element(By.TAG_NAME, "body").text
        for label in ("产品碳足迹", "Product carbon footprint", "基于市场", "market-based",
                      "电表状态与数据质量", "Meter status and data quality", "hourly-matched share"):
            assert label in page, label
        assert _texts(driver, "#meters tr[data-meter]"), "no meter rows"
        assert _texts(driver, "#chart-emissions rect"), "no emissions chart"
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe


def test_pact_client_pulls_valid_v3_footprints_from_the_demo(demo: tuple[str, Path]) -> None:
    base_url, log = demo
    assert "auth/token" in log.read_text(), "the demo must announce its PACT credentials"
    with httpx.Client(base_url=base_url, timeout=30) as client:
        token = client.post("/auth/token", data={"grant_type": "client_credentials"}, auth=("demo", "demo"))
        assert token.status_code == 200, token.text
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        listed = client.get("/3/footprints", headers=headers)
        assert listed.status_code == 200
        data = listed.json()["data"]
        assert data
        for pf in data:
            jsonschema.validate(pf, PACT_SCHEMA)
        one = client.get(f"/3/footprints/{data[0]['id']}", headers=headers)
        assert one.status_code == 200 and one.json()["data"]["id"] == data[0]["id"]

"""Against the running demo (`tanji demo`: simulated plant → gateway → MQTT → accounting → API).

- In a real headless Chromium the dashboard loads, goes live and its numbers change without a
  reload. The page must load nothing from another host: the content security policy would
  block it and Chromium would log the violation, which fails the test.
- The dashboard shows the footprint record's figures: the EU battery figure is the record's
  `kgco2e_per_battery_kwh_eu` (not a figure of its own), the hourly-matched share the records'
  `hourly_matched_share` (null, shown as such, under the demo's annual matching).
PACT against the demo: tests/e2e/test_pact_demo.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.api.browser import chromium
from tests.services import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
LIVE_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The demo on a free port for the module's tests: (base URL, its console log)."""
    workdir = tmp_path_factory.mktemp("demo")
    port = free_port()
    log = workdir / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tanji", "demo", "--http-port", str(port),
                                 "--https-port", str(free_port()),
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

        # The battery figure and the CFE score are the records' (read from the page's own state
        # and its text in one script call, so both are the same render).
        shown = driver.execute_script("""
            const cards = Array.from(document.querySelectorAll('#products .card'));
            return {cards: cards.map(c => {
                      const f = state.footprints.find(x => x.product_id === c.dataset.product);
                      return {product: c.dataset.product, record: fmt(f.kgco2e_per_battery_kwh_eu),
                              eu: f.kgco2e_per_battery_kwh_eu, location: f.kgco2e_per_unit_location,
                              kwh: f.battery_kwh_per_unit, matched: f.hourly_matched_share,
                              battery: (c.querySelector('[data-testid=battery-declared]') || {}).textContent};}),
                    matched: document.getElementById('hourly-matched').textContent};""")
        assert shown["matched"].startswith("–"), shown  # annual matching: the records say null
        assert {c["product"] for c in shown["cards"] if c["battery"]} == {"pack-48v-100ah", "ess-5kwh"}
        for card in shown["cards"]:
            assert card["matched"] is None
            assert card["battery"] == card["record"], card  # the record's figure, as the page formats it
            if card["location"] is not None:  # no certificates held: the EU figure is the grid-mix one
                assert card["eu"] == pytest.approx(card["location"] / card["kwh"], rel=1e-9)

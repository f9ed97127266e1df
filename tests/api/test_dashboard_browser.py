"""The dashboard in a real headless Chromium: it loads, goes live and its numbers change without reload.

Runs against the real demo (`tanji demo`: simulated plant → gateway → MQTT → accounting →
this API) when `tanji.demo` exists, otherwise against the in-process fake service ticking
once a second. Either way the page must load nothing from another host: the content security
policy would block it and Chromium would log the violation, which fails the test.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from accounting.api import create_app
from tests.api.browser import chromium
from tests.api.fake import FakeService
from tests.services import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
DEMO_AVAILABLE = importlib.util.find_spec("tanji.demo") is not None
LIVE_TIMEOUT_S = 90


def _serve_demo(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tanji", "demo", "--http-port", str(port),
                                 "--duration", "240"], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        wait_for_port(port, timeout_s=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _serve_fake() -> Iterator[str]:
    service = FakeService()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(1.0):
            service.tick()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        server.should_exit = True
        thread.join(10)
        ticker.join(5)


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    yield from (_serve_demo(tmp_path) if DEMO_AVAILABLE else _serve_fake())


def _numbers(driver) -> list[str]:
    return [e.text for e in driver.find_elements(
        By.CSS_SELECTOR, "#products [data-testid=energy], #products [data-testid=loc-per-unit], "
                         "#products [data-testid=units], #lines [data-testid=power]")]


@pytest.mark.browser
def test_dashboard_goes_live_and_numbers_change(base_url: str) -> None:
    with chromium() as driver:
        driver.get(base_url + "/")
        wait = WebDriverWait(driver, LIVE_TIMEOUT_S, poll_frequency=0.5)
        wait.until(lambda d: d.find_element(By.ID, "conn").get_attribute("data-state") == "live")
        # Products appear with a number once the plant has produced something.
        wait.until(lambda d: any(e.text not in ("", "–") for e in d.find_elements(
            By.CSS_SELECTOR, "#products [data-testid=loc-per-unit]")))
        driver.execute_script("window.__noReload = true;")
        before = _numbers(driver)
        wait.until(lambda d: _numbers(d) != before)
        assert driver.execute_script("return window.__noReload === true;"), "the page reloaded"

        page = driver.find_element(By.TAG_NAME, "body").text
        for label in ("产品碳足迹", "Product carbon footprint", "基于市场", "market-based",
                      "电表状态与数据质量", "Meter status and data quality", "hourly CFE score"):
            assert label in page, label
        assert driver.find_elements(By.CSS_SELECTOR, "#meters tr[data-meter]"), "no meter rows"
        assert driver.find_elements(By.CSS_SELECTOR, "#chart-emissions rect"), "no emissions chart"
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe

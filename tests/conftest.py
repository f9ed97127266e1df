"""Fixtures shared by the whole suite: real servers in temporary directories, stopped afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import InfluxServer, MosquittoServer

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba-cache"))


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A fresh Mosquitto per test: store-and-forward tests stop and restart it."""
    server = MosquittoServer(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def influx_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    server = InfluxServer(tmp_path_factory.mktemp("influxdb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def influx(influx_session: InfluxServer, request: pytest.FixtureRequest) -> InfluxServer:
    """The session's InfluxDB with a fresh database per test, named in `influx.db`."""
    db = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:60]
    influx_session.query(f'DROP DATABASE "{db}"', db)
    influx_session.create_database(db)
    influx_session.db = db
    return influx_session


@pytest.fixture
def influx_private(tmp_path: Path) -> Iterator[InfluxServer]:
    """An InfluxDB of the test's own, for tests that stop and restart it."""
    server = InfluxServer(tmp_path / "influxdb")
    server.start()
    server.create_database("tanji")
    server.db = "tanji"
    yield server
    server.stop()


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """An RS-485 line as two linked pseudo-terminals from socat: (simulator's end, poller's end)."""
    sim_end, poller_end = str(tmp_path / "ttySIM"), str(tmp_path / "ttyGW")
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={sim_end}", f"pty,raw,echo=0,link={poller_end}"],
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 5
    while not (os.path.exists(sim_end) and os.path.exists(poller_end)):
        assert time.monotonic() < deadline, "socat did not create the pty pair"
        time.sleep(0.02)
    yield sim_end, poller_end
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(5)

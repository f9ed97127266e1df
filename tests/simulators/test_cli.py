"""`tanji simulate` as an operator runs it: help, one model for a quick check, a whole plant."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from pymodbus.client import ModbusTcpClient

from tests.services import free_port, wait_for_port
from tests.simulators.conftest import REPO, f32


def tanji(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tanji", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def stop(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    return out


def test_help_lists_both_modes():
    out = subprocess.run([sys.executable, "-m", "tanji", "simulate", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "--model" in out and "SCENARIO_OR_SITE_FILE" in out and "--truth-out" in out


def test_one_model_serves_its_map_and_logs_what_it_serves():
    port = free_port()
    proc = tanji("simulate", "--model", "carlo-gavazzi-em24", "--port", str(port), "--unit-id", "7")
    try:
        wait_for_port(port)
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        assert client.connect()
        words = client.read_input_registers(0, count=2, device_id=7).registers
        client.close()
        volts = (words[1] << 16 | words[0]) / 10  # INT32, low word first, V*10
        assert 200 < volts < 260
    finally:
        out = stop(proc)
    assert f"127.0.0.1:{port} unit 7=meter (carlo-gavazzi-em24)" in out


def test_one_dlt645_meter_answers_an_independent_client():
    from dlt645 import MeterClientService

    from tanji import dlt645

    port = free_port()
    proc = tanji("simulate", "--model", "dlt645-2007", "--port", str(port), "--address", "000012345678")
    try:
        wait_for_port(port)
        client = MeterClientService.new_tcp_client("127.0.0.1", port, 5.0)
        client.set_address(dlt645.address_bytes("000012345678").hex())  # dlt645 takes frame-order bytes
        volts = client.read_02(0x02010100)
        energy = client.read_00(0x00010000)
        client.disconnect()
    finally:
        out = stop(proc)
    assert volts is not None and 200 < volts.value < 260
    assert energy is not None and energy.value > 1000
    assert "address 000012345678=meter (dlt645-2007)" in out


def test_plant_from_a_site_file_writes_its_truth(tmp_path):
    site = (REPO / "firmware-config" / "sites" / "cq-battery.yaml").read_text()
    ports = {5020: free_port(), 5021: free_port()}
    for old, new in ports.items():
        site = site.replace(f"port: {old},", f"port: {new},")
    (tmp_path / "site.yaml").write_text(site)
    truth = tmp_path / "truth.json"
    proc = tanji("simulate", str(tmp_path / "site.yaml"), "--speed", "60", "--truth-out", str(truth))
    try:
        wait_for_port(ports[5020])
        client = ModbusTcpClient("127.0.0.1", port=ports[5020], timeout=2, retries=0)
        assert client.connect()
        assert f32(client.read_input_registers(72, count=2, device_id=1).registers, 0) > 0
        client.close()
        time.sleep(1)
    finally:
        out = stop(proc)
    assert "unit 2=line-a-meter (eastron-sdm630)" in out
    data = json.loads(truth.read_text())
    assert data["totals"]["incomer"]["energy_import_kwh"] > 0
    assert data["totals"]["plc-a"]["units_total"] > 0

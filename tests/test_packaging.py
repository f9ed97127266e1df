"""The edge install stays lean: `pip install .[gateway]` brings no numpy, numba, FastAPI or InfluxDB client.

A real install into a clean venv, as an integrator would do on a 512 MB box; then the
gateway's CLI runs there, which proves the gateway's imports need nothing heavier.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("numpy", "numba", "llvmlite", "fastapi", "influxdb-client", "influxdb_client", "uvicorn", "amqtt")


def test_gateway_extra_installs_no_heavy_packages(tmp_path: Path) -> None:
    src = tmp_path / "src"
    # Copy the tree without .venv and caches so pip builds from a clean source, as from a clone.
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__",
                                                             ".numba-cache", ".hypothesis", "build"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, f"{src}[gateway]"], check=True, timeout=600)
    frozen = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze"], check=True,
                            capture_output=True, text=True).stdout.lower()
    names = {line.split("==")[0].split(" @ ")[0] for line in frozen.splitlines()}
    assert "pymodbus" in names and "paho-mqtt" in names and "cryptography" in names
    assert not names & set(HEAVY), f"heavy packages in the gateway install: {sorted(names & set(HEAVY))}"
    # The profiles travel with the wheel: `tanji check` finds them outside the source tree.
    checked = subprocess.run([str(venv / "bin" / "tanji"), "check"], check=True, capture_output=True,
                             text=True, cwd=tmp_path).stdout
    assert "eastron-sdm630" in checked
    help_text = subprocess.run([str(venv / "bin" / "tanji"), "gateway", "--help"], check=True,
                               capture_output=True, text=True, cwd=tmp_path).stdout
    assert "--config" in help_text
    # The gateway signs its batches with what the extra installs (docs/audit.md).
    site = REPO / "firmware-config" / "sites" / "cq-battery.yaml"
    made = subprocess.run([str(venv / "bin" / "tanji"), "gateway", "keygen", "--config", str(site),
                           "--key-file", str(tmp_path / "gw.key")], capture_output=True, text=True, cwd=tmp_path)
    assert made.returncode == 0 and "public_key:" in made.stdout, made.stderr
    refused = subprocess.run([str(venv / "bin" / "tanji"), "accounting", "--help"], capture_output=True,
                             text=True, cwd=tmp_path)
    assert refused.returncode != 0
    assert "tanji[accounting]" in refused.stdout + refused.stderr


def test_every_subcommand_answers_help() -> None:
    from tanji.cli import SUBCOMMANDS
    for name in SUBCOMMANDS:
        out = subprocess.run([sys.executable, "-m", "tanji", name, "--help"], capture_output=True, text=True,
                             cwd=REPO, timeout=120)
        assert out.returncode == 0, f"tanji {name} --help failed: {out.stderr[-2000:]}"
        assert "usage: tanji" in out.stdout

"""The CLI contract others call (docker, systemd, the demo), and the systemd unit."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys

import pytest

from tanji.cli import build_parser
from tests.gateway.conftest import REPO

UNIT = REPO / "firmware-config" / "systemd" / "tanji-gateway.service"


@pytest.mark.parametrize("argv", [["gateway", "--help"], ["gateway", "status", "--help"]])
def test_help(argv):
    out = subprocess.run([sys.executable, "-m", "tanji", *argv], capture_output=True, text=True, cwd=REPO, check=True)
    assert "--config SITE_FILE" in out.stdout and "--broker HOST:PORT" in out.stdout


def test_systemd_unit_runs_the_cli_contract():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(UNIT)
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/tanji")
    args = build_parser(argv[1:]).parse_args(argv[1:])
    assert (args.command, args.action, args.config) == ("gateway", "run", "/etc/tanji/site.yaml")
    assert service["Restart"] == "always" and service["KillSignal"] == "SIGTERM"
    assert "dialout" in service["SupplementaryGroups"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_unknown_gateway_names_the_choices(tmp_path):
    site = REPO / "firmware-config" / "sites" / "cq-battery.yaml"
    out = subprocess.run([sys.executable, "-m", "tanji", "gateway", "status", "--config", str(site),
                          "--gateway", "gw-nope"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and "gw-cq-01" in out.stderr and "--gateway" in out.stderr

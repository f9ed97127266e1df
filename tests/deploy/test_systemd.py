"""The systemd units in firmware-config/systemd/: valid for systemd, and what docs/deploy.md installs.

`systemd-analyze verify` checks every directive (an unknown key or a key in the wrong section is
a warning systemd ignores silently at boot) and that ExecStart's program exists. The units name
the documented install path, /opt/tanji/venv/bin/tanji; the test shows systemd-analyze that path
in a private mount namespace (a temporary /opt whose tanji/venv/bin/tanji is this checkout's
`tanji`), so the unit files are verified exactly as shipped, and nothing outside temporary
directories is touched. The accounting unit's readiness (Type=notify) is proven end to end in
tests/e2e/test_integrator_path.py.
"""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tanji.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "firmware-config" / "systemd"
DEPLOY = (REPO / "docs" / "deploy.md").read_text()
INSTALL = "/opt/tanji/venv/bin/tanji"
SOURCES = "/opt/tanji/src/"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment]
    parser.read(UNITS / name)
    return parser


def exec_start(name: str) -> list[str]:
    return shlex.split(unit(name)["Service"]["ExecStart"].replace("\\\n", " "))


def test_every_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install -y systemd; bin/test does it)")
    opt = tmp_path / "opt"
    (opt / "tanji" / "venv" / "bin").mkdir(parents=True)
    (opt / "tanji" / "venv" / "bin" / "tanji").symlink_to(REPO / ".venv" / "bin" / "tanji")
    units = sorted(str(p) for p in UNITS.glob("*.service"))
    assert len(units) == 2
    script = f"mount --bind {shlex.quote(str(opt))} /opt && exec {analyze} verify --man=no " + " ".join(units)
    result = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    if "unshare failed" in result.stderr or "Operation not permitted" in result.stderr:
        pytest.skip(f"no private mount namespace here to show systemd /opt/tanji: {result.stderr.strip()}")
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", result.stderr + result.stdout


@pytest.mark.parametrize("name", ["tanji-gateway.service", "tanji-accounting.service"])
def test_units_match_the_documented_installation(name):
    u = unit(name)
    argv = exec_start(name)
    assert argv[0] == INSTALL and f"python3 -m venv {INSTALL.removesuffix('/bin/tanji')}" in DEPLOY
    assert u["Service"]["User"] == "tanji" and u["Service"]["Restart"] == "always"
    # Readings carry the box's clock: the docs require waiting for time-sync.target.
    for key in ("Wants", "After"):
        assert {"time-sync.target", "network-online.target"} <= set(u["Unit"][key].split()), key
    docs = u["Unit"]["Documentation"].split()
    assert docs and all(d.startswith("file://" + SOURCES) and (REPO / d.removeprefix("file://" + SOURCES)).is_file()
                        for d in docs), docs
    assert f"firmware-config/systemd/{name}" in DEPLOY
    args = build_parser(argv[1:]).parse_args(argv[1:])
    assert args.config in ("/etc/tanji/site.yaml", ["/etc/tanji/site.yaml"])


def test_the_gateway_unit_runs_the_gateway():
    args = build_parser(exec_start("tanji-gateway.service")[1:]).parse_args(exec_start("tanji-gateway.service")[1:])
    assert (args.command, args.action) == ("gateway", "run")
    assert "dialout" in unit("tanji-gateway.service")["Service"]["SupplementaryGroups"]


def test_the_accounting_unit_runs_the_production_flags():
    argv = exec_start("tanji-accounting.service")[1:]
    args = build_parser(argv).parse_args(argv)
    assert (args.command, args.action) == ("accounting", "run")
    assert args.api_token_file == "/etc/tanji/secrets/api-token"
    assert args.read_token_file == "/etc/tanji/secrets/read-token"
    assert args.pact_clients == "/etc/tanji/pact-clients.yaml"
    assert (args.tls_cert, args.tls_key) == ("/etc/tanji/tls/server.crt", "/etc/tanji/tls/server.key")
    assert args.broker_tls and args.broker_username == "tanji-accounting"
    service = unit("tanji-accounting.service")["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"

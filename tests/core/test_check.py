"""`tanji check`: what it catches, where it says the mistake is, and a whole deployment at once.

Every case runs the real command (`python -m tanji check ...`) on files written the way an
integrator would write them, and reads what an integrator reads: stderr and the exit status.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SITE = (REPO / "tests" / "core" / "testcases" / "minimal-site.yaml").read_text()
RTU_SITE = SITE.replace(
    "    meters:\n",
    "    buses:\n      - {id: bus-1, device: /dev/ttyUSB0, baudrate: 9600}\n    meters:\n", 1)


def tanji_check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tanji", "check", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_shipped_deployment_checks_clean():
    out = tanji_check(REPO / "firmware-config" / "sites", REPO / "simulators" / "scenarios")
    assert out.returncode == 0, out.stderr
    assert "site cq-battery OK" in out.stdout and "site js-electronics OK" in out.stdout
    assert "scenario of site js-electronics OK" in out.stdout


def test_two_meters_at_one_tcp_address(tmp_path):
    text = SITE.replace("port: 5020, unit_id: 2", "port: 5020, unit_id: 1", 1)
    out = tanji_check(write(tmp_path, "plant.yaml", text))
    assert out.returncode == 2
    second, first = line_of(text, "id: plc,"), line_of(text, "id: incomer,")
    assert f"plant.yaml:{second}: gateways[0].meters[1].unit_id: meter 'plc' is at 127.0.0.1:5020 unit 1, " \
           f"like meter 'incomer' ({tmp_path / 'plant.yaml'}:{first})" in out.stderr
    assert "fix: give each device its own unit id" in out.stderr


def test_two_meters_at_one_rs485_unit_id(tmp_path):
    text = RTU_SITE.replace("host: 127.0.0.1, port: 5020, unit_id: 1", "transport: rtu, bus: bus-1, unit_id: 5", 1)
    text = text.replace("host: 127.0.0.1, port: 5020, unit_id: 2", "transport: rtu, bus: bus-1, unit_id: 5", 1)
    out = tanji_check(write(tmp_path, "plant.yaml", text))
    assert out.returncode == 2
    assert f"plant.yaml:{line_of(text, 'id: plc,')}: gateways[0].meters[1].unit_id: meter 'plc' is at bus " \
           "gw-e2e/bus-1 unit 5, like meter 'incomer'" in out.stderr


def test_a_baud_rate_that_is_not_standard(tmp_path):
    text = RTU_SITE.replace("baudrate: 9600", "baudrate: 9601")
    out = tanji_check(write(tmp_path, "plant.yaml", text))
    assert out.returncode == 2
    assert f"plant.yaml:{line_of(text, 'baudrate')}: gateways[0].buses[0].baudrate: 9601 is not a standard " \
           "baud rate (fix: did you mean 9600?" in out.stderr


def test_a_missing_space_after_a_colon_is_reported_on_its_own_line(tmp_path):
    """PyYAML stops on the next line; the error must name the line to edit."""
    text = SITE.replace("  name: e2e", "  name:e2e", 1)
    out = tanji_check(write(tmp_path, "plant.yaml", text))
    assert out.returncode == 2
    assert f"plant.yaml:{line_of(text, 'name:e2e')}: YAML syntax error" in out.stderr
    assert "space after the colon" in out.stderr


def test_an_unclosed_bracket_is_reported_where_it_opens(tmp_path):
    text = SITE.replace("counter: {meter: plc, channel: units_total}", "counter: {meter: plc, channel: units_total")
    out = tanji_check(write(tmp_path, "plant.yaml", text))
    assert f"plant.yaml:{line_of(text, 'counter: {')}: YAML syntax error" in out.stderr


DUPLICATES = [
    # (what, text with the duplicate, line of the first definition, line of the duplicate, key)
    ("meter", SITE.replace("id: plc,", "id: incomer,", 1), 14, 15, "gateways[0].meters[1].id"),
    ("cost centre", SITE.replace("products:", "  - {id: line, kind: utility}\nproducts:", 1), 17, 18,
     "cost_centres[1].id"),
    ("product", SITE + "  - {id: widget, cost_centre: line, counter: {meter: plc}}\n", 19, 22, "products[1].id"),
    ("gateway", SITE.replace("cost_centres:", "  - id: gw-e2e\n    meters:\n      - {id: m2, role: submeter, "
                                              "cost_centre: line, profile: eastron-sdm630, host: 10.0.0.9}\n"
                                              "cost_centres:", 1), 11, 16, "gateways[1].id"),
]


@pytest.mark.parametrize(("what", "text", "first", "second", "key"), DUPLICATES, ids=[d[0] for d in DUPLICATES])
def test_a_duplicate_id_names_where_it_was_first_defined(tmp_path, what, text, first, second, key):
    path = write(tmp_path, "plant.yaml", text)
    out = tanji_check(path)
    assert out.returncode == 2
    assert f"plant.yaml:{second}: {key}: {what} id " in out.stderr, out.stderr
    assert f"is used twice (first defined at {path}:{first})" in out.stderr


def test_a_whole_deployment_at_once(tmp_path):
    """Every file is checked, and the ids that must be unique across files are."""
    (tmp_path / "sites").mkdir()
    a = write(tmp_path / "sites", "a.yaml", SITE.replace("id: e2e-site", "id: plant-a"))
    b_text = SITE.replace("id: e2e-site", "id: plant-b").replace("spool_path: spool.sqlite",
                                                               "spool_path: spool-b.sqlite")
    b = write(tmp_path / "sites", "b.yaml", b_text)
    c = write(tmp_path / "sites", "c.yaml", SITE.replace("id: e2e-site", "id: plant-a")
              .replace("id: gw-e2e", "id: gw-c").replace("ct_ratio: 40", "ct_ratio: -1"))
    d = write(tmp_path, "d.yaml", SITE.replace("id: e2e-site", "id: plant-a").replace("id: gw-e2e", "id: gw-d"))
    out = tanji_check(tmp_path / "sites", d)
    assert out.returncode == 2
    gw_line = line_of(b_text, "id: gw-e2e")
    # b's gateway has a's gateway's id: one broker user for two boxes.
    assert f"{b}:{gw_line}: gateways[0].id: gateway id 'gw-e2e' is also a gateway of site plant-a ({a}:{gw_line})" \
        in out.stderr
    # c is wrong on its own, and is still reported alongside the others.
    assert f"{c}:14: gateways[0].meters[0].ct_ratio: must be > 0" in out.stderr
    # d repeats a's site id.
    assert f"{d}:2: site.id: site id 'plant-a' is also the id of the site in {a}:2" in out.stderr
    assert "3 error(s)" in out.stderr
    assert f"{a}: site plant-a OK" in out.stdout


def test_a_profile_given_next_to_a_site_is_used_by_it(tmp_path):
    profile = (REPO / "firmware-config" / "profiles" / "eastron-sdm630.yaml").read_text()
    new_profile = write(tmp_path, "my-meter.yaml", profile.replace("model: eastron-sdm630", "model: my-meter"))
    site = write(tmp_path, "plant.yaml", SITE.replace("profile: eastron-sdm630", "profile: my-meter"))
    assert tanji_check(site).returncode == 2
    out = tanji_check(site, new_profile)
    assert out.returncode == 0, out.stderr
    assert "meter profile my-meter OK" in out.stdout

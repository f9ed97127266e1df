"""Scenario files: both shipped plants load, and mistakes are reported with file, line and fix."""

from __future__ import annotations

import pytest

from simulators.scenario import load_scenario
from tanji.errors import ConfigError
from tests.simulators.conftest import REPO, SITES

SCENARIOS = REPO / "simulators" / "scenarios"


def test_shipped_scenarios_describe_their_site_files():
    cq = load_scenario(SCENARIOS / "cq-battery.yaml")
    js = load_scenario(SCENARIOS / "js-electronics.yaml")
    assert cq.site.id == "cq-battery" and cq.site.gateways[0].id == "gw-cq-01"
    assert js.site.grid_region == "East" and any(m.role == "pv" for m in js.site.meters)
    assert {m.transport for m in js.site.meters} == {"tcp", "rtu"}


def test_a_site_file_alone_is_a_plant_with_default_behaviour():
    assert load_scenario(SITES / "cq-battery.yaml").meters == {}


@pytest.mark.parametrize(("body", "line", "words"), [
    ("meters:\n  no-such-meter: {base_kw: 3}\n", 3, "no meter 'no-such-meter'"),
    ("meters:\n  incomer: {base_kwh: 3}\n", 3, "unknown key"),
    ("lines:\n  line-a: {shifts: ['8-16']}\n", 3, "not a shift"),
    ("faults:\n  - {meter: incomer, kind: meltdown, at_s: 5}\n", 3, "unknown fault"),
    ("faults:\n  - {meter: incomer, kind: counter_reset, at_s: 5, duration_s: 9}\n", 3, "no duration"),
    ("step_s: 7\n", 2, "divide an hour"),
])
def test_errors_name_file_line_and_fix(tmp_path, body, line, words):
    path = tmp_path / "bad.yaml"
    path.write_text(f"site: {SITES / 'cq-battery.yaml'}\n" + body)
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert caught.value.file == str(path)
    assert caught.value.line == line
    assert words in str(caught.value)
    assert caught.value.fix

"""Bad config files name the file, the line, the key and the fix (table-driven)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tanji.errors import ConfigError
from tanji.profile import load_profiles
from tanji.site import load_site, parse_site_text

REPO = Path(__file__).resolve().parents[2]
SITE = (REPO / "tests" / "core" / "testcases" / "minimal-site.yaml").read_text()

# (replace this, with that) → error expected: line, key, words in the problem, words in the fix
CASES = [
    ("poll_period_s: 1", "pol_period_s: 1", 14, "gateways[0].meters[0].pol_period_s", "unknown key", "poll_period_s"),
    ("profile: eastron-sdm630", "profile: eastron-sdm63", 14, "gateways[0].meters[0].profile", "no meter profile", "eastron-sdm630"),
    ("ct_ratio: 40", "ct_ratio: -40", 14, "gateways[0].meters[0].ct_ratio", "must be > 0", "positive"),
    ("role: grid_import", "role: grid-import", 14, "gateways[0].meters[0].role", "unknown value", "grid_import"),
    ("  id: e2e-site", "  id: e2e site", 2, "site.id", "not a valid id", "letters, digits"),
    ("cost_centre: line, profile: generic", "cost_centre: nowhere, profile: generic", 15,
     "gateways[0].meters[1].cost_centre", "no cost centre", "cost_centres"),
    ("port: 1883", "port: 'x'", 9, "broker.port", "expected integer", "integer"),
    ("matching_mode: annual", "matching_mode: yearly", 5, "site.matching_mode", "unknown value", "annual"),
    ("remainder_key: units", "remainder_key: energy", 7, "site.remainder_key", "no production line has a submeter",
     "remainder_key: units"),
    ("channel: units_total", "channel: units", 21, "products[0].counter", "has no 'units'", "units_total"),
    ("  name: e2e", "  name: e2e\n  timezone: Asia/Beijing", 4, "site.timezone", "unknown time zone", "IANA"),
    # energy is booked in whole UTC hours: a half-hour zone's days would not start on one
    ("  name: e2e", "  name: e2e\n  timezone: Asia/Kolkata", 4, "site.timezone", "not whole hours", "whole-hour"),
    # A role is counted by the counters of its flows (tanji.roles): a PLC counts no grid energy.
    ("role: grid_import, profile: eastron-sdm630", "role: grid_import, profile: generic-plc-counter", 14,
     "gateways[0].meters[0].profile", "maps no counter a grid_import meter", "energy_import_kwh"),
]


@pytest.mark.parametrize(("old", "new", "line", "key", "problem", "fix"), CASES)
def test_site_error_names_file_line_key_and_fix(old, new, line, key, problem, fix):
    assert old in SITE
    with pytest.raises(ConfigError) as err:
        parse_site_text(SITE.replace(old, new, 1), "plant.yaml")
    e = err.value
    assert (e.file, e.line, e.key) == ("plant.yaml", line, key)
    assert problem in e.problem
    assert fix in (e.fix or "")
    assert str(e).startswith(f"plant.yaml:{line}: {key}: ")


def test_yaml_syntax_error_names_the_line():
    with pytest.raises(ConfigError) as err:
        parse_site_text(SITE.replace("  name: e2e", "  name: [e2e", 1), "plant.yaml")
    assert err.value.line is not None and "YAML syntax error" in err.value.problem


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read the file"):
        load_site(tmp_path / "nope.yaml")


def test_profile_unit_mismatch_is_explained(tmp_path):
    text = (REPO / "firmware-config" / "profiles" / "eastron-sdm630.yaml").read_text()
    (tmp_path / "p.yaml").write_text(text.replace("scale: 0.001, unit: kW,", "unit: W,", 1))
    with pytest.raises(ConfigError) as err:
        load_profiles(tmp_path)
    assert "power_kw is in kW, not W" in err.value.problem and "scale" in err.value.fix


def test_every_shipped_profile_and_site_file_parses():
    profiles = load_profiles()
    assert "eastron-sdm630" in profiles
    sdm = profiles["eastron-sdm630"]
    energy = sdm.register("energy_import_kwh")
    assert (energy.address, energy.data_type, energy.order, energy.function) == (72, "float32", "ABCD", "input")
    sites = sorted((REPO / "firmware-config" / "sites").glob("*.yaml"))
    assert sites
    for path in sites:
        site = load_site(path, profiles)
        assert site.meters and any(m.role == "grid_import" for m in site.meters)

"""Meter replacement records in the site file: parsed per meter, in the site's time, checked
with file/line/fix errors, shown by `tanji check`, and handed to the engine's topology."""

from __future__ import annotations

from pathlib import Path

import pytest

from accounting.site_topology import site_topology
from tanji.check import check
from tanji.errors import ConfigError
from tanji.replacements import MeterReplacement
from tanji.site import parse_site_text

REPO = Path(__file__).resolve().parents[2]
SITE = (REPO / "tests" / "core" / "testcases" / "minimal-site.yaml").read_text()
PLC = "      - {id: plc, role: production_counter, cost_centre: line, profile: generic-plc-counter, host: 127.0.0.1, port: 5020, unit_id: 2, poll_period_s: 1}\n"
INCOMER = "      - {id: incomer, role: grid_import, profile: eastron-sdm630, host: 127.0.0.1, port: 5020, unit_id: 1, ct_ratio: 40, poll_period_s: 1}\n"
BLOCK = """      - id: plc
        role: production_counter
        cost_centre: line
        profile: generic-plc-counter
        host: 127.0.0.1
        port: 5020
        unit_id: 2
        poll_period_s: 1
        replacements:
{records}"""
LINE = SITE.splitlines().index(PLC.rstrip("\n")) + 1  # the plc block's first line


def site_with(records: str, text: str = SITE) -> str:
    assert PLC in text
    return text.replace(PLC, BLOCK.format(records=records), 1)


def test_replacements_are_read_in_site_time_and_reach_the_topology():
    site = parse_site_text(site_with(
        "          - {at: 2026-07-01T10:30:00, old_final: {units_total: 11507}, new_initial: {units_total: 0},"
        " note: PLC swapped after the fire}\n"
        "          - {at: '2026-06-01T00:00:00+00:00', old_final: {units_total: 500, units_rejected_total: 3},"
        " new_initial: {units_total: 20, units_rejected_total: 0}}\n"))
    [plc] = [m for m in site.meters if m.id == "plc"]
    # sorted by time; a time without offset is the site's (Asia/Shanghai, the default: UTC+8)
    assert plc.replacements == (MeterReplacement(1_780_272_000_000, {"units_total": 500.0, "units_rejected_total": 3.0},
                                                 {"units_total": 20.0, "units_rejected_total": 0.0}),
                                MeterReplacement(1_782_873_000_000, {"units_total": 11507.0}, {"units_total": 0.0}))
    topo = site_topology(site)
    assert topo.meter("plc").replacements == plc.replacements
    assert topo.meter("incomer").replacements == ()


def test_a_meter_with_several_counters_names_its_registers():
    text = SITE.replace(INCOMER, INCOMER.rstrip("}\n") + ", replacements: [{at: 2026-07-01, "
                        "old_final: {energy_import_kwh: 84211.5, energy_export_kwh: 3.25}, "
                        "new_initial: {energy_import_kwh: 0.5, energy_export_kwh: 0}}]}\n", 1)
    site = parse_site_text(text)
    [incomer] = [m for m in site.meters if m.id == "incomer"]
    [r] = incomer.replacements
    assert r.old_final == {"energy_import_kwh": 84211.5, "energy_export_kwh": 3.25}
    assert r.new_initial == {"energy_import_kwh": 0.5, "energy_export_kwh": 0.0}
    with pytest.raises(ConfigError) as err:
        parse_site_text(SITE.replace(INCOMER, INCOMER.rstrip("}\n") + ", replacements: [{at: 2026-07-01, "
                                     "old_final: 84211.5, new_initial: 0}]}\n", 1), "plant.yaml")
    assert (err.value.line, err.value.key) == (14, "gateways[0].meters[0].replacements[0].old_final")
    assert "energy_import_kwh, energy_export_kwh" in err.value.problem
    assert "{energy_import_kwh: 1234.5, energy_export_kwh: 1234.5}" in err.value.fix


R = LINE + 9  # the first record's line
U1, U0 = "{units_total: 1}", "{units_total: 0}"
# (record, line, key, words in the problem, words in the fix)
BAD = [
    (f"{{old_final: {U1}, new_initial: {U0}}}", R, "replacements[0].at", "needs the time", "at: 2026-07-01T10:30:00"),
    (f"{{at: yesterday, old_final: {U1}, new_initial: {U0}}}", R, "replacements[0].at", "not a date", "2026-07-01"),
    (f"{{at: 2026-07-01, new_initial: {U0}}}", R, "replacements[0].old_final", "required key is missing", "old_final"),
    (f"{{at: 2026-07-01, old_final: {{units_total: -1}}, new_initial: {U0}}}", R, "replacements[0].old_final",
     "not a register value", "display"),
    (f"{{at: 2026-07-01, old_final: {{units_total: .inf}}, new_initial: {U0}}}", R, "replacements[0].old_final",
     "not a register value", "display"),
    (f"{{at: 2026-07-01, old_final: {{units: 1}}, new_initial: {U0}}}", R, "replacements[0].old_final.units",
     "no counter units", "units_total"),
    (f"{{at: 2026-07-01, old_final: {U1}, new_initial: {U0}, by: Li}}", R, "replacements[0].by", "unknown key", "note"),
    (f"{{at: 2026-07-01, old_final: {U1}, new_initial: x}}", R, "replacements[0].new_initial", "expected number",
     "new_initial"),
    ("{at: 2026-07-01, old_final: 1, new_initial: 0}", R, "replacements[0].old_final",
     "counted by units_total, units_rejected_total", "{units_total: 1234.5, units_rejected_total: 1234.5}"),
    (f"{{at: 2026-07-01, old_final: {{units_total: 1, units_rejected_total: 0}}, new_initial: {U0}}}", R,
     "replacements[0].new_initial", "old_final gives units_rejected_total, units_total", "same registers"),
]


@pytest.mark.parametrize(("record", "line", "key", "problem", "fix"), BAD)
def test_a_bad_record_names_file_line_key_and_fix(record, line, key, problem, fix):
    with pytest.raises(ConfigError) as err:
        parse_site_text(site_with(f"          - {record}\n"), "plant.yaml")
    e = err.value
    assert (e.file, e.line, e.key) == ("plant.yaml", line, f"gateways[0].meters[1].{key}"), str(e)
    assert problem in e.problem and fix in (e.fix or ""), str(e)


def test_two_records_at_one_instant_are_refused_naming_both():
    with pytest.raises(ConfigError) as err:
        parse_site_text(site_with(f"          - {{at: 2026-07-01T08:00:00+08:00, old_final: {U1}, new_initial: {U0}}}\n"
                                  f"          - {{at: 2026-07-01T00:00:00Z, old_final: {U1}, new_initial: {U0}}}\n"),
                        "plant.yaml")
    assert err.value.line == R + 1 and f"plant.yaml:{R}" in err.value.problem


def test_tanji_check_shows_the_records(tmp_path):
    path = tmp_path / "plant.yaml"
    path.write_text(site_with("          - {at: 2026-07-01T10:30:00, old_final: {units_total: 11507},"
                              " new_initial: {units_total: 0}}\n"))
    report = check([str(path)])
    assert not report.errors
    assert f"{path}:   meter plc replaced at 2026-07-01T10:30:00+08:00: units_total 11507 -> 0 (old final -> new initial)" \
        in report.lines

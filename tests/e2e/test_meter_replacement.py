"""A meter replaced mid-run, every part a real process (issue #14, ACCOUNTING.md §1).

`tanji simulate` runs a scenario whose incomer is swapped (fault `replace`: the new meter
reads 12.0 kWh where the old one read ~5,000) → `tanji gateway` → real Mosquitto → `tanji
accounting` on the embedded SQLite store. Without a record the step is a glitch for the gap
threshold, then `rebased` (nothing booked for it) with a `counter_step_back` alarm. The
technician's record (the simulator's ground truth of both meters' displays) is then added to
the site file and the service restarted, as docs/accounting.md tells an operator: the
checkpoint no longer fits the topology, the engine is rebuilt from the store, and the
consumption is exactly (old final − first reading) + (last reading − new initial).
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.test_walking_skeleton import (
    _get_json,
    _stop,
    _tanji,
    _wait_clear_of_hour_boundary,
    _wait_ready,
)
from tests.services import free_port, wait_for_port

SITE = """
site:
  id: swap-site
  name: Meter swap plant
  province: Chongqing
  matching_mode: annual
  factor_dataset: cn-electricity-carbon-footprint@2023
broker: {{host: 127.0.0.1, port: {broker_port}}}
gateways:
  - id: gw-swap
    spool_path: {spool}
    publish_interval_s: 0.2
    meters:
      - {{id: incomer, role: grid_import, profile: eastron-sdm630, host: 127.0.0.1, port: {meter_port}, unit_id: 1, ct_ratio: 40, poll_period_s: 0.5{record}}}
      - {{id: line-meter, role: submeter, cost_centre: line, profile: eastron-sdm630, host: 127.0.0.1, port: {meter_port}, unit_id: 2, ct_ratio: 20, poll_period_s: 0.5}}
      - {{id: plc, role: production_counter, cost_centre: line, profile: generic-plc-counter, host: 127.0.0.1, port: {meter_port}, unit_id: 3, poll_period_s: 0.5}}
cost_centres:
  - {{id: line, kind: production, name: Assembly line}}
products:
  - {{id: widget, name: Widget, cost_centre: line, counter: {{meter: plc, channel: units_total}}}}
"""
# The incomer starts at 5,000 kWh and is swapped SWAP_AT_S plant seconds after the simulator
# starts (time enough for the gateway to start polling) for a meter reading 12.0 kWh.
SCENARIO = """
site: site.yaml
seed: 5
meters:
  incomer: {initial: 5000.0}
faults:
  - {meter: incomer, kind: replace, at_s: 20, initial: 12.0}
"""
IMPORT = "energy_import_kwh"
EXPORT = "energy_export_kwh"
GAP_MS = 3 * 500  # the engine's gap threshold: 3 polls


def _accounting(site_file: Path, tmp_path: Path, http: int, log: str):  # noqa: ANN202
    return _tanji(["accounting", "--config", str(site_file), "--client-id", "acc-swap",
                   "--store", f"sqlite:{tmp_path / 'tanji.sqlite'}", "--state-dir", str(tmp_path / "state"),
                   "--http-port", str(http)], tmp_path / log)


def _incomer(db_path: Path, good: bool = False, channel: str = IMPORT) -> list[tuple[int, float]]:
    """The incomer's stored import readings; with `good`, only those the engine counts (the row's
    quality unless its value_quality names the register: the gateway marks the first reading
    after the drop `counter_reset_suspected`)."""
    db = sqlite3.connect(db_path)
    try:
        rows = list(db.execute(f"SELECT ts_ms, {channel}, quality, value_quality FROM readings WHERE meter = 'incomer' "
                               f"AND {channel} IS NOT NULL ORDER BY ts_ms"))
    finally:
        db.close()
    return [(t, x) for t, x, q, vq in rows
            if not good or (json.loads(vq).get(channel, q) if vq else q) == "good"]


def _drop(rows: list[tuple[int, float]]) -> int | None:
    return next((k for k in range(1, len(rows)) if rows[k][1] < rows[k - 1][1]), None)


def _import_flags(http: int, lo: int, hi: int) -> list[tuple[int, float, list[str]]]:
    """The incomer import readings the energy step flagged, leaving out `gap_spread` (a poll
    delayed by the machine's load, not what is tested here)."""
    flags = _get_json(f"http://127.0.0.1:{http}/api/v1/meters/incomer/flags?start={lo}&end={hi}")
    [imp] = [c for c in flags["channels"] if c["channel"] == IMPORT]
    out = [(f["ts_ms"], f["value"], [n for n in f["flags"] if n != "gap_spread"]) for f in imp["flagged"]]
    return [(t, x, names) for t, x, names in out if names]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_replaced_meter_books_exactly_with_its_record_and_is_rebased_without(tmp_path, mosquitto):
    _wait_clear_of_hour_boundary(240)
    meter_port, http = free_port(), free_port()
    site_file = tmp_path / "site.yaml"
    fields = {"broker_port": mosquitto.port, "meter_port": meter_port, "spool": tmp_path / "spool.sqlite"}
    site_file.write_text(SITE.format(**fields, record=""))
    (tmp_path / "scenario.yaml").write_text(SCENARIO)
    db_path = tmp_path / "tanji.sqlite"
    procs = []
    try:
        # 1. The plant runs; the incomer is swapped with nothing recorded yet.
        accounting = _accounting(site_file, tmp_path, http, "accounting-1.log")
        procs.append(accounting)
        _wait_ready(http, 120)
        sim = _tanji(["simulate", str(tmp_path / "scenario.yaml"), "--truth-out", str(tmp_path / "truth.json")],
                     tmp_path / "simulate.log")
        procs.append(sim)
        wait_for_port(meter_port)
        gateway = _tanji(["gateway", "--config", str(site_file)], tmp_path / "gateway.log")
        procs.append(gateway)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            rows = _incomer(db_path) if db_path.exists() else []
            k = _drop(rows)
            if k is not None and len(rows) - k >= 12:
                break
            time.sleep(1)
        else:
            pytest.fail(f"no replacement seen in the stored readings: {len(rows)} incomer readings")
        _stop(gateway)  # it flushes its spool: every reading polled is stored
        assert gateway.returncode == 0, (tmp_path / "gateway.log").read_text()[-3000:]
        _stop(sim)  # writes the ground truth: the replacement with both meters' displays
        _stop(accounting)
        assert accounting.returncode == 0, (tmp_path / "accounting-1.log").read_text()[-3000:]

        stored = _incomer(db_path)
        first_new = _drop(stored)
        assert first_new is not None and first_new >= 5, f"the gateway polled the old meter {first_new} times"
        assert _drop(stored[first_new:]) is None  # one step only
        # the technician's time of the swap: between the old meter's last poll and the new one's first
        swap_ms = (stored[first_new - 1][0] + stored[first_new][0]) // 2
        rows = _incomer(db_path, good=True)
        k = next(j for j, (t, _) in enumerate(rows) if t > swap_ms)  # the first the engine counts
        [swap] = [e for e in json.loads((tmp_path / "truth.json").read_text())["events"] if e["kind"] == "replace"]
        old_final, new_initial = swap["params"]["old_final"], swap["params"]["new_initial"]
        assert new_initial[IMPORT] == 12.0 and old_final[IMPORT] > 5000.0
        ts = [t for t, _ in rows]
        v = [x for _, x in rows]
        lo, hi = ts[0] - ts[0] % 3_600_000, ts[-1] + 1
        assert lo + 3_600_000 > ts[-1], "the run stays inside one hour"

        # 2. Without the record: a glitch for the gap threshold, then rebased; an alarm.
        accounting = _accounting(site_file, tmp_path, http, "accounting-2.log")
        procs.append(accounting)
        _wait_ready(http, 120)
        r = next(j for j in range(k, len(ts)) if ts[j] - ts[k - 1] > GAP_MS)
        flagged = [(t, f) for t, _, f in _import_flags(http, lo, hi)]
        assert flagged == [(ts[j], ["implausible"]) for j in range(k, r)] + [(ts[r], ["rebased"])]
        [fp] = _get_json(f"http://127.0.0.1:{http}/api/v1/footprints")
        unrecorded = (v[k - 1] - v[0]) + (v[-1] - v[r])  # the step and the glitch span: not booked
        assert fp["energy_kwh"] == pytest.approx(unrecorded, rel=1e-9)
        alarms = _get_json(f"http://127.0.0.1:{http}/api/v1/alarms?state=all")
        assert any(a["kind"] == "counter_step_back" and a["subject"] == f"incomer/{IMPORT}" for a in alarms), alarms
        _stop(accounting)

        # 3. The technician's record reaches the energy manager: into the site file, restart.
        at = datetime.fromtimestamp(swap_ms / 1000, UTC).isoformat(timespec="milliseconds")
        record = (f", replacements: [{{at: '{at}', old_final: {{{', '.join(f'{c}: {x!r}' for c, x in old_final.items())}}}, "
                  f"new_initial: {{{', '.join(f'{c}: {x!r}' for c, x in new_initial.items())}}}}}]")
        site_file.write_text(SITE.format(**fields, record=record))
        check = _tanji(["check", str(site_file)], tmp_path / "check.log")
        assert check.wait(60) == 0, (tmp_path / "check.log").read_text()
        assert "meter incomer replaced at" in (tmp_path / "check.log").read_text()
        accounting = _accounting(site_file, tmp_path, http, "accounting-3.log")
        procs.append(accounting)
        _wait_ready(http, 120)
        assert "rebuilding from the store" in (tmp_path / "accounting-3.log").read_text()
        assert _import_flags(http, lo, hi) == [(ts[k], v[k], ["replaced"])]
        [fp] = _get_json(f"http://127.0.0.1:{http}/api/v1/footprints")
        # the hand calculation, per register: (old final − first reading) + (last reading − new
        # initial); consumption is import − export (the new meter's export register reads
        # 12.0000005 as a float32: 5e-7 kWh booked)
        exported = _incomer(db_path, good=True, channel=EXPORT)
        exact_import = (old_final[IMPORT] - v[0]) + (v[-1] - new_initial[IMPORT])
        exact_export = (old_final[EXPORT] - exported[0][1]) + (exported[-1][1] - new_initial[EXPORT])
        assert 0 <= exact_export < 1e-6
        exact = exact_import - exact_export
        assert fp["energy_kwh"] == pytest.approx(exact, rel=1e-9)
        # what the glitch span and the step had lost: the new meter's first readings' energy and
        # the old meter's last, about 1.5 s of the incomer's load
        assert exact_import - unrecorded == pytest.approx(
            (old_final[IMPORT] - v[k - 1]) + (v[r] - new_initial[IMPORT]), rel=1e-9)
        _stop(accounting)
        assert accounting.returncode == 0
    finally:
        for proc in reversed(procs):
            _stop(proc)

"""Every shipped site file and scenario runs end to end, as Telegraf tests its sample configs.

For each of firmware-config/sites/*.yaml, docker/sites/*.yaml and simulators/scenarios/*.yaml:
`tanji check` accepts it (a real process, as an integrator runs it); the gateway's read plan
reads every register of every meter; accounting maps it to an engine topology in which every
meter brings its counters; then the plant runs for a few seconds the way `tanji demo` runs it
(`demo.stack`: simulated meters, RS-485 buses over a pty pair, gateway, broker, accounting)
and the footprints must be there and agree with each other and with the site's balance.

A site file with no scenario runs with the simulators' default behaviour. Plant time starts
at 10:00 site time, so a plant whose lines work day shifts produces whenever the suite runs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from accounting.factors.selection import dataset_for, effective_matching_mode
from accounting.site_topology import site_topology
from demo.stack import DemoStack
from gateway.read_plan import plan_for_profile
from simulators.scenario import Scenario, load_scenario
from tanji.site import Site, load_site

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted([*REPO.glob("firmware-config/sites/*.yaml"), *REPO.glob("docker/sites/*.yaml"),
                  *REPO.glob("simulators/scenarios/*.yaml")])
HOUR_MS = 3_600_000


def _scenario(path: Path) -> Scenario:
    return load_scenario(path) if path.parent.name == "scenarios" else Scenario(site=load_site(path))


def _plant_start_s(site: Site) -> float:
    """Today, 10:00 at the site: every shipped plant's lines run then, and the sun shines."""
    tz = ZoneInfo(site.timezone)
    return datetime.now(tz).replace(hour=10, minute=0, second=0, microsecond=0).timestamp()


def _wait(condition, timeout_s: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout_s:g} s")
        time.sleep(0.2)


def test_every_shipped_kind_is_covered() -> None:
    kinds = {p.parent.name for p in SHIPPED}
    assert kinds == {"sites", "scenarios"} and len(SHIPPED) >= 5, SHIPPED


@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_config_runs_from_check_to_footprints(path: Path, tmp_path: Path) -> None:
    checked = subprocess.run([sys.executable, "-m", "tanji", "check", str(path)], capture_output=True,
                             text=True, cwd=REPO, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    scenario = _scenario(path)
    site = scenario.site

    for meter in site.meters:  # the gateway's read plan reads every register, once
        planned = [r.name for req in plan_for_profile(meter.profile) for r in req.registers]
        assert sorted(planned) == sorted(r.name for r in meter.profile.registers), meter.id

    topology = site_topology(site)  # accounting's view: every meter counts something
    for meter in site.meters:
        assert topology.meter(meter.id).counter_channels, f"{meter.id} brings no counter to the books"

    started_ms = int(time.time() * 1000)
    with DemoStack(scenario, tmp_path, plant_start_s=_plant_start_s(site)) as stack:
        service = stack.service
        assert service is not None

        def running() -> bool:
            meters = service.meter_status(site.id)
            fps = service.footprints(site.id, start_ms=started_ms - started_ms % HOUR_MS, end_ms=2**62)
            return (all(m["readings"] >= 3 for m in meters) and len(fps) == len(site.products)
                    and all(f["units"] > 0 and f["energy_kwh"] > 0 for f in fps))

        _wait(running, 120, "readings from every meter and units and energy for every product")
        service.pipeline.stop()  # nothing moves from here on: the checks below see one state
        lo = started_ms - started_ms % HOUR_MS
        hi = int(time.time() * 1000) // HOUR_MS * HOUR_MS + HOUR_MS
        fps = service.footprints(site.id, start_ms=lo, end_ms=hi)
        series = service.hourly_series(site.id, lo, hi)
        meters = service.meter_status(site.id)
        stats = service.stats.to_dict()
        stored = service.store.count_readings(site.id)

    dataset = dataset_for(site)
    assert {f["product_id"] for f in fps} == {p.id for p in site.products}
    for f in fps:
        assert f["units"] > 0 and f["energy_kwh"] > 0 and f["kgco2e_location"] > 0, f
        assert f["kgco2e_per_unit_location"] == pytest.approx(f["kgco2e_location"] / f["units"])
        assert f["kgco2e_per_unit_market"] == pytest.approx(f["kgco2e_market"] / f["units"])
        assert f["share_metered"] + f["share_allocated"] + f["share_estimated"] == pytest.approx(1.0)
        assert f["dataset_id"] == dataset.dataset_id and f["matching_mode"] == effective_matching_mode(site)
    # The products carry the energy the site balance allocated, hour by hour: nothing made up.
    assert sum(f["energy_kwh"] for f in fps) == pytest.approx(sum(h["allocated_kwh"] for h in series), rel=1e-6)
    for h in series:
        assert h["allocated_kwh"] + h["unallocated_kwh"] == pytest.approx(h["consumption_kwh"], abs=1e-6)
    # Every meter answered, RS-485 ones over the demo's own pty pair included; nothing was refused.
    assert all(m["readings"] >= 3 and m["last_quality"] == "good" for m in meters), meters
    assert stats["quarantined"] == 0 and stats["accepted"] == stored > 0, stats

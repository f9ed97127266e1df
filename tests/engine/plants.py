"""Generated plants and readings for the property tests."""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import strategies as st

from accounting.instruments import (
    GecLedger,
    GreenCertificate,
    GreenPowerContract,
    InstrumentPortfolio,
)
from accounting.topology import CostCentre, Meter, Product, SiteTopology
from tanji.replacements import MeterReplacement

T0 = 1_740_787_200_000  # 2025-03-01T00:00:00Z
H = 3_600_000


@dataclass
class Scenario:
    topology: SiteTopology
    readings: list  # [(meter, channel, ts_ms, value)] in time order per channel
    portfolio: InstrumentPortfolio | None
    n_hours: int


def _series(rng: random.Random, n_hours: int, poll_s: int, rate: float, *, resets: bool,
            rollover: float) -> list[tuple[int, float]]:
    """A cumulative counter: irregular polls, occasional long gaps, resets and rollovers."""
    t = T0 + rng.randrange(0, 10) * 60_000
    value = rng.uniform(0, rollover * 0.95) if rollover else rng.uniform(0, 1000)
    out = [(t, round(value, 3))]
    end = T0 + n_hours * H
    while True:
        step = poll_s * 1000 * (rng.choice([1, 1, 1, 2]) if rng.random() > 0.05 else rng.randint(4, 40))
        t += step + rng.randrange(-5, 5) * 1000
        if t >= end:
            return out
        value += rate * step / H * rng.uniform(0, 1.2)
        if rollover and value >= rollover:
            value -= rollover
        if resets and rng.random() < 0.02:
            value = rng.uniform(0, 3)
        out.append((t, round(value, 3)))


def _replaced(rng: random.Random, out: list[tuple[int, float]]) -> tuple[list[tuple[int, float]], MeterReplacement]:
    """The series with its meter replaced between two readings: the old register's final value
    lies between them, the new meter starts anywhere (below or above the old baseline) and
    counts on from there; sometimes the record disagrees with the readings."""
    i = rng.randrange(1, len(out) - 1)
    (t0, v0), (t1, v1) = out[i - 1], out[i]
    at = rng.randint(t0 + 1, t1)
    old_final = round(rng.uniform(v0, max(v0, v1)), 3)
    new_initial = round(rng.choice([0.0, rng.uniform(0, 50), v0 + rng.uniform(0, 500)]), 3)
    shifted = out[:i] + [(t, round(max(0.0, v - old_final + new_initial), 3)) for t, v in out[i:]]
    if rng.random() < 0.1:  # a record that does not fit: the new meter's reading below its initial
        new_initial += 1000.0
    return shifted, MeterReplacement(at, {"energy_import_kwh": old_final}, {"energy_import_kwh": new_initial})


@st.composite
def scenarios(draw, *, instruments: bool = True) -> Scenario:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    n_lines = draw(st.integers(1, 3))
    n_util = draw(st.integers(0, 2))
    n_hours = draw(st.integers(1, 6))
    mode = draw(st.sampled_from(["annual", "monthly", "hourly"]))
    # T0 is 2025-03-01T00:00Z: in New York the first hours are still February (a month and,
    # in monthly matching, a window boundary inside the scenario); Berlin and Beijing are in March
    timezone = draw(st.sampled_from(["Asia/Shanghai", "America/New_York", "Europe/Berlin"]))
    poll = rng.choice([60, 300, 900])
    lines = [f"L{i}" for i in range(n_lines)]
    ccs = [CostCentre(line) for line in lines]
    for u in range(n_util):
        key = rng.choice(["energy", "units", "fixed"])
        shares = {line: rng.uniform(0.1, 1) for line in lines} if key == "fixed" else {}
        ccs.append(CostCentre(f"U{u}", kind="utility", allocation_key=key, allocation_shares=shares,
                              key_uncertainty_pct=rng.choice([0.0, 5.0, 10.0])))
    has_export = rng.random() < 0.5
    has_pv = rng.random() < 0.5
    meters = [Meter("main", "grid_import",
                    ("energy_import_kwh", "energy_export_kwh") if has_export else ("energy_import_kwh",),
                    accuracy_class_pct=0.5, poll_period_s=poll, max_power_kw=5000.0,
                    rollover_kwh=rng.choice([0.0, 0.0, 100_000.0]))]
    if has_pv:
        meters.append(Meter("pv", "pv", ("energy_import_kwh",), poll_period_s=poll))
    series: dict[str, list[tuple[int, float]]] = {}
    for cc in ccs:
        if cc.kind == "utility" or rng.random() < 0.8:
            meter_id = f"m-{cc.cost_centre_id}"
            rate = rng.uniform(20, 150)
            readings_of = _series(rng, n_hours, poll, rate, resets=True, rollover=0.0)
            replacements = ()
            if len(readings_of) > 3 and rng.random() < 0.4:
                readings_of, replacement = _replaced(rng, readings_of)
                replacements = (replacement,)
            series[meter_id] = readings_of
            meters.append(Meter(meter_id, "submeter", ("energy_import_kwh",),
                                cost_centre=cc.cost_centre_id, poll_period_s=poll,
                                accuracy_class_pct=rng.choice([0.5, 1.0, 2.0]),
                                replacements=replacements))
    products = []
    for line in lines:
        for j in range(rng.randint(1, 2)):
            pid = f"{line}-p{j}"
            meters.append(Meter(f"plc-{pid}", "production_counter", ("units_total",),
                                cost_centre=line, poll_period_s=poll))
            key = rng.choice(["units", "mass", "standard_time"])
            products.append(Product(pid, line=line, units_meter=f"plc-{pid}", allocation_key=key,
                                    key_per_unit=1.0 if key == "units" else rng.uniform(0.2, 5),
                                    key_uncertainty_pct=rng.choice([0.0, 3.0])))
    topo = SiteTopology(site_id=f"site-{seed}", grid_region=rng.choice(["East", "Southwest"]),
                        meters=tuple(meters), cost_centres=tuple(ccs), products=tuple(products),
                        matching_mode=mode, timezone=timezone, remainder_key=rng.choice(["energy", "units", "fixed"]),
                        remainder_shares={line: rng.uniform(0.1, 1) for line in lines},
                        remainder_key_uncertainty_pct=rng.choice([0.0, 10.0]))
    readings = []
    for m in meters:
        for ch in m.counter_channels:
            if m.role == "grid_import":
                rate = 400.0 if ch == "energy_import_kwh" else 30.0
            elif m.role == "pv":
                rate = 80.0
            elif m.role == "production_counter":
                rate = rng.choice([0.0, 20.0, 100.0])
            else:
                for t, v in series[m.meter_id]:
                    readings.append((m.meter_id, ch, t, v))
                continue
            for t, v in _series(rng, n_hours, poll, rate, resets=m.role != "grid_import",
                                rollover=m.rollover_kwh):
                readings.append((m.meter_id, ch, t, v))
    portfolio = None
    if instruments:
        ledger = GecLedger()
        portfolio = InstrumentPortfolio(topo.site_id, ledger)
        certs = [GreenCertificate(f"{seed}-{i}", "2025-03", rng.choice(["wind_onshore", "hydro"]),
                                  rng.choice(["Gansu", "Sichuan", "Jiangsu", "Taiwan"]))
                 for i in range(rng.randint(0, 2))]
        ledger.register(certs)
        for cert in certs:
            portfolio.add_certificates([cert.serial], earmark=rng.choice([None, None, products[0].product_id, lines[0]]))
        for k in range(rng.randint(0, 2)):
            hourly = rng.random() < 0.5
            deliveries = (tuple((T0 + h * H, rng.uniform(0, 300)) for h in range(n_hours)) if hourly
                          else (("2025-03", rng.uniform(0, 1500)),))
            portfolio.add_contract(GreenPowerContract(
                f"C{k}", "solar_pv_utility", rng.choice(["Qinghai", "Zhejiang"]),
                "hourly" if hourly else "monthly", deliveries,
                earmark=rng.choice([None, products[-1].product_id])))
    return Scenario(topo, readings, portfolio, n_hours)

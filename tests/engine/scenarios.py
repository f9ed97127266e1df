"""Small shared scenarios for the engine tests (the worked example of docs/accounting.md)."""

from __future__ import annotations

import numpy as np

from accounting.topology import CostCentre, Meter, Product, SiteTopology

T0 = 1_740_787_200_000  # 2025-03-01T00:00:00Z
H = 3_600_000


def worked_example_topology(matching_mode: str = "annual") -> SiteTopology:
    """Two lines, compressed air, PV, an unmetered remainder (docs/accounting.md, section 9)."""
    def energy(mid, role, cc=None, cls=1.0, chans=("energy_import_kwh",)):
        return Meter(mid, role, chans, cost_centre=cc, accuracy_class_pct=cls, poll_period_s=1200)

    return SiteTopology(
        site_id="js-01", grid_region="East", matching_mode=matching_mode,
        meters=(
            energy("main", "grid_import", cls=0.5, chans=("energy_import_kwh", "energy_export_kwh")),
            energy("pv", "pv"),
            energy("l1", "submeter", "L1"),
            energy("l2", "submeter", "L2"),
            energy("air", "submeter", "AIR"),
            Meter("plc1", "production_counter", ("units_total",), cost_centre="L1", poll_period_s=1200),
            Meter("plc2", "production_counter", ("units_total",), cost_centre="L2", poll_period_s=1200),
            Meter("plc3", "production_counter", ("units_total",), cost_centre="L2", poll_period_s=1200),
        ),
        cost_centres=(
            CostCentre("L1"), CostCentre("L2"),
            CostCentre("AIR", kind="utility", allocation_key="fixed",
                       allocation_shares={"L1": 0.5, "L2": 0.5}),
        ),
        products=(
            Product("A", line="L1", units_meter="plc1", upstream_kgco2e_per_unit=3.0),
            Product("B", line="L2", units_meter="plc2"),
            Product("C", line="L2", units_meter="plc3"),
        ),
        remainder_key="energy",
    )


#: (meter, channel, value at T0, value at T0 + 1 h)
WORKED_EXAMPLE_READINGS = [
    ("main", "energy_import_kwh", 1000.0, 1080.0),
    ("main", "energy_export_kwh", 500.0, 510.0),
    ("pv", "energy_import_kwh", 200.0, 250.0),
    ("l1", "energy_import_kwh", 300.0, 340.0),
    ("l2", "energy_import_kwh", 400.0, 440.0),
    ("air", "energy_import_kwh", 100.0, 120.0),
    ("plc1", "units_total", 0.0, 30.0),
    ("plc2", "units_total", 0.0, 10.0),
    ("plc3", "units_total", 5.0, 25.0),
]


def worked_example_arrays(engine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ch, ts, val = [], [], []
    for meter, channel, v0, v1 in WORKED_EXAMPLE_READINGS:
        c = engine.channel_index(meter, channel)
        ch += [c, c]
        ts += [T0, T0 + H]
        val += [v0, v1]
    return np.array(ch), np.array(ts, dtype=np.int64), np.array(val)

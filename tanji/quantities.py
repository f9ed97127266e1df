"""The quantities a reading can carry: one catalogue shared by profiles, the wire format and the engine.

Every name ends with its unit (`energy_import_kwh`, `power_kw`), so a number is never read
without its unit, in a payload, a database column or a CSV export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "label"]


@dataclass(frozen=True, slots=True)
class Quantity:
    name: str
    unit: str
    kind: Kind
    doc: str


_CATALOGUE = [
    Quantity("energy_import_kwh", "kWh", "counter", "cumulative active energy drawn from the grid side of the meter"),
    Quantity("energy_export_kwh", "kWh", "counter", "cumulative active energy fed back through the meter"),
    Quantity("energy_generated_kwh", "kWh", "counter", "cumulative energy produced by a PV inverter"),
    # Per-tariff registers of multi-tariff meters (DL/T 645 DI 00 01 0t 00 / 00 02 0t 00): parts of
    # energy_import_kwh / energy_export_kwh, never to be added to them.
    *(Quantity(f"energy_import_t{t}_kwh", "kWh", "counter", f"cumulative imported energy in tariff {t}")
      for t in (1, 2, 3, 4)),
    *(Quantity(f"energy_export_t{t}_kwh", "kWh", "counter", f"cumulative exported energy in tariff {t}")
      for t in (1, 2, 3, 4)),
    Quantity("power_kw", "kW", "gauge", "total active power, positive when importing"),
    Quantity("reactive_power_kvar", "kvar", "gauge", "total reactive power"),
    Quantity("power_factor", "1", "gauge", "total power factor"),
    Quantity("frequency_hz", "Hz", "gauge", "grid frequency"),
    *(Quantity(f"voltage_l{p}_v", "V", "gauge", f"phase {p} to neutral voltage") for p in (1, 2, 3)),
    *(Quantity(f"current_l{p}_a", "A", "gauge", f"phase {p} current") for p in (1, 2, 3)),
    Quantity("units_total", "1", "counter", "cumulative good units produced (PLC counter)"),
    Quantity("units_rejected_total", "1", "counter", "cumulative rejected units (PLC counter)"),
    Quantity("batch_id", "1", "label", "the production batch / lot number currently running"),
    Quantity("line_running", "1", "label", "1 while the line runs, 0 when stopped"),
]

QUANTITIES: dict[str, Quantity] = {q.name: q for q in _CATALOGUE}
ENERGY_COUNTERS = tuple(q.name for q in _CATALOGUE if q.kind == "counter" and q.unit == "kWh")

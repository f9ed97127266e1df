"""The quantities a reading can carry: one catalogue shared by profiles, the wire format and the engine.

Every name ends with its unit (`energy_import_kwh`, `power_kw`), so a number is never read
without its unit, in a payload, a database column or a CSV export. Each quantity has a kind:
- `counter`: cumulative, only ever grows (or wraps at its rollover); accounting turns its
  differences into energy or units. A counter also says what it counts, its `flow`: energy
  drawn (`import`), fed back (`export`), produced on site (`generation`), or units made
  (`production`). Which flows a meter of each role brings to the books: `tanji.roles`. A
  counter that is `part_of` another (a tariff's share of the total import) is stored and
  shown but never counted beside the total it is part of.
- `state`: what a device shows right now, held until it changes (the batch running, whether
  the line runs); not summed.
- `gauge`: an instantaneous measurement (power, voltage), for dashboards and plausibility.

Adding a quantity is one entry below (and a profile register that maps it); the gateway, the
wire format, the stores and the engine take it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "state", "gauge"]
Flow = Literal["import", "export", "generation", "production"]
KINDS: tuple[Kind, ...] = ("counter", "state", "gauge")
FLOWS: tuple[Flow, ...] = ("import", "export", "generation", "production")

#: Registers larger than this cannot hold whole numbers exactly in a float (2**53).
_EXACT = float(2**53)


@dataclass(frozen=True, slots=True)
class Quantity:
    """A quantity; `low`..`high` is what is physically possible for it (in its unit, primary
    side), far wider than any plausible reading: a value claimed good outside it is not a
    measurement (a misdecoded register, a forged payload) and ingest quarantines it."""

    name: str
    unit: str
    kind: Kind
    doc: str
    flow: Flow | None = None  # counters only: what they count
    part_of: str | None = None  # a counter that is a part of another (a tariff's share of the total)
    # The physically possible range: a reading claimed good outside it is quarantined at
    # admission (`impossible_value`, accounting/ingest/admission.py).
    low: float = -1e12
    high: float = 1e12

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"quantity {self.name}: kind {self.kind!r} is not one of {KINDS}")
        if (self.kind == "counter") != (self.flow is not None) or (self.flow and self.flow not in FLOWS):
            raise ValueError(f"quantity {self.name}: a counter names its flow ({FLOWS}), nothing else does")

    def possible(self, value: float) -> bool:
        return self.low <= value <= self.high


#: A counter register is never negative; 1e12 kWh is a thousand TWh.
_ENERGY = {"low": 0.0, "high": 1e12}
#: 10 GW either way: more than any single grid connection.
_POWER = {"low": -1e7, "high": 1e7}

_CATALOGUE = [
    Quantity("energy_import_kwh", "kWh", "counter", "cumulative active energy drawn from the grid side of the meter", "import",
             **_ENERGY),
    Quantity("energy_export_kwh", "kWh", "counter", "cumulative active energy fed back through the meter", "export",
             **_ENERGY),
    Quantity("energy_generated_kwh", "kWh", "counter", "cumulative energy produced by a PV inverter", "generation",
             **_ENERGY),
    # Per-tariff registers of multi-tariff meters (DL/T 645 DI 00 01 0t 00 / 00 02 0t 00): parts of
    # energy_import_kwh / energy_export_kwh, stored and shown, never added to them.
    *(Quantity(f"energy_import_t{t}_kwh", "kWh", "counter", f"cumulative imported energy in tariff {t}",
               "import", part_of="energy_import_kwh", **_ENERGY) for t in (1, 2, 3, 4)),
    *(Quantity(f"energy_export_t{t}_kwh", "kWh", "counter", f"cumulative exported energy in tariff {t}",
               "export", part_of="energy_export_kwh", **_ENERGY) for t in (1, 2, 3, 4)),
    Quantity("power_kw", "kW", "gauge", "total active power, positive when importing", **_POWER),
    Quantity("reactive_power_kvar", "kvar", "gauge", "total reactive power", **_POWER),
    # Physically within [-1, 1]; meters round a little past it, so only far outside is impossible.
    Quantity("power_factor", "1", "gauge", "total power factor", low=-2.0, high=2.0),
    Quantity("frequency_hz", "Hz", "gauge", "grid frequency", low=0.0, high=1000.0),
    *(Quantity(f"voltage_l{p}_v", "V", "gauge", f"phase {p} to neutral voltage", low=0.0, high=1e6) for p in (1, 2, 3)),
    *(Quantity(f"current_l{p}_a", "A", "gauge", f"phase {p} current", low=-1e6, high=1e6) for p in (1, 2, 3)),
    Quantity("units_total", "1", "counter", "cumulative good units produced (PLC counter)", "production",
             low=0.0, high=_EXACT),
    Quantity("units_rejected_total", "1", "counter", "cumulative rejected units (PLC counter)", "production",
             low=0.0, high=_EXACT),
    Quantity("batch_id", "1", "state", "the production batch / lot number currently running", low=-_EXACT, high=_EXACT),
    Quantity("line_running", "1", "state", "1 while the line runs, 0 when stopped", low=0.0, high=1.0),
]

QUANTITIES: dict[str, Quantity] = {q.name: q for q in _CATALOGUE}
for _q in _CATALOGUE:
    if _q.part_of is not None and getattr(QUANTITIES.get(_q.part_of), "flow", None) != _q.flow:
        raise ValueError(f"quantity {_q.name}: part of {_q.part_of!r}, which is no counter of its flow")
#: Every counter, in catalogue order.
COUNTERS: tuple[str, ...] = tuple(q.name for q in _CATALOGUE if q.kind == "counter")
#: The counters the books count: every counter that is not a part of another.
COUNTED: tuple[str, ...] = tuple(q.name for q in _CATALOGUE if q.kind == "counter" and q.part_of is None)
#: Counters of energy (kWh): import, export, generation.
ENERGY_COUNTERS: tuple[str, ...] = tuple(q.name for q in _CATALOGUE if q.kind == "counter" and q.flow != "production")
#: Counters of units made.
PRODUCTION_COUNTERS: tuple[str, ...] = tuple(q.name for q in _CATALOGUE if q.flow == "production")
#: The state that names the production batch running (a PLC register), for batch footprints.
BATCH_ID = "batch_id"


def counters_of(flows: tuple[Flow, ...] | set[Flow]) -> tuple[str, ...]:
    """The counted counters (`COUNTED`) whose flow is one of `flows`, in catalogue order."""
    return tuple(name for name in COUNTED if QUANTITIES[name].flow in flows)

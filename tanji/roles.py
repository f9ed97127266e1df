"""Meter roles: what a meter is to the books of its site, and which counters it brings to them.

- `grid_import`: the incomer, on the grid connection (energy drawn and fed back);
- `pv`: on-site generation (one counter: what it generates, else what it delivers);
- `submeter`: a cost centre's meter (energy drawn, minus any fed back);
- `production_counter`: a line's PLC counter of units made (and its batch number).
"""

from __future__ import annotations

from tanji.quantities import Flow, counters_of

METER_ROLES = ("grid_import", "pv", "submeter", "production_counter")

#: Counter flows each role brings to the books. A `pv` meter brings one counter: the first
#: of its flows its profile has (an inverter's generation register; else, on a meter at the
#: inverter, the energy it exports; else its only register).
ROLE_FLOWS: dict[str, tuple[Flow, ...]] = {
    "grid_import": ("import", "export"),
    "submeter": ("import", "export"),
    "pv": ("generation", "export", "import"),
    "production_counter": ("production",),
}


def counters_for(role: str, available: list[str] | tuple[str, ...] | set[str]) -> tuple[str, ...]:
    """The counters among `available` (a profile's register names) that a meter of `role` brings."""
    wanted = [c for c in counters_of(ROLE_FLOWS[role]) if c in available]
    if role == "pv":
        for flow in ROLE_FLOWS["pv"]:
            first = [c for c in counters_of((flow,)) if c in available]
            if first:
                return (first[0],)
        return ()
    return tuple(wanted)

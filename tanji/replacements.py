"""A recorded meter replacement: when the old meter was taken out, and its registers' last and
the new meter's registers' first readings (ACCOUNTING.md section 1).

A meter swapped for another leaves its counters' series with a step the engine cannot explain:
the new register starts wherever the new meter's did. Without a record the step is rebased
(nothing booked for it, an alarm). With one it is exact: the reading that spans the
replacement books (old final − baseline) + (reading − new initial). The site file declares the
records per meter (`tanji.site`); the engine reads them from its topology (`accounting.topology`)
— this is the one definition both use.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MeterReplacement:
    """``at_ms`` (UTC epoch ms): the first reading stamped at or after it comes from the new
    meter. ``old_final``/``new_initial``: per counter channel (``energy_import_kwh``,
    ``units_total`` ...), in the channel's units as Tanji reads them (kWh after CT/VT ratios,
    units). A channel of the meter not named has no record (the usual rules apply to it)."""

    at_ms: int
    old_final: dict[str, float]
    new_initial: dict[str, float]

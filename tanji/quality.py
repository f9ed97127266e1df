"""Quality codes of a reading's values, in order of severity: the one list every part uses.

- `good`;
- `stale`: the meter's grid quantities repeat bit for bit (a hung meter, a protocol converter
  serving its cache);
- `out_of_range`: outside the profile's valid range, or not a finite number;
- `counter_reset_suspected`: a counter went down without wrapping at its rollover value (a
  meter swap, a PLC restart, a cleared register);
- `comm_error`: the poll failed, no values at all.

A reading's own quality is the worst of its values', so a consumer that looks at one field
still sees the most serious problem. Only `good` values move an energy or production counter
in accounting.
"""

from __future__ import annotations

QUALITY_CODES = ("good", "stale", "out_of_range", "counter_reset_suspected", "comm_error")
_RANK = {code: i for i, code in enumerate(QUALITY_CODES)}


def worst(codes: list[str] | tuple[str, ...] | set[str]) -> str:
    """The most serious of `codes` ("good" when there are none)."""
    return max(codes, key=_RANK.__getitem__, default="good")

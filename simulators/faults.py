"""The ways real devices misbehave, and which of them a device suffers right now.

Two families. Conditions last (until cleared, or for `duration_s` of plant time) and shape
every answer: `offline` (no answer at all: the poller times out), `slow` (answers after
`delay_s` real seconds), `exception` (a Modbus exception response, `code`, with
`probability`), `garbage` (with `probability`, one value of an answer is random words).
Events happen once and change the device's state: `counter_reset` (meter replaced or PLC
restarted: counters start again from `value`), `replace` (the meter swapped for one whose
counters read `initial`; the event records both meters' readings, the replacement record a
technician writes down), `rollover` (counters preset `margin` raw
increments below their wrap value, so they wrap shortly), `clock_jump` (the device clock
moves by `seconds`; see DeviceModel.jump_clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CONDITIONS: dict[str, dict[str, Any]] = {
    "offline": {},
    "slow": {"delay_s": 2.0},
    "exception": {"code": 6, "probability": 1.0},
    "garbage": {"probability": 0.2},
}
EVENTS: dict[str, dict[str, Any]] = {
    "counter_reset": {"value": 0.0},
    "replace": {"initial": 0.0},
    "rollover": {"margin": 10},
    "clock_jump": {"seconds": 3600.0},
}
FAULT_KINDS = tuple(CONDITIONS) + tuple(EVENTS)


class FaultError(ValueError):
    """A fault request names an unknown kind or parameter."""


def fault_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of `kind` with defaults filled in; unknown kinds or names are refused."""
    defaults = CONDITIONS.get(kind, EVENTS.get(kind))
    if defaults is None:
        raise FaultError(f"unknown fault {kind!r}; use one of: {', '.join(FAULT_KINDS)}")
    unknown = set(params) - set(defaults)
    if unknown:
        raise FaultError(f"fault {kind} takes {sorted(defaults) or 'no parameters'}, not {sorted(unknown)}")
    return {**defaults, **params}


@dataclass(slots=True)
class Condition:
    kind: str
    params: dict[str, Any]
    until_s: float | None  # plant time; None: until cleared


@dataclass(slots=True)
class FaultState:
    """The conditions a device currently suffers, by kind (one of each at most)."""

    conditions: dict[str, Condition] = field(default_factory=dict)

    def set(self, kind: str, params: dict[str, Any], until_s: float | None) -> None:
        self.conditions[kind] = Condition(kind, fault_params(kind, params), until_s)

    def clear(self, kind: str | None = None) -> None:
        if kind is None:
            self.conditions.clear()
        else:
            self.conditions.pop(kind, None)

    def active(self, now_s: float) -> dict[str, dict[str, Any]]:
        """Kind → parameters of the conditions in force at plant time `now_s` (expired ones dropped)."""
        if not self.conditions:
            return {}
        for kind in [k for k, c in self.conditions.items() if c.until_s is not None and now_s >= c.until_s]:
            del self.conditions[kind]
        return {k: c.params for k, c in self.conditions.items()}

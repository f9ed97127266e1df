"""One simulated device as a poller meets it: physics + register map + faults, behind one read().

The Modbus servers only call `read()`; the plant calls `inject()` and `clear()`. All state
changes happen under the plant's lock, because polls arrive on the server thread while
tests and the demo ask for the truth or inject faults from theirs.
"""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

from simulators.clock import PlantClock
from simulators.faults import CONDITIONS, FaultState, fault_params
from simulators.models import DeviceModel
from simulators.register_bank import (
    ILLEGAL_DATA_ADDRESS,
    Dlt645Bank,
    ExceptionReply,
    RegisterBank,
    wrap_value,
)


class NoAnswer(Exception):  # noqa: N818 - a behaviour, not an error
    """The device stays silent (offline): the poller's timeout is the only answer."""


class SimulatedDevice:
    """A meter, PV inverter or PLC of the plant, addressable by Modbus."""

    def __init__(self, meter_id: str, model: DeviceModel, bank: RegisterBank | Dlt645Bank, clock: PlantClock,
                 lock: threading.Lock, seed: int) -> None:
        self.meter_id = meter_id
        self.model = model
        self.bank = bank
        self.clock = clock
        self.lock = lock
        self.faults = FaultState()
        self._garbage = random.Random(seed)

    async def read(self, function_code: int, address: int, count: int) -> list[int]:
        """Answer one read request as the real device would, faults included."""
        with self.lock:
            active = self.faults.active(self.clock.now())
        if "offline" in active:
            raise NoAnswer(self.meter_id)
        if "slow" in active:
            await asyncio.sleep(active["slow"]["delay_s"])
        if "exception" in active and self._garbage.random() < active["exception"]["probability"]:
            raise ExceptionReply(active["exception"]["code"], "injected fault")
        with self.lock:
            now = self.clock.now()
            self.model.advance(now)
            values = self.model.values(now)
        words = self.bank.read(function_code, address, count, values)
        if "garbage" in active and self._garbage.random() < active["garbage"]["probability"]:
            self._corrupt(words)
        return words

    async def read_di(self, di: int) -> bytes:
        """Answer a DL/T 645 read of data identifier `di` (value bytes, before the +0x33), faults included.

        `exception` becomes an error answer (ExceptionReply: the server sends error word `code`),
        `garbage` value bytes that are not BCD.
        """
        with self.lock:
            active = self.faults.active(self.clock.now())
        if "offline" in active:
            raise NoAnswer(self.meter_id)
        if "slow" in active:
            await asyncio.sleep(active["slow"]["delay_s"])
        if "exception" in active and self._garbage.random() < active["exception"]["probability"]:
            raise ExceptionReply(active["exception"]["code"], "injected fault")
        with self.lock:
            now = self.clock.now()
            self.model.advance(now)
            values = self.model.values(now)
        assert isinstance(self.bank, Dlt645Bank)
        raw = self.bank.read(di, values)
        if "garbage" in active and self._garbage.random() < active["garbage"]["probability"]:
            raw = bytes(0xA0 | self._garbage.randrange(6) for _ in raw)  # nibbles A-F: not BCD
        return raw

    async def write(self, address: int, words: list[int]) -> None:
        """A Modbus write (function 6 or 16): only registers the model accepts (a PLC's stop
        command and counter presets); anything else is refused like a read-only meter does."""
        with self.lock:
            active = self.faults.active(self.clock.now())
        if "offline" in active:
            raise NoAnswer(self.meter_id)
        if not isinstance(self.bank, RegisterBank):
            raise ExceptionReply(ILLEGAL_DATA_ADDRESS, f"{self.meter_id} is not a Modbus device")
        values = self.bank.written(address, words)
        refused = sorted(set(values) - set(self.model.writable))
        if refused:
            raise ExceptionReply(ILLEGAL_DATA_ADDRESS, f"{', '.join(refused)} read-only")
        with self.lock:
            now = self.clock.now()
            self.model.advance(now)
            for name, value in values.items():
                self.model.command(name, value, now)
                self.model.truth.event(now, self.meter_id, "write", register=name, value=value)

    def _corrupt(self, words: list[int]) -> None:
        """Overwrite one run of words with noise, as a bus glitch or firmware bug would."""
        start = self._garbage.randrange(len(words))
        for i in range(start, min(len(words), start + 2)):
            words[i] = self._garbage.randrange(0x10000)

    def values(self) -> dict[str, float]:
        """The physical values the device shows now (for logs, tests and the CLI)."""
        with self.lock:
            now = self.clock.now()
            self.model.advance(now)
            return self.model.values(now)

    def inject(self, kind: str, duration_s: float | None = None, **params: Any) -> None:
        """Start a condition (optionally for `duration_s` of plant time) or apply an event now."""
        params = fault_params(kind, params)
        with self.lock:
            now = self.clock.now()
            if kind in CONDITIONS:
                self.faults.set(kind, params, None if duration_s is None else now + duration_s)
            else:
                self.model.advance(now)
                if kind == "counter_reset":
                    for name in self.model.counter_names:
                        self.model.set_shown(name, params["value"])
                elif kind == "replace":
                    # What the technician writes down: the old meter's displays as it comes
                    # out, the new one's as it goes in (docs/accounting.md, meter replacements).
                    params = {**params, "old_final": {n: self.model.shown(n) for n in self.model.counter_names},
                              "new_initial": dict.fromkeys(self.model.counter_names, float(params["initial"]))}
                    for name in self.model.counter_names:
                        self.model.set_shown(name, params["initial"])
                elif kind == "rollover":
                    self._preset_near_wrap(int(params["margin"]))
                else:
                    self.model.jump_clock(now, float(params["seconds"]))
            self.model.truth.event(now, self.meter_id, kind, **params)

    def _preset_near_wrap(self, margin: int) -> None:
        if isinstance(self.bank, Dlt645Bank):  # BCD counters wrap at 10^digits, e.g. 999999.99 → 0
            counters = [r for r in self.bank.profile.registers
                        if r.name in self.model.counter_names and r.rollover is not None]
            if not counters:
                raise ValueError(f"{self.meter_id} has no counter that can roll over")
            for reg in counters:
                self.model.set_shown(reg.name, self.bank.physical(reg, reg.rollover - margin * 0.01))
            return
        wrapping = [r for r in self.bank.profile.registers
                    if r.name in self.model.counter_names and wrap_value(r) is not None]
        if not wrapping:
            raise ValueError(f"{self.meter_id} ({self.bank.profile.model}) has no integer counter "
                             "register that can roll over")
        for reg in wrapping:
            self.model.set_shown(reg.name, self.bank.physical(reg, wrap_value(reg) - margin))

    def clear(self, kind: str | None = None) -> None:
        """End one condition, or all of them."""
        with self.lock:
            self.faults.clear(kind)
            self.model.truth.event(self.clock.now(), self.meter_id, f"clear:{kind or 'all'}")

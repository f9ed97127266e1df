"""Physical values → the register words a real device of a given model holds.

The profile (firmware-config/profiles/*.yaml) says where each value sits and how it is
encoded; this module runs that map backwards, the way the meter's firmware does:
divide by the profile's scale and by the CT/VT ratio the meter is wired for (a meter
measures the CT's secondary side), truncate integer counters to whole increments, and let
integer counters wrap at their rollover value like a real register does. Requests the real
device refuses are refused with the Modbus exception code it would send.
"""

from __future__ import annotations

import math

from tanji import dlt645
from tanji.codec import decode, encode
from tanji.profile import FUNCTIONS, MeterProfile, Register

ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
_INTEGER_BITS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}


class ExceptionReply(Exception):  # noqa: N818 - it is a reply, not an error of the simulator
    """The device answers with a Modbus exception response carrying `code`."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(f"exception {code}: {why}")
        self.code = code


def wrap_value(reg: Register) -> int | None:
    """The raw value at which an integer counter register starts again from 0."""
    if not reg.is_counter or reg.data_type not in _INTEGER_BITS:
        return None
    if reg.rollover is not None:
        return int(reg.rollover)
    bits = _INTEGER_BITS[reg.data_type]
    return 1 << (bits if reg.data_type.startswith("u") else bits - 1)


def _clamp(raw: float, data_type: str) -> int:
    bits = _INTEGER_BITS[data_type]
    lo, hi = (0, (1 << bits) - 1) if data_type.startswith("u") else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return min(hi, max(lo, int(round(raw))))


class RegisterBank:
    """The register map of one installed device (its profile and the ratios it is wired for)."""

    def __init__(self, profile: MeterProfile, ct_ratio: float = 1.0, vt_ratio: float = 1.0) -> None:
        self.profile = profile
        self.divisor = {r.name: r.scale * r.ratio(ct_ratio, vt_ratio) for r in profile.registers}
        self.tables: dict[int, tuple[Register, ...]] = {
            code: tuple(r for r in profile.registers if r.function == name) for name, code in FUNCTIONS.items()}
        self.spans = {code: (regs[0].address, max(r.end for r in regs))
                      for code, regs in self.tables.items() if regs}

    def raw(self, reg: Register, value: float) -> float | int:
        """The number the register holds for physical `value` (before word encoding)."""
        raw = value / self.divisor[reg.name]
        if reg.data_type.startswith("float"):
            return raw
        wrap = wrap_value(reg)
        if wrap is not None:
            # A counter shows completed increments; the epsilon keeps 1234.57/0.01 from reading ...56.
            return math.floor(raw + 1e-6) % wrap
        return _clamp(raw, reg.data_type)

    def physical(self, reg: Register, raw: float) -> float:
        """The physical value a raw register value stands for (the inverse of raw())."""
        return raw * self.divisor[reg.name]

    def read(self, function_code: int, address: int, count: int, values: dict[str, float]) -> list[int]:
        """The words answering a read of `count` registers at `address`; raises ExceptionReply."""
        if function_code not in self.spans:
            raise ExceptionReply(ILLEGAL_FUNCTION if function_code not in (3, 4) else ILLEGAL_DATA_ADDRESS,
                                 f"{self.profile.model} has no registers for function {function_code}")
        if not 1 <= count <= self.profile.max_registers_per_request:
            raise ExceptionReply(ILLEGAL_DATA_VALUE, f"{self.profile.model} reads at most "
                                 f"{self.profile.max_registers_per_request} registers per request")
        first, end = self.spans[function_code]
        if address < first or address + count > end:
            raise ExceptionReply(ILLEGAL_DATA_ADDRESS, f"{address}+{count} is outside {first}..{end - 1}")
        for lo, hi in self.profile.forbidden_ranges:
            if address <= hi and lo < address + count:
                raise ExceptionReply(ILLEGAL_DATA_ADDRESS, f"{address}+{count} touches forbidden {lo}..{hi}")
        words = [0] * count
        stop = address + count
        for reg in self.tables[function_code]:
            if reg.end <= address or reg.address >= stop:
                continue
            encoded = encode(self.raw(reg, values[reg.name]), reg.data_type, reg.order)
            for i, word in enumerate(encoded):
                at = reg.address + i - address
                if 0 <= at < count:
                    words[at] = word
        return words

    def written(self, address: int, words: list[int]) -> dict[str, float]:
        """The physical values a write of `words` at `address` (holding registers) sets; a write
        must cover whole registers of the map, else the device refuses it (exception 02)."""
        regs = self.tables.get(FUNCTIONS["holding"], ())
        stop = address + len(words)
        out: dict[str, float] = {}
        for reg in regs:
            if reg.end <= address or reg.address >= stop:
                continue
            if reg.address < address or reg.end > stop:
                raise ExceptionReply(ILLEGAL_DATA_ADDRESS, f"a write must cover all of {reg.name}")
            raw = decode(words[reg.address - address:reg.end - address], reg.data_type, reg.order)
            out[reg.name] = self.physical(reg, float(raw))
        if not out:
            raise ExceptionReply(ILLEGAL_DATA_ADDRESS, f"no holding register at {address}+{len(words)}")
        return out


class Dlt645Bank:
    """What a DL/T 645 meter answers per data identifier: BCD of the shown value, ratios removed."""

    def __init__(self, profile: MeterProfile, ct_ratio: float = 1.0, vt_ratio: float = 1.0) -> None:
        self.profile = profile
        self.by_di = {r.di: r for r in profile.registers}
        self.divisor = {r.name: r.scale * r.ratio(ct_ratio, vt_ratio) for r in profile.registers}

    def read(self, di: int, values: dict[str, float]) -> bytes:
        """The value bytes answering a read of `di`; an unknown DI raises ExceptionReply(0x02)."""
        reg = self.by_di.get(di)
        if reg is None:
            raise ExceptionReply(0x02, f"{self.profile.model} has no data identifier {di:08X}")
        raw = values.get(reg.name, 0.0) / self.divisor[reg.name]
        if reg.is_counter:  # a counter shows completed increments of its last digit
            step = 10 ** dlt645.FORMATS[reg.data_type][1]
            raw = math.floor(raw * step + 1e-6) / step
        return dlt645.encode_value(raw, reg.data_type)

    def physical(self, reg: Register, raw: float) -> float:
        return raw * self.divisor[reg.name]

"""Meter profiles: the register map of one meter model, read from firmware-config/profiles/*.yaml.

A profile is a vendor fact (where the manual puts each value, in which type and order), so it
lives in a data file that cites its manual, not in code. Site-specific facts (CT ratio, unit
id, poll period) belong to the site file.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tanji import dlt645
from tanji.codec import DATA_TYPES, ORDERS, word_count
from tanji.config_file import Section, load_yaml
from tanji.errors import ConfigError
from tanji.quantities import QUANTITIES

FUNCTIONS = {"input": 4, "holding": 3}
PROTOCOLS = ("modbus", "dlt645")
RATIOS = ("none", "ct", "vt", "ctvt")


def _profiles_dir() -> Path:
    """Where the shipped profiles are: $TANJI_PROFILES_DIR, the source tree, or the installed copy.

    A wheel install has no source tree, so pyproject.toml installs the profiles as data files
    under <prefix>/share/tanji/profiles.
    """
    override = os.environ.get("TANJI_PROFILES_DIR")
    if override:
        return Path(override)
    source_tree = Path(__file__).resolve().parent.parent / "firmware-config" / "profiles"
    if source_tree.is_dir():
        return source_tree
    return Path(sys.prefix) / "share" / "tanji" / "profiles"


PROFILES_DIR = _profiles_dir()


@dataclass(frozen=True, slots=True)
class Register:
    """One value of the map. `address` is the 0-based protocol address (manual's 30073 → 72).

    A DL/T 645 value has `di` (its data identifier, e.g. 0x00010000) and its BCD format as
    `data_type` (e.g. "XXXXXX.XX"); `address`, `order` and `function` mean nothing there.
    """

    name: str
    address: int
    data_type: str
    order: str
    scale: float
    function: str
    apply_ratio: str
    rollover: float | None
    valid_range: tuple[float, float] | None
    di: int | None = None

    @property
    def words(self) -> int:
        return 0 if self.di is not None else word_count(self.data_type)

    @property
    def end(self) -> int:
        """One past the last register address this value occupies."""
        return self.address + self.words

    @property
    def is_counter(self) -> bool:
        return QUANTITIES[self.name].kind == "counter"

    def ratio(self, ct_ratio: float, vt_ratio: float) -> float:
        """What the register's scaled value is multiplied by for the primary side (its `apply_ratio`).

        A meter behind current (CT) and voltage (VT) transformers measures their secondary
        side; energy and power scale with both, current with the CT, voltage with the VT.
        The gateway multiplies by it, the simulators divide by it, accounting scales rollovers by it.
        """
        if self.apply_ratio == "none":
            return 1.0
        if self.apply_ratio == "ct":
            return ct_ratio
        if self.apply_ratio == "vt":
            return vt_ratio
        return ct_ratio * vt_ratio


@dataclass(frozen=True, slots=True)
class MeterProfile:
    model: str
    vendor: str
    title: str
    source: str
    accuracy_class: str
    registers: tuple[Register, ...]
    max_registers_per_request: int
    max_gap_registers: int
    forbidden_ranges: tuple[tuple[int, int], ...]
    max_current_a: float | None
    nominal_voltage_v: float | None
    file: str
    protocol: str = "modbus"
    # Counters of things (a PLC's units_total): the most units per hour the machine can make,
    # the plausibility cap of ACCOUNTING.md section 1 when the site file gives none.
    max_units_per_h: float | None = None

    def register(self, name: str) -> Register:
        for reg in self.registers:
            if reg.name == name:
                return reg
        raise KeyError(f"profile {self.model} has no register {name!r}")

    @property
    def accuracy_pct(self) -> float:
        """Accuracy class as a ± percentage of energy (class 0.5S → 0.5)."""
        return float(self.accuracy_class.rstrip("SsBbCc") or 1.0)


def parse_profile(root: Section) -> MeterProfile:
    """Validate a parsed profile file; every error names the file, the line and the fix."""
    model = root.get("model", str)
    protocol = root.choice("protocol", PROTOCOLS, "modbus")
    if protocol == "dlt645":
        return _parse_dlt645(root, model)
    function = root.choice("function", tuple(FUNCTIONS), "holding")
    default_order = root.choice("byte_order", ORDERS, "ABCD")
    registers = []
    seen: dict[str, int] = {}
    for item in root.sections("registers"):
        name = item.get("name", str)
        if name not in QUANTITIES:
            raise item.error("name", f"unknown quantity {name!r}",
                             "use a name from tanji/quantities.py (units in the name, e.g. energy_import_kwh)")
        if name in seen:
            raise item.error("name", f"{name!r} is mapped twice", "keep one register per quantity")
        seen[name] = 1
        data_type = item.choice("type", tuple(DATA_TYPES))
        valid = item.get("range", list, None)
        if valid is not None and (len(valid) != 2 or not all(isinstance(v, int | float) for v in valid)):
            raise item.error("range", "must be [min, max]", "write e.g. range: [0, 500]")
        reg = Register(
            name=name,
            address=item.integer("address", minimum=0, maximum=65535),
            data_type=data_type,
            order=item.choice("byte_order", ORDERS, default_order),
            scale=item.number("scale", 1.0),
            function=item.choice("function", tuple(FUNCTIONS), function),
            apply_ratio=item.choice("apply_ratio", RATIOS, "none"),
            rollover=item.number("rollover", None, positive=True),
            valid_range=tuple(valid) if valid is not None else None,
        )
        item.get("unit", str, None)
        item.get("ref", (int, str), None)
        item.get("doc", str, None)
        item.reject_unknown()
        unit = item.data.get("unit")
        if unit is not None and unit != QUANTITIES[name].unit:
            raise item.error("unit", f"{name} is in {QUANTITIES[name].unit}, not {unit}",
                             f"use scale to convert the register to {QUANTITIES[name].unit}")
        if reg.end > 65536:
            raise item.error("address", "value runs past register 65535", "check the address")
        registers.append(reg)
    if not registers:
        raise root.error("registers", "a profile needs at least one register", "list the registers to read")
    forbidden = []
    for i, pair in enumerate(root.get("forbidden_ranges", list, [])):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) for v in pair)):
            raise root.error("forbidden_ranges", f"item {i} must be [first, last]",
                             "write e.g. forbidden_ranges: [[10, 19]]")
        forbidden.append((pair[0], pair[1]))
    profile = MeterProfile(
        model=model,
        vendor=root.get("vendor", str),
        title=root.get("title", str),
        source=root.get("source", str, fix="cite the vendor manual (title, version, table) the map comes from"),
        accuracy_class=str(root.get("accuracy_class", (str, int, float))),
        registers=tuple(sorted(registers, key=lambda r: (r.function, r.address))),
        max_registers_per_request=root.integer("max_registers_per_request", 125, minimum=1, maximum=125),
        max_gap_registers=root.integer("max_gap_registers", 0, minimum=0),
        forbidden_ranges=tuple(forbidden),
        max_current_a=root.number("max_current_a", None, positive=True),
        nominal_voltage_v=root.number("nominal_voltage_v", None, positive=True),
        file=root.file,
        max_units_per_h=root.number("max_units_per_h", None, positive=True),
    )
    root.get("notes", str, None)
    root.reject_unknown()
    for reg in profile.registers:
        if reg.words > profile.max_registers_per_request:
            raise ConfigError(root.file, None, f"registers.{reg.name}", "value is wider than max_registers_per_request",
                              "raise max_registers_per_request")
    return profile


def _parse_dlt645(root: Section, model: str) -> MeterProfile:
    """A DL/T 645-2007 profile: data identifiers and BCD formats instead of register addresses."""
    registers = []
    seen: set[str] = set()
    dis: set[int] = set()
    for item in root.sections("registers"):
        name = item.get("name", str)
        if name not in QUANTITIES:
            raise item.error("name", f"unknown quantity {name!r}",
                             "use a name from tanji/quantities.py (units in the name, e.g. energy_import_kwh)")
        if name in seen:
            raise item.error("name", f"{name!r} is mapped twice", "keep one data identifier per quantity")
        seen.add(name)
        text = str(item.get("di", str, fix='write the data identifier as 8 hex digits, e.g. di: "00010000"'))
        text = text.replace(" ", "")
        if len(text) != 8 or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise item.error("di", f"{text!r} is not a data identifier",
                             'write DI3 DI2 DI1 DI0 as 8 hex digits, e.g. di: "00010000" (forward active total)')
        di = int(text, 16)
        if di in dis:
            raise item.error("di", f"data identifier {text} is read twice", "map each DI once")
        dis.add(di)
        fmt = item.choice("format", tuple(dlt645.FORMATS))
        valid = item.get("range", list, None)
        if valid is not None and (len(valid) != 2 or not all(isinstance(v, int | float) for v in valid)):
            raise item.error("range", "must be [min, max]", "write e.g. range: [0, 500]")
        counter = QUANTITIES[name].kind == "counter"
        registers.append(Register(
            name=name, address=0, data_type=fmt, order="ABCD", scale=item.number("scale", 1.0),
            function="dlt645", apply_ratio=item.choice("apply_ratio", RATIOS, "none"),
            rollover=item.number("rollover", dlt645.rollover(fmt) if counter and not dlt645.FORMATS[fmt][2] else None,
                                 positive=True),
            valid_range=tuple(valid) if valid is not None else None, di=di))
        unit = item.get("unit", str, None)
        item.get("doc", str, None)
        item.reject_unknown()
        if unit is not None and unit != QUANTITIES[name].unit:
            raise item.error("unit", f"{name} is in {QUANTITIES[name].unit}, not {unit}",
                             f"use scale to convert the value to {QUANTITIES[name].unit}")
    if not registers:
        raise root.error("registers", "a profile needs at least one register", "list the data identifiers to read")
    profile = MeterProfile(
        model=model, vendor=root.get("vendor", str), title=root.get("title", str),
        source=root.get("source", str, fix="cite the standard or vendor manual the data identifiers come from"),
        accuracy_class=str(root.get("accuracy_class", (str, int, float))),
        registers=tuple(registers), max_registers_per_request=1, max_gap_registers=0, forbidden_ranges=(),
        max_current_a=root.number("max_current_a", None, positive=True),
        nominal_voltage_v=root.number("nominal_voltage_v", None, positive=True),
        file=root.file, protocol="dlt645")
    root.get("notes", str, None)
    root.reject_unknown()
    return profile


def load_profile(path: str | Path) -> MeterProfile:
    return parse_profile(load_yaml(path))


def load_profiles(directory: str | Path = PROFILES_DIR) -> dict[str, MeterProfile]:
    """All profiles of a directory, by model name; a model defined twice is an error."""
    profiles: dict[str, MeterProfile] = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        profile = load_profile(path)
        if profile.model in profiles:
            raise ConfigError(str(path), None, "model", f"model {profile.model!r} is also defined in "
                              f"{profiles[profile.model].file}", "give each profile file its own model name")
        profiles[profile.model] = profile
    return profiles

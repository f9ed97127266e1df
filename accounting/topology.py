"""Site topology: the plain input model of the accounting engine.

A :class:`SiteTopology` says which meters a site has, what each one measures (its role and
cost centre), how unmetered and utility energy is shared out, and which products each
production line makes. It is deliberately free of file parsing: the integrator builds it from
the site YAML file; tests build it directly.

Channel names carry their unit (``energy_import_kwh``, ``units_total``) and come from the
catalogue of `tanji.quantities`: every counter there is a channel the engine counts (its
flow says whether it is energy or units); instantaneous ones (``power_kw``) are ignored by it.
Roles, matching modes and sharing keys are the shared core's too (`tanji.roles`, `tanji.methods`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from accounting.errors import TopologyError
from tanji.civil_calendar import DEFAULT_TIMEZONE, civil_zone, whole_hour_zone
from tanji.methods import MATCHING_MODES, SHARING_KEYS
from tanji.quantities import BATCH_ID, COUNTED, ENERGY_COUNTERS, PRODUCTION_COUNTERS
from tanji.replacements import MeterReplacement
from tanji.roles import METER_ROLES

#: Cumulative energy drawn from the network side of a meter (kWh).
IMPORT_KWH = "energy_import_kwh"
#: Cumulative energy fed back towards the network side of a meter (kWh).
EXPORT_KWH = "energy_export_kwh"
#: Cumulative production counter (units).
UNITS_TOTAL = "units_total"

#: Channels the engine treats as cumulative counters: every counter of the catalogue that is
#: not a part of another (a tariff register is a part of the total; counting both would double it).
COUNTER_CHANNELS = frozenset(COUNTED)

MeterRole = Literal[METER_ROLES]  # type: ignore[valid-type]  # the tuple's names, as a Literal
CostCentreKind = Literal["production", "utility"]
MatchingMode = Literal[MATCHING_MODES]  # type: ignore[valid-type]
#: How utility energy or the unmetered remainder is shared among production cost centres:
#: ``energy`` pro rata to their directly metered energy (a physical relationship),
#: ``units`` pro rata to units produced, ``fixed`` by declared shares (floor area, machine
#: hours or negotiated fixed shares — all static weights).
SharingKey = Literal[SHARING_KEYS]  # type: ignore[valid-type]
#: How a line's energy is split among the products it made in an hour. ``key_per_unit`` of the
#: product gives the weight of one unit: 1 for ``units``, kg per unit for ``mass``, standard
#: minutes per unit for ``standard_time``.
ProductKey = Literal["units", "mass", "standard_time"]

PRODUCT_KEYS = ("units", "mass", "standard_time")


@dataclass(frozen=True)
class Meter:
    """One physical meter (or PLC) and the cumulative channels read from it.

    ``rollover_kwh`` is the register's wrap value (0 when it does not wrap);
    ``max_power_kw`` is the plausible maximum rate (rated current x CT ratio x voltage, with
    margin) — for a production counter it is read as the maximum units per hour. A reading
    implying more is rejected as implausible. ``accuracy_class_pct`` is the meter's class
    (0.5 for class 0.5S, 1.0 for class 1), taken as its 95 % uncertainty.
    """

    meter_id: str
    role: MeterRole
    channels: tuple[str, ...]
    cost_centre: str | None = None
    rollover_kwh: float = 0.0
    max_power_kw: float = 0.0
    accuracy_class_pct: float = 1.0
    poll_period_s: float = 60.0
    #: Recorded replacements of the meter, by time (``tanji.replacements``).
    replacements: tuple[MeterReplacement, ...] = ()

    @property
    def counter_channels(self) -> tuple[str, ...]:
        """The channels that carry cumulative counters, in declaration order."""
        return tuple(c for c in self.channels if c in COUNTER_CHANNELS)


@dataclass(frozen=True)
class CostCentre:
    """A production line, a process or a utility (compressed air, HVAC).

    Utilities are shared among production cost centres with ``allocation_key``;
    ``allocation_shares`` gives the static weights for the ``fixed`` key (cost centre id ->
    weight, normalised by the engine). ``key_uncertainty_pct`` is the declared 95 %
    uncertainty of that key.
    """

    cost_centre_id: str
    kind: CostCentreKind = "production"
    allocation_key: SharingKey = "energy"
    allocation_shares: dict[str, float] = field(default_factory=dict)
    key_uncertainty_pct: float = 0.0


@dataclass(frozen=True)
class Product:
    """A product made on a production line (cost centre).

    ``units_meter``/``units_channel`` name the production counter giving its units.
    ``upstream_kgco2e_per_unit`` is the static cradle-to-gate part (bill of materials x
    supplier PCFs or background factors); ``battery_kwh_per_unit`` the EU battery regulation
    declared unit (kWh of battery energy per unit), both optional.
    """

    product_id: str
    line: str
    units_meter: str
    units_channel: str = UNITS_TOTAL
    allocation_key: ProductKey = "units"
    key_per_unit: float = 1.0
    key_uncertainty_pct: float = 0.0
    upstream_kgco2e_per_unit: float | None = None
    battery_kwh_per_unit: float | None = None
    name: str = ""


@dataclass(frozen=True)
class SiteTopology:
    """A site: meters, cost centres, products and the site's accounting settings.

    ``timezone`` (an IANA name) is the civil calendar of matching windows and annual or monthly
    factors (`tanji.civil_calendar`, daylight saving included; China: Asia/Shanghai); its
    offsets must be whole hours so that calendar boundaries fall on hour buckets.
    ``remainder_key`` shares the unmetered remainder R among production cost centres.
    """

    site_id: str
    grid_region: str
    meters: tuple[Meter, ...]
    cost_centres: tuple[CostCentre, ...]
    products: tuple[Product, ...] = ()
    matching_mode: MatchingMode = "annual"
    timezone: str = DEFAULT_TIMEZONE
    remainder_key: SharingKey = "energy"
    remainder_shares: dict[str, float] = field(default_factory=dict)
    remainder_key_uncertainty_pct: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    @property
    def zone(self) -> ZoneInfo:
        """The site's civil time zone (`tanji.civil_calendar`)."""
        return civil_zone(self.timezone)

    def meter(self, meter_id: str) -> Meter:
        """The meter with this id."""
        for m in self.meters:
            if m.meter_id == meter_id:
                return m
        raise TopologyError(f"unknown meter {meter_id!r}")

    def counter_keys(self) -> list[tuple[str, str]]:
        """All (meter_id, channel) counter keys in a stable order (meters, then channels)."""
        return [(m.meter_id, c) for m in self.meters for c in m.counter_channels]

    def batch_keys(self) -> list[tuple[str, str]]:
        """All (meter_id, ``batch_id``) batch-number channels."""
        return [(m.meter_id, BATCH_ID) for m in self.meters if BATCH_ID in m.channels]

    def validate(self) -> None:
        """Raise :class:`TopologyError` on any inconsistency; called on construction."""
        if self.matching_mode not in MATCHING_MODES:
            raise TopologyError(f"matching_mode must be one of {MATCHING_MODES}")
        try:
            tz = civil_zone(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise TopologyError(f"unknown time zone {self.timezone!r}") from None
        if not whole_hour_zone(tz):
            raise TopologyError(f"time zone {self.timezone}: its UTC offsets must be whole hours")
        _unique("meter", [m.meter_id for m in self.meters])
        _unique("cost centre", [c.cost_centre_id for c in self.cost_centres])
        _unique("product", [p.product_id for p in self.products])
        centres = {c.cost_centre_id: c for c in self.cost_centres}
        production = {k for k, c in centres.items() if c.kind == "production"}
        for c in self.cost_centres:
            if c.kind not in ("production", "utility"):
                raise TopologyError(f"cost centre {c.cost_centre_id!r}: bad kind {c.kind!r}")
            if c.allocation_key not in SHARING_KEYS:
                raise TopologyError(f"cost centre {c.cost_centre_id!r}: bad key {c.allocation_key!r}")
            _check_shares(c.cost_centre_id, c.allocation_key, c.allocation_shares, production)
        if self.remainder_key not in SHARING_KEYS:
            raise TopologyError(f"bad remainder_key {self.remainder_key!r}")
        _check_shares("remainder", self.remainder_key, self.remainder_shares, production)
        if not any(m.role == "grid_import" for m in self.meters):
            raise TopologyError("a site needs at least one grid_import meter")
        for m in self.meters:
            if m.role not in METER_ROLES:
                raise TopologyError(f"meter {m.meter_id!r}: bad role {m.role!r}")
            energy = [c for c in m.counter_channels if c in ENERGY_COUNTERS]
            units = [c for c in m.counter_channels if c in PRODUCTION_COUNTERS]
            if m.role == "production_counter":
                if energy:
                    raise TopologyError(f"production counter {m.meter_id!r} has energy channels {energy}")
            elif not energy or units:
                raise TopologyError(f"meter {m.meter_id!r} ({m.role}) needs energy channels only "
                                    f"(one of {', '.join(ENERGY_COUNTERS)}); it has {list(m.channels)}")
            if m.role == "submeter" and m.cost_centre not in centres:
                raise TopologyError(f"submeter {m.meter_id!r}: unknown cost centre {m.cost_centre!r}")
            if m.rollover_kwh < 0 or m.max_power_kw < 0 or m.poll_period_s <= 0:
                raise TopologyError(f"meter {m.meter_id!r}: negative limits or poll period")
            _check_replacements(m)
        meters = {m.meter_id: m for m in self.meters}
        for p in self.products:
            if p.line not in production:
                raise TopologyError(f"product {p.product_id!r}: {p.line!r} is not a production line")
            m = meters.get(p.units_meter)
            if m is None or p.units_channel not in m.counter_channels:
                raise TopologyError(f"product {p.product_id!r}: no counter {p.units_meter}/{p.units_channel}")
            if p.allocation_key not in PRODUCT_KEYS or p.key_per_unit <= 0:
                raise TopologyError(f"product {p.product_id!r}: bad allocation key")


def _unique(what: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise TopologyError(f"duplicate {what} id {i!r}")
        seen.add(i)


def _check_shares(owner: str, key: str, shares: dict[str, float], production: set[str]) -> None:
    for target, weight in shares.items():
        if target not in production:
            raise TopologyError(f"{owner}: share target {target!r} is not a production cost centre")
        if weight < 0:
            raise TopologyError(f"{owner}: negative share for {target!r}")
    if key == "fixed" and sum(shares.values()) <= 0:
        raise TopologyError(f"{owner}: the fixed key needs positive shares")


def _check_replacements(m: Meter) -> None:
    """Records in time order, each naming the same counter channels of the meter on both sides
    with finite, non-negative register values."""
    last = None
    for r in m.replacements:
        if last is not None and r.at_ms <= last:
            raise TopologyError(f"meter {m.meter_id!r}: replacements must be in time order, one per instant")
        last = r.at_ms
        if not r.old_final or set(r.old_final) != set(r.new_initial):
            raise TopologyError(f"meter {m.meter_id!r}: replacement at {r.at_ms} must give old_final and "
                                "new_initial of the same channels")
        for channel, value in (*r.old_final.items(), *r.new_initial.items()):
            if channel not in m.counter_channels:
                raise TopologyError(f"meter {m.meter_id!r}: replacement names {channel!r}, not one of its "
                                    f"counters {list(m.counter_channels)}")
            if not 0.0 <= value < float("inf"):
                raise TopologyError(f"meter {m.meter_id!r}: replacement reading {value!r} of {channel} "
                                    "is not a finite, non-negative register value")

"""Site files: one plant's gateways, meters, topology and products, read by every part.

The gateway reads its own gateway's meters from it, the accounting service its topology and
products, the simulators the plant they must imitate: one file, one source of truth, so the
three can never disagree about which meter measures what.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tanji import dlt645
from tanji.civil_calendar import DEFAULT_TIMEZONE, civil_zone, whole_hour_zone
from tanji.config_file import Section, load_yaml, parse_yaml
from tanji.gateway_keys import RegisteredKey, key_id, parse_public_key
from tanji.methods import MATCHING_MODES, SHARING_KEYS
from tanji.profile import PROFILES_DIR, MeterProfile, load_profiles
from tanji.quantities import counters_of
from tanji.replacements import MeterReplacement
from tanji.roles import METER_ROLES, ROLE_FLOWS, counters_for

CENTRE_KINDS = ("production", "utility")
ALLOCATION_KEYS = ("units", "mass", "machine_hours", "floor_area", "fixed", "standard_time")
#: What unmatched energy gets in market-based results (GHG Protocol Scope 2 revision options).
UNCOVERED_RULES = ("residual_mix", "fossil_only", "grid_average")
_DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
TRANSPORTS = ("tcp", "rtu")
#: Rates a serial port and a Modbus meter can both be set to; anything else is a typo (9601).
BAUDRATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
FRAMINGS = ("tcp", "rtu")
#: What accounting admits (docs/audit.md): `required` only batches signed by a registered key;
#: `preferred` (default) unsigned ones too, signed ones only when their signature verifies;
#: `off` verifies nothing (and gateways do not sign).
SIGNATURE_MODES = ("required", "preferred", "off")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ID_FIX = "use letters, digits, '-', '_' or '.', at most 64 characters (it becomes an MQTT topic level)"


@dataclass(frozen=True, slots=True)
class Broker:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    keepalive_s: int = 30
    # MQTT 5 session expiry: how long the broker keeps a disconnected client's session (its
    # subscriptions and queued messages). 7 days outlasts any planned outage.
    session_expiry_s: int = 7 * 24 * 3600
    # "5" (default): refused publishes are seen (PUBACK reason codes); "3.1.1" for brokers
    # that speak nothing newer (the demo's embedded amqtt).
    mqtt_version: str = "5"
    # Client certificate for brokers that authenticate gateways by TLS certificate.
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class Bus:
    """An RS-485 line: one request at a time, with a pause between frames."""

    id: str
    device: str
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    timeout_s: float = 0.5
    inter_frame_delay_ms: float = 5.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A TCP address several meters may sit behind: a serial device server (TCP ↔ RS-485) or
    a Modbus TCP gateway. Its meters share one connection.

    `framing`: `tcp` speaks Modbus TCP (MBAP header); `rtu` passes the serial frames through
    unchanged (a device server in transparent / "RTU over TCP" mode), which is also how DL/T 645
    meters are reached over TCP. `max_in_flight` > 1 lets a Modbus TCP gateway that queues
    requests by transaction id work on several at once; with `rtu` framing one frame is on
    the wire at a time. `baudrate` is the device server's serial side (documentation, bus-time
    figures and the simulator's timing).
    """

    id: str
    host: str
    port: int
    framing: str = "tcp"
    timeout_s: float = 1.0
    connect_pause_ms: float = 0.0
    request_pause_ms: float = 0.0
    max_in_flight: int = 1
    baudrate: int | None = None


@dataclass(frozen=True, slots=True)
class Meter:
    id: str
    gateway: str
    profile: MeterProfile
    role: str
    transport: str
    unit_id: int
    poll_period_s: float
    cost_centre: str | None
    host: str | None = None
    port: int | None = None
    bus: str | None = None
    ct_ratio: float = 1.0
    vt_ratio: float = 1.0
    timeout_s: float = 1.0
    max_power_kw: float | None = None
    # DL/T 645 meters: the 12-digit address (nameplate number); Modbus meters use unit_id.
    address: str | None = None
    endpoint: str | None = None
    # Recorded replacements of the physical meter, by time (docs/accounting.md §1).
    replacements: tuple[MeterReplacement, ...] = ()

    @property
    def counters(self) -> tuple[str, ...]:
        """The counter registers this meter is counted by (its role's, among its profile's)."""
        names = [r.name for r in self.profile.registers]
        wanted = counters_for(self.role, names)
        return tuple(n for n in names if n in wanted)

    @property
    def protocol(self) -> str:
        """"modbus" or "dlt645": the meter model's (its profile's) protocol."""
        return self.profile.protocol

    def plausible_max_power_kw(self) -> float:
        """ACCOUNTING.md §1: rated current × CT ratio × voltage, three phases, with 50% margin."""
        if self.max_power_kw is not None:
            return self.max_power_kw
        p = self.profile
        if p.max_current_a and p.nominal_voltage_v:
            return 3 * p.max_current_a * self.ct_ratio * p.nominal_voltage_v * self.vt_ratio / 1000 * 1.5
        return math.inf


@dataclass(frozen=True, slots=True)
class Gateway:
    id: str
    meters: tuple[Meter, ...]
    buses: tuple[Bus, ...]
    spool_path: str
    spool_max_mb: float
    batch_max_readings: int
    publish_interval_s: float
    endpoints: tuple[Endpoint, ...] = ()
    # confirmed: a reading leaves the spool once accounting confirms it stored it durably
    # (end-to-end); broker: once the broker acknowledged it (for third-party consumers).
    delivery: str = "confirmed"
    # Prometheus /metrics on this port (None: not served); metrics_host is where it listens.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # The public keys accounting accepts this gateway's signatures from (docs/audit.md), and
    # where the gateway keeps its private key (None: `<spool_path>.key`).
    keys: tuple[RegisteredKey, ...] = ()
    signing_key_file: str | None = None

    def endpoint(self, endpoint_id: str | None) -> Endpoint | None:
        return next((e for e in self.endpoints if e.id == endpoint_id), None)


@dataclass(frozen=True, slots=True)
class CostCentre:
    id: str
    kind: str
    name: str
    allocation_key: str
    key_uncertainty_pct: float
    fixed_shares: dict[str, float] = field(default_factory=dict)
    floor_area_m2: float | None = None


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    cost_centre: str
    counter_meter: str
    counter_channel: str
    mass_kg: float | None = None
    standard_time_s: float | None = None
    upstream_kgco2e_per_unit: float | None = None
    declared_unit_kwh: float | None = None
    batch_meter: str | None = None


@dataclass(frozen=True, slots=True)
class Market:
    """Market-based options of the Scope 2 revision, always disclosed with the results.

    ``uncovered``: what unmatched energy gets (residual mix where published, else the grid
    average; the published fossil-only factor; or the grid average). Hourly matching with an
    exemption: a site whose declared annual consumption is below ``hourly_exemption_mwh`` may
    match ``exempt_matching_mode`` (monthly or annual) instead. Contracts signed before
    ``legacy_contracts_signed_before`` keep their monthly settlement under hourly matching.
    ``own_generation_projects``: the GEC project codes of the site's own metered PV, whose
    certificates are not counted on top of its self-consumption.
    """

    uncovered: str = "residual_mix"
    hourly_exemption_mwh: float | None = None
    exempt_matching_mode: str = "monthly"
    annual_consumption_mwh: float | None = None
    legacy_contracts_signed_before: str | None = None
    own_generation_projects: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name: str
    province: str
    grid_region: str | None
    timezone: str
    matching_mode: str
    factor_dataset: str | None
    broker: Broker
    gateways: tuple[Gateway, ...]
    cost_centres: tuple[CostCentre, ...]
    products: tuple[Product, ...]
    file: str
    remainder_key: str = "energy"
    remainder_shares: dict[str, float] = field(default_factory=dict)
    remainder_key_uncertainty_pct: float = 0.0
    market: Market = field(default_factory=Market)
    signatures: str = "preferred"

    @property
    def zone(self) -> ZoneInfo:
        """The site's civil time zone: its calendar windows, shifts and local times are in it.

        The one place a site's zone is made (the site file's name was checked when read; a
        site built by hand with no or an unknown name is on Beijing time, the default)."""
        try:
            return civil_zone(self.timezone or DEFAULT_TIMEZONE)
        except (ZoneInfoNotFoundError, ValueError):
            return civil_zone(DEFAULT_TIMEZONE)

    @property
    def meters(self) -> tuple[Meter, ...]:
        return tuple(m for g in self.gateways for m in g.meters)

    def gateway(self, gateway_id: str) -> Gateway:
        for g in self.gateways:
            if g.id == gateway_id:
                return g
        raise KeyError(f"site {self.id} has no gateway {gateway_id!r} (it has {[g.id for g in self.gateways]})")

    def meter(self, meter_id: str) -> Meter:
        for m in self.meters:
            if m.id == meter_id:
                return m
        raise KeyError(f"site {self.id} has no meter {meter_id!r}")

    def with_meter_addresses(self, addresses: dict[str, tuple[str, int]]) -> Site:
        """A copy whose TCP meters listen elsewhere (tests and the demo pick free ports)."""
        gateways = tuple(
            replace(g, meters=tuple(
                replace(m, host=addresses[m.id][0], port=addresses[m.id][1]) if m.id in addresses else m
                for m in g.meters))
            for g in self.gateways)
        return replace(self, gateways=gateways)

    def with_bus_devices(self, devices: dict[str, str]) -> Site:
        """A copy whose RS-485 buses (by id) are on other serial devices (the demo uses a pty pair)."""
        gateways = tuple(
            replace(g, buses=tuple(replace(b, device=devices[b.id]) if b.id in devices else b for b in g.buses))
            for g in self.gateways)
        return replace(self, gateways=gateways)

    def with_broker(self, broker: Broker) -> Site:
        return replace(self, broker=broker)


def _check_id(section: Section, key: str) -> str:
    value = section.get(key, (str, int))
    value = str(value)
    if not _ID.match(value):
        raise section.error(key, f"{value!r} is not a valid id", _ID_FIX)
    return value


def _broker(section: Section | None) -> Broker:
    if section is None:
        return Broker()
    broker = Broker(
        host=section.get("host", str, "127.0.0.1"),
        port=section.integer("port", 1883, minimum=1, maximum=65535),
        tls=section.get("tls", bool, False),
        ca_file=section.get("ca_file", str, None),
        username=section.get("username", str, None),
        password_file=section.get("password_file", str, None),
        keepalive_s=section.integer("keepalive_s", 30, minimum=5),
        session_expiry_s=section.integer("session_expiry_s", 7 * 24 * 3600, minimum=60, maximum=0xFFFFFFFF),
        mqtt_version=section.choice("mqtt_version", ("5", "3.1.1"), "5"),
        cert_file=section.get("cert_file", str, None),
        key_file=section.get("key_file", str, None),
    )
    section.reject_unknown()
    if broker.cert_file and not broker.tls:
        raise section.error("cert_file", "a client certificate needs TLS", "add tls: true")
    if bool(broker.cert_file) != bool(broker.key_file):
        raise section.error("cert_file" if broker.key_file else "key_file",
                            "cert_file and key_file go together", "give both, or neither")
    return broker


def _baudrate(section: Section) -> int:
    value = section.integer("baudrate", 9600)
    if value not in BAUDRATES:
        nearest = min(BAUDRATES, key=lambda rate: abs(rate - value))
        raise section.error("baudrate", f"{value} is not a standard baud rate",
                            f"did you mean {nearest}? (use the rate set on the meters: "
                            f"{', '.join(map(str, BAUDRATES))})")
    return value


def _bus(section: Section) -> Bus:
    bus = Bus(
        id=_check_id(section, "id"),
        device=section.get("device", str, fix="name the serial device, e.g. device: /dev/ttyUSB0"),
        baudrate=_baudrate(section),
        parity=section.choice("parity", ("N", "E", "O"), "N"),
        stopbits=section.integer("stopbits", 1, minimum=1, maximum=2),
        bytesize=section.integer("bytesize", 8, minimum=7, maximum=8),
        timeout_s=section.number("timeout_s", 0.5, positive=True),
        inter_frame_delay_ms=section.number("inter_frame_delay_ms", 5.0, minimum=0),
    )
    section.reject_unknown()
    return bus


def _endpoint(section: Section) -> Endpoint:
    endpoint = Endpoint(
        id=_check_id(section, "id"),
        host=section.get("host", str, fix="give the device server's IP address, e.g. host: 192.168.1.30"),
        port=section.integer("port", 502, minimum=1, maximum=65535),
        framing=section.choice("framing", FRAMINGS, "tcp"),
        timeout_s=section.number("timeout_s", 1.0, positive=True),
        connect_pause_ms=section.number("connect_pause_ms", 0.0, minimum=0),
        request_pause_ms=section.number("request_pause_ms", 0.0, minimum=0),
        max_in_flight=section.integer("max_in_flight", 1, minimum=1, maximum=64),
        baudrate=section.integer("baudrate", None, minimum=300),
    )
    section.reject_unknown()
    if endpoint.framing == "rtu" and endpoint.max_in_flight != 1:
        raise section.error("max_in_flight", "serial frames carry no transaction id: one at a time on the wire",
                            "remove max_in_flight (or use framing: tcp for a Modbus TCP gateway)")
    return endpoint


def _meter(section: Section, gateway_id: str, profiles: dict[str, MeterProfile], buses: set[str],
           endpoints: dict[str, Endpoint] | None = None, tz: ZoneInfo | None = None) -> Meter:
    endpoints = endpoints or {}
    meter_id = _check_id(section, "id")
    model = section.get("profile", str)
    if model not in profiles:
        raise section.error("profile", f"no meter profile {model!r}",
                            f"add firmware-config/profiles/{model}.yaml or use one of: {', '.join(sorted(profiles))}")
    transport = section.choice("transport", TRANSPORTS, "tcp")
    host = port = bus = endpoint = None
    if transport == "tcp" and "endpoint" in section:
        endpoint = section.get("endpoint", str)
        if endpoint not in endpoints:
            raise section.error("endpoint", f"no endpoint {endpoint!r} on gateway {gateway_id}",
                                f"define it under endpoints: or use one of: {', '.join(sorted(endpoints)) or '(none)'}")
        for key in ("host", "port"):
            if key in section:
                raise section.error(key, f"the meter is reached through endpoint {endpoint}",
                                    f"remove {key} (the endpoint has it) or remove endpoint")
        host, port = endpoints[endpoint].host, endpoints[endpoint].port
    elif transport == "tcp":
        host = section.get("host", str, fix="give the meter's IP address, e.g. host: 192.168.1.20")
        port = section.integer("port", 502, minimum=1, maximum=65535)
    else:
        bus = section.get("bus", str, fix="name the RS-485 bus this meter hangs on (an id from buses:)")
        if bus not in buses:
            raise section.error("bus", f"no bus {bus!r} on gateway {gateway_id}",
                                f"define it under buses: or use one of: {', '.join(sorted(buses)) or '(none)'}")
    meter = Meter(
        id=meter_id,
        gateway=gateway_id,
        profile=profiles[model],
        role=section.choice("role", METER_ROLES),
        transport=transport,
        unit_id=section.integer("unit_id", 1, minimum=0, maximum=247),
        poll_period_s=section.number("poll_period_s", 5.0, positive=True),
        cost_centre=section.get("cost_centre", str, None),
        host=host,
        port=port,
        bus=bus,
        ct_ratio=section.number("ct_ratio", 1.0, positive=True),
        vt_ratio=section.number("vt_ratio", 1.0, positive=True),
        timeout_s=section.number("timeout_s", 1.0, positive=True),
        max_power_kw=section.number("max_power_kw", None, positive=True),
        address=_dlt645_address(section, profiles[model]),
        endpoint=endpoint,
    )
    if "replacements" in section:
        meter = replace(meter, replacements=_replacements(section, meter, tz or ZoneInfo("UTC")))
    section.reject_unknown()
    if meter.protocol == "dlt645" and transport == "tcp" and (
            endpoint is None or endpoints[endpoint].framing != "rtu"):
        raise section.error("endpoint" if endpoint else "transport",
                            "a DL/T 645 meter over TCP needs a serial device server passing frames through",
                            "define an endpoint with framing: rtu (transparent mode) and set endpoint: <its id>")
    if not counters_for(meter.role, [r.name for r in meter.profile.registers]):
        wanted = ", ".join(counters_of(ROLE_FLOWS[meter.role]))
        raise section.error("profile", f"profile {model!r} maps no counter a {meter.role} meter is counted by",
                            f"use a profile that maps one of: {wanted}")
    if meter.role == "submeter" and not meter.cost_centre:
        raise section.error("cost_centre", "a submeter must name the cost centre it measures",
                            "add cost_centre: <id from cost_centres:>")
    return meter


def _replacements(section: Section, meter: Meter, tz: ZoneInfo) -> tuple[MeterReplacement, ...]:
    """The meter's recorded replacements: when the new meter went in, the old one's last
    register readings and the new one's first, per counter register."""
    records = []
    for r in section.sections("replacements"):
        at = _instant_ms(r, "at", tz)
        if at is None:
            raise r.error("at", "a replacement needs the time the new meter went in",
                          "add e.g. at: 2026-07-01T10:30:00 (site time) or with its offset, +08:00")
        old = _register_readings(r, "old_final", meter)
        new = _register_readings(r, "new_initial", meter)
        if set(old) != set(new):
            raise r.error("new_initial", f"old_final gives {', '.join(sorted(old))}, new_initial gives "
                          f"{', '.join(sorted(new))}", "give the old and the new meter's readings of the same registers")
        r.get("note", str, "")
        r.reject_unknown()
        records.append((r, MeterReplacement(at, old, new)))
    records.sort(key=lambda item: item[1].at_ms)
    for (first, a), (second, b) in zip(records, records[1:], strict=False):
        if a.at_ms == b.at_ms:
            raise second.error("at", f"two replacements of meter {meter.id} at the same time (the other at "
                               f"{first.file}:{first.line_of('at')})", "record each replacement once")
    return tuple(record for _, record in records)


def _register_readings(r: Section, key: str, meter: Meter) -> dict[str, float]:
    """A register reading as Tanji reads it (kWh after CT/VT ratios, or units): a number for a
    meter counted by one register, else a mapping register → reading."""
    counters = meter.counters
    example = ", ".join(f"{c}: 1234.5" for c in counters)
    value = r.get(key, (float, Section), fix=f"add {key}: the register reading, or {{{example}}}")
    if not isinstance(value, Section):
        if len(counters) != 1:
            raise r.error(key, f"meter {meter.id} is counted by {', '.join(counters)}: say which reading is which",
                          f"write {key}: {{{example}}}")
        readings = {counters[0]: value}
    else:
        readings = {}
        for channel in value:
            if channel not in counters:
                raise value.error(channel, f"meter {meter.id} has no counter {channel}",
                                  f"use one of: {', '.join(counters)}")
            readings[channel] = value.number(channel)
        if not readings:
            raise r.error(key, "no register readings given", f"write {key}: {{{example}}}")
    for channel, reading in readings.items():
        if not (math.isfinite(reading) and reading >= 0):
            raise r.error(key, f"{channel} reading {reading!r} is not a register value (finite, >= 0)",
                          "copy the reading from the meter's display or the commissioning record")
    return readings


def _unique(sections: list[Section], ids: list[str], what: str) -> None:
    """Refuse an id used twice, naming where it was first defined."""
    first: dict[str, Section] = {}
    for section, item_id in zip(sections, ids, strict=True):
        if item_id in first:
            where = first[item_id]
            raise section.error("id", f"{what} id {item_id!r} is used twice (first defined at "
                                f"{where.file}:{where.line_of('id')})", f"give every {what} its own id")
        first[item_id] = section


def _dlt645_address(section: Section, profile: MeterProfile) -> str | None:
    if profile.protocol != "dlt645":
        if "address" in section:
            raise section.error("address", f"{profile.model} speaks Modbus: it has a unit_id, not an address",
                                "remove address and give unit_id")
        return None
    raw = section.data.get("address")
    if not isinstance(raw, str):
        raise section.error("address", "a DL/T 645 meter needs its 12-digit address as a quoted string",
                            'write e.g. address: "000012345678" (quoted, so leading zeros are kept)')
    try:
        return dlt645.check_address(section.get("address", str))
    except dlt645.FrameError as exc:
        raise section.error("address", str(exc), 'write e.g. address: "000012345678"') from None


def _instant_ms(section: Section, key: str, tz: ZoneInfo) -> int | None:
    """A point in time from the site file: a date (midnight, site time), a datetime (site time
    unless it names its offset) or such a string; as UTC epoch ms."""
    value = section.get(key, (str, date, datetime), None)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise section.error(key, f"{value!r} is not a date or time",
                                "write e.g. 2026-07-01 or 2026-07-01T08:00:00+08:00") from None
    if not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return int(value.timestamp() * 1000)


def _keys(section: Section, gateway_id: str, tz: ZoneInfo) -> tuple[RegisteredKey, ...]:
    keys = []
    for k in section.sections("keys", []):
        text = k.get("public_key", str, fix="paste the public key `tanji gateway keygen` printed")
        try:
            raw = parse_public_key(text)
        except ValueError as exc:
            raise k.error("public_key", str(exc), "paste the base64 public key `tanji gateway keygen` printed") from None
        key = RegisteredKey(gateway=gateway_id, public_key=text.strip(), key_id=key_id(raw),
                            valid_from_ms=_instant_ms(k, "valid_from", tz),
                            valid_until_ms=_instant_ms(k, "valid_until", tz),
                            revoked_ms=_instant_ms(k, "revoked", tz))
        k.get("note", str, "")
        k.reject_unknown()
        if key.valid_from_ms is not None and key.valid_until_ms is not None and key.valid_until_ms <= key.valid_from_ms:
            raise k.error("valid_until", "valid_until is not after valid_from", "swap them, or fix the dates")
        keys.append((k, key))
    seen: dict[str, Section] = {}
    for k, key in keys:
        if key.key_id in seen:
            raise k.error("public_key", f"key {key.key_id} is registered twice (first at "
                          f"{seen[key.key_id].file}:{seen[key.key_id].line_of('public_key')})",
                          "register each key once; rotate by adding the new key with valid_from")
        seen[key.key_id] = k
    return tuple(key for _, key in keys)


def _gateway(section: Section, profiles: dict[str, MeterProfile], tz: ZoneInfo | None = None) -> Gateway:
    gateway_id = _check_id(section, "id")
    bus_sections = section.sections("buses", [])
    buses = tuple(_bus(b) for b in bus_sections)
    _unique(bus_sections, [b.id for b in buses], "bus")
    bus_ids = {b.id for b in buses}
    endpoint_sections = section.sections("endpoints", [])
    endpoints = tuple(_endpoint(e) for e in endpoint_sections)
    _unique(endpoint_sections, [e.id for e in endpoints], "endpoint")
    endpoint_ids = {e.id: e for e in endpoints}
    meter_sections = section.sections("meters")
    meters = tuple(_meter(m, gateway_id, profiles, bus_ids, endpoint_ids, tz) for m in meter_sections)
    _check_shared_lines(meter_sections, meters)
    gateway = Gateway(
        id=gateway_id,
        meters=meters,
        buses=buses,
        spool_path=section.get("spool_path", str, f"spool-{gateway_id}.sqlite"),
        spool_max_mb=section.number("spool_max_mb", 512.0, positive=True),
        batch_max_readings=section.integer("batch_max_readings", 500, minimum=1, maximum=5000),
        publish_interval_s=section.number("publish_interval_s", 0.2, positive=True),
        endpoints=endpoints,
        delivery=section.choice("delivery", ("confirmed", "broker"), "confirmed"),
        metrics_port=section.integer("metrics_port", None, minimum=1, maximum=65535),
        metrics_host=section.get("metrics_host", str, "127.0.0.1"),
        keys=_keys(section, gateway_id, tz or ZoneInfo("UTC")),
        signing_key_file=section.get("signing_key_file", str, None),
    )
    section.reject_unknown()
    return gateway


def _check_shared_lines(sections: list[Section], meters: tuple[Meter, ...]) -> None:
    """Meters behind one host:port share its connection: they must agree on how it is spoken.
    (Two meters at one unit id or address are refused by `_check_references`.)"""
    by_address: dict[tuple[str | None, int | None], str | None] = {}
    for section, m in zip(sections, meters, strict=True):
        if m.transport != "tcp":
            continue
        key = (m.host, m.port)
        if key in by_address and by_address[key] != m.endpoint:
            raise section.error("endpoint" if m.endpoint else "host",
                                f"{m.host}:{m.port} is also reached as endpoint {by_address[key] or '(none)'} "
                                "by another meter", "reach every meter at this address through the same endpoint")
        by_address[key] = m.endpoint


def _shares(section: Section | None) -> dict[str, float]:
    return {k: float(section.number(k, minimum=0)) for k in section} if section is not None else {}


def _cost_centre(section: Section) -> CostCentre:
    centre = CostCentre(
        id=_check_id(section, "id"),
        kind=section.choice("kind", CENTRE_KINDS),
        name=section.get("name", str, ""),
        allocation_key=section.choice("allocation_key", ALLOCATION_KEYS, "units"),
        key_uncertainty_pct=section.number("key_uncertainty_pct", 0.0, minimum=0),
        fixed_shares=_shares(section.section("fixed_shares", None)),
        floor_area_m2=section.number("floor_area_m2", None, positive=True),
    )
    section.reject_unknown()
    if centre.allocation_key == "fixed" and centre.kind == "utility" and not centre.fixed_shares:
        raise section.error("fixed_shares", "allocation_key fixed needs fixed_shares",
                            "add fixed_shares: {line-a: 0.6, line-b: 0.4}")
    return centre


def _market(section: Section | None) -> Market:
    if section is None:
        return Market()
    legacy = section.get("legacy_contracts_signed_before", (str, date), None)
    legacy = legacy.isoformat() if isinstance(legacy, date) else legacy
    if legacy is not None and not _DATE.match(legacy):
        raise section.error("legacy_contracts_signed_before", f"{legacy!r} is not a date",
                            "write it as YYYY-MM-DD, e.g. legacy_contracts_signed_before: \"2027-01-01\"")
    projects = section.get("own_generation_projects", list, [])
    if not all(isinstance(p, str) and p.strip() for p in projects):
        raise section.error("own_generation_projects", "project codes must be non-empty strings",
                            "list the GEC project codes of the site's own PV, e.g. [\"PV-320500-0001\"]")
    market = Market(
        uncovered=section.choice("uncovered", UNCOVERED_RULES, "residual_mix"),
        hourly_exemption_mwh=section.number("hourly_exemption_mwh", None, minimum=0),
        exempt_matching_mode=section.choice("exempt_matching_mode", ("annual", "monthly"), "monthly"),
        annual_consumption_mwh=section.number("annual_consumption_mwh", None, minimum=0),
        legacy_contracts_signed_before=legacy,
        own_generation_projects=tuple(p.strip() for p in projects),
    )
    if market.hourly_exemption_mwh is not None and market.annual_consumption_mwh is None:
        raise section.error("hourly_exemption_mwh", "an hourly-matching exemption needs the site's annual consumption",
                            "add annual_consumption_mwh: (the site's consumption in MWh per year)")
    section.reject_unknown()
    return market


def _product(section: Section) -> Product:
    counter = section.section("counter", fix="name the PLC counter: counter: {meter: plc-a, channel: units_total}")
    product = Product(
        id=_check_id(section, "id"),
        name=section.get("name", str, ""),
        cost_centre=section.get("cost_centre", str),
        counter_meter=counter.get("meter", str),
        counter_channel=counter.get("channel", str, "units_total"),
        mass_kg=section.number("mass_kg", None, positive=True),
        standard_time_s=section.number("standard_time_s", None, positive=True),
        upstream_kgco2e_per_unit=section.number("upstream_kgco2e_per_unit", None, minimum=0),
        declared_unit_kwh=section.number("declared_unit_kwh", None, positive=True),
        batch_meter=counter.get("batch_meter", str, None),
    )
    counter.reject_unknown()
    section.reject_unknown()
    return product


def parse_site(root: Section, profiles: dict[str, MeterProfile] | None = None) -> Site:
    """Validate a parsed site file, including every cross-reference between its parts."""
    profiles = profiles if profiles is not None else load_profiles(PROFILES_DIR)
    site_section = root.section("site")
    tz = _timezone(site_section)
    gateways = tuple(_gateway(g, profiles, tz) for g in root.sections("gateways"))
    centres = tuple(_cost_centre(c) for c in root.sections("cost_centres", []))
    products_sections = root.sections("products", [])
    products = tuple(_product(p) for p in products_sections)
    site = Site(
        id=_check_id(site_section, "id"),
        name=site_section.get("name", str, ""),
        province=site_section.get("province", str, fix="name the province, e.g. province: Chongqing"),
        grid_region=site_section.get("grid_region", str, None),
        timezone=site_section.get("timezone", str, DEFAULT_TIMEZONE),
        matching_mode=site_section.choice("matching_mode", MATCHING_MODES, "annual"),
        factor_dataset=site_section.get("factor_dataset", str, None),
        broker=_broker(root.section("broker", None)),
        gateways=gateways,
        cost_centres=centres,
        products=products,
        file=root.file,
        remainder_key=site_section.choice("remainder_key", SHARING_KEYS, "energy"),
        remainder_shares=_shares(site_section.section("remainder_shares", None)),
        remainder_key_uncertainty_pct=site_section.number("remainder_key_uncertainty_pct", 0.0, minimum=0),
        market=_market(site_section.section("market", None)),
        signatures=site_section.choice("signatures", SIGNATURE_MODES, "preferred"),
    )
    site_section.reject_unknown()
    root.reject_unknown(("site", "broker", "gateways", "cost_centres", "products", "simulation"))
    _check_references(root, site, products_sections)
    return site


def _timezone(site_section: Section) -> ZoneInfo:
    name = site_section.get("timezone", str, DEFAULT_TIMEZONE)
    try:
        tz = civil_zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise site_section.error("timezone", f"unknown time zone {name!r}", "use an IANA name, e.g. Asia/Shanghai") from None
    if not whole_hour_zone(tz):
        raise site_section.error("timezone", f"{name} has UTC offsets that are not whole hours: energy is booked in "
                                 "whole UTC hours, so its days and months would not start on an hour",
                                 "use the zone of a whole-hour offset (Asia/Shanghai, Europe/Budapest, …)")
    return tz


def device_address(meter: Meter) -> str:
    """Where a meter answers: `host:port unit N` (TCP) or `gateway/bus unit N` (RS-485); a DL/T 645
    meter by its 12-digit address (`address 000012345678`), so it never clashes with a Modbus unit id."""
    who = f"address {meter.address}" if meter.protocol == "dlt645" else f"unit {meter.unit_id}"
    if meter.transport == "tcp":
        return f"{meter.host}:{meter.port} {who}"
    return f"bus {meter.gateway}/{meter.bus} {who}"


def _check_references(root: Section, site: Site, product_sections: list[Section]) -> None:
    gateway_sections = root.sections("gateways")
    _unique(gateway_sections, [g.id for g in site.gateways], "gateway")
    meter_ids: dict[str, str] = {}
    meter_sections = [m for g in gateway_sections for m in g.sections("meters")]
    _unique(meter_sections, [m.id for m in site.meters], "meter")
    addresses: dict[tuple[str, str], tuple[Meter, Section]] = {}
    for m_section, m in zip(meter_sections, site.meters, strict=True):
        meter_ids[m.id] = m.role
        if m.cost_centre is not None and m.cost_centre not in {c.id for c in site.cost_centres}:
            raise m_section.error("cost_centre", f"no cost centre {m.cost_centre!r}",
                                  "define it under cost_centres:")
        # Two meters at one address would poll one device twice and count its energy twice.
        # Addresses are per gateway: two edge boxes may each have their own 192.168.1.20.
        address = device_address(m)
        if (m.gateway, address) in addresses:
            other, where = addresses[(m.gateway, address)]
            raise m_section.error("unit_id", f"meter {m.id!r} is at {address}, like meter {other.id!r} "
                                  f"({where.file}:{where.line_of('unit_id')})",
                                  "give each device its own unit id (or address), or remove the duplicate meter")
        addresses[(m.gateway, address)] = (m, m_section)
    owners: dict[str, tuple[str, Section]] = {}
    for g_section, g in zip(gateway_sections, site.gateways, strict=True):
        for k_section, key in zip(g_section.sections("keys", []), g.keys, strict=True):
            if key.key_id in owners and owners[key.key_id][0] != g.id:
                raise k_section.error("public_key", f"key {key.key_id} is already gateway {owners[key.key_id][0]}'s "
                                      f"({owners[key.key_id][1].file}:{owners[key.key_id][1].line_of('public_key')})",
                                      "give every gateway its own key (`tanji gateway keygen` on each box)")
            owners[key.key_id] = (g.id, k_section)
    _unique(root.sections("cost_centres", []), [c.id for c in site.cost_centres], "cost centre")
    _unique(product_sections, [p.id for p in site.products], "product")
    centre_ids = {c.id for c in site.cost_centres}
    for section, product in zip(product_sections, site.products, strict=True):
        if product.cost_centre not in centre_ids:
            raise section.error("cost_centre", f"no cost centre {product.cost_centre!r}",
                                f"use one of: {', '.join(sorted(centre_ids))}")
        for ref in (product.counter_meter, product.batch_meter):
            if ref is not None and ref not in meter_ids:
                raise section.error("counter", f"no meter {ref!r}", "name a meter defined under gateways:")
        counter = site.meter(product.counter_meter)
        if product.counter_channel not in {r.name for r in counter.profile.registers}:
            raise section.error("counter", f"meter {counter.id} ({counter.profile.model}) has no "
                                f"{product.counter_channel!r}", "use a register its profile maps, e.g. units_total")
    metered_lines = {m.cost_centre for m in site.meters if m.role == "submeter"}
    production = [c.id for c in site.cost_centres if c.kind == "production"]
    site_section = root.section("site")
    if site.remainder_key == "energy" and production and not metered_lines & set(production):
        raise site_section.error("remainder_key", "the unmetered remainder is shared by the lines' metered "
                                 "energy, but no production line has a submeter",
                                 "set remainder_key: units (or fixed with remainder_shares), or add a submeter")
    if site.remainder_key == "fixed" and set(site.remainder_shares) != set(production):
        raise site_section.error("remainder_shares", "fixed remainder shares must name every production line",
                                 f"give a share for each of: {', '.join(production)}")
    if not any(m.role == "grid_import" for m in site.meters):
        raise root.error("gateways", "the site has no grid_import meter (the incomer)",
                         "give the meter on the grid connection role: grid_import")


def load_site(path: str | Path, profiles: dict[str, MeterProfile] | None = None) -> Site:
    return parse_site(load_yaml(path), profiles)


def parse_site_text(text: str, file: str = "<site>", profiles: dict[str, MeterProfile] | None = None) -> Site:
    return parse_site(parse_yaml(text, file), profiles)

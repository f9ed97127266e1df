"""Polling: a period per meter, every meter in its own task, failing meters backing off.

Isolation is the point. Each meter runs its own asyncio task over its own link (a TCP
connection, or its bus' shared serial line), so a dead or slow TCP meter only ever waits on
itself; on an RS-485 bus a meter can only take the line for one request at a time, and a
failing meter backs off (period × 2^failures, capped) so it stops eating the line's time.

Ticks are kept on a fixed grid (start + k × period) rather than "period after the last
poll", so the poll rate does not drift with response time; a tick missed because a poll
overran is skipped and counted, never bunched up. Start times are spread over one period
so that 200 meters with the same period do not all fire at once. Timestamps are UTC epoch
ms taken when the (last) response of the poll arrives, not when the poll was planned.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gateway.clock import READINGS
from gateway.links import (
    Dlt645Link,
    MbapConnection,
    ModbusRtuLink,
    ModbusTcpLink,
    PollError,
    SerialBusLine,
    TcpSerialLine,
)
from gateway.read_plan import ReadRequest, plan_for_profile
from gateway.register_map import Dlt645Map, RegisterMap
from tanji.site import Endpoint, Gateway, Meter
from tanji.wire import Reading

log = logging.getLogger("tanji.gateway.scheduler")
MAX_BACKOFF_S = 60.0


def now_ms() -> int:
    """UTC epoch ms for a reading: the wall clock, bridged by the monotonic one over steps (gateway/clock.py)."""
    return READINGS.now_ms()


@dataclass(slots=True)
class MeterHealth:
    """Counters one meter's poller keeps for the status topic and `tanji gateway status`."""

    polls: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    overruns: int = 0
    last_error: str | None = None
    last_ok_ms: int | None = None
    last_duration_ms: float = 0.0
    next_delay_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"polls": self.polls, "errors": self.errors, "consecutive_errors": self.consecutive_errors,
                "overruns": self.overruns, "last_error": self.last_error, "last_ok_ms": self.last_ok_ms,
                "last_duration_ms": round(self.last_duration_ms, 1), "next_delay_s": round(self.next_delay_s, 3)}


class ModbusReader:
    """One Modbus meter's poll: its read plan over its link, decoded by its register map."""

    def __init__(self, meter: Meter, link: Any, plan: tuple[ReadRequest, ...]) -> None:
        self.link = link
        self.plan = plan
        self.map = RegisterMap(meter, plan)

    async def read(self, timeout_s: float) -> Reading:
        async with self.link.hold():  # a serial line is kept for the whole poll
            responses = [await self.link.read(req.function_code, req.address, req.count, timeout_s)
                         for req in self.plan]
        return self.map.decode(responses, now_ms())

    def failed(self, ts_ms: int) -> Reading:
        return self.map.failed(ts_ms)

    def describe(self) -> str:
        return f"{len(self.plan)} requests: " + "; ".join(r.describe() for r in self.plan)


class Dlt645Reader:
    """One DL/T 645 meter's poll: one read frame per data identifier of its profile."""

    def __init__(self, meter: Meter, link: Dlt645Link) -> None:
        self.link = link
        self.map = Dlt645Map(meter)
        self.dis = tuple(reg.di for reg, _ in self.map.items)

    async def read(self, timeout_s: float) -> Reading:
        async with self.link.hold():  # one meter's 20 frames together, then the next meter
            answers = [await self.link.read(di, timeout_s) for di in self.dis]
        return self.map.decode(answers, now_ms())

    def failed(self, ts_ms: int) -> Reading:
        return self.map.failed(ts_ms)

    def describe(self) -> str:
        return f"{len(self.dis)} requests: DI " + ",".join(f"{di:08X}" for di in self.dis)


class MeterPoller:
    """Polls one meter forever on its period and hands each reading to `sink`."""

    def __init__(self, meter: Meter, reader: ModbusReader | Dlt645Reader, sink: Callable[[Reading], None], *,
                 timeout_s: float | None = None, max_backoff_s: float = MAX_BACKOFF_S) -> None:
        self.meter = meter
        self.reader = reader
        self.sink = sink
        self.timeout_s = timeout_s if timeout_s is not None else meter.timeout_s
        self.max_backoff_s = max(max_backoff_s, meter.poll_period_s)
        self.health = MeterHealth()

    async def poll_once(self) -> Reading:
        started = time.perf_counter()
        try:
            reading = await self.reader.read(self.timeout_s)
        except PollError as exc:
            reading = self.reader.failed(now_ms())
            self.health.errors += 1
            self.health.consecutive_errors += 1
            if self.health.last_error != str(exc) or self.health.consecutive_errors == 1:
                log.warning("meter %s: poll failed (%s)", self.meter.id, exc)
            self.health.last_error = str(exc)
        else:
            if self.health.consecutive_errors:
                log.info("meter %s: answering again after %d failed polls", self.meter.id,
                         self.health.consecutive_errors)
            self.health.consecutive_errors = 0
            self.health.last_ok_ms = reading.ts_ms
        self.health.polls += 1
        self.health.last_duration_ms = (time.perf_counter() - started) * 1000
        return reading

    def backoff_s(self) -> float:
        """Delay before the next poll of a failing meter: period × 2^(failures-1), capped."""
        failures = self.health.consecutive_errors
        if failures <= 1:
            return 0.0
        return min(self.meter.poll_period_s * 2 ** min(failures - 1, 30), self.max_backoff_s)

    async def run(self, start_offset_s: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        period = self.meter.poll_period_s
        due = loop.time() + start_offset_s
        try:
            while True:
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.sink(await self.poll_once())
                now = loop.time()
                due += period
                backoff = self.backoff_s()
                if backoff:
                    due = max(due, now + backoff)
                if due <= now:
                    missed = math.ceil((now - due) / period)
                    self.health.overruns += missed
                    due += missed * period
                self.health.next_delay_s = max(0.0, due - now)
        finally:
            pass  # lines are shared: the Scheduler closes them once every poller has stopped


class Scheduler:
    """All pollers of one gateway over its lines: buses, device servers, Modbus TCP connections.

    Meters that share a serial bus, or a host:port, share one line (one connection); the line's
    settings come from the bus or the endpoint the meters name (a host:port no endpoint names
    is a plain Modbus TCP connection with defaults).
    """

    def __init__(self, gateway: Gateway, sink: Callable[[Reading], None]) -> None:
        self.gateway = gateway
        self.buses: dict[str, SerialBusLine] = {bus.id: SerialBusLine(bus) for bus in gateway.buses}
        self.lines: dict[tuple[str | None, int | None], TcpSerialLine | MbapConnection] = {}
        self.pollers: list[MeterPoller] = []
        for meter in gateway.meters:
            if meter.transport == "rtu":
                bus = self.buses[meter.bus or ""]
                line: Any = bus
                # The bus' response timeout governs: it is a property of the line (baud rate, length).
                timeout = min(meter.timeout_s, bus.bus.timeout_s)
            else:
                endpoint = gateway.endpoint(meter.endpoint) or Endpoint(
                    id=f"{meter.host}:{meter.port}", host=meter.host or "127.0.0.1", port=meter.port or 502,
                    timeout_s=meter.timeout_s)
                key = (meter.host, meter.port)
                if key not in self.lines:
                    # with_meter_addresses (tests, the demo) may have moved the meter: its host/port win
                    endpoint = replace(endpoint, host=meter.host or endpoint.host, port=meter.port or endpoint.port)
                    self.lines[key] = (TcpSerialLine(endpoint) if endpoint.framing == "rtu"
                                       else MbapConnection(endpoint))
                line = self.lines[key]
                timeout = min(meter.timeout_s, endpoint.timeout_s) if meter.endpoint else meter.timeout_s
            if meter.protocol == "dlt645":
                reader: ModbusReader | Dlt645Reader = Dlt645Reader(meter, Dlt645Link(line, meter.address or ""))
            else:
                link = ModbusTcpLink(line, meter.unit_id) if isinstance(line, MbapConnection) \
                    else ModbusRtuLink(line, meter.unit_id)
                reader = ModbusReader(meter, link, plan_for_profile(meter.profile))
            self.pollers.append(MeterPoller(meter, reader, sink, timeout_s=timeout))

    def log_plan(self) -> None:
        """The read plan at start-up: what each meter costs per poll, for the installer's log."""
        for p in self.pollers:
            where = f"bus {p.meter.bus}" if p.meter.transport == "rtu" else f"{p.meter.host}:{p.meter.port}"
            who = f"address {p.meter.address}" if p.meter.protocol == "dlt645" else f"unit {p.meter.unit_id}"
            log.info("read plan %s (%s, %s %s, every %gs): %s", p.meter.id, p.meter.profile.model, where, who,
                     p.meter.poll_period_s, p.reader.describe())

    async def run(self) -> None:
        """Run every poller until cancelled; start times spread over each meter's period."""
        n = max(len(self.pollers), 1)
        tasks = [asyncio.create_task(p.run(p.meter.poll_period_s * i / n), name=f"poll-{p.meter.id}")
                 for i, p in enumerate(self.pollers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for line in [*self.buses.values(), *self.lines.values()]:
                line.close()

    def health(self) -> dict[str, dict[str, Any]]:
        return {p.meter.id: p.health.to_json() for p in self.pollers}

    def line_health(self) -> dict[str, dict[str, int]]:
        """Per line: connections opened, requests sent, requests that timed out."""
        return {line.name: {"connects": line.connects, "requests": line.requests, "timeouts": line.timeouts}
                for line in [*self.buses.values(), *self.lines.values()]}

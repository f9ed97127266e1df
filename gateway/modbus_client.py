"""Modbus transports: one pymodbus async client per TCP meter, one per RS-485 bus.

Every TCP meter gets its own connection so a meter that hangs only ever blocks itself (a
protocol converter that serves several unit ids on one address still gets one connection
per unit id; converters accept several). pymodbus' own reconnect and retries are switched
off: the scheduler owns retrying, with a backoff it can see and report.

A link raises `PollError` for everything that is not a good answer (refused, timeout,
exception response, short response) and drops the connection, so the next poll starts on a
fresh one instead of reading a late answer to an earlier request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from gateway.read_plan import ReadRequest
from tanji.site import Bus, Meter

# pymodbus logs every refused connection and timeout at ERROR; the scheduler reports them per meter.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class PollError(Exception):
    """A read that produced no usable answer."""


class Link(Protocol):
    async def read(self, request: ReadRequest, unit_id: int, timeout_s: float) -> list[int]: ...

    def close(self) -> None: ...


async def _read(client: AsyncModbusTcpClient | AsyncModbusSerialClient, request: ReadRequest,
                unit_id: int, timeout_s: float) -> list[int]:
    if not client.connected and not await asyncio.wait_for(client.connect(), timeout_s):
        raise PollError("cannot connect")
    call = client.read_input_registers if request.function == "input" else client.read_holding_registers
    try:
        response = await asyncio.wait_for(call(request.address, count=request.count, device_id=unit_id),
                                          timeout_s)
    except (ModbusException, TimeoutError, OSError) as exc:
        client.close()
        raise PollError(f"{type(exc).__name__}: {exc}".strip()) from None
    if response.isError():
        client.close()
        raise PollError(f"exception response {response}")
    words = list(response.registers)
    if len(words) < request.count:
        client.close()
        raise PollError(f"short response: {len(words)} of {request.count} registers")
    return words[:request.count]


class TcpLink:
    """Modbus TCP to one meter."""

    def __init__(self, meter: Meter) -> None:
        self.client = AsyncModbusTcpClient(meter.host or "127.0.0.1", port=meter.port or 502,
                                           timeout=meter.timeout_s, retries=0, reconnect_delay=0)

    async def read(self, request: ReadRequest, unit_id: int, timeout_s: float) -> list[int]:
        return await _read(self.client, request, unit_id, timeout_s)

    def close(self) -> None:
        self.client.close()


class BusLink:
    """One RS-485 line: one request at a time, then `inter_frame_delay_ms` of silence.

    Modbus RTU has no transaction ids: a second master frame before the first answer (or
    before the line has been quiet long enough) garbles both, so the lock spans the whole
    request and the delay that follows it.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.client = AsyncModbusSerialClient(bus.device, baudrate=bus.baudrate, parity=bus.parity,
                                              stopbits=bus.stopbits, bytesize=bus.bytesize,
                                              timeout=bus.timeout_s, retries=0, reconnect_delay=0)
        self._lock = asyncio.Lock()
        self._delay_s = bus.inter_frame_delay_ms / 1000
        self._quiet_until = 0.0
        self.requests = 0

    async def read(self, request: ReadRequest, unit_id: int, timeout_s: float) -> list[int]:
        async with self._lock:
            pause = self._quiet_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                self.requests += 1
                return await _read(self.client, request, unit_id, timeout_s)
            finally:
                self._quiet_until = time.monotonic() + self._delay_s

    def close(self) -> None:
        self.client.close()

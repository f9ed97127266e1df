"""Lines to the meters: RS-485 buses, serial device servers, Modbus TCP devices; one connection each.

A plant reaches its meters three ways, and all three are a shared medium:
- an RS-485 bus on the gateway's own serial port (`Bus`);
- a serial device server (TCP ↔ RS-485) in transparent mode: the serial frames travel over TCP
  unchanged ("RTU over TCP"; `Endpoint` with `framing: rtu`), often accepting one client only;
- a Modbus TCP device or gateway (`Endpoint` with `framing: tcp`, MBAP header with transaction ids).

Every meter behind one line shares that line's single connection. On a serial line one frame
is on the wire at a time (a FIFO lock), followed by the configured pause; the answer is the
first frame that matches the request (unit id and function, or DL/T 645 address and data
identifier), so a late answer to an earlier request is skipped, never taken for this one.
A silent unit id costs its own timeout and nothing else: the connection stays open (closing
it is what makes every device behind a device server disappear, neuron#1602), and the next
meter's request goes out at once. A connection is only dropped when the peer closes it or a
write fails; it is reopened on the next request, after `connect_pause_ms`.

Modbus TCP carries a transaction id, so with `max_in_flight` > 1 several requests may wait on
one connection and answers are matched by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from tanji import dlt645
from tanji import modbus_frames as mf
from tanji.site import Bus, Endpoint

log = logging.getLogger("tanji.gateway.links")
T = TypeVar("T")
# A parser looks at the bytes received since the request: (bytes to drop, result or None).
Parser = Callable[[bytearray], tuple[int, Any]]


def line_name(endpoint: Endpoint) -> str:
    """`sds-1 (192.168.1.30:502)`, or just `192.168.1.20:502` for an address no endpoint names."""
    address = f"{endpoint.host}:{endpoint.port}"
    return address if endpoint.id == address else f"{endpoint.id} ({address})"


class PollError(Exception):
    """A read that produced no usable answer."""


class _Receiver(asyncio.Protocol):
    """Bytes from a TCP connection into a buffer the line's parser reads."""

    def __init__(self, line: _StreamLine) -> None:
        self.line = line

    def data_received(self, data: bytes) -> None:
        self.line._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.line._lost(exc)


class _StreamLine:
    """One byte stream shared by the meters of a serial line, one exchange at a time."""

    def __init__(self, name: str, *, pause_s: float, connect_pause_s: float = 0.0) -> None:
        self.name = name
        self.pause_s = pause_s
        self.connect_pause_s = connect_pause_s
        self.buffer = bytearray()
        self._data = asyncio.Event()
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task | None = None
        self._quiet_until = 0.0
        self._open = False
        self.requests = 0
        self.timeouts = 0
        self.connects = 0

    # -- transport, supplied by subclasses ------------------------------------------------------

    async def _connect(self) -> None:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._open = False

    def _received(self, data: bytes) -> None:
        self.buffer += data
        self._data.set()

    def _lost(self, exc: Exception | None) -> None:
        if self._open:
            log.warning("%s: connection closed by the peer%s", self.name, f" ({exc})" if exc else "")
        self._open = False
        self._data.set()

    # -- the exchange ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Keep the line for a whole poll (all its frames), so one meter's values are read
        together and the other meters wait one poll, not one frame, between their frames."""
        async with self._lock:
            self._holder = asyncio.current_task()
            try:
                yield
            finally:
                self._holder = None

    async def exchange(self, request: bytes, parse: Parser, timeout_s: float) -> Any:
        """Send `request` and return what `parse` makes of the first matching answer."""
        if self._holder is not None and self._holder is asyncio.current_task():
            return await self._exchange(request, parse, timeout_s)
        async with self._lock:
            return await self._exchange(request, parse, timeout_s)

    async def _exchange(self, request: bytes, parse: Parser, timeout_s: float) -> Any:
        try:
            if not self._open:
                await self._connect()
                self.connects += 1
                self._open = True
                if self.connect_pause_s:
                    await asyncio.sleep(self.connect_pause_s)
            pause = self._quiet_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            self.buffer.clear()
            self._data.clear()
            self.requests += 1
            self._write(request)
            return await self._answer(parse, timeout_s)
        except OSError as exc:
            self.close()
            raise PollError(f"{self.name}: {exc.strerror or exc}") from None
        finally:
            self._quiet_until = time.monotonic() + self.pause_s

    async def _answer(self, parse: Parser, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            while self.buffer:
                used, result = parse(self.buffer)
                if used:
                    del self.buffer[:used]
                if result is not None:
                    return result
                if not used:
                    break
            if not self._open:
                raise PollError(f"{self.name}: connection lost")
            left = deadline - time.monotonic()
            if left <= 0:
                self.timeouts += 1
                raise PollError("timeout: no answer")
            self._data.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that races with the data arriving, and the gateway would not stop on SIGTERM.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._data.wait()


class TcpSerialLine(_StreamLine):
    """A serial device server in transparent mode: serial frames over one TCP connection."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(line_name(endpoint),
                         pause_s=endpoint.request_pause_ms / 1000, connect_pause_s=endpoint.connect_pause_ms / 1000)
        self.endpoint = endpoint
        self._transport: asyncio.Transport | None = None

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.endpoint.timeout_s):
                self._transport, _ = await loop.create_connection(
                    lambda: _Receiver(self), self.endpoint.host, self.endpoint.port)
        except TimeoutError:
            raise PollError(f"{self.name}: cannot connect (timeout)") from None

    def _write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("connection closed")
        self._transport.write(data)

    def close(self) -> None:
        super().close()
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class SerialBusLine(_StreamLine):
    """An RS-485 bus on a serial port of the gateway (pyserial, read through the event loop)."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(f"bus {bus.id} ({bus.device})", pause_s=bus.inter_frame_delay_ms / 1000)
        self.bus = bus
        self._port: Any = None

    async def _connect(self) -> None:
        import serial  # pyserial; imported here so TCP-only gateways never need a serial port

        try:
            port = serial.Serial(self.bus.device, baudrate=self.bus.baudrate, parity=self.bus.parity,
                                 stopbits=self.bus.stopbits, bytesize=self.bus.bytesize, timeout=0,
                                 write_timeout=0)
        except serial.SerialException as exc:
            raise PollError(f"{self.name}: cannot open: {exc}") from None
        self._port = port
        asyncio.get_running_loop().add_reader(port.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._port.fileno(), 4096)
        except OSError as exc:
            self._lost(exc)
            self.close()
            return
        if data:
            self._received(data)

    def _write(self, data: bytes) -> None:
        os.write(self._port.fileno(), data)

    def close(self) -> None:
        super().close()
        if self._port is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._port.fileno())
            self._port.close()
            self._port = None


class MbapConnection:
    """Modbus TCP (MBAP) to one address; answers matched to requests by transaction id."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.name = line_name(endpoint)
        self._slots = asyncio.Semaphore(endpoint.max_in_flight)
        self._connect_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._pause_s = endpoint.request_pause_ms / 1000
        self._quiet_until = 0.0
        self._waiting: dict[int, asyncio.Future[mf.ReadAnswer]] = {}
        self._tid = 0
        self._transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.requests = 0
        self.timeouts = 0
        self.connects = 0

    def _received(self, data: bytes) -> None:
        self.buffer += data
        while (length := mf.mbap_answer_length(self.buffer)) is not None and len(self.buffer) >= length:
            frame = bytes(self.buffer[:length])
            del self.buffer[:length]
            try:
                tid, answer = mf.mbap_decode_answer(frame)
            except mf.ModbusFrameError as exc:
                log.warning("%s: dropping an unreadable frame (%s)", self.name, exc)
                continue
            future = self._waiting.pop(tid, None)
            if future is not None and not future.done():
                future.set_result(answer)  # an answer nobody waits for any more is a late one: dropped

    def _lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            log.warning("%s: connection closed by the peer%s", self.name, f" ({exc})" if exc else "")
        self._transport = None
        self.buffer.clear()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(PollError(f"{self.name}: connection lost"))
        self._waiting.clear()

    async def _ensure(self, timeout_s: float) -> asyncio.Transport:
        async with self._connect_lock:
            if self._transport is None or self._transport.is_closing():
                loop = asyncio.get_running_loop()
                try:
                    async with asyncio.timeout(timeout_s):
                        self._transport, _ = await loop.create_connection(
                            lambda: _Receiver(self), self.endpoint.host, self.endpoint.port)  # type: ignore[arg-type]
                except TimeoutError:
                    raise PollError(f"{self.name}: cannot connect (timeout)") from None
                except OSError as exc:
                    raise PollError(f"{self.name}: cannot connect: {exc.strerror or exc}") from None
                self.connects += 1
                if self.endpoint.connect_pause_ms:
                    await asyncio.sleep(self.endpoint.connect_pause_ms / 1000)
            return self._transport

    async def read(self, unit: int, function: int, address: int, count: int, timeout_s: float) -> tuple[int, ...]:
        async with self._slots:
            transport = await self._ensure(timeout_s)
            async with self._send_lock:
                pause = self._quiet_until - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                self._tid = (self._tid + 1) & 0xFFFF
                tid = self._tid
                future: asyncio.Future[mf.ReadAnswer] = asyncio.get_running_loop().create_future()
                self._waiting[tid] = future
                self.requests += 1
                transport.write(mf.mbap_read_request(tid, unit, function, address, count))
            try:
                async with asyncio.timeout(timeout_s):
                    answer = await future
            except TimeoutError:
                self.timeouts += 1
                raise PollError("timeout: no answer") from None
            finally:
                self._waiting.pop(tid, None)
                self._quiet_until = time.monotonic() + self._pause_s
        try:
            return mf.check_answer(answer, unit, function, count)
        except mf.ModbusFrameError as exc:
            raise PollError(str(exc)) from None

    def close(self) -> None:
        if self._transport is not None:
            transport, self._transport = self._transport, None
            transport.close()


# -- parsers: what counts as the answer to one request on a serial line ---------------------------

def rtu_parser(unit: int, function: int, count: int) -> Parser:
    """Find the RTU answer of `unit` to `function`; bytes before it (late answers, noise) are skipped."""

    def parse(buf: bytearray) -> tuple[int, Any]:
        for start in range(len(buf) - 1):
            if buf[start] != unit or buf[start + 1] & 0x7F != function:
                continue
            length = mf.rtu_answer_length(buf[start:])
            if length is None or len(buf) - start < length:
                return start, None  # the answer's head is here: wait for the rest
            try:
                answer = mf.rtu_decode_answer(buf[start:start + length])
            except mf.ModbusFrameError:
                continue  # unit and function bytes by chance inside other data
            return start + length, answer
        return max(len(buf) - 1, 0), None

    return parse


def dlt645_parser(address: str, control: int, di: int | None) -> Parser:
    """Find the DL/T 645 answer from `address` to a request with `control` (and data identifier)."""
    expected = dlt645.di_bytes(di) if di is not None else None

    def parse(buf: bytearray) -> tuple[int, Any]:
        used, frame = dlt645.find_frame(buf)
        if frame is None:
            return used, None
        if not frame.is_response or frame.control & 0x1F != control:
            return used, None  # an echo of a request, or another master's traffic
        if address != dlt645.BROADCAST_ADDRESS and frame.address != address:
            return used, None
        if not frame.is_error and expected is not None and frame.data[:4] != expected:
            return used, None
        return used, frame

    return parse


# -- per meter: a unit id (or address) on a line -------------------------------------------------

class ModbusRtuLink:
    """A Modbus unit id on a serial line (bus or device server in transparent mode)."""

    def __init__(self, line: _StreamLine, unit: int) -> None:
        self.line = line
        self.unit = unit

    def hold(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.line.hold()

    async def read(self, function: int, address: int, count: int, timeout_s: float) -> tuple[int, ...]:
        answer = await self.line.exchange(mf.rtu_read_request(self.unit, function, address, count),
                                          rtu_parser(self.unit, function, count), timeout_s)
        try:
            return mf.check_answer(answer, self.unit, function, count)
        except mf.ModbusFrameError as exc:
            raise PollError(str(exc)) from None


class ModbusTcpLink:
    """A Modbus unit id behind a Modbus TCP connection."""

    def __init__(self, connection: MbapConnection, unit: int) -> None:
        self.connection = connection
        self.unit = unit

    def hold(self) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()  # answers carry transaction ids: nothing to hold

    async def read(self, function: int, address: int, count: int, timeout_s: float) -> tuple[int, ...]:
        return await self.connection.read(self.unit, function, address, count, timeout_s)


class Dlt645Link:
    """A DL/T 645 meter (by its 12-digit address) on a serial line."""

    def __init__(self, line: _StreamLine, address: str) -> None:
        self.line = line
        self.address = address

    def hold(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.line.hold()

    async def read(self, di: int, timeout_s: float) -> bytes:
        """The value bytes (after the DI) of data identifier `di`."""
        frame = await self.line.exchange(dlt645.read_request(self.address, di),
                                         dlt645_parser(self.address, dlt645.READ_DATA, di), timeout_s)
        if frame.is_error:
            raise PollError(f"DI {di:08X}: {frame.error_text()}")
        return frame.data[4:]


async def discover_address(line: _StreamLine, timeout_s: float = 2.0) -> str:
    """The address of the only DL/T 645 meter on a line (broadcast "read address", C = 0x13).

    Every meter on the line answers a broadcast, so this works with one meter connected at a
    time, which is how installers read the addresses of a new bus one meter at a time.
    """
    frame = await line.exchange(dlt645.read_address_request(),
                                dlt645_parser(dlt645.BROADCAST_ADDRESS, dlt645.READ_ADDRESS, None), timeout_s)
    if frame.is_error or len(frame.data) != 6:
        raise PollError(f"unexpected answer to read address: {frame}")
    return dlt645.address_text(frame.data)

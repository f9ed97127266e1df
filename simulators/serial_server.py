"""An RS-485 line the simulator answers on, carrying Modbus RTU and DL/T 645 frames side by side.

It is reached two ways, as on a real plant:
- over TCP, as a serial device server in transparent mode ("RTU over TCP"): the gateway's
  frames pass through unchanged; every connection shares the one line behind it, and the
  server counts the connections it accepted (tests check that a gateway opens one);
- on a pty (socat), as a USB RS-485 adapter on the gateway would see it.

The line is half duplex: requests are answered one at a time, in arrival order. With
`baudrate` set, every exchange takes the time the bytes take on the wire at that rate
(request, 3.5 characters of silence, answer, 3.5 characters), so a benchmark against it is
bus-bound the way a real 9,600 baud line is. Unknown unit ids and addresses get silence;
a "read address" broadcast is answered when exactly one DL/T 645 meter hangs on the line
(several answering at once garble each other, as on a real bus).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from typing import Any

from simulators.device import NoAnswer, SimulatedDevice
from simulators.register_bank import ILLEGAL_FUNCTION, ExceptionReply
from tanji import dlt645
from tanji import modbus_frames as mf

log = logging.getLogger(__name__)


def char_time_s(baudrate: int, bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> float:
    """Seconds one character takes on the wire (start bit, data bits, parity, stop bits)."""
    return (1 + bytesize + (parity != "N") + stopbits) / baudrate


class SerialLineServer:
    """The devices of one line by Modbus unit id and by DL/T 645 address, and the line's timing."""

    def __init__(self, name: str, baudrate: int | None = None, bytesize: int = 8, parity: str = "N",
                 stopbits: int = 1) -> None:
        self.name = name
        self.modbus: dict[int, SimulatedDevice] = {}
        self.dlt645: dict[str, SimulatedDevice] = {}
        self.char_s = char_time_s(baudrate, bytesize, parity, stopbits) if baudrate else 0.0
        self.connections = 0
        self.requests = 0
        # Who each request was for, in the order they reached the line (unit id or address;
        # the last 10,000): tests read from it how the line was shared.
        self.log: collections.deque[int | str] = collections.deque(maxlen=10_000)
        self._lock: asyncio.Lock | None = None
        self._servers: list[Any] = []
        self._fds: list[int] = []

    def add(self, device: SimulatedDevice, unit_id: int | None = None, address: str | None = None) -> None:
        if address is not None:
            if address in self.dlt645:
                raise ValueError(f"{self.name}: address {address} is taken by {self.dlt645[address].meter_id}")
            self.dlt645[address] = device
        else:
            assert unit_id is not None
            if unit_id in self.modbus:
                raise ValueError(f"{self.name}: unit {unit_id} is taken by {self.modbus[unit_id].meter_id}")
            self.modbus[unit_id] = device

    def describe(self) -> str:
        units = [f"unit {u}={d.meter_id} ({d.bank.profile.model})" for u, d in sorted(self.modbus.items())]
        units += [f"address {a}={d.meter_id} ({d.bank.profile.model})" for a, d in sorted(self.dlt645.items())]
        timing = f", {round(10 / self.char_s)} baud timing" if self.char_s else ""
        return f"serial line {self.name}{timing}: " + ", ".join(units)

    # -- serving --------------------------------------------------------------------------------

    async def serve_tcp(self, host: str, port: int) -> None:
        self._lock = self._lock or asyncio.Lock()
        self._servers.append(await asyncio.start_server(self._connection, host, port))

    async def serve_pty(self, device: str) -> None:
        """Answer on the simulator's end of a pty pair (raw mode, set up by socat)."""
        self._lock = self._lock or asyncio.Lock()
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._fds.append(fd)
        buffer = bytearray()
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                buffer.extend(os.read(fd, 4096))
            except BlockingIOError:
                return
            except OSError:
                loop.remove_reader(fd)
                return
            loop.create_task(self._drain(buffer, lambda data: os.write(fd, data)))

        loop.add_reader(fd, readable)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        buffer = bytearray()
        try:
            while data := await reader.read(4096):
                buffer.extend(data)
                await self._drain(buffer, writer.write)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
        loop = asyncio.get_running_loop()
        for fd in self._fds:
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
            os.close(fd)
        self._servers.clear()
        self._fds.clear()

    async def _drain(self, buffer: bytearray, send: Any) -> None:
        """Answer every complete request in `buffer`, one at a time on the line."""
        assert self._lock is not None
        async with self._lock:
            while buffer:
                used, request = self._next_request(buffer)
                if used:
                    del buffer[:used]
                if request is None:
                    if not used:
                        return
                    continue
                self.requests += 1
                kind, body = request
                self.log.append(body[0] if kind == "modbus" else body.address)
                answer = await self._answer(request)
                if self.char_s:
                    # The request's bytes on the wire, the meter's 3.5-character turnaround,
                    # the answer's bytes, and the silence that must follow it.
                    await asyncio.sleep((used + len(answer or b"") + 7) * self.char_s)
                if answer:
                    send(answer)

    @staticmethod
    def _next_request(buffer: bytearray) -> tuple[int, tuple[str, Any] | None]:
        """(bytes used, ("dlt645", Frame) or ("modbus", raw 8 bytes) or None)."""
        start = 0
        while start < len(buffer) and buffer[start] == 0xFE:
            start += 1
        if start == len(buffer):
            return start, None
        if buffer[start] == dlt645.START:
            used, frame = dlt645.find_frame(buffer[start:])
            if frame is not None:
                return start + used, ("dlt645", frame)
            if used:
                return start + used, None
            if len(buffer) - start < 12 + 255:  # maybe a DL/T 645 frame still arriving
                # ...or a Modbus request to unit 0x68 (104): try that before waiting
                if len(buffer) - start >= 8 and _is_rtu_request(buffer[start:start + 8]):
                    return start + 8, ("modbus", bytes(buffer[start:start + 8]))
                return start, None
        if len(buffer) - start < 8:
            return start, None
        if _is_rtu_request(buffer[start:start + 8]):
            return start + 8, ("modbus", bytes(buffer[start:start + 8]))
        return start + 1, None  # noise

    async def _answer(self, request: tuple[str, Any]) -> bytes | None:
        kind, body = request
        if kind == "modbus":
            unit, function, address, count = mf.rtu_decode_request(body)
            device = self.modbus.get(unit)
            if device is None:
                return None
            try:
                if function not in mf.READ_FUNCTIONS:
                    raise ExceptionReply(ILLEGAL_FUNCTION, f"function {function} is not served")
                return mf.rtu_answer(unit, function, await device.read(function, address, count))
            except NoAnswer:
                return None
            except ExceptionReply as reply:
                return mf.rtu_exception(unit, function, reply.code)
        frame: dlt645.Frame = body
        if frame.is_response:
            return None
        if frame.control == dlt645.READ_ADDRESS and frame.address == dlt645.BROADCAST_ADDRESS:
            if len(self.dlt645) == 1:
                address = next(iter(self.dlt645))
                return dlt645.encode_frame(address, dlt645.READ_ADDRESS | dlt645.RESPONSE, dlt645.address_bytes(address))
            return b"\xff" * 18 if self.dlt645 else None  # several meters at once: a garbled line
        device = self.dlt645.get(frame.address)
        if device is None or frame.control != dlt645.READ_DATA or len(frame.data) < 4:
            return None if device is None else dlt645.error_response(frame.address, frame.control, 0x01)
        di = int.from_bytes(frame.data[:4], "little")
        try:
            return dlt645.read_response(frame.address, di, await device.read_di(di))
        except NoAnswer:
            return None
        except ExceptionReply as reply:
            word = reply.code if reply.code in dlt645.ERROR_BITS else 0x01
            return dlt645.error_response(frame.address, frame.control, word)
        except Exception:  # a simulator bug must not kill the line; a meter would say "other error"
            log.exception("%s: device %s failed to answer", self.name, device.meter_id)
            return dlt645.error_response(frame.address, frame.control, 0x01)


def _is_rtu_request(raw: bytes | bytearray) -> bool:
    try:
        mf.rtu_decode_request(raw)
    except mf.ModbusFrameError:
        return False
    return True

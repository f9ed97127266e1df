"""Modbus TCP and RTU servers for simulated devices, on one asyncio loop in a background thread.

One loop serves every port and serial line: many unit ids per TCP port (a Modbus gateway
in front of a meter cabinet), many ports, and RTU buses where several unit ids share one
line. pymodbus (3.7-3.x) does the framing; requests are answered by our own handler, not
pymodbus' datastore, for three reasons: values are computed at request time from the plant's
physics; an unknown or offline unit id must stay silent, as on a real RS-485 bus; and a
slow answer must carry its own request's transaction id (pymodbus' handler takes the id of
the connection's *latest* request, which would pass a late answer off as the next one's).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterResponse,
)
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.device import NoAnswer, SimulatedDevice
from simulators.register_bank import ILLEGAL_FUNCTION, ExceptionReply
from simulators.serial_server import SerialLineServer

log = logging.getLogger(__name__)

_RESPONSES = {3: ReadHoldingRegistersResponse, 4: ReadInputRegistersResponse}


class _DeviceRequestHandler(ServerRequestHandler):
    """One connection (or serial line): each request goes to the device at its unit id."""

    async def handle_request(self) -> None:
        pdu, addr = self.last_pdu, self.last_addr
        if not pdu:
            return
        device = self.server.devices.get(pdu.dev_id)
        if device is None:
            return  # nobody at this address: silence, the poller times out
        try:
            if pdu.function_code in (6, 16):  # a PLC's commands (see SimulatedDevice.write)
                words = list(pdu.registers)
                await device.write(pdu.address, words)
                response = (WriteSingleRegisterResponse(address=pdu.address, registers=words)
                            if pdu.function_code == 6 else
                            WriteMultipleRegistersResponse(address=pdu.address, count=len(words)))
            elif pdu.function_code not in _RESPONSES:
                raise ExceptionReply(ILLEGAL_FUNCTION, f"function {pdu.function_code} is not served")
            else:
                words = await device.read(pdu.function_code, pdu.address, pdu.count)
                response = _RESPONSES[pdu.function_code](registers=words)
        except NoAnswer:
            return
        except ExceptionReply as reply:
            response = ExceptionResponse(pdu.function_code, ExcCodes(reply.code))
        except Exception:  # a simulator bug must not kill the connection; real devices say 0x04
            log.exception("device %s failed to answer", device.meter_id)
            response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        self.server_send(response, addr)


# pymodbus insists on a datastore; requests never reach it (see _DeviceRequestHandler).
def _unused_datastore() -> SimDevice:
    return SimDevice(id=0, simdata=SimData(0, count=1, values=0, datatype=DataType.REGISTERS))


class _TcpServer(ModbusTcpServer):
    def __init__(self, devices: dict[int, SimulatedDevice], host: str, port: int) -> None:
        super().__init__(_unused_datastore(), address=(host, port))
        self.devices = devices

    def callback_new_connection(self) -> _DeviceRequestHandler:
        return _DeviceRequestHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class _RtuServer(ModbusSerialServer):
    def __init__(self, devices: dict[int, SimulatedDevice], line: SerialLine) -> None:
        super().__init__(_unused_datastore(), port=line.device, baudrate=line.baudrate, parity=line.parity,
                         stopbits=line.stopbits, bytesize=line.bytesize, reconnect_delay=0.5)
        self.devices = devices

    def callback_new_connection(self) -> _DeviceRequestHandler:
        return _DeviceRequestHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


@dataclass(frozen=True, slots=True)
class SerialLine:
    """The simulator's end of an RS-485 line (a pty from socat in tests)."""

    device: str
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8


class ModbusEndpoints:
    """Every TCP port and serial line the plant answers on, served from one background thread."""

    def __init__(self) -> None:
        self.tcp: dict[tuple[str, int], dict[int, SimulatedDevice]] = {}
        self.rtu: dict[SerialLine, dict[int, SimulatedDevice]] = {}
        # Lines with DL/T 645 meters, or behind a serial device server (frames over TCP).
        self.serial_tcp: dict[tuple[str, int], SerialLineServer] = {}
        self.serial_pty: dict[str, SerialLineServer] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[Any] = []

    def add_tcp(self, host: str, port: int, unit_id: int, device: SimulatedDevice) -> None:
        self._add(self.tcp.setdefault((host, port), {}), unit_id, device, f"{host}:{port}")

    def add_rtu(self, line: SerialLine, unit_id: int, device: SimulatedDevice) -> None:
        self._add(self.rtu.setdefault(line, {}), unit_id, device, line.device)

    def add_serial_tcp(self, host: str, port: int, device: SimulatedDevice, *, unit_id: int | None = None,
                       address: str | None = None, baudrate: int | None = None) -> SerialLineServer:
        """A device behind a serial device server at host:port (transparent mode, frames over TCP)."""
        line = self.serial_tcp.setdefault((host, port), SerialLineServer(f"{host}:{port}", baudrate))
        line.add(device, unit_id, address)
        return line

    def add_serial_pty(self, line: SerialLine, device: SimulatedDevice, *, unit_id: int | None = None,
                       address: str | None = None) -> SerialLineServer:
        """A device on an RS-485 line that carries DL/T 645 (alone or beside Modbus RTU)."""
        server = self.serial_pty.setdefault(line.device, SerialLineServer(line.device))
        server.add(device, unit_id, address)
        return server

    @staticmethod
    def _add(units: dict[int, SimulatedDevice], unit_id: int, device: SimulatedDevice, where: str) -> None:
        if unit_id in units:
            raise ValueError(f"{where} unit {unit_id} is taken by {units[unit_id].meter_id}, "
                             f"cannot also serve {device.meter_id}")
        units[unit_id] = device

    def start(self, timeout_s: float = 10.0) -> None:
        """Start listening everywhere; returns when all servers listen, raises if one cannot."""
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        async def listen_all() -> None:
            try:
                for (host, port), units in self.tcp.items():
                    await self._listen(_TcpServer(units, host, port), f"tcp {host}:{port}")
                for line, units in self.rtu.items():
                    await self._listen(_RtuServer(units, line), f"rtu {line.device}")
                for (host, port), server in self.serial_tcp.items():
                    await server.serve_tcp(host, port)
                for device, server in self.serial_pty.items():
                    await server.serve_pty(device)
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
            finally:
                ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.create_task(listen_all())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="modbus-endpoints", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            failure.append(TimeoutError(f"servers did not start within {timeout_s} s"))
        if failure:
            self.stop()
            raise failure[0]

    async def _listen(self, server: _TcpServer | _RtuServer, where: str) -> None:
        self._servers.append(server)
        await server.serve_forever(background=True)
        log.debug("listening on %s", where)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        """Run a coroutine on the server loop (e.g. a fault timetable); it is cancelled by stop()."""
        if self._loop is None:
            raise RuntimeError("the endpoints are not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def stop(self) -> None:
        """Close every server and end the thread; safe to call twice."""
        if self._loop is None:
            return
        loop, self._loop = self._loop, None

        async def close_all() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            for server in self._servers:
                await server.shutdown()
            self._servers.clear()
            for line in [*self.serial_tcp.values(), *self.serial_pty.values()]:
                await line.close()

        if self._thread is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close_all(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
        loop.close()
        self._thread = None

"""A small Modbus TCP server for the gateway tests, until the plant simulators serve them.

Serves, per port and unit id, the registers a profile maps, encoded with tanji.codec exactly
as the device would hold them; counters advance by one increment on every read, so
consecutive readings differ. Faults on demand: `offline` (no answer at all), `delay_s`
(a slow device), refusing addresses outside the map (exception 2, like real meters).
Every request is counted per unit, so tests can check the read plan on the wire.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field

from tanji.codec import encode
from tanji.profile import FUNCTIONS, MeterProfile


@dataclass
class FakeDevice:
    profile: MeterProfile
    values: dict[str, float]
    offline: bool = False
    delay_s: float = 0.0
    reads: int = 0
    words: dict[int, dict[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.words = {code: {} for code in FUNCTIONS.values()}
        for reg in self.profile.registers:
            raw = self.values.get(reg.name, 0.0) / reg.scale
            for i, w in enumerate(encode(raw, reg.data_type, reg.order)):
                self.words[FUNCTIONS[reg.function]][reg.address + i] = w

    def advance(self) -> None:
        for reg in self.profile.registers:
            if reg.is_counter and reg.name in self.values:
                self.values[reg.name] += 1.0 if reg.data_type.startswith(("u", "i")) else 0.5
        self.refresh()


class FakeMeters:
    """Modbus TCP servers on free ports; `add(port_key, unit, profile, values)` before `start()`."""

    def __init__(self) -> None:
        self.devices: dict[tuple[int, int], FakeDevice] = {}
        self.requests: Counter[tuple[int, int]] = Counter()
        self.ports: list[int] = []
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.Server] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fake-meters")

    def add(self, port: int, unit: int, profile: MeterProfile, values: dict[str, float]) -> FakeDevice:
        if port not in self.ports:
            self.ports.append(port)
        device = FakeDevice(profile, dict(values))
        self.devices[(port, unit)] = device
        return device

    def start(self) -> None:
        self._thread.start()
        for port in self.ports:
            asyncio.run_coroutine_threadsafe(self._serve(port), self._loop).result(10)

    def stop(self) -> None:
        """Close the servers and every open connection's task, then the loop. A connection's
        task left waiting on its socket was destroyed pending at exit, and closed its writer on
        a closed loop ("Task was destroyed but it is pending", "Event loop is closed")."""
        if not self._thread.is_alive():  # never started
            self._loop.close()
            return

        async def close() -> None:
            for s in self._servers:
                s.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self, port: int) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readexactly(7)
                    tid, _, length, unit = struct.unpack(">HHHB", head)
                    pdu = await reader.readexactly(length - 1)
                    reply = await self._answer(port, unit, pdu)
                    if reply is not None:
                        writer.write(struct.pack(">HHHB", tid, 0, len(reply) + 1, unit) + reply)
                        await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
        self._servers.append(await asyncio.start_server(handle, "127.0.0.1", port))

    async def _answer(self, port: int, unit: int, pdu: bytes) -> bytes | None:
        device = self.devices.get((port, unit))
        if device is None or device.offline:
            return None
        self.requests[(port, unit)] += 1
        if device.delay_s:
            await asyncio.sleep(device.delay_s)
        fc, address, count = struct.unpack(">BHH", pdu[:5])
        table = device.words.get(fc)
        if table is None:
            return bytes([fc | 0x80, 1])
        if not all(a in table for a in range(address, address + count)) and not _gap_ok(device, fc, address, count):
            return bytes([fc | 0x80, 2])
        words = [table.get(a, 0) for a in range(address, address + count)]
        device.reads += 1
        device.advance()
        return struct.pack(f">BB{count}H", fc, 2 * count, *words)


def _gap_ok(device: FakeDevice, fc: int, address: int, count: int) -> bool:
    """Unmapped words inside the device's map read as 0 (SDM630 style); outside it, exception 2."""
    mapped = device.words[fc]
    return bool(mapped) and min(mapped) <= address and address + count <= max(mapped) + 1

"""Fixtures of the simulator tests: plants on free ports, always stopped, and an independent decoder."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from tanji.site import Site, load_site
from tests.services import free_port

REPO = Path(__file__).resolve().parents[2]
SITES = REPO / "firmware-config" / "sites"
# 2025-06-02 10:00 China time: the lines run and the sun is up.
MORNING_S = 1748829600.0


def on_free_ports(site: Site) -> Site:
    """The site with each of its TCP ports moved to a free one (meters sharing a port still share)."""
    ports = {(m.host, m.port) for m in site.meters if m.transport == "tcp"}
    moved = {old: free_port() for old in ports}
    return site.with_meter_addresses({m.id: ("127.0.0.1", moved[(m.host, m.port)])
                                      for m in site.meters if m.transport == "tcp"})


@pytest.fixture
def cq_site() -> Site:
    return on_free_ports(load_site(SITES / "cq-battery.yaml"))


@pytest.fixture
def client_for() -> Iterator:
    """`client_for(meter)` → a connected pymodbus TCP client to that meter's port; all closed after."""
    clients: list[ModbusTcpClient] = []

    def connect(meter) -> ModbusTcpClient:
        client = ModbusTcpClient(meter.host, port=meter.port, timeout=2, retries=0)
        assert client.connect()
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def f32(words: list[int], at: int) -> float:
    """Big-endian IEEE float from two registers, decoded here and not by tanji.codec."""
    return struct.unpack(">f", struct.pack(">HH", words[at], words[at + 1]))[0]


def as_f32(value: float) -> float:
    """`value` rounded to float32, as the meter stores it."""
    return struct.unpack(">f", struct.pack(">f", value))[0]


def i32(words: list[int], at: int, low_word_first: bool = False) -> int:
    """A signed 32-bit integer from two registers, decoded here and not by tanji.codec."""
    hi, lo = (words[at + 1], words[at]) if low_word_first else (words[at], words[at + 1])
    return struct.unpack(">i", struct.pack(">HH", hi, lo))[0]


def u32(words: list[int], at: int) -> int:
    return struct.unpack(">I", struct.pack(">HH", words[at], words[at + 1]))[0]

"""Modbus register words ↔ numbers, for every data type and word/byte order real meters use.

Order names follow the usual ABCD convention for the bytes of a 32-bit value A B C D (A most
significant): ABCD big-endian (Eastron, Janitza), CDAB low word first (Carlo Gavazzi,
many PLCs), BADC bytes swapped in each word, DCBA little-endian. 64-bit values apply the same
rule to four words. 16-bit values only see the byte swap (BADC, DCBA).
"""

from __future__ import annotations

import struct

DATA_TYPES: dict[str, tuple[str, int]] = {
    "int16": ("h", 1), "uint16": ("H", 1),
    "int32": ("i", 2), "uint32": ("I", 2),
    "int64": ("q", 4), "uint64": ("Q", 4),
    "float32": ("f", 2), "float64": ("d", 4),
}
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def word_count(data_type: str) -> int:
    """Registers (16-bit words) one value of `data_type` occupies."""
    return DATA_TYPES[data_type][1]


def _reorder(words: list[int], order: str) -> list[int]:
    if order in ("CDAB", "DCBA"):
        words = words[::-1]
    if order in ("BADC", "DCBA"):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words


def decode(words: list[int] | tuple[int, ...], data_type: str, order: str = "ABCD") -> float | int:
    """Decode the raw registers of one value (exactly `word_count(data_type)` words)."""
    fmt, count = DATA_TYPES[data_type]
    if len(words) != count:
        raise ValueError(f"{data_type} needs {count} registers, got {len(words)}")
    ordered = _reorder(list(words), order)
    return struct.unpack(">" + fmt, struct.pack(f">{count}H", *ordered))[0]


def encode(value: float | int, data_type: str, order: str = "ABCD") -> list[int]:
    """Encode one value into registers as a device with this order would hold them."""
    fmt, count = DATA_TYPES[data_type]
    if fmt not in "fd":
        value = int(round(value))
    words = list(struct.unpack(f">{count}H", struct.pack(">" + fmt, value)))
    # The reorder is its own inverse: reversing and byte-swapping twice restores the words.
    return _reorder(words, order)

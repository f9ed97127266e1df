"""DL/T 645-2007 frames, addresses and BCD values: the codec the gateway and the simulators share.

DL/T 645-2007 (多功能电能表通信协议) is what most revenue meters and sub-meters installed in
Chinese plants speak on RS-485. A frame is

    FE FE FE FE | 68 | A0 A1 A2 A3 A4 A5 | 68 | C | L | DATA (L bytes) | CS | 16

- up to four FE bytes wake the receiver's UART; they are not part of the frame;
- the address is 12 BCD digits sent lowest pair first ("123456789012" → 12 90 78 56 34 12);
  AA AA AA AA AA AA is the broadcast address a "read address" (C = 0x13) is sent to on a
  bus with a single meter;
- C: 0x11 read data, 0x13 read address; the answer sets bit 7 (0x91, 0x93), bit 5 when more
  frames follow, and bit 6 for an error answer (0xD1) whose one data byte is the error word;
- every DATA byte is sent plus 0x33 (so a data field never looks like a frame boundary);
- CS is the sum modulo 256 of every byte from the first 68 to the end of DATA;
- a read request's DATA is the data identifier DI3 DI2 DI1 DI0 sent DI0 first (00 01 00 00,
  forward active energy total, travels as 00 00 01 00 → 33 33 34 33); the answer repeats the DI,
  then the value in BCD, least significant byte first; in signed formats the top bit of the
  most significant byte is the sign.

Pure functions, no I/O. Value formats are named as the standard writes them (XXXXXX.XX).
"""

from __future__ import annotations

from dataclasses import dataclass

PREAMBLE = b"\xfe\xfe\xfe\xfe"
START = 0x68
END = 0x16
READ_DATA = 0x11
READ_ADDRESS = 0x13
RESPONSE = 0x80
ERROR = 0x40
FOLLOWS = 0x20
BROADCAST_ADDRESS = "AAAAAAAAAAAA"
MAX_DATA = 200

# format → (bytes, decimals, signed). Energy counters are unsigned; power, current and power
# factor carry a sign bit (export, reverse current).
FORMATS: dict[str, tuple[int, int, bool]] = {
    "XXXXXX.XX": (4, 2, False),   # energy, kWh
    "XXXXXXXX": (4, 0, False),
    "XXX.X": (2, 1, False),       # voltage, V
    "XXX.XXX": (3, 3, True),      # current, A
    "XX.XXXX": (3, 4, True),      # power, kW / kvar / kVA
    "X.XXX": (2, 3, True),        # power factor
    "XX.XX": (2, 2, False),       # frequency, Hz
}
# Error word bits of an error answer (C | 0x40), for messages an installer can act on.
ERROR_BITS = {0x01: "other error", 0x02: "no such data (unknown DI)", 0x04: "password or access denied",
              0x08: "baud rate cannot be changed", 0x10: "annual time zones exceeded",
              0x20: "daily time slots exceeded", 0x40: "tariffs exceeded"}


class FrameError(ValueError):
    """Bytes that cannot be a DL/T 645 frame, or a value that cannot be encoded."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame, DATA already stripped of its +0x33."""

    address: str
    control: int
    data: bytes

    @property
    def is_response(self) -> bool:
        return bool(self.control & RESPONSE)

    @property
    def is_error(self) -> bool:
        return bool(self.control & ERROR)

    def error_text(self) -> str:
        word = self.data[0] if self.data else 0
        names = [text for bit, text in ERROR_BITS.items() if word & bit]
        return f"error answer 0x{word:02X} ({', '.join(names) or 'unspecified'})"


def check_address(address: str) -> str:
    """The 12-digit address, upper case; raises FrameError for anything else."""
    text = str(address).strip().upper()
    if len(text) != 12 or not (text.isdigit() or text == BROADCAST_ADDRESS):
        raise FrameError(f"a DL/T 645 address is 12 decimal digits (the meter's nameplate number), not {address!r}")
    return text


def address_bytes(address: str) -> bytes:
    """12 digits → the 6 address bytes of a frame, lowest digit pair first."""
    text = check_address(address)
    return bytes.fromhex(text)[::-1]


def address_text(raw: bytes) -> str:
    return raw[::-1].hex().upper()


def di_bytes(di: int) -> bytes:
    """A data identifier (DI3 DI2 DI1 DI0 as written, e.g. 0x00010000) as sent: DI0 first."""
    return di.to_bytes(4, "little")


def encode_frame(address: str, control: int, data: bytes = b"", *, preamble: bool = True) -> bytes:
    """A complete frame; `data` is plain (the +0x33 is applied here)."""
    if len(data) > MAX_DATA:
        raise FrameError(f"data field of {len(data)} bytes is longer than {MAX_DATA}")
    body = bytes([START]) + address_bytes(address) + bytes([START, control, len(data)])
    body += bytes((b + 0x33) & 0xFF for b in data)
    return (PREAMBLE if preamble else b"") + body + bytes([sum(body) & 0xFF, END])


def read_request(address: str, di: int) -> bytes:
    return encode_frame(address, READ_DATA, di_bytes(di))


def read_address_request() -> bytes:
    return encode_frame(BROADCAST_ADDRESS, READ_ADDRESS)


def find_frame(buffer: bytes | bytearray) -> tuple[int, Frame | None]:
    """Look for one frame at the start of `buffer` (after FE bytes or line noise).

    Returns (bytes consumed, frame): (0, None) when more bytes are needed; (n, None) when n
    bytes of noise or a damaged frame were skipped; (n, frame) for a good frame ending at n.
    """
    n = len(buffer)
    start = 0
    while start < n and buffer[start] != START:
        start += 1
    if start == n:
        return n, None
    if n - start < 12:
        return (start, None) if start else (0, None)
    if buffer[start + 7] != START:
        return start + 1, None  # a 68 that is not a frame start (noise, or inside an address)
    length = buffer[start + 9]
    end = start + 10 + length + 2
    if n < end:
        return (start, None) if start else (0, None)
    if buffer[end - 2] != sum(buffer[start:end - 2]) & 0xFF or buffer[end - 1] != END:
        return start + 1, None
    data = bytes((b - 0x33) & 0xFF for b in buffer[start + 10:end - 2])
    return end, Frame(address_text(bytes(buffer[start + 1:start + 7])), buffer[start + 8], data)


def decode_frame(raw: bytes) -> Frame:
    """Exactly one frame (preamble allowed); raises FrameError otherwise."""
    used, frame = find_frame(raw)
    while frame is None and used and used < len(raw):
        more, frame = find_frame(raw[used:])
        if not more:
            break
        used += more
    if frame is None:
        raise FrameError(f"no valid DL/T 645 frame in {raw.hex(' ')}")
    return frame


def decode_value(raw: bytes, fmt: str) -> float:
    """BCD bytes (least significant first) of format `fmt` → number; raises FrameError on a non-BCD nibble."""
    size, decimals, signed = FORMATS[fmt]
    if len(raw) != size:
        raise FrameError(f"{fmt} needs {size} bytes, got {len(raw)}")
    digits = bytearray(raw[::-1])
    negative = False
    if signed and digits[0] & 0x80:
        negative = True
        digits[0] &= 0x7F
    text = digits.hex()
    if not text.isdigit():
        raise FrameError(f"not BCD: {raw.hex(' ')}")
    value = int(text) / 10 ** decimals
    return -value if negative else value


def encode_value(value: float, fmt: str) -> bytes:
    """Number → BCD bytes of format `fmt` (least significant first); out of range raises FrameError."""
    size, decimals, signed = FORMATS[fmt]
    scaled = round(abs(value) * 10 ** decimals)
    if signed and scaled >= 8 * 10 ** (2 * size - 1):  # the top bit of the top digit is the sign
        raise FrameError(f"{value} does not fit {fmt}")
    if not signed:
        scaled %= 10 ** (2 * size)  # a counter shows its low digits and wraps, as the meter does
    raw = bytearray(bytes.fromhex(f"{scaled:0{2 * size}d}"))
    if signed and value < 0:
        raw[0] |= 0x80
    return bytes(raw[::-1])


def rollover(fmt: str) -> float:
    """Where an unsigned counter of `fmt` starts again at 0 (1,000,000 kWh for XXXXXX.XX)."""
    size, decimals, _ = FORMATS[fmt]
    return 10 ** (2 * size - decimals)


def read_response(address: str, di: int, value_bytes: bytes) -> bytes:
    """The meter's normal answer to a read of `di`."""
    return encode_frame(address, READ_DATA | RESPONSE, di_bytes(di) + value_bytes)


def error_response(address: str, control: int, word: int = 0x02) -> bytes:
    return encode_frame(address, control | RESPONSE | ERROR, bytes([word]))

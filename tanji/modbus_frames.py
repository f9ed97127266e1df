"""Modbus read frames (functions 03 and 04) in both framings: RTU (CRC) and TCP (MBAP header).

The gateway's links and the simulators' serial device server share this codec. The gateway
needs its own framing, rather than a Modbus client library's, because it must own the
connection: meters behind one serial device server share one TCP connection, a silent unit
id must cost its own timeout and nothing else (no reconnect, no reset), DL/T 645 frames travel
on the same line, and RTU frames may travel over TCP. Only reads are spoken: a gateway that
cannot write cannot change a meter.

Pure functions, no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

READ_FUNCTIONS = (3, 4)
EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "device failure",
              6: "device busy", 10: "gateway path unavailable", 11: "gateway target failed to respond"}


class ModbusFrameError(ValueError):
    """Bytes that are not the answer (or request) expected."""


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC = _crc_table()


def crc16(data: bytes | bytearray) -> int:
    """Modbus CRC-16 (poly 0xA001, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC[(crc ^ b) & 0xFF]
    return crc


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<H", crc16(body))


@dataclass(frozen=True, slots=True)
class ReadAnswer:
    """A decoded answer: the registers, or the exception code the device sent."""

    unit: int
    function: int
    registers: tuple[int, ...] = ()
    exception: int | None = None

    def exception_text(self) -> str:
        return f"exception {self.exception} ({EXCEPTIONS.get(self.exception or 0, 'unknown')})"


# -- RTU --------------------------------------------------------------------------------------

def rtu_read_request(unit: int, function: int, address: int, count: int) -> bytes:
    return _with_crc(struct.pack(">BBHH", unit, function, address, count))


def rtu_answer_length(buffer: bytes | bytearray) -> int | None:
    """Length of the answer frame that starts `buffer`, or None while its header is incomplete."""
    if len(buffer) < 3:
        return None
    if buffer[1] & 0x80:
        return 5
    return 3 + buffer[2] + 2


def rtu_decode_answer(frame: bytes | bytearray) -> ReadAnswer:
    """One complete RTU answer frame; a bad CRC raises ModbusFrameError."""
    if len(frame) < 5 or crc16(frame[:-2]) != struct.unpack("<H", frame[-2:])[0]:
        raise ModbusFrameError(f"bad CRC or short frame: {bytes(frame).hex(' ')}")
    return _decode_pdu(frame[0], frame[1:-2])


def rtu_decode_request(frame: bytes | bytearray) -> tuple[int, int, int, int]:
    """(unit, function, address, count) of an 8-byte read request; raises on a bad CRC."""
    if len(frame) != 8 or crc16(frame[:-2]) != struct.unpack("<H", frame[-2:])[0]:
        raise ModbusFrameError(f"not a read request: {bytes(frame).hex(' ')}")
    unit, function, address, count = struct.unpack(">BBHH", frame[:6])
    return unit, function, address, count


def rtu_answer(unit: int, function: int, registers: list[int]) -> bytes:
    return _with_crc(struct.pack(f">BBB{len(registers)}H", unit, function, 2 * len(registers), *registers))


def rtu_exception(unit: int, function: int, code: int) -> bytes:
    return _with_crc(bytes([unit, function | 0x80, code]))


# -- TCP (MBAP) -------------------------------------------------------------------------------

def mbap_read_request(tid: int, unit: int, function: int, address: int, count: int) -> bytes:
    return struct.pack(">HHHBBHH", tid & 0xFFFF, 0, 6, unit, function, address, count)


def mbap_answer_length(buffer: bytes | bytearray) -> int | None:
    if len(buffer) < 6:
        return None
    return 6 + struct.unpack(">H", buffer[4:6])[0]


def mbap_decode_answer(frame: bytes | bytearray) -> tuple[int, ReadAnswer]:
    """(transaction id, answer) of one complete MBAP frame."""
    tid, protocol, length = struct.unpack(">HHH", frame[:6])
    if protocol != 0 or length < 3 or len(frame) != 6 + length:
        raise ModbusFrameError(f"not a Modbus TCP answer: {bytes(frame[:12]).hex(' ')}")
    return tid, _decode_pdu(frame[6], frame[7:])


def _decode_pdu(unit: int, pdu: bytes | bytearray) -> ReadAnswer:
    function = pdu[0]
    if function & 0x80:
        if len(pdu) < 2:
            raise ModbusFrameError("exception answer without a code")
        return ReadAnswer(unit, function & 0x7F, exception=pdu[1])
    if len(pdu) < 2 or pdu[1] != len(pdu) - 2 or pdu[1] % 2:
        raise ModbusFrameError(f"byte count does not match: {bytes(pdu[:8]).hex(' ')}")
    return ReadAnswer(unit, function, struct.unpack(f">{pdu[1] // 2}H", bytes(pdu[2:])))


def check_answer(answer: ReadAnswer, unit: int, function: int, count: int) -> tuple[int, ...]:
    """The registers of a good answer to (unit, function, count); ModbusFrameError otherwise."""
    if answer.unit != unit or answer.function != function:
        raise ModbusFrameError(f"answer from unit {answer.unit} fc{answer.function}, expected unit {unit} fc{function}")
    if answer.exception is not None:
        raise ModbusFrameError(answer.exception_text())
    if len(answer.registers) < count:
        raise ModbusFrameError(f"short response: {len(answer.registers)} of {count} registers")
    return answer.registers[:count]

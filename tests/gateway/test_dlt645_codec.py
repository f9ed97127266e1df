"""DL/T 645-2007 frames and BCD values, table-driven, and against an independent implementation.

The expected bytes are written out from the standard's rules (68 A0..A5 68 C L DATA CS 16,
address lowest digit pair first, data +0x33, BCD least significant byte first, sign in the top
bit); the PyPI package dlt645 (not written here) must build and read the same frames.
"""

from __future__ import annotations

import pytest
from dlt645 import DLT645Protocol
from hypothesis import given
from hypothesis import strategies as st

from tanji import dlt645

FRAMES = [
    # (address, control, data, frame without preamble, what)
    ("123456789012", 0x11, bytes.fromhex("00000100"),
     "68 12 90 78 56 34 12 68 11 04 33 33 34 33 68 16", "read forward active total 00 01 00 00"),
    ("000000000001", 0x11, bytes.fromhex("00010102"),
     "68 01 00 00 00 00 00 68 11 04 33 34 34 35 b6 16", "read voltage A 02 01 01 00"),
    ("AAAAAAAAAAAA", 0x13, b"", "68 aa aa aa aa aa aa 68 13 00 df 16", "broadcast read address"),
]


@pytest.mark.parametrize("address,control,data,expected,what", FRAMES, ids=[f[4] for f in FRAMES])
def test_frames_as_the_standard_writes_them(address, control, data, expected, what):
    raw = dlt645.encode_frame(address, control, data)
    assert raw[:4] == b"\xfe\xfe\xfe\xfe"
    assert raw[4:].hex(" ") == expected
    frame = dlt645.decode_frame(raw)
    assert (frame.address, frame.control, frame.data) == (address, control, data)
    independent = DLT645Protocol.build_frame(dlt645.address_bytes(address), control, data)
    assert bytes(independent) == raw
    parsed = DLT645Protocol.deserialize(raw)
    assert bytes(parsed.addr) == dlt645.address_bytes(address) and bytes(parsed.data) == data


VALUES = [
    # (value, format, bytes least significant first)
    (123456.78, "XXXXXX.XX", "78 56 34 12"),
    (0.01, "XXXXXX.XX", "01 00 00 00"),
    (220.1, "XXX.X", "01 22"),
    (5.123, "XXX.XXX", "23 51 00"),
    (-5.123, "XXX.XXX", "23 51 80"),
    (-12.3456, "XX.XXXX", "56 34 92"),
    (0.987, "X.XXX", "87 09"),
    (50.02, "XX.XX", "02 50"),
]


@pytest.mark.parametrize("value,fmt,raw", VALUES)
def test_bcd_values(value, fmt, raw):
    assert dlt645.encode_value(value, fmt).hex(" ") == raw
    assert dlt645.decode_value(bytes.fromhex(raw), fmt) == pytest.approx(value)


def test_a_counter_wraps_at_its_digits_and_garbage_is_refused():
    assert dlt645.encode_value(1_000_000.05, "XXXXXX.XX") == dlt645.encode_value(0.05, "XXXXXX.XX")
    assert dlt645.rollover("XXXXXX.XX") == 1_000_000
    with pytest.raises(dlt645.FrameError):
        dlt645.decode_value(bytes.fromhex("0a 00 00 00"), "XXXXXX.XX")
    with pytest.raises(dlt645.FrameError):
        dlt645.check_address("12345")


def test_noise_before_a_frame_and_damaged_frames_are_skipped():
    good = dlt645.read_response("000000000007", 0x00010000, dlt645.encode_value(42.5, "XXXXXX.XX"))
    damaged = bytearray(good)
    damaged[-2] ^= 0xFF
    used, frame = dlt645.find_frame(b"\x00\x68\x01" + bytes(damaged[4:]) + good)
    assert frame is None and used > 0
    assert dlt645.decode_frame(b"\x00\x68\x01" + bytes(damaged[4:]) + good).data[4:] == dlt645.encode_value(
        42.5, "XXXXXX.XX")
    assert dlt645.find_frame(good[4:14]) == (0, None)  # incomplete: wait for more


@given(st.from_regex(r"\A[0-9]{12}\Z"), st.integers(0, 0xFFFFFFFF), st.binary(max_size=40))
def test_round_trip_agrees_with_the_independent_codec(address, di, value):
    raw = dlt645.read_response(address, di, value)
    theirs = DLT645Protocol.deserialize(raw)
    assert bytes(theirs.data) == dlt645.di_bytes(di) + value
    assert dlt645.decode_frame(bytes(DLT645Protocol.build_frame(dlt645.address_bytes(address), 0x91,
                                                                dlt645.di_bytes(di) + value))).data[4:] == value

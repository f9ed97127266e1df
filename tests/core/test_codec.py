"""Word/byte orders, checked against byte layouts written out by hand (not against the codec itself)."""

from __future__ import annotations

import math
import struct

import pytest

from tanji.codec import decode, encode, word_count

# value, type, order, the registers a device holds (written from the byte layout by hand)
CASES = [
    (1.5, "float32", "ABCD", [0x3FC0, 0x0000]),
    (1.5, "float32", "CDAB", [0x0000, 0x3FC0]),
    (1.5, "float32", "BADC", [0xC03F, 0x0000]),
    (1.5, "float32", "DCBA", [0x0000, 0xC03F]),
    (0x12345678, "uint32", "ABCD", [0x1234, 0x5678]),
    (0x12345678, "uint32", "CDAB", [0x5678, 0x1234]),
    (0x12345678, "uint32", "BADC", [0x3412, 0x7856]),
    (0x12345678, "uint32", "DCBA", [0x7856, 0x3412]),
    (-2, "int32", "CDAB", [0xFFFE, 0xFFFF]),
    (-2, "int16", "ABCD", [0xFFFE]),
    (0x1234, "uint16", "BADC", [0x3412]),
    (0x0102030405060708, "int64", "ABCD", [0x0102, 0x0304, 0x0506, 0x0708]),
    (0x0102030405060708, "uint64", "CDAB", [0x0708, 0x0506, 0x0304, 0x0102]),
    (0x0102030405060708, "int64", "DCBA", [0x0807, 0x0605, 0x0403, 0x0201]),
]


@pytest.mark.parametrize(("value", "data_type", "order", "words"), CASES)
def test_decode_matches_hand_written_layout(value, data_type, order, words):
    assert decode(words, data_type, order) == value


@pytest.mark.parametrize(("value", "data_type", "order", "words"), CASES)
def test_encode_produces_the_device_layout(value, data_type, order, words):
    assert encode(value, data_type, order) == words


def test_float64_big_endian_matches_struct():
    words = list(struct.unpack(">4H", struct.pack(">d", math.pi)))
    assert decode(words, "float64", "ABCD") == math.pi
    assert word_count("float64") == 4


def test_wrong_word_count_is_an_error():
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode([1], "float32")

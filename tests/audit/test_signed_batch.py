"""What a gateway signs (tanji/signed_batch.py): the header, the chain, the exact readings bytes.

The header format is a public contract (docs/audit.md): a fixed vector pins it, so a change is
seen here before it breaks every auditor's independent verifier.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from gateway.signing_key import generate_key
from tanji import signed_batch as sb
from tanji.wire import decode_batch, encode_batch, readings_json
from tests.audit.signing import verify

READINGS = [{"meter": "incomer", "ts_ms": 1767225601003, "quality": "good",
             "values": {"energy_import_kwh": 123456.5, "power_kw": 412.8}},
            {"meter": "plc-a", "ts_ms": 1767225601011, "quality": "good", "values": {"units_total": 18211}}]


def test_header_is_the_documented_text():
    digest = sb.readings_digest(readings_json(READINGS).encode())
    head = sb.header("cq-battery", "gw-cq-01", 18452, "5e1c0a7b9d3f2e61", "9f86d081884c7d65", None, digest)
    assert head.decode() == ("tanji-batch-v1\nsite cq-battery\ngateway gw-cq-01\nseq 18452\n"
                             "chain 5e1c0a7b9d3f2e61\nkey 9f86d081884c7d65\nprev -\n"
                             f"readings {digest}\n")
    # the readings digest is SHA-256 of the compact JSON bytes as published
    assert digest == "75c756253eb8bf2c8e5d58d2b8dc918a1070a024158327470a30a50409491272"
    assert readings_json(READINGS).startswith('[{"meter":"incomer","ts_ms":1767225601003,')


def signed_payload(key, seq=0, prev=None, chain="00112233aabbccdd", readings=READINGS, sent_ms=1767225602000):
    text = readings_json(readings)
    sig, batch_hash = sb.sign(key, "cq-battery", "gw-1", seq, chain, prev, text.encode())
    return encode_batch("cq-battery", "gw-1", seq, readings, sent_ms=sent_ms, sig=sig.to_json(),
                        readings_text=text), batch_hash


def check(payload: bytes, public_raw: bytes) -> tuple[bool, str]:
    """The documented verification: header from the payload, readings as their exact bytes."""
    body = json.loads(payload)
    sig = sb.parse_signature(body["sig"])
    head = sig.header(body["site"], body["gateway"], body["seq"], sb.readings_digest(sb.raw_member(payload)))
    return verify(public_raw, sig.value, head), sb.batch_hash(head)


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 4094, 4095, 13_614, 65_537])
def test_readings_digest_is_sha256_of_the_bytes_whatever_the_pieces(size):
    """The digest is hashed in pieces that keep the GIL (signed_batch.readings_digest); the value
    is SHA-256 of the whole, as every batch signed or stored before says."""
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    assert sb.readings_digest(data) == hashlib.sha256(data).hexdigest()
    assert sb.readings_digest(memoryview(data)) == hashlib.sha256(data).hexdigest()


def test_a_signed_batch_verifies_and_chains(tmp_path):
    key = generate_key(tmp_path / "gw.key")
    first, h0 = signed_payload(key)
    second, h1 = signed_payload(key, seq=1, prev=h0)
    assert check(first, key.public_raw) == (True, h0)
    assert check(second, key.public_raw) == (True, h1)
    assert json.loads(second)["sig"]["prev"] == h0
    decode_batch(first)  # still wire format v1
    # sent_ms and backlog describe the copy in transit: a replay verifies as the first copy
    replay = first.replace(b'"sent_ms":1767225602000,"backlog":false', b'"sent_ms":1767225699999,"backlog":true')
    assert replay != first and check(replay, key.public_raw) == (True, h0)


@pytest.mark.parametrize("change", [
    (b"123456.5", b"123457.5"),            # an altered value
    (b'"plc-a"', b'"plc-b"'),              # an altered meter
    (b'"seq":0', b'"seq":1'),              # the batch moved in the chain
    (b'"gateway":"gw-1"', b'"gateway":"gw-2"'),
])
def test_any_change_to_what_is_signed_fails(tmp_path, change):
    key = generate_key(tmp_path / "gw.key")
    payload, _ = signed_payload(key)
    assert change[0] in payload
    assert check(payload.replace(*change), key.public_raw)[0] is False


def test_another_key_does_not_verify(tmp_path):
    key, other = generate_key(tmp_path / "a.key"), generate_key(tmp_path / "b.key")
    payload, _ = signed_payload(other)
    assert check(payload, key.public_raw)[0] is False


def test_raw_member_is_the_member_json_reads():
    payload = b'{"v":1, "x":"\\"readings\\":[1]" ,"readings" : [ {"a":"]"} ] }'
    assert sb.raw_member(payload) == b'[ {"a":"]"} ]'
    assert sb.raw_member(b'{"readings":[1],"readings":[2]}') == b"[2]"  # the last, as json.loads
    assert sb.raw_member(b'{"readings":[1]') is None
    assert sb.raw_member(b"[1]") is None
    assert sb.raw_member(b'{"other":1}') is None


@pytest.mark.parametrize("bad", [
    {"alg": "rsa"}, {"key": "ABC"}, {"chain": "0" * 15}, {"prev": "0" * 63}, {"prev": 5},
    {"sig": "!!"}, {"sig": base64.b64encode(b"x" * 63).decode()}, {"extra": 1}])
def test_malformed_signatures_are_named(bad):
    good = {"alg": "ed25519", "key": "0" * 16, "chain": "1" * 16, "prev": None,
            "sig": base64.b64encode(b"s" * 64).decode()}
    sb.parse_signature(good)
    with pytest.raises(ValueError, match="sig"):
        sb.parse_signature({**good, **bad})

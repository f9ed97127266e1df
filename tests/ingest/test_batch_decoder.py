"""accounting.ingest.batch_decoder (msgspec) against the reference, tanji.wire.decode_batch.

The fast path may only accept what the reference accepts, and must read it the same way; when
it refuses, the reference names the reason. Generated valid batches, the wire-schema test's
mutations, byte-level damage and the known corner cases are all checked.
"""

from __future__ import annotations

import json
import logging

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounting.ingest import batch_decoder
from tanji import signed_batch, wire
from tanji.errors import WireFormatError
from tests.gateway.test_wire_schema import MUTATIONS, NOW_MS, batch, mutate


def fast_accepts(payload: bytes, site: str, gateway: str) -> batch_decoder.Batch | None:
    """The fast path alone, without the fallback to the reference."""
    try:
        decoded = batch_decoder._decoder.decode(payload)
        batch_decoder._check(decoded, site, gateway, NOW_MS)
    except Exception:  # noqa: BLE001 - any refusal counts as a refusal here
        return None
    return decoded


def reference(payload: bytes, site: str, gateway: str) -> dict | WireFormatError:
    try:
        return wire.decode_batch(payload, wire.readings_topic(site, gateway), NOW_MS)
    except WireFormatError as exc:
        return exc


def as_reference(b: batch_decoder.Batch) -> dict:
    """A decoded Batch in the reference's shape, for comparison (absent value_quality omitted)."""
    readings = []
    for r in b.readings:
        d = {"meter": r.meter, "ts_ms": r.ts_ms, "quality": r.quality, "values": r.values}
        if r.value_quality is not None:
            d["value_quality"] = r.value_quality
        readings.append(d)
    out = {"v": b.v, "site": b.site, "gateway": b.gateway, "seq": b.seq, "sent_ms": b.sent_ms,
           "backlog": b.backlog, "readings": readings}
    if b.backfill:
        out["backfill"] = True
    if b.sig is not msgspec.UNSET:
        out["sig"] = msgspec.structs.asdict(b.sig)
    return out


def _topic_ids(body: object) -> tuple[str, str]:
    """The topic a gateway would publish this body on (ids that do not fit a topic get placeholders)."""
    if isinstance(body, dict) and all(isinstance(body.get(k), str) and body[k] and "/" not in body[k]
                                      and "+" not in body[k] and "#" not in body[k] for k in ("site", "gateway")):
        return body["site"], body["gateway"]
    return "site", "gw"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch())
def test_valid_batches_take_the_fast_path_and_read_as_the_reference_reads_them(body):
    site, gateway = _topic_ids(body)
    body = {**body, "site": site, "gateway": gateway}
    payload = json.dumps(body).encode()
    fast = fast_accepts(payload, site, gateway)
    ref = reference(payload, site, gateway)
    assert not isinstance(ref, WireFormatError), ref
    assert fast is not None
    if ref.get("backfill") is False:  # optional: false reads as absent
        del ref["backfill"]
    assert as_reference(fast) == ref
    assert as_reference(batch_decoder.decode_batch(payload, site, gateway, NOW_MS)) == ref
    disagreements = batch_decoder._disagreements
    signed, raw = batch_decoder.decode_signed(payload, site, gateway, NOW_MS)
    assert batch_decoder._disagreements == disagreements  # the fast path took it, as decode_batch's did
    assert as_reference(signed) == ref
    assert raw == signed_batch.raw_member(payload)  # the bytes a signature covers are the bytes parsed


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch(), st.sampled_from(MUTATIONS), st.data())
def test_mutated_batches_are_refused_with_the_reference_reason(body, kind, data):
    bad = mutate(body, kind, data.draw)
    if bad is None:
        return
    site, gateway = _topic_ids(bad)
    payload = json.dumps(bad).encode()
    ref = reference(payload, site, gateway)
    assert isinstance(ref, WireFormatError), (kind, bad)
    assert fast_accepts(payload, site, gateway) is None, (kind, bad)
    with pytest.raises(WireFormatError) as caught:
        batch_decoder.decode_batch(payload, site, gateway, NOW_MS)
    assert (caught.value.reason, caught.value.detail) == (ref.reason, ref.detail)
    with pytest.raises(WireFormatError) as caught:
        batch_decoder.decode_signed(payload, site, gateway, NOW_MS)
    assert (caught.value.reason, caught.value.detail) == (ref.reason, ref.detail)


VALID = json.dumps({"v": 1, "site": "s", "gateway": "g", "seq": 3, "sent_ms": NOW_MS, "backlog": False,
                    "readings": [{"meter": "m1", "ts_ms": NOW_MS - 1000, "quality": "good",
                                  "values": {"energy_import_kwh": 1234.5, "power_kw": 7}},
                                 {"meter": "m2", "ts_ms": NOW_MS - 1000, "quality": "stale",
                                  "values": {"energy_import_kwh": None},
                                  "value_quality": {"energy_import_kwh": "stale"}}]},
                   separators=(",", ":")).encode()
assert wire.decode_batch(VALID, "tanji/v1/s/g/readings", NOW_MS)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(1, len(VALID)))
def test_damaged_bytes_never_pass_the_fast_path_unless_the_reference_agrees(flips, cut):
    raw = bytearray(VALID[:cut])
    for pos, byte in flips:
        if pos < len(raw):
            raw[pos] = byte
    payload = bytes(raw)
    ref = reference(payload, "s", "g")
    fast = fast_accepts(payload, "s", "g")
    if fast is not None:
        assert not isinstance(ref, WireFormatError), payload
        assert as_reference(fast) == ref
    if isinstance(ref, WireFormatError):
        with pytest.raises(WireFormatError) as caught:
            batch_decoder.decode_batch(payload, "s", "g", NOW_MS)
        assert caught.value.reason == ref.reason


@pytest.mark.parametrize(("payload", "reason"), [
    (VALID.replace(b'"power_kw":7', b'"power_kw":NaN'), "not_finite"),
    (VALID.replace(b'"power_kw":7', b'"power_kw":1e400'), "not_finite"),
    (VALID.replace(b'"power_kw":7', b'"power_kw":true'), "schema"),
    (VALID.replace(b'"power_kw":7', b'"power_w":7'), "unknown_quantity"),
    (VALID.replace(b'"ts_ms":%d' % (NOW_MS - 1000), b'"ts_ms":%d' % (NOW_MS + 600_000), 1), "timestamp"),
    (VALID.replace(b'"ts_ms":%d' % (NOW_MS - 1000), b'"ts_ms":%d' % 2**70, 1), "timestamp"),
    (VALID.replace(b'"gateway":"g"', b'"gateway":"h"'), "topic_mismatch"),
    (VALID.replace(b'"v":1', b'"v":2'), "version"),
    (VALID.replace(b'"value_quality":{"energy_import_kwh"', b'"value_quality":{"power_kw"'), "schema"),
    (b"\xff" + VALID, "not_json"),
    (b" " * (wire.MAX_PAYLOAD_BYTES + 1), "too_large"),
])
def test_each_refusal_carries_the_reference_reason(payload, reason):
    with pytest.raises(WireFormatError) as caught:
        batch_decoder.decode_batch(payload, "s", "g", NOW_MS)
    assert caught.value.reason == reason
    assert fast_accepts(payload, "s", "g") is None


@pytest.mark.parametrize("payload", [
    VALID.replace(b'"v":1', b'"v":1.0'),        # the reference compares v == 1
    VALID.decode().encode("utf-16-le"),         # json.loads detects UTF-16; msgspec reads UTF-8 only
])
def test_what_only_the_reference_accepts_is_still_ingested_and_logged(payload, caplog):
    assert fast_accepts(payload, "s", "g") is None
    with caplog.at_level(logging.WARNING, logger="accounting.ingest.batch_decoder"):
        decoded = batch_decoder.decode_batch(payload, "s", "g", NOW_MS)
    assert as_reference(decoded) == reference(payload, "s", "g")
    assert "disagree" in caplog.text


def test_decode_signed_hashes_the_readings_it_parses_even_when_the_member_repeats():
    """A payload naming `readings` twice: the bytes returned for the signature check are the
    readings admitted, never the other copy (what is vouched for is what is stored)."""
    one = b'[{"meter":"m1","ts_ms":%d,"quality":"good","values":{"power_kw":1.0}}]' % (NOW_MS - 1000)
    two = b'[{"meter":"m1","ts_ms":%d,"quality":"good","values":{"power_kw":2.0}}]' % (NOW_MS - 1000)
    payload = (b'{"v":1,"site":"s","gateway":"g","seq":1,"sent_ms":%d,"backlog":false,"readings":%s,"readings":%s}'
               % (NOW_MS, one, two))
    try:
        batch, raw = batch_decoder.decode_signed(payload, "s", "g", NOW_MS)
    except WireFormatError:
        return  # refusing such a payload outright is as safe
    assert raw in (one, two)
    assert batch.readings[0].values["power_kw"] == (1.0 if raw == one else 2.0)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch())
def test_decode_signed_finds_the_readings_of_a_gateways_compact_layout_exactly(body):
    """The layout Tanji's gateways publish (compact JSON, `readings` last): `decode_signed` finds
    the member's bytes by the payload's shape alone, and they are exactly the reference's."""
    site, gateway = _topic_ids(body)
    head = {k: v for k, v in body.items() if k != "readings"} | {"site": site, "gateway": gateway}
    payload = (json.dumps(head, separators=(",", ":"))[:-1] + ',"readings":'
               + json.dumps(body["readings"], separators=(",", ":")) + "}").encode()
    ref = reference(payload, site, gateway)
    signed, raw = batch_decoder.decode_signed(payload, site, gateway, NOW_MS)
    if ref.get("backfill") is False:
        del ref["backfill"]
    assert as_reference(signed) == ref
    assert raw == signed_batch.raw_member(payload)
    if b"\\" not in payload and payload.count(b'"readings"') == 1:
        assert batch_decoder._last_readings(payload) == raw  # the shape-only path is the one taken


_ONE = b'[{"meter":"m1","ts_ms":%d,"quality":"good","values":{"power_kw":1.0}}]' % (NOW_MS - 1000)
_TWO = b'[{"meter":"m1","ts_ms":%d,"quality":"good","values":{"power_kw":2.0}}]' % (NOW_MS - 1000)
_HEAD = b'{"v":1,"site":"s","gateway":"g","seq":1,"sent_ms":%d,"backlog":false' % NOW_MS


@pytest.mark.parametrize("payload", [
    _HEAD + b',"readi\\u006egs":' + _ONE + b',"readings":' + _TWO + b"}",  # a second member, its name escaped
    _HEAD + b',"readings":' + _ONE + b',"readi\\u006egs":' + _TWO + b"}",
    _HEAD + b',"readings":' + _ONE + b',"readings":' + _TWO + b"}",
    _HEAD + b',"readings":' + _ONE + b',"backfill":false}',  # readings not last
    _HEAD + b',"readings":' + _ONE.replace(b'"m1"', b'"readings"') + b"}",  # a meter named readings
    _HEAD + b',"readings": ' + _ONE + b"}",
    _HEAD + b',"readings":' + _ONE + b" }",
], ids=["escaped-dup-first", "escaped-dup-last", "dup", "not-last", "meter-named-readings", "space", "space-end"])
def test_decode_signed_hashes_what_it_parses_whatever_the_layout(payload):
    """Payloads the shape-only path must not be fooled by: the bytes returned for the signature
    are always those of the member parsed (or the payload is refused)."""
    try:
        batch, raw = batch_decoder.decode_signed(payload, "s", "g", NOW_MS)
    except WireFormatError:
        return
    assert raw is not None
    assert batch_decoder._readings_decoder.decode(raw) == batch.readings
    assert raw == signed_batch.raw_member(payload)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch())
def test_decode_head_reads_the_members_the_full_decoder_reads(body):
    """The signature pre-pass reads a gateway's batch only up to its readings (`decode_head`);
    admission parses the whole payload. What the pre-pass read (seq, sig, ...) and the bytes it
    hashed are exactly the full decoder's members and the reference's readings member."""
    site, gateway = _topic_ids(body)
    head_members = {k: v for k, v in body.items() if k != "readings"} | {"site": site, "gateway": gateway}
    payload = (json.dumps(head_members, separators=(",", ":"))[:-1] + ',"readings":'
               + json.dumps(body["readings"], separators=(",", ":")) + "}").encode()
    found = batch_decoder.decode_head(payload, site, gateway)
    full = batch_decoder.decode_fast(payload, site, gateway, NOW_MS)
    if b"\\" in payload or payload.count(b'"readings"') != 1:
        return  # not the shape-only layout: prepare decodes such a payload whole (decode_signed)
    assert found is not None and full is not None
    head, raw = found
    assert raw == signed_batch.raw_member(payload) == batch_decoder._last_readings(payload)
    assert head.readings == []
    assert {f: getattr(head, f) for f in head.__struct_fields__ if f != "readings"} == \
        {f: getattr(full, f) for f in full.__struct_fields__ if f != "readings"}


@pytest.mark.parametrize("payload", [
    _HEAD + b',"readi\\u006egs":' + _ONE + b',"readings":' + _TWO + b"}",
    _HEAD + b',"readings":' + _ONE + b',"readings":' + _TWO + b"}",
    _HEAD + b',"readings":' + _ONE + b',"backfill":false}',
    _HEAD + b',"readings":' + _ONE.replace(b'"m1"', b'"readings"') + b"}",
    _HEAD + b',"readings": ' + _ONE + b"}",
    _HEAD.replace(b'"gateway":"g"', b'"gateway":"h"') + b',"readings":' + _ONE + b"}",
    _HEAD.replace(b'"seq":1', b'"seq":-1') + b',"readings":' + _ONE + b"}",
], ids=["escaped-dup", "dup", "not-last", "meter-named-readings", "space", "other-gateway", "bad-seq"])
def test_decode_head_reads_nothing_it_cannot_prove(payload):
    """Whatever the shape-only path cannot prove exact (or a head that does not decode, or names
    another gateway) gives None: the pre-pass then decodes the payload whole."""
    found = batch_decoder.decode_head(payload, "s", "g")
    if found is not None:
        head, raw = found
        assert raw == signed_batch.raw_member(payload)
        assert batch_decoder.decode_batch(payload, "s", "g", NOW_MS).seq == head.seq

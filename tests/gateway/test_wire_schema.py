"""tanji/schemas/wire-v1.json (via jsonschema) and tanji.wire.validate_batch accept and refuse the same batches.

Generated valid batches must pass both; generated mutations of them (a wrong type, a missing
or unknown key, an unknown quantity or quality, too long an id) must fail both. The time
window rule ([now − 400 d, now + 5 min]) is outside what a JSON Schema can say, so the
generated timestamps stay inside it.
"""

from __future__ import annotations

import base64
import copy
import json
import time

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tanji.errors import WireFormatError
from tanji.quantities import QUANTITIES
from tanji.wire import QUALITY_CODES, SCHEMA_PATH, validate_batch

NOW_MS = int(time.time() * 1000)
VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
ids = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=64)
numbers = st.one_of(st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False), st.none())


@st.composite
def reading(draw):
    values = draw(st.dictionaries(st.sampled_from(sorted(QUANTITIES)), numbers, max_size=6))
    r = {"meter": draw(ids), "ts_ms": draw(st.integers(NOW_MS - 399 * 86_400_000, NOW_MS + 60_000)),
         "quality": draw(st.sampled_from(QUALITY_CODES)), "values": values}
    flagged = draw(st.lists(st.sampled_from(sorted(values)), unique=True)) if values else []
    if flagged:
        r["value_quality"] = {name: draw(st.sampled_from(QUALITY_CODES)) for name in flagged}
    return r


hex16 = st.binary(min_size=8, max_size=8).map(bytes.hex)


@st.composite
def signature(draw):
    """A `sig` member of the right shape (its value signs nothing: the format is under test)."""
    return {"alg": "ed25519", "key": draw(hex16), "chain": draw(hex16),
            "prev": draw(st.one_of(st.none(), st.binary(min_size=32, max_size=32).map(bytes.hex))),
            "sig": base64.b64encode(draw(st.binary(min_size=64, max_size=64))).decode()}


@st.composite
def batch(draw):
    body = {"v": 1, "site": draw(ids), "gateway": draw(ids), "seq": draw(st.integers(0, 2**40)),
            "sent_ms": draw(st.integers(0, 2**45)), "backlog": draw(st.booleans()),
            "readings": draw(st.lists(reading(), max_size=5))}
    if draw(st.booleans()):
        body["sig"] = draw(signature())
    if draw(st.booleans()):
        body["backfill"] = draw(st.booleans())
    return body


def schema_ok(body) -> bool:
    return VALIDATOR.is_valid(body)


def wire_ok(body) -> bool:
    try:
        validate_batch(body, now_ms=NOW_MS)
    except WireFormatError:
        return False
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch())
def test_valid_batches_pass_both(body):
    assert schema_ok(body) and wire_ok(body)


BAD_VALUES = [None, True, "x", 1.5, -1, [], {}, "", "z" * 65]
MUTATIONS = ["drop_key", "add_key", "retype", "bad_quality", "bad_quantity", "bad_value", "bad_value_quality",
             "reading_drop_key", "reading_add_key", "not_object", "bad_sig"]
BAD_SIGS = [{"alg": "rsa"}, {"key": "ABCDEF0123456789"}, {"key": "abc"}, {"chain": 7}, {"prev": ""},
            {"prev": "0" * 63}, {"sig": "not base64!"}, {"sig": base64.b64encode(b"x" * 63).decode()},
            {"extra": 1}]


def mutate(body, kind: str, draw) -> dict | None:
    body = copy.deepcopy(body)
    readings = body["readings"]
    r = readings[draw(st.integers(0, len(readings) - 1))] if readings else None
    if kind == "drop_key":
        del body[draw(st.sampled_from(sorted(set(body) - {"sig", "backfill"})))]  # sig and backfill are optional
    elif kind == "bad_sig":
        body["sig"] = {**draw(signature()), **draw(st.sampled_from(BAD_SIGS))}
    elif kind == "add_key":
        body[draw(st.sampled_from(["extra", "V", "readings_", "ts"]))] = 1
    elif kind == "retype":
        key = draw(st.sampled_from(sorted(body)))
        bad = [v for v in BAD_VALUES if _wrong_for(key, v)]
        body[key] = draw(st.sampled_from(bad))
    elif r is None:
        return None
    elif kind == "bad_quality":
        r["quality"] = draw(st.sampled_from(["ok", "GOOD", "", None, 0]))
    elif kind == "bad_quantity":
        r["values"][draw(st.sampled_from(["energy_kwh", "power", "kwh", "Power_kw"]))] = 1.0
    elif kind == "bad_value":
        if not r["values"]:
            return None
        r["values"][draw(st.sampled_from(sorted(r["values"])))] = draw(st.sampled_from(["1", True, [], {}]))
    elif kind == "bad_value_quality":
        r["value_quality"] = draw(st.sampled_from([{"power_kw": "bad"}, [], "good"]))
    elif kind == "reading_drop_key":
        del r[draw(st.sampled_from(["meter", "ts_ms", "quality", "values"]))]
    elif kind == "reading_add_key":
        r["unit"] = "kWh"
    elif kind == "not_object":
        readings[readings.index(r)] = draw(st.sampled_from([[], "r", 1, None]))
    return body


def _wrong_for(key: str, value) -> bool:
    expected = {"v": lambda v: v == 1 and not isinstance(v, bool),
                "site": lambda v: isinstance(v, str) and 0 < len(v) <= 64,
                "gateway": lambda v: isinstance(v, str) and 0 < len(v) <= 64,
                "seq": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                "sent_ms": lambda v: isinstance(v, int) and not isinstance(v, bool),
                "backlog": lambda v: isinstance(v, bool),
                "backfill": lambda v: isinstance(v, bool),
                "readings": lambda v: isinstance(v, list),
                "sig": lambda v: False}[key]  # none of BAD_VALUES is a signature
    return not expected(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch(), st.sampled_from(MUTATIONS), st.data())
def test_invalid_batches_fail_both(body, kind, data):
    bad = mutate(body, kind, data.draw)
    if bad is None:
        return
    assert not schema_ok(bad), (kind, bad)
    assert not wire_ok(bad), (kind, bad)


def test_value_quality_naming_an_unknown_quantity_fails_both():
    body = {"v": 1, "site": "s", "gateway": "g", "seq": 0, "sent_ms": NOW_MS, "backlog": False,
            "readings": [{"meter": "m", "ts_ms": NOW_MS, "quality": "good", "values": {"power_kw": 1.0},
                          "value_quality": {"not_a_quantity": "good"}}]}
    assert not wire_ok(body)
    assert not schema_ok(body)

"""A mutation fuzzer for readings messages: valid batches broken in the ways gateways break them,
and (`hostile`) in the ways an attacker or a broken device would: sizes, nesting depths,
number ranges, encodings, topics, status documents, retained messages.

Each generator returns (topic, payload) that admission must reject, on a topic the service
subscribes to (a message for a site it does not serve never reaches it); `malformed` keeps only
mutants that a fresh Admission really rejects (a random flip can land on something valid),
so the expected quarantine count is exact.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from accounting.ingest.admission import Admission
from accounting.ingest.dedup import DedupIndex
from accounting.ingest.sequence import SequenceTracker
from accounting.ingest.subscriber import InboundMessage
from tanji import wire
from tanji.site import Site

Mutation = Callable[[random.Random, str, dict], tuple[str, bytes]]


def _dump(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _reading(body: dict, rng: random.Random) -> dict:
    return rng.choice(body["readings"])


def _flip_bytes(rng, topic, body):
    raw = bytearray(_dump(body))
    for _ in range(rng.randint(1, 8)):
        raw[rng.randrange(len(raw))] = rng.randrange(256)
    return topic, bytes(raw)


def _truncate(rng, topic, body):
    raw = _dump(body)
    return topic, raw[:rng.randrange(len(raw) - 1)]


def _nan(rng, topic, body):
    _reading(body, rng)["values"]["energy_import_kwh" if rng.random() < 0.5 else "power_kw"] = float("nan")
    return topic, json.dumps(body).encode()  # allow_nan: the way a careless publisher writes NaN


def _infinity(rng, topic, body):
    _reading(body, rng)["values"]["power_kw"] = rng.choice([1e400, -1e400])
    return topic, json.dumps(body).encode()


def _wrong_type(rng, topic, body):
    key, value = rng.choice([("seq", "7"), ("sent_ms", 1.5), ("backlog", "no"), ("readings", {}),
                             ("site", 42), ("v", 2)])
    body[key] = value
    return topic, _dump(body)


def _reading_type(rng, topic, body):
    r = _reading(body, rng)
    key, value = rng.choice([("ts_ms", str(r["ts_ms"])), ("ts_ms", float(r["ts_ms"]) + 0.5), ("quality", "ok"),
                             ("values", [1, 2]), ("meter", ""), ("meter", None)])
    r[key] = value
    return topic, _dump(body)


def _value_type(rng, topic, body):
    _reading(body, rng)["values"]["power_kw"] = rng.choice(["12", True, [1], {"a": 1}])
    return topic, _dump(body)


def _missing_key(rng, topic, body):
    if rng.random() < 0.5:
        del body[rng.choice(sorted(body))]
    else:
        r = _reading(body, rng)
        del r[rng.choice(["meter", "ts_ms", "quality", "values"])]
    return topic, _dump(body)


def _extra_key(rng, topic, body):
    (body if rng.random() < 0.5 else _reading(body, rng))["x" + str(rng.randrange(100))] = 1
    return topic, _dump(body)


def _unknown_quantity(rng, topic, body):
    _reading(body, rng)["values"][rng.choice(["energy_kwh", "power_w", "temp_c"])] = 1.0
    return topic, _dump(body)


def _timestamp(rng, topic, body):
    r = _reading(body, rng)
    r["ts_ms"] = rng.choice([0, -1, r["ts_ms"] + 10 * 60_000 + 3_600_000 * rng.randint(1, 10_000),
                             r["ts_ms"] - 500 * 86_400_000])
    return topic, _dump(body)


def _topic_mismatch(rng, topic, body):
    body["gateway"] = rng.choice(["gw-other", "gw-cq-02", "x"])
    return topic, _dump(body)


def _unknown_meter(rng, topic, body):
    _reading(body, rng)["meter"] = rng.choice(["ghost", "meter-99", "plc-z"])
    return topic, _dump(body)


def _unknown_gateway(rng, topic, body):
    site, _, _ = wire.parse_topic(topic)
    gw = rng.choice(["gw-rogue", "gw-zz"])
    body["gateway"] = gw
    return wire.readings_topic(site, gw), _dump(body)


def _not_object(rng, topic, body):
    return topic, rng.choice([b"[]", b"null", b"42", b'"x"', b"", b"\xff\xfe", b"{"])


def _too_large(rng, topic, body):
    return topic, b'{"pad":"' + b"x" * (wire.MAX_PAYLOAD_BYTES + 1) + b'"}'


def _too_many(rng, topic, body):
    body["readings"] = body["readings"] * (wire.MAX_READINGS_PER_BATCH // len(body["readings"]) + 1)
    return topic, _dump(body)


MUTATIONS: list[tuple[Mutation, float]] = [
    (_flip_bytes, 3), (_truncate, 2), (_nan, 1), (_infinity, 1), (_wrong_type, 2), (_reading_type, 2),
    (_value_type, 1), (_missing_key, 2), (_extra_key, 1), (_unknown_quantity, 1), (_timestamp, 1),
    (_topic_mismatch, 1), (_unknown_meter, 1), (_unknown_gateway, 1),
    (_not_object, 1), (_too_large, 0.02), (_too_many, 0.05),
]


def malformed(site: Site, templates: list[tuple[str, bytes]], n: int, seed: int = 6) -> list[tuple[str, bytes]]:
    """`n` mutants of the template messages, each one rejected by admission."""
    rng = random.Random(seed)
    funcs, weights = zip(*MUTATIONS, strict=True)
    out: list[tuple[str, bytes]] = []
    while len(out) < n:
        topic, payload = rng.choice(templates)
        mutate = rng.choices(funcs, weights)[0]
        candidate = mutate(rng, topic, json.loads(payload))
        admission = Admission({site.id: site}, DedupIndex(), SequenceTracker())
        result = admission.admit([InboundMessage(candidate[0], candidate[1], 0, 1, 0, 0)])
        if result.quarantined:
            out.append(candidate)
    return out


# -- hostile: what issue #14 found, and its neighbours ----------------------------------------


def _deep(rng, topic, body):
    n = rng.choice([9, 10, 64, 1000, 5000, 30_000, 100_000])
    kind = rng.randrange(4)
    if kind == 0:
        return topic, b"[" * n
    if kind == 1:
        return topic, b'{"a":' * n
    if kind == 2:  # well-formed JSON, only too deep, inside a value
        d = min(n, 100_000)
        raw = _dump(body).replace(b'"power_kw":', b'"power_kw":' + b"[" * d + b"1" + b"]" * d, 1)
        return topic, raw if raw != _dump(body) else b"[" * d
    return wire.status_topic(*wire.parse_topic(topic)[:2]), b"[" * min(n, 60_000)


def _number_range(rng, topic, body):
    r = _reading(body, rng)
    digits = b"9" * rng.choice([309, 401, 1000, 4299, 5000])
    raw = _dump(body)
    target = rng.randrange(5)
    if target == 0:  # a value as a huge integer or beyond a double
        name = next(iter(r["values"]))
        literal = rng.choice([digits, b"1e309", b"-1e400", b"1" + b"0" * 400 + b".5"])
        return topic, _with_value(body, r, name, literal)
    if target == 1:
        return topic, raw.replace(b'"ts_ms":%d' % r["ts_ms"], b'"ts_ms":' + digits[:rng.choice([20, 30, 400])], 1)
    if target == 2:
        return topic, raw.replace(b'"seq":%d' % body["seq"], b'"seq":' + rng.choice([b"-1", b"18446744073709551616",
                                                                                    digits]), 1)
    if target == 3:
        return topic, raw.replace(b'"sent_ms":%d' % body["sent_ms"], b'"sent_ms":' + digits, 1)
    body["readings"] = [dict(r, values={"energy_import_kwh": 1.0}, ts_ms=r["ts_ms"] + rng.randint(1, 4999))]
    return topic, _dump(body).replace(b'"energy_import_kwh":1.0', b'"energy_import_kwh":' + digits, 1)


def _with_value(body: dict, r: dict, name: str, literal: bytes) -> bytes:
    marker = 123456.78125
    r["values"][name] = marker
    return _dump(body).replace(repr(marker).encode(), literal, 1)


def _encoding(rng, topic, body):
    r = _reading(body, rng)
    raw = _dump(body)
    choice = rng.randrange(6)
    if choice == 0:  # invalid UTF-8 inside a string
        return topic, raw.replace(r["meter"].encode(), r["meter"].encode() + rng.choice(
            [b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff", b"\x80\x80"]), 1)
    if choice == 1:  # a lone surrogate as a JSON escape
        r["meter"] = r["meter"] + "\ud800"
        return topic, json.dumps(body).encode()
    if choice == 2:  # a raw control character in a string
        return topic, raw.replace(r["meter"].encode(), r["meter"].encode() + bytes([rng.choice([0, 1, 10, 27])]), 1)
    if choice == 3:  # latin-1 where UTF-8 is due
        r["meter"] = r["meter"] + "é"
        return topic, json.dumps(body, ensure_ascii=False).encode("latin-1")
    if choice == 4:  # bytes before the document
        return topic, rng.choice([b"\x00", b"\xff\xfe", b"\xfe\xff\x00", b"garbage"]) + raw
    return topic, raw + rng.choice([b"\x00", b"}", b"]", b"{}", b" garbage"])


def _status(rng, topic, body):
    site, gateway, _ = wire.parse_topic(topic)
    status = wire.status_topic(site, gateway)
    good = json.loads(wire.status_payload(site, gateway, "online", polls=1))
    choice = rng.randrange(9)
    if choice == 0:
        return status, b"{" + b"x" * rng.randint(1, 100)
    if choice == 1:
        return status, wire.status_payload(site, gateway, "online", pad="x" * (wire.MAX_STATUS_BYTES + 10))
    if choice == 2:
        return status, json.dumps(dict(good, site="elsewhere")).encode()
    if choice == 3:
        return status, json.dumps(dict(good, polls=float("nan"))).encode()
    if choice == 4:
        return status, json.dumps(dict(good, note="\ud800")).encode()
    if choice == 5:
        return status, json.dumps({k: v for k, v in good.items() if k != rng.choice(["state", "ts_ms", "v"])}).encode()
    if choice == 6:
        return status, json.dumps(dict(good, state=rng.choice(["on", "", None, 1]))).encode()
    if choice == 7:
        return status, rng.choice([b"[]", b"null", b"42", b'"online"', b"\xff"])
    return status, json.dumps(dict(good, v=rng.choice([2, True, "1"]))).encode()


def _rogue_topic(rng, topic, body):
    site, _, kind = wire.parse_topic(topic)
    name = rng.choice(["网关-α", "gw evil", "x" * rng.randint(65, 2000), "gw-cq-01 ", "GW-CQ-01", "..", "'; drop"])
    name += f"-{rng.randrange(10**6)}" if rng.random() < 0.5 else ""
    body["gateway"] = name
    return (wire.readings_topic(site, name) if rng.random() < 0.7 else wire.status_topic(site, name)), _dump(body)


def _impossible(rng, topic, body):
    r = _reading(body, rng)
    name, value = rng.choice([("energy_import_kwh", -5.0), ("energy_import_kwh", 1e308), ("energy_export_kwh", -1e-3),
                              ("power_kw", 1e9), ("power_factor", 3.0), ("voltage_l1_v", -230.0),
                              ("units_total", -1.0), ("line_running", 2.0)])
    body["readings"] = [{"meter": r["meter"], "ts_ms": r["ts_ms"] + rng.randint(1, 4999), "quality": "good",
                         "values": {name: value}}]
    return topic, _dump(body)


def _sizes(rng, topic, body):
    choice = rng.randrange(4)
    if choice == 0:
        return topic, _dump(body)[:-1] + b',"pad":"' + b"x" * (wire.MAX_PAYLOAD_BYTES - len(_dump(body))) + b'"}'
    if choice == 1:
        _reading(body, rng)["meter"] = "m" * rng.choice([65, 1000, 100_000])
        return topic, _dump(body)
    if choice == 2:
        r = _reading(body, rng)
        body["readings"] = [dict(r, ts_ms=r["ts_ms"] + k) for k in range(wire.MAX_READINGS_PER_BATCH + 1)]
        return topic, _dump(body)
    return topic, b" " * (wire.MAX_PAYLOAD_BYTES + 1)


# Payloads near 1 MiB are few (each costs a megabyte on every hop), the rest many.
HOSTILE: list[tuple[Mutation, float]] = [
    *[(m, 0.004 if m in (_too_large, _too_many) else w) for m, w in MUTATIONS], (_deep, 4), (_number_range, 4),
    (_encoding, 4), (_status, 4), (_rogue_topic, 2), (_impossible, 3), (_sizes, 0.02),
]


@dataclass(frozen=True)
class Hostile:
    topic: str
    payload: bytes
    retain: bool
    reasons: tuple[str, ...]  # what a fresh admission says (one per record it makes)


def hostile(site: Site, templates: list[tuple[str, bytes]], n: int, seed: int = 14) -> list[Hostile]:
    """`n` hostile messages, each of which a fresh Admission quarantines and nothing else: no
    reading stored, no status taken. About one in twenty is published retained."""
    rng = random.Random(seed)
    funcs, weights = zip(*HOSTILE, strict=True)
    out: list[Hostile] = []
    while len(out) < n:
        topic, payload = rng.choice(templates)
        mutate = rng.choices(funcs, weights)[0]
        candidate_topic, candidate = mutate(rng, topic, json.loads(payload))
        admission = Admission({site.id: site}, DedupIndex(), SequenceTracker())
        result = admission.admit([InboundMessage(candidate_topic, candidate, 0, 1, 0, 0)])
        if result.quarantined and not result.rows and not result.statuses and not result.duplicates:
            out.append(Hostile(candidate_topic, candidate, rng.random() < (0.3 if mutate is _rogue_topic else 0.05),
                               tuple(q.reason for q in result.quarantined)))
    return out

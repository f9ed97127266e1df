"""A mutation fuzzer for readings messages: valid batches broken in the ways gateways break them.

Each generator returns (topic, payload) that admission must reject, on a topic the service
subscribes to (a message for a site it does not serve never reaches it); `malformed` keeps only
mutants that a fresh Admission really rejects (a random flip can land on something valid),
so the expected quarantine count is exact.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

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

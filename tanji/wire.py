"""The gateway → accounting wire format, version 1 (docs/wire-format.md, schemas/wire-v1.json).

A public contract: third parties (Telegraf's mqtt_consumer, Node-RED, `mosquitto_sub | jq`)
consume it, so it is plain JSON, versioned in both the topic and the payload, with units in
every quantity name and UTC epoch-millisecond timestamps.

`validate_batch` is the hand-written twin of the JSON Schema: ingest runs it on every message
at full rate (a schema library is ~50× slower), and a test keeps the two in agreement.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tanji.errors import WireFormatError
from tanji.quality import QUALITY_CODES
from tanji.quantities import QUANTITIES
from tanji.signed_batch import parse_signature

VERSION = 1
TOPIC_ROOT = "tanji/v1"
MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_READINGS_PER_BATCH = 5000
#: A status document is a few hundred bytes per meter; beyond this it is refused, not served
#: to every dashboard and stream client.
MAX_STATUS_BYTES = 64 * 1024
#: JSON nesting a batch needs is 4 (batch, readings, reading, values); a status's meters map 3.
#: Deeper payloads are refused before any parser recurses into them.
MAX_DEPTH = 8
#: Integers on the wire (seq, sent_ms, ts_ms) are signed 64-bit, as every store keeps them.
INT64_MAX = 2**63 - 1
STATES = ("online", "offline")
# A gateway may replay a long backlog, but a timestamp older than this (or in the future
# beyond the clock tolerance) is a broken clock, not a late reading.
MAX_AGE_MS = 400 * 24 * 3600 * 1000
MAX_FUTURE_MS = 5 * 60 * 1000
SCHEMA_PATH = Path(__file__).parent / "schemas" / "wire-v1.json"

_FLOAT_MAX = int(1.7976931348623157e308)
_BATCH_KEYS = {"v", "site", "gateway", "seq", "sent_ms", "backlog", "readings"}
_OPTIONAL_BATCH_KEYS = {"sig", "backfill"}  # a signed batch (docs/audit.md); a backfill (docs/wire-format.md)
_READING_KEYS = {"meter", "ts_ms", "quality", "values", "value_quality"}


def readings_topic(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/readings"


def status_topic(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/status"


def confirm_topic(site: str, gateway: str) -> str:
    """Where accounting confirms to a gateway the batches it has stored durably (end-to-end delivery)."""
    return f"{TOPIC_ROOT}/{site}/{gateway}/confirm"


def confirm_payload(seqs: list[int]) -> bytes:
    """`{"v": 1, "seqs": [...]}`: the batch sequence numbers now durable in accounting's store."""
    return json.dumps({"v": VERSION, "seqs": sorted(set(seqs))}, separators=(",", ":")).encode()


def decode_confirm(payload: bytes) -> list[int]:
    """The sequence numbers of a confirm message; a malformed one yields none (it confirms nothing)."""
    if len(payload) > 1_000_000:
        return []
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        return []
    seqs = body.get("seqs") if isinstance(body, dict) and body.get("v") == VERSION else None
    if not isinstance(seqs, list):
        return []
    return [s for s in seqs if type(s) is int and 0 <= s < 2**53]


def readings_subscription(site: str = "+") -> str:
    return f"{TOPIC_ROOT}/{site}/+/readings"


def parse_topic(topic: str) -> tuple[str, str, str]:
    """`tanji/v1/<site>/<gateway>/<kind>` → (site, gateway, kind)."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
        raise WireFormatError("bad_topic", f"{topic!r} is not {TOPIC_ROOT}/<site>/<gateway>/<kind>")
    return parts[2], parts[3], parts[4]


@dataclass(frozen=True, slots=True)
class Reading:
    meter: str
    ts_ms: int
    quality: str
    values: dict[str, float | None]
    value_quality: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"meter": self.meter, "ts_ms": self.ts_ms, "quality": self.quality,
                               "values": self.values}
        if self.value_quality:
            out["value_quality"] = self.value_quality
        return out


def readings_json(readings: list[dict[str, Any]] | list[Reading]) -> str:
    """The `readings` array as published (compact JSON): the bytes a batch signature covers."""
    return json.dumps([r.to_json() if isinstance(r, Reading) else r for r in readings],
                      separators=(",", ":"), allow_nan=False)


def encode_batch(site: str, gateway: str, seq: int, readings: list[dict[str, Any]] | list[Reading], *,
                 backlog: bool = False, sent_ms: int | None = None, sig: dict[str, Any] | None = None,
                 readings_text: str | None = None, backfill: bool = False) -> bytes:
    """Serialise one batch; readings may be Reading objects or already-shaped dicts (from the spool).

    A signed batch carries `sig` (`tanji.signed_batch.Signature.to_json()`), written before the
    readings, which are always the last member. `readings_text` is the readings already
    serialised (`readings_json`), as signed; it is used as is. `backfill` marks readings
    published after newer ones of their meters on purpose (docs/wire-format.md, "Backfill").
    """
    head = {"v": VERSION, "site": site, "gateway": gateway, "seq": seq,
            "sent_ms": sent_ms if sent_ms is not None else int(time.time() * 1000), "backlog": backlog}
    if backfill:
        head["backfill"] = True
    if sig is not None:
        head["sig"] = sig
    text = readings_text if readings_text is not None else readings_json(readings)
    return f'{json.dumps(head, separators=(",", ":"))[:-1]},"readings":{text}}}'.encode()


def status_payload(site: str, gateway: str, state: str, **health: Any) -> bytes:
    """The retained status message; `state` is online or offline (the last will)."""
    body = {"v": VERSION, "site": site, "gateway": gateway, "state": state,
            "ts_ms": int(time.time() * 1000), **health}
    return json.dumps(body, separators=(",", ":")).encode()


def _fail(reason: str, detail: str) -> None:
    raise WireFormatError(reason, detail)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Every bracket as "(" or ")", every other byte deleted.
_AS_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def deeper_than(payload: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON arrays and objects in `payload` nest more than `limit` deep (brackets
    inside strings do not count).

    Runs before any parser (json.loads and msgspec both recurse: 100,000 `[` end in a
    RecursionError), in a few C-speed passes that are linear whatever the bytes: escaped
    backslashes and quotes are dropped, then the strings between the remaining quotes, then
    everything but brackets; then innermost pairs are removed, one level per pass, at most
    `limit` + 1 passes. Exact for valid JSON. For anything else (unclosed or mismatched
    brackets) the passes plus the openers left over bound the depth from above; a prefix of a
    valid batch (4 levels) is never called too deep, so a truncated one stays `not_json`.
    """
    text = payload.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(text.split(b'"')[::2]).translate(_AS_PARENS, _NOT_BRACKETS)
    passes = 0
    while passes <= limit:
        reduced = brackets.replace(b"()", b"")
        if len(reduced) == len(brackets):
            return passes + reduced.count(b"(") > limit
        brackets = reduced
        passes += 1
    return True


def _loads(payload: bytes, reason: str, max_bytes: int) -> Any:
    """JSON, after the checks that keep a parser safe: size, then nesting depth."""
    if len(payload) > max_bytes:
        _fail("too_large", f"{len(payload)} bytes > {max_bytes}")
    if deeper_than(payload, MAX_DEPTH):
        _fail("too_deep", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise WireFormatError(reason, f"not JSON: {str(exc)[:200]}") from None


def decode_batch(payload: bytes, topic: str | None = None, now_ms: int | None = None) -> dict[str, Any]:
    """Parse and validate one readings message; raises WireFormatError with a reason code."""
    body = _loads(payload, "not_json", MAX_PAYLOAD_BYTES)
    validate_batch(body, now_ms)
    if topic is not None:
        site, gateway, kind = parse_topic(topic)
        if kind != "readings":
            _fail("bad_topic", f"readings published on a {kind!r} topic")
        if site != body["site"] or gateway != body["gateway"]:
            _fail("topic_mismatch", f"topic says {site}/{gateway}, payload says {body['site']}/{body['gateway']}")
    return body


def decode_status(payload: bytes, topic: str) -> dict[str, Any]:
    """Parse and check one status message (retained, on `tanji/v1/<site>/<gateway>/status`).

    Bounded before parsing (`too_large` beyond MAX_STATUS_BYTES, `too_deep`), then `bad_status`
    unless it is an object naming the topic's site and gateway with a known `state`, an integer
    `ts_ms`, and nothing a JSON response could not carry again (NaN, infinities, lone
    surrogates), so whoever it is served to gets valid JSON.
    """
    site, gateway, _ = parse_topic(topic)
    body = _loads(payload, "bad_status", MAX_STATUS_BYTES)
    if not isinstance(body, dict) or body.get("site") != site or body.get("gateway") != gateway:
        _fail("bad_status", "status must be an object naming the topic's site and gateway")
    if body.get("v") != VERSION or isinstance(body.get("v"), bool):
        _fail("version", f"unsupported status version {body.get('v')!r}; this reader speaks v{VERSION}")
    if body.get("state") not in STATES:
        _fail("bad_status", f"state must be one of {STATES}")
    if not _is_int(body.get("ts_ms")) or not 0 <= body["ts_ms"] <= INT64_MAX:
        _fail("bad_status", "ts_ms must be an integer (UTC epoch ms)")
    try:
        json.dumps(body, allow_nan=False, ensure_ascii=False).encode()
    except (ValueError, UnicodeEncodeError):
        _fail("bad_status", "status holds a value JSON cannot carry (NaN, infinity or a lone surrogate)")
    return body


def validate_batch(body: Any, now_ms: int | None = None) -> None:
    """Check a decoded batch against wire format v1 (the same rules as schemas/wire-v1.json)."""
    if not isinstance(body, dict):
        _fail("schema", "payload is not a JSON object")
    if body.get("v") != VERSION or isinstance(body.get("v"), bool):  # True == 1 in Python, not in JSON
        _fail("version", f"unsupported version {body.get('v')!r}; this reader speaks v{VERSION}")
    missing = _BATCH_KEYS - body.keys()
    if missing:
        _fail("schema", f"missing keys {sorted(missing)}")
    extra = body.keys() - _BATCH_KEYS - _OPTIONAL_BATCH_KEYS
    if extra:
        _fail("schema", f"unknown keys {sorted(extra)}")
    if "sig" in body:
        try:
            parse_signature(body["sig"])
        except ValueError as exc:
            _fail("schema", str(exc))
    for key in ("site", "gateway"):
        if not isinstance(body[key], str) or not 0 < len(body[key]) <= 64:
            _fail("schema", f"{key} must be a string of 1-64 characters")
    if not _is_int(body["seq"]) or not 0 <= body["seq"] <= INT64_MAX:
        _fail("schema", "seq must be a non-negative 64-bit integer")
    if not _is_int(body["sent_ms"]) or not -INT64_MAX <= body["sent_ms"] <= INT64_MAX:
        _fail("schema", "sent_ms must be a 64-bit integer (UTC epoch ms)")
    if not isinstance(body["backlog"], bool):
        _fail("schema", "backlog must be true or false")
    if not isinstance(body.get("backfill", False), bool):
        _fail("schema", "backfill must be true or false")
    readings = body["readings"]
    if not isinstance(readings, list):
        _fail("schema", "readings must be a list")
    if len(readings) > MAX_READINGS_PER_BATCH:
        _fail("too_large", f"{len(readings)} readings > {MAX_READINGS_PER_BATCH}")
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    lo, hi = now - MAX_AGE_MS, now + MAX_FUTURE_MS
    for i, r in enumerate(readings):
        _validate_reading(i, r, lo, hi)


def _validate_reading(i: int, r: Any, lo: int, hi: int) -> None:
    if not isinstance(r, dict):
        _fail("schema", f"readings[{i}] is not an object")
    if not {"meter", "ts_ms", "quality", "values"} <= r.keys() or not r.keys() <= _READING_KEYS:
        _fail("schema", f"readings[{i}] keys must be {sorted(_READING_KEYS)}, got {sorted(r.keys())}")
    meter = r["meter"]
    if not isinstance(meter, str) or not 0 < len(meter) <= 64:
        _fail("schema", f"readings[{i}].meter must be a string of 1-64 characters")
    ts = r["ts_ms"]
    if not _is_int(ts):
        _fail("schema", f"readings[{i}].ts_ms must be an integer (UTC epoch ms)")
    if not lo <= ts <= hi:
        _fail("timestamp", f"readings[{i}].ts_ms {ts} is outside [now-400d, now+5min]")
    if r["quality"] not in QUALITY_CODES:
        _fail("schema", f"readings[{i}].quality {r['quality']!r} is not one of {QUALITY_CODES}")
    values = r["values"]
    if not isinstance(values, dict):
        _fail("schema", f"readings[{i}].values must be an object")
    for name, value in values.items():
        if name not in QUANTITIES:
            _fail("unknown_quantity", f"readings[{i}].values has unknown quantity {name!r}")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail("schema", f"readings[{i}].values.{name} must be a number or null")
        if isinstance(value, int) and not -_FLOAT_MAX <= value <= _FLOAT_MAX:
            _fail("not_finite", f"readings[{i}].values.{name} is an integer too large for a float")
        if not math.isfinite(value):
            _fail("not_finite", f"readings[{i}].values.{name} is not finite")
    vq = r.get("value_quality")
    if vq is not None:
        if not isinstance(vq, dict):
            _fail("schema", f"readings[{i}].value_quality must be an object")
        for name, code in vq.items():
            if name not in values or code not in QUALITY_CODES:
                _fail("schema", f"readings[{i}].value_quality.{name} must name a value and a quality code")

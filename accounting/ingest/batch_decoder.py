"""Wire format v1 at ingest speed: msgspec decodes and type-checks a batch in one pass.

`tanji.wire.decode_batch` (json.loads, then `validate_batch` over Python dicts) is the
reference: it is what the JSON Schema is checked against, and it stays dependency-free for the
gateway. At ingest it costs ~2.5 µs per reading, a third of the whole budget; msgspec parses
straight into typed structs with the same structural rules in ~0.5 µs. The few rules msgspec
cannot express (quantity names, timestamp bounds, value_quality naming a value) are checked
here on the structs.

Only acceptance takes the fast path. Whenever it rejects, the reference runs on the same bytes
and gives the reason and detail that quarantine records, so every reason code and message is
the reference's own. If the reference accepts what the fast path rejected (a difference the
agreement tests in tests/ingest/test_batch_decoder.py exist to catch; known: `"v": 1.0` and
UTF-16 JSON, which only `json.loads` takes), the reference's reading of the message is used and the difference is logged: the
message is ingested, never lost.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import msgspec

from tanji import signed_batch, wire
from tanji.quantities import QUANTITIES

try:  # the compiled passes over a batch's readings (setup.py; optional: the Python loops run without)
    from accounting.ingest import _readings
except ImportError:  # pragma: no cover - exercised where no compiler was found
    _readings = None

log = logging.getLogger(__name__)

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Quality = Literal[wire.QUALITY_CODES]  # the tuple's codes, as Literal["good", "stale", ...]
_QUANTITY_NAMES = frozenset(QUANTITIES)


class Reading(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    meter: _Id
    ts_ms: int
    quality: _Quality
    values: dict[str, float | None]
    value_quality: dict[str, _Quality] | None = None


class Sig(msgspec.Struct, forbid_unknown_fields=True):
    """A signed batch's `sig` member (tanji/signed_batch.py); checked against its readings by
    accounting.ingest.signatures, which reads the readings' exact bytes."""

    alg: Literal["ed25519"]
    key: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]
    chain: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]
    prev: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")] | None
    sig: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9+/]{86}==$")]


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """The members every readings message has besides its readings (one definition for both decoders)."""

    v: Literal[1]
    site: _Id
    gateway: _Id
    seq: Annotated[int, msgspec.Meta(ge=0, le=wire.INT64_MAX)]
    sent_ms: Annotated[int, msgspec.Meta(ge=-wire.INT64_MAX, le=wire.INT64_MAX)]
    backlog: bool


class Batch(_Envelope, forbid_unknown_fields=True):
    readings: Annotated[list[Reading], msgspec.Meta(max_length=wire.MAX_READINGS_PER_BATCH)]
    backfill: bool = False  # optional: late readings on purpose (docs/wire-format.md, "Backfill")
    sig: Sig | msgspec.UnsetType = msgspec.UNSET  # absent, never null (as the reference says)


class _Signed(_Envelope, forbid_unknown_fields=True):
    """A batch with its readings left as the bytes that travelled (`decode_signed`)."""

    readings: msgspec.Raw
    backfill: bool = False
    sig: Sig | msgspec.UnsetType = msgspec.UNSET


if _readings is not None:
    _readings.bind(Reading)

#: Which pass walks a batch's readings in `_check` and admission: "compiled" or "python".
READINGS_PASS = "compiled" if _readings is not None else "python"

_decoder = msgspec.json.Decoder(Batch)
_signed_decoder = msgspec.json.Decoder(_Signed)
_readings_decoder = msgspec.json.Decoder(
    Annotated[list[Reading], msgspec.Meta(max_length=wire.MAX_READINGS_PER_BATCH)])
_disagreements = 0


class _Rejected(Exception):
    """The fast path says no (as msgspec's own errors do); the reference says why."""


def decode_batch(payload: bytes, site: str, gateway: str, now_ms: int) -> Batch:
    """A readings message published on `tanji/v1/<site>/<gateway>/readings`, validated.

    Raises `tanji.errors.WireFormatError` with the reference's reason code.
    """
    batch = decode_fast(payload, site, gateway, now_ms)
    return batch if batch is not None else _reference(payload, site, gateway, now_ms)


def decode_fast(payload: bytes, site: str, gateway: str, now_ms: int) -> Batch | None:
    """The fast path alone: the batch when it accepts the message, else None (the reference
    then says why: `decode_batch`)."""
    try:
        if len(payload) > wire.MAX_PAYLOAD_BYTES:
            raise _Rejected
        batch = _decoder.decode(payload)
        _check(batch, site, gateway, now_ms)
        return batch
    except Exception:  # noqa: BLE001 - any doubt at all goes to the reference, which names it
        return None


def decode_head(payload: bytes, site: str, gateway: str) -> tuple[Batch, memoryview] | None:
    """A batch's members besides its readings (`readings` empty), and the readings' exact bytes
    (a view into `payload`, not a copy), without parsing the readings; None unless the payload has the gateway's own layout
    (`_last_readings`) and those members decode and name this site and gateway.

    Why: the signature check needs a cycle's batches' headers and readings' bytes before
    admission (`accounting.ingest.signatures.BatchSignatures.prepare`: one Ed25519 check per run
    of a chain's batches), while admission needs the parsed readings. Parsing all of a cycle's
    readings up front (20,000 readings, ~20 MB of objects) left admission to read them back
    from main memory a few milliseconds later, where `off` parses each batch and admits it
    while it is in the CPU's cache: ~1 µs a reading of the cost of `signatures: required`
    (docs/audit.md, "Figures"). So the check reads only the members before the readings (a few
    hundred bytes), and admission parses the whole payload as `off` does (`decode_fast`). The
    readings' bytes are a view: a cycle's 200 copies of ~14 KB were fresh memory every cycle
    (~14 µs a batch in place, against 0.3 hot; docs/audit.md "Figures"), and they are only
    hashed and then written to the evidence log, both of which read a view as they read bytes.

    Exact: the readings are the payload's last member (`_last_readings`), so the members before
    them are byte for byte those the full decoder reads; decoded here with an empty readings
    array in place of the readings, they are what it decodes (the signature check compares seq
    and sig with the full decode's anyway: `BatchSignatures.check`). Valid, as `_last_readings`
    is, for a payload the full decoder then accepts; for any other, admission's decoder refuses
    it or the reference's reading of it is checked on its own (`BatchSignatures.decode`)."""
    if len(payload) > wire.MAX_PAYLOAD_BYTES:
        return None
    start = _readings_start(payload)
    if start < 0:
        return None
    try:
        head = _decoder.decode(payload[:start + 1] + b"]}")
    except Exception:  # noqa: BLE001 - the full decoder, in admission, says why
        return None
    if head.site != site or head.gateway != gateway:
        return None
    return head, memoryview(payload)[start:-1]


def decode_signed(payload: bytes, site: str, gateway: str, now_ms: int) -> tuple[Batch, bytes | None]:
    """`decode_batch`, and the exact bytes of the batch's `readings` member: what its signature covers.

    One pass over the payload: the readings are hashed as the very bytes that are then parsed
    into the readings admitted, so what the signature vouches for and what is stored cannot
    differ (a payload naming `readings` twice included), and nothing is decoded twice. The
    reference, whenever the fast path says no, as in `decode_batch` (its bytes are then
    `tanji.signed_batch.raw_member`'s, the member `json.loads` reads; None without one).
    """
    try:
        if len(payload) > wire.MAX_PAYLOAD_BYTES:
            raise _Rejected
        raw = _last_readings(payload)
        if raw is not None:  # the gateway's own layout: one parse, the member's bytes found by shape
            batch = _decoder.decode(payload)
        else:
            outer = _signed_decoder.decode(payload)
            raw = bytes(outer.readings)
            batch = Batch(v=outer.v, site=outer.site, gateway=outer.gateway, seq=outer.seq, sent_ms=outer.sent_ms,
                          backlog=outer.backlog, readings=_readings_decoder.decode(raw), sig=outer.sig,
                          backfill=outer.backfill)
        _check(batch, site, gateway, now_ms)
        return batch, raw
    except Exception:  # noqa: BLE001 - any doubt at all goes to the reference, which names it
        pass
    return _reference(payload, site, gateway, now_ms), signed_batch.raw_member(payload)


_READINGS_KEY = b'"readings":['


def _last_readings(payload: bytes) -> bytes | None:
    """The bytes of the `readings` member when the payload's shape alone proves where they are,
    as in every batch a Tanji gateway publishes (`tanji.wire.encode_batch`: compact JSON, the
    readings last); else None, and `decode_signed` cuts them out with msgspec (~15-25 µs more per
    batch of 100 readings: a scan of the readings before their parse).

    Valid only for a payload the full decoder then accepts as a `Batch` (`decode_signed` uses
    it only then). Why it is exact: with no backslash in the payload, no string holds a quote or
    an escape, so the first `"readings":[` is the name of the first member called so (no string
    can hold it). Its value is an array, and inside a batch's readings the only `]` outside a
    string is the one closing the array (a reading holds no array): so when the first `]` after
    that `[` is the payload's last but one byte, before the final `}`, the array runs to it,
    the member is the last one, and no member of that name follows. Two C scans (memchr) and
    one short search, a few µs, where the second parse it saves cost ~20.
    """
    start = _readings_start(payload)
    return payload[start:-1] if start >= 0 else None


def _readings_start(payload: bytes) -> int:
    """Where the `readings` array starts (its `[`) when `_last_readings` finds it; else -1."""
    if payload[-2:] != b"]}" or b"\\" in payload:
        return -1
    at = payload.find(_READINGS_KEY)
    if at < 0:
        return -1
    start = at + len(_READINGS_KEY) - 1
    if payload.find(b"]", start) != len(payload) - 2:
        return -1
    return start


def _reference(payload: bytes, site: str, gateway: str, now_ms: int) -> Batch:
    """The reference decoder's reading of a message the fast path refused; raises its reason."""
    body = wire.decode_batch(payload, wire.readings_topic(site, gateway), now_ms)  # raises the reason
    global _disagreements
    _disagreements += 1
    if _disagreements & (_disagreements - 1) == 0:  # 1st, 2nd, 4th, 8th...: a hostile stream cannot flood the log
        log.warning("wire decoders disagree: the reference accepts a %s/%s message the fast path rejects; "
                    "ingesting the reference's reading of it (%d such messages so far; a lone surrogate "
                    "escape in a meter id is one, refused later as unknown_meter)", site, gateway, _disagreements)
    return from_reference(body)


def _check(batch: Batch, site: str, gateway: str, now_ms: int) -> None:
    """The rules of wire v1 that msgspec's types do not carry."""
    if batch.site != site or batch.gateway != gateway:
        raise _Rejected
    lo, hi = now_ms - wire.MAX_AGE_MS, now_ms + wire.MAX_FUTURE_MS
    names = _QUANTITY_NAMES
    if _readings is not None and _readings.check(batch.readings, lo, hi, names):
        return  # all clear in one compiled pass (accounting/ingest/_readings.c); else the loop decides
    for r in batch.readings:
        if not lo <= r.ts_ms <= hi or not r.values.keys() <= names:
            raise _Rejected
        vq = r.value_quality
        if vq is not None and not vq.keys() <= r.values.keys():
            raise _Rejected


def from_reference(body: dict[str, Any]) -> Batch:
    """A batch the reference validated, as the structs the fast path makes (no re-validation)."""
    sig = body.get("sig")
    return Batch(v=body["v"], site=body["site"], gateway=body["gateway"], seq=body["seq"],
                 sent_ms=body["sent_ms"], backlog=body["backlog"], backfill=body.get("backfill", False),
                 sig=Sig(**sig) if sig is not None else msgspec.UNSET,
                 readings=[Reading(meter=r["meter"], ts_ms=r["ts_ms"], quality=r["quality"],
                                   values=r["values"], value_quality=r.get("value_quality"))
                           for r in body["readings"]])

"""Signed, chained readings batches: what a gateway signs, and how anyone checks it (docs/audit.md).

A batch's *header* is a few lines of text naming the site, the gateway, the batch's sequence
number, its chain, the signing key, the hash of the gateway's previous batch and the SHA-256
of the readings exactly as published (the bytes of the batch's `readings` array). The gateway
signs the header with its Ed25519 key; the header's SHA-256 is the batch's *hash*, which the
next batch names as `prev`. So a signature vouches for the readings, and the chain of hashes
for the order: an altered reading breaks the signature, a dropped, reordered or inserted batch
breaks the chain, and a replayed one is a copy of a batch already seen.

`sent_ms` and `backlog` describe one copy in transit and are not signed: a batch replayed
after an outage is byte for byte the batch that was signed (the gateway's spool keeps it so).

The header format is the one definition of what is signed: the gateway, accounting's ingest
and `tanji audit verify` all build it here. It needs no JSON canonicalisation: the readings
are hashed as the bytes that travelled, which every consumer has.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

HEADER_TAG = "tanji-batch-v1"
ALGORITHM = "ed25519"
GENESIS = "-"  # `prev` of the first batch of a chain
SIGNATURE_BYTES = 64
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: The `sig` member of a batch (tanji/schemas/wire-v1.json has the same rules).
SIG_KEYS = ("alg", "key", "chain", "prev", "sig")


def new_chain_id() -> str:
    """A fresh chain id (16 hex digits): a gateway starts a chain when it has no chain state."""
    return secrets.token_hex(8)


#: `readings_digest` feeds SHA-256 pieces shorter than this: CPython's hashlib lets go of the
#: GIL for an input of 2048 bytes or more, and the thread then waits to get it back for up to
#: the switch interval (5 ms) whenever another thread holds it.
_GIL_PIECE = 2047


def readings_digest(readings_bytes: bytes | memoryview) -> str:
    """SHA-256 (hex) of the readings exactly as published.

    Hashed in pieces of under 2 KB, so hashlib keeps the GIL: at ingest the digest is computed
    on the admitting thread (the pipeline's critical path) while the store and engine threads
    want the GIL, and a batch's 13.6 KB hashed in one call released it and waited up to 5 ms to
    get it back, 100 times a cycle, for ~10 µs of hashing (SHA-NI; the pieces add ~1.5 µs)."""
    if len(readings_bytes) < _GIL_PIECE:
        return hashlib.sha256(readings_bytes).hexdigest()
    h = hashlib.sha256()
    view = memoryview(readings_bytes)
    for i in range(0, len(view), _GIL_PIECE):
        h.update(view[i:i + _GIL_PIECE])
    return h.hexdigest()


def header(site: str, gateway: str, seq: int, chain: str, key: str, prev: str | None, digest: str) -> bytes:
    """The signed header of a batch (UTF-8 text, one `name value` per line, newline-terminated)."""
    return (f"{HEADER_TAG}\nsite {site}\ngateway {gateway}\nseq {seq}\nchain {chain}\nkey {key}\n"
            f"prev {prev or GENESIS}\nreadings {digest}\n").encode()


def batch_hash(header_bytes: bytes) -> str:
    """A batch's hash (hex): SHA-256 of its header; the next batch of the chain names it as `prev`."""
    return hashlib.sha256(header_bytes).hexdigest()


@dataclass(frozen=True, slots=True)
class Signature:
    """The `sig` member of a signed batch, and the batch hash it implies for given readings."""

    key: str
    chain: str
    prev: str | None
    value: bytes  # 64 raw bytes

    def to_json(self) -> dict[str, Any]:
        return {"alg": ALGORITHM, "key": self.key, "chain": self.chain, "prev": self.prev,
                "sig": base64.b64encode(self.value).decode()}

    def json_text(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    def header(self, site: str, gateway: str, seq: int, digest: str) -> bytes:
        return header(site, gateway, seq, self.chain, self.key, self.prev, digest)


def sign(signer: Any, site: str, gateway: str, seq: int, chain: str, prev: str | None,
         readings_bytes: bytes) -> tuple[Signature, str]:
    """Sign one batch with `signer` (a `tanji.gateway_keys.SigningKey`); returns (sig, batch hash)."""
    head = header(site, gateway, seq, chain, signer.key_id, prev, readings_digest(readings_bytes))
    return Signature(signer.key_id, chain, prev, signer.sign(head)), batch_hash(head)


def parse_signature(obj: Any) -> Signature:
    """A batch's `sig` member as a Signature; ValueError naming what is wrong."""
    if not isinstance(obj, dict) or set(obj) != set(SIG_KEYS):
        raise ValueError(f"sig must be an object with exactly {', '.join(SIG_KEYS)}")
    if obj["alg"] != ALGORITHM:
        raise ValueError(f"sig.alg {obj['alg']!r} is not {ALGORITHM!r}")
    for name in ("key", "chain"):
        if not isinstance(obj[name], str) or not _HEX16.match(obj[name]):
            raise ValueError(f"sig.{name} must be 16 lowercase hex digits")
    prev = obj["prev"]
    if prev is not None and (not isinstance(prev, str) or not _HEX64.match(prev)):
        raise ValueError("sig.prev must be null or 64 lowercase hex digits")
    value = obj["sig"]
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != SIGNATURE_BYTES:
        raise ValueError(f"sig.sig must be the base64 of {SIGNATURE_BYTES} bytes")
    return Signature(obj["key"], obj["chain"], prev, raw)


def raw_member(payload: bytes, name: str = "readings") -> bytes | None:
    """The exact bytes of a top-level member of a JSON object (the signed readings), or None.

    The reference for consumers without a streaming parser: it walks the object's top level
    with the standard library's own scanner, so it finds the member `json.loads` reads (the
    last one, if a name repeats), never a look-alike inside a string.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    i = ws.match(text, 0).end()
    if text[i:i + 1] != "{":
        return None
    i = ws.match(text, i + 1).end()
    found: tuple[int, int] | None = None
    if text[i:i + 1] == "}":
        return None
    try:
        while True:
            if text[i:i + 1] != '"':
                return None
            key, i = json.decoder.scanstring(text, i + 1)
            i = ws.match(text, i).end()
            if text[i:i + 1] != ":":
                return None
            i = ws.match(text, i + 1).end()
            _, end = decoder.raw_decode(text, i)
            if key == name:
                found = (i, end)
            i = ws.match(text, end).end()
            if text[i:i + 1] == "}":
                break
            if text[i:i + 1] != ",":
                return None
            i = ws.match(text, i + 1).end()
    except (ValueError, RecursionError):
        return None
    return text[found[0]:found[1]].encode() if found else None

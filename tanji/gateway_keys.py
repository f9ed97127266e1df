"""Gateway public keys (Ed25519) as the site file registers them, with their lifecycle.

A gateway signs its batches with its own key (docs/audit.md): the private key stays on the edge
box (`gateway/signing_key.py`), the public key is written in the site file as the base64 of its
32 raw bytes and named by its *key id*, the first 16 hex digits of SHA-256 over those bytes.
Checking a registered key needs base64 and a length, nothing more: the core still needs PyYAML
alone, and the signing library (`cryptography`) is the gateway's and accounting's business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

PUBLIC_KEY_BYTES = 32
KEY_ID_HEX = 16


def key_id(public_raw: bytes) -> str:
    """The short name of a public key: the first 16 hex digits of SHA-256 over its 32 raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:KEY_ID_HEX]


def parse_public_key(text: str) -> bytes:
    """The 32 raw bytes of a public key written as base64 (as `tanji gateway keygen` prints it).

    Raises ValueError with the reason (not base64, not 32 bytes)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{text!r} is not base64") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, this one is {len(raw)}")
    return raw


def public_key_text(public_raw: bytes) -> str:
    return base64.b64encode(public_raw).decode()


@dataclass(frozen=True, slots=True)
class RegisteredKey:
    """A public key the site file registers for one gateway, with its lifecycle.

    Times are UTC epoch ms and apply to the readings a batch carries (when the meters were
    read), not to when the batch arrives, so a backlog signed before a rotation still verifies
    after it. `valid_from`/`valid_until` bound a key's use (rotation: the old key gets a
    `valid_until`, the new one a `valid_from`); `revoked` is when the key stopped being
    trusted (compromised): nothing it signed for readings from then on is accepted.
    """

    gateway: str
    public_key: str
    key_id: str
    valid_from_ms: int | None = None
    valid_until_ms: int | None = None
    revoked_ms: int | None = None

    @property
    def raw(self) -> bytes:
        return parse_public_key(self.public_key)

    def refusal(self, oldest_ms: int, newest_ms: int) -> tuple[str, str] | None:
        """(reason, detail) when this key may not vouch for readings taken in [oldest, newest]; else None."""
        if self.revoked_ms is not None and newest_ms >= self.revoked_ms:
            return "revoked_key", (f"key {self.key_id} of gateway {self.gateway} is revoked since "
                                   f"{self.revoked_ms} ms; the batch holds readings up to {newest_ms}")
        if self.valid_until_ms is not None and newest_ms >= self.valid_until_ms:
            return "key_expired", (f"key {self.key_id} of gateway {self.gateway} is valid until "
                                   f"{self.valid_until_ms} ms; the batch holds readings up to {newest_ms}")
        if self.valid_from_ms is not None and oldest_ms < self.valid_from_ms:
            return "key_expired", (f"key {self.key_id} of gateway {self.gateway} is valid from "
                                   f"{self.valid_from_ms} ms; the batch holds readings from {oldest_ms}")
        return None


def registration_snippet(gateway_id: str, public_key: str) -> str:
    """The site-file lines that register a public key for `gateway_id` (printed by keygen and
    logged at a gateway's first start)."""
    return (f"  # under gateways: - id: {gateway_id}\n"
            f"    keys:\n"
            f"      - public_key: \"{public_key}\"   # key id {key_id(parse_public_key(public_key))}\n")

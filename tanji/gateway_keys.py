"""A gateway's signing key (Ed25519): the private key file on the edge box, the public key in the site file.

Why Ed25519: 64-byte signatures, fast signing on a small ARM box, no parameters to get
wrong, and every language has it (an auditor can check a signature with OpenSSL:
`openssl pkeyutl -verify -rawin`). The private key is a PKCS#8 PEM file readable by its owner
only (mode 0600; a key anyone on the box can read is refused at start, as ssh does); the
public key is written in the site file as the base64 of its 32 raw bytes, and named by its
*key id*, the first 16 hex digits of SHA-256 over those bytes.

`cryptography` (the one signing library; it has wheels for x86_64, aarch64 and armv7l Linux)
is imported only when a key is made, read or used, so the core (site files, `tanji check`)
still needs PyYAML alone: checking a registered public key is base64 and a length.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tanji.errors import ConfigError

PUBLIC_KEY_BYTES = 32
KEY_ID_HEX = 16
#: A key file others may read (or write) is refused, as ssh refuses such a private key.
_UNSAFE_BITS = stat.S_IRWXG | stat.S_IRWXO


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


class SigningKey:
    """A loaded private key: `sign(message)` → 64 bytes; `public_raw`, `key_id`, `path`."""

    def __init__(self, private: Any, path: Path) -> None:
        from cryptography.hazmat.primitives import serialization

        self._private = private
        self.path = path
        self.public_raw: bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = key_id(self.public_raw)

    @property
    def public_key(self) -> str:
        return public_key_text(self.public_raw)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def generate_key(path: str | Path) -> SigningKey:
    """Make a new key and write it to `path` (mode 0600, created exclusively: never overwritten)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(str(path), None, "", "a signing key already exists here",
                          "keep it, or rotate with `tanji gateway keygen --rotate` (docs/audit.md)") from None
    except OSError as exc:
        raise ConfigError(str(path), None, "", f"cannot create the signing key: {exc.strerror}",
                          "point signing_key_file at a writable place, e.g. /var/lib/tanji") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
        out.flush()
        os.fsync(out.fileno())
    _fsync_dir(path.parent)
    return SigningKey(private, path)


def load_key(path: str | Path) -> SigningKey:
    """Read a key file; refuse one that others may read, or that is not an Ed25519 key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), None, "", f"cannot read the signing key: {exc.strerror}",
                          "check signing_key_file, or make a key with `tanji gateway keygen`") from None
    if mode & _UNSAFE_BITS:
        raise ConfigError(str(path), None, "", f"the signing key is readable by others (mode {stat.S_IMODE(mode):o})",
                          f"chmod 600 {path} (and check who could have copied it)")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(path), None, "", f"not a PEM private key: {exc}",
                          "restore the key file, or make a new key and register it (docs/audit.md)") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigError(str(path), None, "", f"not an Ed25519 key ({type(private).__name__})",
                          "make one with `tanji gateway keygen`")
    return SigningKey(private, path)


def load_or_generate(path: str | Path) -> tuple[SigningKey, bool]:
    """The key at `path`, made there first if there is none; (key, made_now)."""
    if Path(path).exists():
        return load_key(path), False
    return generate_key(path), True


def verify(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    """Whether `signature` is `public_raw`'s Ed25519 signature of `message` (one-off; accounting
    keeps loaded public keys in `accounting.ingest.signatures`)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def registration_snippet(gateway_id: str, key: SigningKey) -> str:
    """The site-file lines that register `key` for `gateway_id` (printed by keygen and logged at first start)."""
    return (f"  # under gateways: - id: {gateway_id}\n"
            f"    keys:\n"
            f"      - public_key: \"{key.public_key}\"   # key id {key.key_id}\n")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

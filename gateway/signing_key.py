"""The gateway's private signing key (Ed25519): made at provisioning or first start, kept 0600.

Why Ed25519: 64-byte signatures, fast signing on a small ARM box (a batch costs one signature,
whatever its size), no parameters to get wrong, and every language has it (an auditor can check
a signature with OpenSSL). The key is a PKCS#8 PEM file readable by its owner only: a key
anyone on the box can read is refused at start, as ssh refuses such a private key. It is never
overwritten: rotation (`tanji gateway keygen --rotate`) keeps the old file aside.

`cryptography` is the one signing library (wheels for x86_64, aarch64 and armv7l Linux; no
numpy, no web framework): `pip install 'tanji[gateway]'` brings it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tanji.errors import ConfigError
from tanji.gateway_keys import key_id, public_key_text

#: A key file others may read (or write) is refused, as ssh refuses such a private key.
_UNSAFE_BITS = stat.S_IRWXG | stat.S_IRWXO


class SigningKey:
    """A loaded private key: `sign(message)` → 64 bytes; `public_raw`, `key_id`, `path`."""

    def __init__(self, private: Ed25519PrivateKey, path: Path) -> None:
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

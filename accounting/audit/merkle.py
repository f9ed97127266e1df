"""The Merkle tree hash of RFC 6962 (Certificate Transparency), so any CT library can check ours.

MTH({}) = SHA-256(""); MTH({d}) = SHA-256(0x00 ‖ d); MTH(D[0:n]) = SHA-256(0x01 ‖ MTH(D[0:k]) ‖
MTH(D[k:n])) with k the largest power of two below n. Leaves are given in their canonical order
(the caller sorts them); the root is written in hex.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _mth(leaves: Sequence[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((n - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def merkle_root(leaves: Sequence[bytes]) -> str:
    """The RFC 6962 Merkle tree hash of `leaves` (in the order given), hex."""
    return _mth(list(leaves)).hex()

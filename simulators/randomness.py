"""Counter-based random numbers: the same (seed, keys) always give the same number.

Load profiles are evaluated lazily, at whatever instant a poll or the ground truth asks for,
possibly out of order and from several threads. A stateful generator would make the plant
depend on who asked first; a hash of (seed, time cell) makes every value a pure function, so
runs are reproducible and any instant can be recomputed exactly.
"""

from __future__ import annotations

_MASK = 0xFFFFFFFFFFFFFFFF
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(x: int) -> int:
    """The splitmix64 finaliser: a cheap bijection with good avalanche."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
    return x ^ (x >> 31)


def uniform(seed: int, *keys: int) -> float:
    """A number in [0, 1) determined by `seed` and `keys` alone."""
    x = _mix((seed * _GOLDEN + 0x632BE59BD9B4E019) & _MASK)
    for key in keys:
        x = _mix((x ^ (key * _GOLDEN)) & _MASK)
    return (x >> 11) * (1.0 / (1 << 53))


def signed(seed: int, *keys: int) -> float:
    """A number in [-1, 1) determined by `seed` and `keys` alone."""
    return 2.0 * uniform(seed, *keys) - 1.0


def derive_seed(seed: int, name: str) -> int:
    """A per-device seed from the plant seed and a stable name (not Python's salted hash())."""
    x = seed & _MASK
    for byte in name.encode():
        x = _mix((x ^ byte) * _GOLDEN & _MASK)
    return x

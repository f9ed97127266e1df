"""Checkpoints of the live state: what changed since the last one, not what exists.

A checkpoint is a ``Snapshot``: ``meta`` (JSON: format, fingerprint, settings, the hour axis,
clock, result counter), ``scalars`` (per-channel state, batch-id runs, and, when included, the
raw tails) and ``blocks``: the hour matrices in blocks of ``BLOCK_HOURS`` hours (energy,
estimated energy, flags, anchors, revisions), each compressed on its own. ``take`` copies
only the blocks written since the previous checkpoint, so under the engine's lock a checkpoint
costs a memory copy of a few blocks, whatever the history; ``encode``/``compress`` run after
the lock is released. A full snapshot (every block and the tails) is the ``bytes`` of
``Engine.checkpoint``; an incremental one is saved block by block by
``accounting.store.checkpoints.CheckpointStore``, which replaces blocks in one transaction.

The raw tails are left out of incremental checkpoints of an engine with a store behind it:
the store holds those readings, and ``Engine.resume`` refills the tails from it (and picks up
readings stored after the checkpoint).
"""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accounting.engine.state import BLOCK_HOURS, LiveState
from accounting.errors import CheckpointError

FORMAT = 2
_BLOCK_ARRAYS = (("energy", np.float64), ("est", np.float64), ("flags", np.uint8),
                 ("anc_ts", np.int64), ("anc_val", np.float64))


@dataclass
class Snapshot:
    """One checkpoint's content; ``blocks`` maps a block index to its raw arrays (before
    ``compress``) or its compressed bytes (after)."""

    meta: dict[str, Any]
    scalars: dict[str, np.ndarray]
    blocks: dict[int, Any] = field(default_factory=dict)
    full: bool = True

    def compress(self) -> dict[int, bytes]:
        """Compressed blocks (done outside the engine lock)."""
        out = {}
        for b, arrays in self.blocks.items():
            out[b] = arrays if isinstance(arrays, bytes) else zlib.compress(
                b"".join(np.ascontiguousarray(a).tobytes() for a in arrays), 1)
        self.blocks = out
        return out

    def scalars_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **self.scalars)
        return buf.getvalue()

    def encode(self) -> bytes:
        """The whole snapshot as one blob (``Engine.checkpoint``)."""
        blocks = self.compress()
        ids = np.array(sorted(blocks), np.int64)
        sizes = np.array([len(blocks[int(b)]) for b in ids], np.int64)
        payload = np.frombuffer(b"".join(blocks[int(b)] for b in ids), np.uint8)
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(self.meta).encode(), np.uint8),
                 scalars=np.frombuffer(self.scalars_bytes(), np.uint8), block_ids=ids,
                 block_sizes=sizes, block_payload=payload)
        return buf.getvalue()


def decode(blob: bytes) -> Snapshot:
    """The inverse of ``Snapshot.encode``; ``CheckpointError`` when it is not one."""
    try:
        z = np.load(io.BytesIO(blob), allow_pickle=False)
        meta = json.loads(z["meta"].tobytes().decode())
        scalars = load_scalars(z["scalars"].tobytes())
        ids, sizes, payload = z["block_ids"], z["block_sizes"], z["block_payload"].tobytes()
    except (ValueError, KeyError, OSError, EOFError, zlib.error) as exc:
        raise CheckpointError(f"not an engine checkpoint: {exc}") from None
    ends = np.cumsum(sizes)
    blocks = {int(b): payload[int(e - s):int(e)] for b, s, e in zip(ids, sizes, ends, strict=True)}
    return Snapshot(meta, scalars, blocks, full=True)


def load_scalars(data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as exc:
        raise CheckpointError(f"not an engine checkpoint: {exc}") from None


def take(state: LiveState, meta: dict[str, Any], scalars: dict[str, np.ndarray],
         full: bool) -> Snapshot:
    """Copy the blocks to save (all, or those written since the last take) and clear the
    dirty set. Cost: a memory copy of those blocks."""
    full = full or state.full_checkpoint_due
    if state.capacity == 0:
        ids: list[int] = []
    elif full:
        lo = state.origin // BLOCK_HOURS
        hi = (state.origin + state.capacity - 1) // BLOCK_HOURS
        ids = list(range(lo, hi + 1))
    else:
        ids = sorted(state.dirty)
    blocks = {b: _block_arrays(state, b) for b in ids}
    state.dirty.clear()
    state.full_checkpoint_due = False
    meta = {**meta, "format": FORMAT, "origin": state.origin, "capacity": state.capacity,
            "span": list(state.span()) if state.span() else None,
            "watermark_ms": int(state.watermark_ms), "block_hours": BLOCK_HOURS}
    return Snapshot(meta, scalars, blocks, full=full)


def _block_arrays(state: LiveState, b: int) -> tuple[np.ndarray, ...]:
    lo, hi = b * BLOCK_HOURS, (b + 1) * BLOCK_HOURS
    i0, i1 = max(lo - state.origin, 0), min(hi - state.origin, state.capacity)
    out = []
    for name, dtype in _BLOCK_ARRAYS:
        src = getattr(state, name)
        fill = np.iinfo(np.int64).min if name == "anc_ts" else 0
        a = np.full((BLOCK_HOURS, state.n), fill, dtype)
        if i1 > i0:
            a[i0 + state.origin - lo:i1 + state.origin - lo] = src[i0:i1]
        out.append(a)
    rev = np.zeros(BLOCK_HOURS, np.int64)
    if i1 > i0:
        rev[i0 + state.origin - lo:i1 + state.origin - lo] = state.revision[i0:i1]
    out.append(rev)
    return tuple(out)


def apply_blocks(state: LiveState, meta: dict[str, Any], blocks: dict[int, bytes]) -> None:
    """Rebuild the hour axis of ``meta`` and fill it from ``blocks``."""
    if meta.get("block_hours") != BLOCK_HOURS:
        raise CheckpointError(f"checkpoint blocks of {meta.get('block_hours')} hours, not {BLOCK_HOURS}")
    cap = int(meta["capacity"])
    if cap:
        state.ensure_hours(int(meta["origin"]), int(meta["origin"]) + cap - 1)
    n = state.n
    sizes = [BLOCK_HOURS * n * np.dtype(d).itemsize for _, d in _BLOCK_ARRAYS] + [BLOCK_HOURS * 8]
    for b, data in blocks.items():
        try:
            raw = zlib.decompress(data)
        except zlib.error as exc:
            raise CheckpointError(f"checkpoint block {b} is corrupt: {exc}") from None
        if len(raw) != sum(sizes):
            raise CheckpointError(f"checkpoint block {b} has {len(raw)} bytes, not {sum(sizes)}")
        lo = b * BLOCK_HOURS
        i0, i1 = max(lo - state.origin, 0), min(lo + BLOCK_HOURS - state.origin, state.capacity)
        if i1 <= i0:
            continue
        pos = 0
        for (name, dtype), size in zip(_BLOCK_ARRAYS, sizes, strict=False):
            a = np.frombuffer(raw, dtype, count=BLOCK_HOURS * n, offset=pos).reshape(BLOCK_HOURS, n)
            getattr(state, name)[i0:i1] = a[i0 + state.origin - lo:i1 + state.origin - lo]
            pos += size
        rev = np.frombuffer(raw, np.int64, count=BLOCK_HOURS, offset=pos)
        state.revision[i0:i1] = rev[i0 + state.origin - lo:i1 + state.origin - lo]
    span = meta.get("span")
    if span:
        state.note_span(int(span[0]), int(span[1]))
    state.watermark_ms = int(meta["watermark_ms"])
    state.dirty.clear()
    state.full_checkpoint_due = False

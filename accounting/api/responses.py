"""JSON that never fails on the engine's numbers.

The engine speaks numpy and IEEE floats: a per-unit footprint with no units yet is NaN, a
counter is a numpy integer. Standard JSON has neither, and Starlette's encoder would answer
500. Here NaN and infinities become ``null`` (unknown, which is what they mean) and numpy
scalars plain numbers, once, for every response and every stream message.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from starlette.responses import JSONResponse


def plain(value: Any) -> Any:
    """`value` with NaN/inf as None, numpy scalars and arrays as Python numbers and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Field by field, not dataclasses.asdict: that deep-copies, and fails on locks.
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "tolist"):  # numpy scalar or array
        return plain(value.tolist())
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(plain(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class TanjiJSONResponse(JSONResponse):
    """The app's default response: UTF-8 JSON (Chinese names stay readable), NaN-safe."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")

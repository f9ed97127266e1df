"""The JSON encoder of every response and stream message: engine numbers never cause a 500."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

import numpy as np

from accounting.api.responses import dumps, plain


@dataclass
class Stats:
    accepted: np.int64 = field(default_factory=lambda: np.int64(3))
    lock: threading.Lock = field(default_factory=threading.Lock)


def test_nan_inf_and_numpy_become_plain_json() -> None:
    value = {"a": float("nan"), "b": float("inf"), "c": np.float64(1.5), "d": np.int64(7),
             "e": np.array([1.0, np.nan]), "f": ("x", 2)}
    assert json.loads(dumps(value)) == {"a": None, "b": None, "c": 1.5, "d": 7, "e": [1.0, None],
                                        "f": ["x", 2]}


def test_dataclasses_with_locks_do_not_break_encoding() -> None:
    out = plain(Stats())
    assert out["accepted"] == 3 and isinstance(out["lock"], str)

"""The stores' column-wise reading of good values (`good_columns`) follows the row-wise rule
(`channel_arrays`) that defines it: row quality, per-quantity `value_quality`, absent values."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from accounting.store.base import channel_arrays, good_columns, joined_arrays

QUANTITIES = ("energy_import_kwh", "units_total")
QUALITY = st.sampled_from(["good", "estimated", "bad"])
ROW = st.tuples(QUALITY,
                st.one_of(st.none(), st.dictionaries(st.sampled_from(QUANTITIES), QUALITY, max_size=2)),
                st.tuples(*(st.one_of(st.none(), st.floats(-1e6, 1e6)) for _ in QUANTITIES)))


@settings(max_examples=200, deadline=None)
@given(st.lists(ROW, max_size=12))
def test_column_wise_good_values_equal_the_row_wise_rule(rows) -> None:
    wanted = [(3, QUANTITIES[0]), (7, QUANTITIES[1])]
    channels = [("m", q) for q in ("other", "other", "other", QUANTITIES[0], "x", "x", "x", QUANTITIES[1])]
    ts = list(range(1000, 1000 + len(rows)))
    by_row = channel_arrays(channels, [
        ("m", t, quality, vq, {q: v for q, v in zip(QUANTITIES, values, strict=True) if v is not None})
        for t, (quality, vq, values) in zip(ts, rows, strict=True)])
    columns = list(zip(*[values for _, _, values in rows], strict=True)) or [(), ()]
    by_column = joined_arrays(good_columns(wanted, ts, [r[0] for r in rows],
                                           [json.dumps(r[1]) if r[1] else None for r in rows], columns))
    for a, b in zip(by_row, by_column, strict=True):
        np.testing.assert_array_equal(a, b)

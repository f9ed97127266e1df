"""Stored readings as columns (`accounting.ingest.reading_columns`): the compiled pass
(accounting/ingest/_columns.c) gives the Python pass's arrays, array for array, on generated
rows of every shape it covers; each of its refusals leaves the work to the Python pass (which
then gives, or raises, what it always did); arrays of the wrong type, shape or layout are
refused with an error before anything is written."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accounting.ingest import reading_columns
from accounting.ingest.reading_columns import (
    _QUALITY_CODE,
    ColumnLayout,
    ReadingColumns,
    _python_columns,
)
from accounting.store.base import StoredReading
from tanji.wire import QUALITY_CODES

LAYOUT = ColumnLayout(("m0", "m1", "m2"), ("energy_import_kwh", "line_running", "power_kw"))
T0 = 1_750_000_000_000

numbers = st.one_of(
    st.none(),
    st.floats(),  # every magnitude, subnormals, ±0, ±inf, NaN
    st.integers(-(2**63), 2**64),
    st.integers(-(2**1023), 2**1023),  # ints a float holds only rounded
)
names = st.sampled_from([*LAYOUT.names, "reactive_kvar", "batch_id"])  # and names the layout does not carry


@st.composite
def reading(draw: st.DrawFn) -> StoredReading:
    values = draw(st.dictionaries(names, numbers, max_size=5))
    vq = draw(st.one_of(st.none(), st.just({}), st.dictionaries(names, st.sampled_from([*QUALITY_CODES, "odd"]))))
    return StoredReading("s", "g", draw(st.sampled_from([*LAYOUT.meters, "ghost"])),
                         draw(st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(T0, T0 + 10**6))),
                         draw(st.sampled_from([*QUALITY_CODES, "odd"])), values, vq)


def arrays(n: int = 2, k: int = 3) -> dict[str, np.ndarray]:
    """The arrays as the wrapper makes them: meter, ts, code, values (NaN)."""
    return {"meter": np.empty(n, np.int64), "ts": np.empty(n, np.int64), "code": np.empty(n, np.int8),
            "values": np.full((n, k), np.nan)}


def fill(rows, layout: ColumnLayout = LAYOUT) -> bool | None:
    """The compiled pass alone."""
    return reading_columns._columns.fill(rows, layout.slot, _QUALITY_CODE, layout.names,
                                         *arrays(len(rows), len(layout.names)).values())


def assert_same(got: ReadingColumns, want: ReadingColumns) -> None:
    for field in ("meter", "ts", "good", "comm_error", "values"):
        a, b = getattr(got, field), getattr(want, field)
        assert a.dtype == b.dtype and a.shape == b.shape and a.flags.c_contiguous, field
        np.testing.assert_array_equal(a, b, err_msg=field)  # NaN equals NaN here
    present = ~np.isnan(want.values)
    np.testing.assert_array_equal(np.signbit(got.values[present]), np.signbit(want.values[present]))  # -0.0
    assert (got.value_good is None) == (want.value_good is None)
    if want.value_good is not None:
        np.testing.assert_array_equal(got.value_good, want.value_good)


def outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the exception's type is the outcome compared
        return type(e)


def test_the_compiled_pass_is_built_and_used():
    """bin/setup installs a C compiler, so the suite (and the demo) run the compiled pass."""
    assert reading_columns._columns is not None, "accounting/ingest/_columns.c was not built (see setup.py)"
    assert reading_columns.COLUMNS_PASS == "compiled"


@settings(max_examples=300, deadline=None)
@given(st.lists(reading(), max_size=30))
def test_the_compiled_pass_gives_the_python_pass_arrays(rows):
    assert fill(rows) is not None  # every shape the strategy makes is covered
    assert_same(LAYOUT.columns(rows), _python_columns(LAYOUT, rows))


def test_a_fleet_cycle_and_layouts_without_names_or_meters():
    rows = [StoredReading("s", "g", f"m{i % 5}", T0 + i, QUALITY_CODES[i % 4],
                          {"energy_import_kwh": 1000.0 + i / 7, "power_kw": -i * 1e-9, "reactive_kvar": i}, None)
            for i in range(5003)]
    for layout in (LAYOUT, ColumnLayout((), ()), ColumnLayout(("m3",), ("power_kw",))):
        assert_same(layout.columns(rows), _python_columns(layout, rows))
        assert_same(layout.columns(rows[:0]), _python_columns(layout, rows[:0]))
    assert fill(rows) is False


def test_without_the_compiled_module_the_python_pass_runs(monkeypatch):
    rows = [StoredReading("s", "g", "m1", T0, "good", {"power_kw": 2}, {"power_kw": "stale"})]
    monkeypatch.setattr(reading_columns, "_columns", None)
    assert_same(LAYOUT.columns(rows), _python_columns(LAYOUT, rows))


class Row(list):
    pass


@pytest.mark.parametrize("row", [
    StoredReading("s", "g", "m0", T0, "good", {"power_kw": True}, None),  # a bool is not a number here
    StoredReading("s", "g", "m0", T0, "good", {"power_kw": "1.5"}, None),
    StoredReading("s", "g", "m0", T0, "good", {"power_kw": np.int64(3)}, None),
    StoredReading("s", "g", "m0", T0, "good", {"power_kw": 2**1100}, None),  # no float holds it
    StoredReading("s", "g", "m0", T0, "good", {5: 1.0, "power_kw": 1.0}, None),  # a key that is not a str
    StoredReading("s", "g", "m0", 5.0, "good", {"power_kw": 1.0}, None),  # a float timestamp
    StoredReading("s", "g", "m0", True, "good", {"power_kw": 1.0}, None),
    StoredReading("s", "g", "m0", 2**63, "good", {"power_kw": 1.0}, None),  # beyond int64
    StoredReading("s", "g", "m0", 2**64, "good", {"power_kw": 1.0}, None),
    StoredReading("s", "g", "m0", T0, "good", [("power_kw", 1.0)], None),  # values not a dict
    Row(["s", "g", "m0", T0, "good", {"power_kw": 1.0}, None]),  # a row that is not a tuple
    ("s", "g", "m0", T0, "good", {"power_kw": 1.0}),  # nor of 7
])
def test_what_the_compiled_pass_refuses_is_left_to_the_python_pass(row):
    good = StoredReading("s", "g", "m1", T0, "good", {"power_kw": 1.5, "energy_import_kwh": 7}, None)
    rows = [good, good, row, good]  # refused after rows it had written
    assert fill(rows) is None
    got, want = outcome(LAYOUT.columns, rows), outcome(_python_columns, LAYOUT, rows)
    if isinstance(want, ReadingColumns):
        assert_same(got, want)
    else:  # what the Python pass raises (an overflow, a values that is no dict), the wrapper raises
        assert got is want


def test_a_slot_or_code_that_is_not_a_small_int_is_refused():
    rows = [StoredReading("s", "g", "m0", T0, "good", {}, None)]
    out = arrays(1, 1).values()
    assert reading_columns._columns.fill(rows, {"m0": 1.0}, _QUALITY_CODE, ("x",), *out) is None
    assert reading_columns._columns.fill(rows, {"m0": 2**64}, _QUALITY_CODE, ("x",), *out) is None
    assert reading_columns._columns.fill(rows, {"m0": 0}, {"good": 128}, ("x",), *out) is None
    assert reading_columns._columns.fill(rows, {"m0": 0}, {"good": -1}, ("x",), *out) is False


class Falsy:
    def __bool__(self):
        raise ZeroDivisionError


def test_an_error_in_a_lookup_is_raised_not_swallowed():
    """The Python pass raises it too: the compiled pass must not turn it into a refusal."""
    for row in (StoredReading("s", "g", ["m0"], T0, "good", {}, None),
                StoredReading("s", "g", "m0", T0, {"good"}, {}, None),
                StoredReading("s", "g", "m0", T0, "good", {}, Falsy())):
        with pytest.raises((TypeError, ZeroDivisionError)) as raised:
            fill([row])
        assert raised.type is outcome(_python_columns, LAYOUT, [row])
        assert raised.type is outcome(LAYOUT.columns, [row])


def test_rows_changed_during_the_pass_raise_rather_than_read_freed_rows():
    rows: list = []

    class Meter(str):  # equal in hash to "m0", so the slot lookup compares and runs __eq__
        def __hash__(self):
            return hash("m0")

        def __eq__(self, other):
            rows.clear()
            return False

    rows += [StoredReading("s", "g", Meter("m9"), T0, "good", {"power_kw": 1.0}, None)] * 3
    with pytest.raises(RuntimeError, match="changed size"):
        fill(rows)


@pytest.mark.parametrize(("arg", "bad", "error"), [
    ("meter", np.empty(2, np.int32), TypeError),
    ("meter", np.empty(2, np.uint64), TypeError),
    ("ts", np.empty(2, np.float64), TypeError),
    ("ts", np.empty(2, ">i8"), TypeError),  # not in native order
    ("code", np.empty(2, np.uint8), TypeError),
    ("code", np.empty(2, np.int16), TypeError),
    ("values", np.full((2, 3), np.nan, np.float32), TypeError),
    ("values", np.full((2, 3), 0, np.int64), TypeError),
    ("meter", [0, 0], TypeError),  # no buffer at all
    ("values", b"\0" * 48, ValueError),  # read-only
    ("meter", np.empty(1, np.int64), ValueError),  # shorter than the rows
    ("meter", np.empty(3, np.int64), ValueError),
    ("meter", np.empty((2, 1), np.int64), ValueError),
    ("code", np.empty(0, np.int8), ValueError),
    ("values", np.full((2, 2), np.nan), ValueError),  # a column short
    ("values", np.full((2, 4), np.nan), ValueError),
    ("values", np.full(6, np.nan), ValueError),
    ("values", np.full((3, 2), np.nan).T, ValueError),  # Fortran order
    ("values", np.full((2, 6), np.nan)[:, ::2], ValueError),  # strided
    ("ts", np.empty(4, np.int64)[::2], ValueError),
])
def test_wrong_arrays_are_refused_with_an_error_before_anything_is_written(arg, bad, error):
    rows = [StoredReading("s", "g", "m0", T0, "good", {"power_kw": 1.0}, None)] * 2
    given = arrays() | {arg: bad}
    before = {k: np.array(v, copy=True) for k, v in given.items() if isinstance(v, np.ndarray)}
    with pytest.raises(error, match=arg):
        reading_columns._columns.fill(rows, LAYOUT.slot, _QUALITY_CODE, LAYOUT.names, given["meter"], given["ts"],
                                      given["code"], given["values"])
    for k, v in before.items():
        np.testing.assert_array_equal(given[k], v)  # untouched (the NaN-filled values included)


def test_a_read_only_array_is_refused():
    given = arrays()
    given["ts"].setflags(write=False)
    with pytest.raises(ValueError, match="ts must be a writable"):
        reading_columns._columns.fill([StoredReading("s", "g", "m0", T0, "good", {}, None)] * 2, LAYOUT.slot,
                                      _QUALITY_CODE, LAYOUT.names, *given.values())


def test_names_must_be_strs():
    with pytest.raises(TypeError, match="names"):
        reading_columns._columns.fill([], {}, {}, (1,), *arrays(0, 1).values())

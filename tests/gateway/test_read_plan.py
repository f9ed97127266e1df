"""Request planning, table-driven (in the style of Telegraf's modbus request tests)."""

from __future__ import annotations

import pytest

from gateway.read_plan import naive_request_count, plan_for_profile, plan_requests
from tanji.profile import Register
from tests.gateway.conftest import PROFILES


def reg(name: str, address: int, data_type: str = "uint16", function: str = "holding") -> Register:
    return Register(name, address, data_type, "ABCD", 1.0, function, "none", None, None)


# (case, registers as (address, type[, function]), max_registers, max_gap, forbidden, expected (address, count) per request)
CASES = [
    ("one value", [(0, "uint16")], 125, 0, (), [(0, 1)]),
    ("adjacent values merge", [(0, "uint16"), (1, "uint16"), (2, "uint32")], 125, 0, (), [(0, 4)]),
    ("any gap splits when gaps are not allowed", [(0, "uint16"), (2, "uint16")], 125, 0, (), [(0, 1), (2, 1)]),
    ("a gap within max_gap is read and discarded", [(0, "uint16"), (3, "uint16")], 125, 2, (), [(0, 4)]),
    ("a gap beyond max_gap splits", [(0, "uint16"), (4, "uint16")], 125, 2, (), [(0, 1), (4, 1)]),
    ("max_registers splits", [(0, "uint32"), (2, "uint32"), (4, "uint32")], 4, 0, (), [(0, 4), (4, 2)]),
    ("a value never straddles two requests", [(0, "uint16"), (1, "float64")], 4, 0, (), [(0, 1), (1, 4)]),
    ("exact fit at max_registers", [(0, "float32"), (123, "float32")], 125, 121, (), [(0, 125)]),
    ("one over max_registers", [(0, "float32"), (124, "float32")], 125, 122, (), [(0, 2), (124, 2)]),
    ("unsorted input is sorted", [(10, "uint16"), (0, "uint16"), (5, "uint16")], 125, 5, (), [(0, 11)]),
    ("functions are never mixed", [(0, "uint16", "input"), (1, "uint16", "holding")], 125, 0, (),
     [(1, 1), (0, 1)]),
    ("a forbidden gap is not filled", [(0, "uint16"), (4, "uint16")], 125, 10, ((2, 2),), [(0, 1), (4, 1)]),
    ("a forbidden range elsewhere does not matter", [(0, "uint16"), (4, "uint16")], 125, 10, ((6, 9),),
     [(0, 5)]),
    ("overlapping values share words", [(0, "uint32"), (1, "uint16")], 125, 0, (), [(0, 2)]),
    ("greedy is optimal across a chain", [(0, "uint16"), (2, "uint16"), (4, "uint16"), (6, "uint16")], 5, 1, (),
     [(0, 5), (6, 1)]),
]


@pytest.mark.parametrize(("registers", "max_registers", "max_gap", "forbidden", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(registers, max_registers, max_gap, forbidden, expected):
    regs = [reg(f"r{i}", *spec) for i, spec in enumerate(registers)]
    plan = plan_requests(regs, max_registers=max_registers, max_gap=max_gap, forbidden=forbidden)
    assert [(r.address, r.count) for r in plan] == expected
    # Every register is carried by exactly one request, which covers it completely.
    carried = [(r.name, req) for req in plan for r in req.registers]
    assert sorted(name for name, _ in carried) == sorted(r.name for r in regs)
    for name, req in carried:
        r = next(x for x in regs if x.name == name)
        assert req.address <= r.address and r.end <= req.end and req.function == r.function
        assert req.count <= max_registers


def test_value_wider_than_the_limit_is_refused():
    with pytest.raises(ValueError, match="more than max_registers"):
        plan_requests([reg("r", 0, "float64")], max_registers=2)


def test_sdm630_whole_map_in_one_request():
    plan = plan_for_profile(PROFILES["eastron-sdm630"])
    assert [(r.function_code, r.address, r.count) for r in plan] == [(4, 0, 76)]
    assert naive_request_count(PROFILES["eastron-sdm630"]) == 12


def test_a_lower_bus_limit_splits_the_plan():
    plan = plan_for_profile(PROFILES["eastron-sdm630"], max_registers=40)
    assert [(r.address, r.count) for r in plan] == [(0, 12), (52, 24)]


def test_plc_counter_plan():
    plan = plan_for_profile(PROFILES["generic-plc-counter"])
    assert [(r.function_code, r.address, r.count) for r in plan] == [(3, 0, 7)]
    assert plan[0].describe() == "fc3 0+7 [units_total,units_rejected_total,batch_id,line_running]"

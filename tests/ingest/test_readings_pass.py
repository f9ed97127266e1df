"""Admission's compiled passes over a batch's readings (accounting/ingest/_readings.c) decide
nothing the Python loops would not: the same stream admitted with and without them gives the
same rows, quarantine records, duplicates, origins and learnt state, hostile messages included;
each pass refuses (and the Python loop then decides) whatever it cannot vouch for.
"""

from __future__ import annotations

import json
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accounting.ingest import admission as admission_module
from accounting.ingest import batch_decoder
from accounting.ingest.admission import _BOUNDS, Admission
from accounting.ingest.batch_decoder import Reading
from accounting.ingest.dedup import DedupIndex
from accounting.ingest.sequence import SequenceTracker
from accounting.ingest.subscriber import InboundMessage
from accounting.store.base import StoredReading
from tanji import wire
from tanji.quantities import QUANTITIES
from tests.ingest.malformed import hostile, malformed
from tests.ingest.traffic import HOUR_MS, hour_start, plant_batches

compiled = batch_decoder._readings
NOW_MS = 1_800_000_000_000
NAMES = frozenset(QUANTITIES)


def test_the_compiled_passes_are_built_and_used():
    """bin/setup installs a C compiler, so the suite and the demo run the compiled passes."""
    assert compiled is not None, "accounting/ingest/_readings.c was not built (see setup.py)"
    assert batch_decoder.READINGS_PASS == "compiled"
    assert admission_module._readings is compiled


def _stream(site, now_ms: int, shuffle: bool = True) -> list[InboundMessage]:
    """A plant's batches, then hostile and malformed messages, impossible values claimed good
    and not, clock-backwards batches, per-value quality, nulls, repeats and conflicting copies,
    shuffled into one stream."""
    rng = random.Random(20)
    good = plant_batches(site, start_ms=hour_start(now_ms) - HOUR_MS, step_ms=10_000, polls=200)
    templates = [(b.topic, b.payload) for b in good]
    out = [(b.topic, b.payload) for b in good]
    out += [(h.topic, h.payload) for h in hostile(site, templates, 150)]
    out += malformed(site, templates, 150)
    gateway = site.gateways[0]
    topic = wire.readings_topic(site.id, gateway.id)
    meters = [m.id for m in gateway.meters]
    seq = 10_000
    for k in range(60):
        body = json.loads(rng.choice(templates)[1])
        body["seq"] = seq = seq + 1
        r = rng.choice(body["readings"])
        name = next(iter(r["values"]))
        case = k % 6
        if case == 0:  # impossible, claimed good: that reading quarantined alone
            r["values"][name] = -5.0 if QUANTITIES[name].low >= 0 else -1e12
        elif case == 1:  # impossible but stale: admitted as it is
            r["values"][name], r["quality"] = 1e300, "stale"
        elif case == 2:  # per-value quality on the impossible value
            r["values"][name], r["value_quality"] = 1e300, {name: "bad"}
        elif case == 3:  # a null
            r["values"][name] = None
        elif case == 4:  # stamped before what the meters sent already
            for reading in body["readings"]:
                reading["ts_ms"] -= 30 * 60_000
        else:  # a copy of a stored reading with another value: a conflict
            r["values"][name] = 123.0
        out.append((topic, json.dumps(body, separators=(",", ":")).encode()))
    out += [(topic, payload) for topic, payload in rng.sample(templates, min(20, len(templates)))]  # repeats
    out.append((topic, wire.encode_batch(site.id, gateway.id, 99_999, [
        {"meter": meters[0], "ts_ms": now_ms - 1000, "quality": "good", "values": {"energy_import_kwh": 5}}])))
    if shuffle:
        rng.shuffle(out)
    return [InboundMessage(t, p, 0, i + 1, now_ms, 0) for i, (t, p) in enumerate(out)]


class _Counting:
    """The compiled module, counting the calls that vouched (so a test sees it was used)."""

    def __init__(self, module) -> None:
        self.module, self.vouched = module, {"admit": 0, "fresh_run": 0}

    def __getattr__(self, name):
        return getattr(self.module, name)

    def admit(self, *args):
        out = self.module.admit(*args)
        self.vouched["admit"] += out is not None
        return out

    def fresh_run(self, *args):
        out = self.module.fresh_run(*args)
        self.vouched["fresh_run"] += out > 0
        return out


def _admit_all(site, stream, now_ms):
    admission = Admission({site.id: site}, DedupIndex(), SequenceTracker())
    outcomes = []
    for k in range(0, len(stream), 37):
        out = admission.admit(stream[k:k + 37], now_ms)
        outcomes.append((out.rows, [(q.reason, q.detail, q.topic, q.payload) for q in out.quarantined],
                         out.duplicates, out.origins, out.conflicts, out.readings_messages))
    return outcomes, admission.order.known()


@pytest.mark.parametrize("shuffled", [True, False], ids=["shuffled", "in-order"])
def test_a_hostile_stream_is_admitted_as_the_python_loops_admit_it(cq_site, monkeypatch, shuffled):
    """Shuffled, most batches arrive late for the dedup rule's compiled loop; in order (the
    plant's batches first, then the rest), it remembers them."""
    from accounting.ingest import dedup

    now_ms = int(time.time() * 1000)
    stream = _stream(cq_site, now_ms, shuffled)
    counting = _Counting(compiled)
    monkeypatch.setattr(admission_module, "_readings", counting)
    monkeypatch.setattr(dedup, "_readings", counting)
    with_compiled = _admit_all(cq_site, stream, now_ms)
    # the comparison means something only if the compiled passes did the work
    assert counting.vouched["admit"] > 50, counting.vouched
    if not shuffled:
        assert counting.vouched["fresh_run"] > 30, counting.vouched
    monkeypatch.setattr(dedup, "_readings", compiled)
    monkeypatch.setattr(batch_decoder, "_readings", None)
    monkeypatch.setattr(admission_module, "_readings", None)
    without = _admit_all(cq_site, stream, now_ms)
    assert with_compiled == without
    outcomes = with_compiled[0]
    reasons = {reason for o in outcomes for reason, *_ in o[1]}
    # the stream reaches every branch the passes hand back to Python (in order, a conflicting copy
    # comes long after its first, which without a store to ask is counted a duplicate)
    assert {"impossible_value", "clock_backwards", "unknown_meter", "timestamp", "unknown_quantity",
            *(["conflict"] if shuffled else [])} <= reasons
    assert sum(len(o[0]) for o in outcomes) > 1000
    assert all(type(row) is StoredReading for o in outcomes for row in o[0])


def _reading(meter="m1", ts=1_000, quality="good", values=None, vq=None) -> Reading:
    return Reading(meter=meter, ts_ms=ts, quality=quality,
                   values={"energy_import_kwh": 5.0} if values is None else values, value_quality=vq)


def _python_check(readings, now_ms) -> bool:
    batch = batch_decoder.Batch(v=1, site="s", gateway="g", seq=1, sent_ms=0, backlog=False, readings=readings)
    saved, batch_decoder._readings = batch_decoder._readings, None
    try:
        batch_decoder._check(batch, "s", "g", now_ms)
        return True
    except batch_decoder._Rejected:
        return False
    finally:
        batch_decoder._readings = saved


readings_strategy = st.lists(st.builds(
    _reading, meter=st.sampled_from(["m1", "m2"]),
    ts=st.integers(-(2**63), 2**63 - 1) | st.integers(NOW_MS, NOW_MS + 2 * wire.MAX_FUTURE_MS),
    quality=st.sampled_from(wire.QUALITY_CODES),
    values=st.dictionaries(st.sampled_from([*sorted(QUANTITIES)[:4], "not_a_quantity"]),
                           st.none() | st.floats(allow_nan=False), max_size=3),
    vq=st.none() | st.dictionaries(st.sampled_from(sorted(QUANTITIES)[:4]), st.sampled_from(wire.QUALITY_CODES),
                                   max_size=2)), max_size=6)


@settings(max_examples=400, deadline=None)
@given(readings_strategy)
def test_check_agrees_with_the_python_rules(readings):
    now_ms = NOW_MS + wire.MAX_FUTURE_MS
    lo, hi = now_ms - wire.MAX_AGE_MS, now_ms + wire.MAX_FUTURE_MS
    assert compiled.check(readings, lo, hi, NAMES) == _python_check(readings, now_ms)


@settings(max_examples=400, deadline=None)
@given(readings_strategy)
def test_admit_vouches_only_for_what_the_python_loops_pass(readings):
    meters = frozenset({"m1"})
    got = compiled.admit(readings, meters, _BOUNDS, "s", "g", StoredReading)
    clear = all(r.meter in meters and all(
        v is None or (name in _BOUNDS and _BOUNDS[name][0] <= v <= _BOUNDS[name][1]) for name, v in r.values.items())
        for r in readings)
    if not clear:
        assert got is None
        return
    rows, got_meters, stamps, first, last = got
    assert rows == [StoredReading("s", "g", r.meter, r.ts_ms, r.quality, r.values, r.value_quality) for r in readings]
    assert all(type(row) is StoredReading for row in rows)
    assert got_meters == [r.meter for r in readings] and stamps == [r.ts_ms for r in readings]
    if readings:
        assert (first, last) == (min(stamps), max(stamps))


@pytest.mark.parametrize("reading", [
    _reading(values={"energy_import_kwh": 5}),  # an int (the reference decoder's reading of `5`)
    _reading(values={"energy_import_kwh": True}),
    _reading(values={"energy_import_kwh": float("nan")}),
    _reading(values={"energy_import_kwh": -1.0}),  # outside the range, whatever its quality
    _reading(quality="stale", values={"energy_import_kwh": 1e300}),
    _reading(values={"not_a_quantity": 1.0}),
    _reading(meter="m9"),  # not the gateway's
    _reading(ts=2**64),
    StoredReading("s", "g", "m1", 1, "good", {}, None),  # not a Reading
])
def test_admit_refuses_what_it_cannot_vouch_for(reading):
    assert compiled.admit([_reading(), reading], frozenset({"m1"}), _BOUNDS, "s", "g", StoredReading) is None


def test_check_refuses_what_it_cannot_read():
    assert compiled.check([_reading(ts=2**64)], 0, 2**62, NAMES) is False
    assert compiled.check([StoredReading("s", "g", "m1", 1, "good", {}, None)], 0, 2**62, NAMES) is False
    assert compiled.check([_reading(ts=5)], 0, 10, NAMES) is True
    assert compiled.check([], 0, 10, NAMES) is True


def test_bad_arguments_raise():
    with pytest.raises(TypeError):
        compiled.admit([_reading()], {"m1"}, _BOUNDS, "s", "g", StoredReading)  # a set, not a frozenset
    with pytest.raises(TypeError, match="tuple type"):
        compiled.admit([_reading()], frozenset({"m1"}), _BOUNDS, "s", "g", dict)
    with pytest.raises(TypeError, match="Reading struct"):
        compiled.bind(5)


def test_the_service_says_which_passes_run_and_how_to_build_the_missing(monkeypatch, caplog):
    import logging

    from accounting.ingest import hot_path
    from accounting.store import influx

    log = logging.getLogger("test.passes")
    with caplog.at_level(logging.INFO, logger="test.passes"):
        hot_path.log_passes(log)
    assert caplog.records[-1].levelno == logging.INFO
    assert caplog.records[-1].getMessage() == "ingest passes: readings compiled, columns compiled, line_protocol compiled"
    monkeypatch.setattr(influx, "LINE_PROTOCOL_PASS", "python")  # as where no C compiler was found
    with caplog.at_level(logging.INFO, logger="test.passes"):
        hot_path.log_passes(log)
    assert caplog.records[-1].levelno == logging.WARNING
    assert "line_protocol python" in caplog.records[-1].getMessage()
    assert "apt-get install gcc" in caplog.records[-1].getMessage()

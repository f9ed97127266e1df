"""The plant watch's pass over delivered readings, as a numba kernel over columns.

`watch_rows` walks the readings in delivery order (a gateway's order) and keeps, per meter,
what `accounting.live.watch` needs: its newest time, line state and counter values, and the
gaps not reported yet. What an operator must hear of (a line edge, a recorded replacement
crossed, a counter step back, an implausible jump) is written to an event buffer for Python;
everything else stays in the arrays. The rules are the watch's (its module docstring); the
plain-Python reference is `tests/live/watch_reference.py`, and `tests/live/test_kernels_watch.py`
checks the two against each other.

Per reading (good quality, newer than its meter's newest; others are skipped):

1. `line_running` present: an edge when its sign (> 0) differs from the last known state;
2. the meter's last recorded replacement in (newest, t], if any: an event, and its replaced
   channels are not judged against the old meter's values;
3. each counter channel present, with a previous value and a newest time: a drop is a step
   back; a rise of more than one register step beyond `max_power * dt / 1 h` (when the meter
   has a plausible maximum) is an implausible jump; either way the value becomes the channel's;
4. a silence longer than the meter's gap (`gap_ms`, NaN while the site's engine is unknown)
   is counted into the meter's unreported gaps.
"""

from __future__ import annotations

import numba
import numpy as np

from accounting.engine.kernels_energy import HOUR_MS, NO_TS

#: Event kinds (column EV_KIND of the event buffer).
EV_LINE_EDGE = 1  # EV_ARG: 1 started, 0 stopped
EV_REPLACED = 2  # EV_ARG: the replacement's position in the meter's list
EV_STEP_BACK = 3  # EV_ARG: the channel slot; EV_BEFORE, EV_VALUE
EV_JUMP = 4  # EV_ARG: the channel slot; EV_BEFORE, EV_VALUE, EV_DT
#: Integer columns of an event.
EV_KIND, EV_ROW, EV_METER, EV_ARG, EV_DT = range(5)
EV_INTS = 5
#: Float columns of an event.
EV_BEFORE, EV_VALUE = range(2)
EV_FLOATS = 2


@numba.njit(cache=True, nogil=True)
def watch_rows(start: int, row_meter: np.ndarray, row_ts: np.ndarray, row_good: np.ndarray,
               values: np.ndarray, running_col: int, meter_of_slot: np.ndarray,
               ch_off: np.ndarray, ch_col: np.ndarray, step: np.ndarray, max_power: np.ndarray,
               gap_ms: np.ndarray, rep_off: np.ndarray, rep_at: np.ndarray, rep_bits: np.ndarray,
               last_ts: np.ndarray, running: np.ndarray, counter: np.ndarray,
               gap_since: np.ndarray, gap_count: np.ndarray, gap_s: np.ndarray,
               ev_i: np.ndarray, ev_f: np.ndarray) -> tuple[int, int]:
    """Rows from `start` on; returns (next row, events written). Stops before a row whose
    events might not fit the buffer (call again from the returned row).

    Readings: `row_meter` (the layout's slot), `row_ts`, `row_good`, `values` (rows x names,
    NaN absent), `running_col` (the names' column of the line state, -1 none). Meters:
    `meter_of_slot` (layout slot → meter, -1 unknown); meter m's counter channels are the slots
    `ch_off[m]:ch_off[m+1]`, slot s read from column `ch_col[s]` (-1 none) with register step
    `step[s]`; `max_power[m]` (0: none); `gap_ms[m]` (NaN: unknown); its replacements
    `rep_off[m]:rep_off[m+1]` at `rep_at`, `rep_bits` the channel positions each replaced.
    State (updated in place): `last_ts` (NO_TS: none), `running`, `counter` (NaN: none),
    `gap_since` (NO_TS: no unreported gap), `gap_count`, `gap_s`."""
    n = len(row_ts)
    cap = ev_i.shape[0]
    most = 2 + int(np.max(np.diff(ch_off))) if len(ch_off) > 1 else 2
    e = 0
    i = start
    while i < n:
        if e + most > cap:
            break
        j = row_meter[i]
        m = meter_of_slot[j] if j >= 0 else -1
        if m < 0 or not row_good[i]:
            i += 1
            continue
        t = row_ts[i]
        last = last_ts[m]
        if last != NO_TS and t <= last:
            i += 1
            continue
        if running_col >= 0:
            r = values[i, running_col]
            if not np.isnan(r):
                was = running[m]
                if not np.isnan(was) and (r > 0) != (was > 0):
                    ev_i[e, EV_KIND] = EV_LINE_EDGE
                    ev_i[e, EV_ROW] = i
                    ev_i[e, EV_METER] = m
                    ev_i[e, EV_ARG] = 1 if r > 0 else 0
                    e += 1
                running[m] = r
        replaced = -1
        if last != NO_TS:
            for q in range(rep_off[m], rep_off[m + 1]):
                if last < rep_at[q] <= t:
                    replaced = q  # the last in the meter's list
        if replaced >= 0:
            ev_i[e, EV_KIND] = EV_REPLACED
            ev_i[e, EV_ROW] = i
            ev_i[e, EV_METER] = m
            ev_i[e, EV_ARG] = replaced - rep_off[m]
            e += 1
        c0 = ch_off[m]
        for s in range(c0, ch_off[m + 1]):
            col = ch_col[s]
            if col < 0:
                continue
            v = values[i, col]
            if np.isnan(v):
                continue
            before = counter[s]
            if not np.isnan(before) and last != NO_TS and (replaced < 0 or (rep_bits[replaced] >> (s - c0)) & 1 == 0):
                if v < before:
                    ev_i[e, EV_KIND] = EV_STEP_BACK
                    ev_i[e, EV_ROW] = i
                    ev_i[e, EV_METER] = m
                    ev_i[e, EV_ARG] = s
                    ev_f[e, EV_BEFORE] = before
                    ev_f[e, EV_VALUE] = v
                    e += 1
                elif max_power[m] > 0 and (v - before - step[s]) * HOUR_MS > max_power[m] * (t - last):
                    ev_i[e, EV_KIND] = EV_JUMP
                    ev_i[e, EV_ROW] = i
                    ev_i[e, EV_METER] = m
                    ev_i[e, EV_ARG] = s
                    ev_i[e, EV_DT] = t - last
                    ev_f[e, EV_BEFORE] = before
                    ev_f[e, EV_VALUE] = v
                    e += 1
            counter[s] = v
        if last != NO_TS and not np.isnan(gap_ms[m]) and t - last > gap_ms[m]:
            if gap_since[m] == NO_TS:
                gap_since[m] = last
            gap_count[m] += 1
            gap_s[m] += (t - last) / 1000
        last_ts[m] = t
        i += 1
    return i, e

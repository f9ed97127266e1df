"""A plain-Python reference implementation of ACCOUNTING.md, for checking the engine.

Written for reading, not speed: dictionaries keyed by ids, one reading at a time, no numpy and
no numba. It follows the method in docs/accounting.md step by step and shares no code with
``accounting.engine`` (only the input dataclasses and the dataset's raw tables).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

HOUR = 3_600_000


# ---------------------------------------------------------------- 1. counters -> energy
def channel_hourly(readings, rollover, max_rate, gap_ms, replacements=()):
    """Readings [(t, E)] in arrival order -> ({hour: kWh}, {hour: estimated kWh}).
    ``replacements``: the channel's recorded meter replacements [(at, old final, new initial)]."""
    first_seen = {}
    for t, e in readings:
        first_seen.setdefault(t, e)  # duplicates: the first received value wins
    series = sorted(first_seen.items())
    energy, estimated = defaultdict(float), defaultdict(float)
    if not series:
        return energy, estimated
    prev_t, prev_e = series[0]
    for t, e in series[1:]:
        reset = False
        hours_elapsed = (t - prev_t) / HOUR
        crossed = sorted(r for r in replacements if prev_t < r[0] <= t)
        if crossed:
            # old meter: baseline -> its final reading; each meter in between: initial -> final;
            # the new one: initial -> this reading
            delta = crossed[0][1] - prev_e
            for (_, _, initial), (_, final, _) in zip(crossed, crossed[1:], strict=False):
                delta += final - initial
            delta += e - crossed[-1][2]
            if delta >= 0:
                for hour, fraction in split_over_hours(prev_t, t):
                    energy[hour] += delta * fraction
                    if t - prev_t > gap_ms:
                        estimated[hour] += delta * fraction
            prev_t, prev_e = t, e  # a record that does not fit books nothing (rebased)
            continue
        if e >= prev_e:
            delta = e - prev_e
        elif rollover > 0 and prev_e >= 0.9 * rollover:
            delta = e + rollover - prev_e
        elif max_rate > 0 and e / hours_elapsed > max_rate:
            # lower, and more than a reset since prev_t can show: a glitch within the gap
            # threshold (rejected), else the register went back (rebased: nothing booked)
            if t - prev_t > gap_ms:
                prev_t, prev_e = t, e
            continue
        else:
            delta, reset = e, True
        if max_rate > 0 and delta / hours_elapsed > max_rate:
            # more than the meter can count: a glitch within the gap threshold (rejected,
            # baseline stays), else the register moved (rebased: nothing booked)
            if t - prev_t > gap_ms:
                prev_t, prev_e = t, e
            continue
        is_estimate = reset or (t - prev_t) > gap_ms
        for hour, fraction in split_over_hours(prev_t, t):
            energy[hour] += delta * fraction
            if is_estimate:
                estimated[hour] += delta * fraction
        prev_t, prev_e = t, e
    return energy, estimated


def split_over_hours(a, b):
    """[(hour index, fraction of (a, b] inside it)]."""
    parts = []
    start = a
    while start < b:
        hour = start // HOUR
        end = min(b, (hour + 1) * HOUR)
        parts.append((hour, (end - start) / (b - a)))
        start = end
    return parts


# ---------------------------------------------------------------- 2. topology and allocation
@dataclass
class HourResult:
    consumption: float
    pv_self: float
    unallocated: float
    alarm: bool
    product_energy: dict
    product_metered: dict
    product_allocated: dict
    product_estimated: dict
    product_unc: dict  # absolute 95 % uncertainty (kWh)
    product_units: dict


def allocate_hour(topo, chan_e, chan_x, hour):
    """Site balance and allocation of one hour. chan_e/chan_x: {(meter, channel): {hour: kWh}}."""
    def e(key):
        return chan_e.get(key, {}).get(hour, 0.0)

    def x(key):
        return chan_x.get(key, {}).get(hour, 0.0)

    imp = exp = pv = est_flows = 0.0
    squares = 0.0
    direct = defaultdict(float)
    direct_est = defaultdict(float)
    direct_sq = defaultdict(float)
    for m in topo.meters:
        u = m.accuracy_class_pct / 100
        for ch in m.counter_channels:
            key = (m.meter_id, ch)
            if m.role == "grid_import":
                if ch == "energy_import_kwh":
                    imp += e(key)
                else:
                    exp += e(key)
            elif m.role == "pv":
                if ch == "energy_export_kwh" or "energy_export_kwh" not in m.channels:
                    pv += e(key)
                else:
                    continue
            elif m.role == "submeter":
                sign = -1.0 if ch == "energy_export_kwh" else 1.0
                direct[m.cost_centre] += sign * e(key)
                direct_est[m.cost_centre] += x(key)
                direct_sq[m.cost_centre] += (u * e(key)) ** 2
            else:
                continue
            if m.role != "submeter":
                est_flows += x(key)
            squares += (u * e(key)) ** 2
    consumption = imp - exp + pv
    alarm = consumption < 0
    consumption = max(consumption, 0.0)
    tolerance = math.sqrt(squares)
    submetered = sum(direct.values())
    remainder = consumption - submetered
    if remainder < 0:
        alarm = alarm or remainder < -tolerance
        k = consumption / submetered
        for c in list(direct):
            direct[c] *= k
            direct_est[c] *= k
            direct_sq[c] *= k * k
        remainder = 0.0
    gross = imp + exp + pv
    remainder_est = remainder * est_flows / gross if gross > 0 else 0.0

    production = [c.cost_centre_id for c in topo.cost_centres if c.kind == "production"]
    units = {p.product_id: e((p.units_meter, p.units_channel)) for p in topo.products}
    line_units = defaultdict(float)
    for p in topo.products:
        line_units[p.line] += units[p.product_id]

    def weights(key, shares):
        if key == "energy":
            return {c: max(direct[c], 0.0) for c in production}
        if key == "units":
            return {c: line_units[c] for c in production}
        return {c: shares.get(c, 0.0) for c in production}

    line = {c: direct[c] for c in production}
    line_alloc = defaultdict(float)
    line_est = {c: direct_est[c] for c in production}
    line_sq = {c: direct_sq[c] for c in production}
    unallocated = 0.0
    for cc in topo.cost_centres:
        amount = direct[cc.cost_centre_id]
        if cc.kind == "production" or amount == 0:
            continue
        w = weights(cc.allocation_key, cc.allocation_shares)
        total = sum(w.values())
        if total <= 0:
            unallocated += amount
            continue
        rel_sq = direct_sq[cc.cost_centre_id] / amount ** 2 + (cc.key_uncertainty_pct / 100) ** 2
        for c, wc in w.items():
            if wc > 0:
                part = amount * wc / total
                line[c] += part
                line_alloc[c] += part
                line_est[c] += direct_est[cc.cost_centre_id] * wc / total
                line_sq[c] += rel_sq * part ** 2
    if remainder > 0:
        w = weights(topo.remainder_key, topo.remainder_shares)
        total = sum(w.values())
        if total <= 0:
            unallocated += remainder
        else:
            rel_sq = (tolerance / remainder) ** 2 + (topo.remainder_key_uncertainty_pct / 100) ** 2
            for c, wc in w.items():
                if wc > 0:
                    part = remainder * wc / total
                    line[c] += part
                    line_alloc[c] += part
                    line_est[c] += remainder_est * wc / total
                    line_sq[c] += rel_sq * part ** 2

    res = HourResult(consumption, max(0.0, pv - exp), 0.0, alarm, {}, {}, {}, {}, {}, units)
    for c in production:
        makers = [p for p in topo.products if p.line == c and units[p.product_id] * p.key_per_unit > 0]
        key_total = sum(units[p.product_id] * p.key_per_unit for p in makers)
        if key_total <= 0:
            unallocated += line[c]
        for p in topo.products:
            if p.line != c:
                continue
            share = units[p.product_id] * p.key_per_unit / key_total if key_total > 0 else 0.0
            energy = line[c] * share
            estimated = energy if alarm else line_est[c] * share
            allocated = 0.0 if alarm else (line_alloc[c] - (line_est[c] - direct_est[c])) * share
            unc_sq = line_sq[c] * share ** 2
            if len(makers) > 1 and share > 0:
                unc_sq += (p.key_uncertainty_pct / 100 * energy) ** 2
            res.product_energy[p.product_id] = energy
            res.product_estimated[p.product_id] = estimated
            res.product_allocated[p.product_id] = allocated
            res.product_metered[p.product_id] = energy - estimated - allocated
            res.product_unc[p.product_id] = math.sqrt(unc_sq)
    res.unallocated = unallocated
    return res


# ---------------------------------------------------------------- 3. factors
def local_time(hour, tz):
    """The local wall-clock time at the start of a UTC hour, in the zone `tz` (a ZoneInfo)."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=hour * HOUR)).astimezone(tz)


def factor_for_hour(table, granularity, hour, tz):
    """Latest published period at or before the hour (first one before it starts); hourly exact."""
    if granularity == "hourly":
        return table[hour * HOUR] if hour * HOUR in table else table[str(hour * HOUR)]
    t = local_time(hour, tz)
    starts = []
    for period, value in table.items():
        year, _, month = str(period).partition("-")
        starts.append((datetime(int(year), int(month or 1), 1, tzinfo=tz), value))
    starts.sort()
    chosen = starts[0][1]
    for start, value in starts:
        if start <= t:
            chosen = value
    return chosen


# ---------------------------------------------------------------- 4. market-based
def window_of(hour, mode, tz):
    if mode == "hourly":
        return ("h", hour)
    t = local_time(hour, tz)
    return ("y", t.year) if mode == "annual" else ("m", t.year, t.month)


def window_of_period(start_ms, mode, tz):
    return window_of(start_ms // HOUR, mode, tz)


def month_start_ms(month, tz):
    y, m = month.split("-")
    return int(datetime(int(y), int(m), 1, tzinfo=tz).timestamp() * 1000)


def instruments_list(portfolio, topo, dataset, mode, regional):
    """[(stage, earmark, kWh, factor, window)] eligible for this site and mode."""
    from accounting.factors.regions import grid_region_for_province, is_mainland

    def ok(province):
        if not is_mainland(province):
            return False
        return not regional or grid_region_for_province(province) == topo.grid_region

    def tech_factor(tech):
        return 0.0 if dataset.gas_basis == "co2" else dataset.technology_factors[tech]

    out = []
    if portfolio is None:
        return out
    off = ZoneInfo(topo.timezone)
    for c in portfolio.contracts:
        if not ok(c.province) or (mode == "hourly" and c.granularity != "hourly"):
            continue
        for period, kwh in c.deliveries:
            start = period if c.granularity == "hourly" else month_start_ms(period, off)
            out.append((0, c.earmark, kwh, tech_factor(c.technology), window_of_period(start, mode, off)))
    if mode != "hourly":
        for held in portfolio.certificates:
            cert = held.certificate
            if ok(cert.province):
                start = month_start_ms(cert.generation_month, off)
                out.append((1, held.earmark, 1000.0, tech_factor(cert.technology),
                            window_of_period(start, mode, off)))
    return out


def market_match(topo, hours, results, instruments, pv_factor, uncovered_factor, mode):
    """Per (hour, consumer): covered kWh by stage and market-based kg. Consumers: product ids
    plus '' for unallocated energy."""
    consumers = [p.product_id for p in topo.products] + [""]

    def cons(h, k):
        return results[h].unallocated if k == "" else results[h].product_energy[k]

    rem, cov, kg = {}, {}, defaultdict(float)
    for h in hours:
        total = sum(cons(h, k) for k in consumers)
        s = min(1.0, results[h].pv_self / total) if total > 0 else 0.0
        for k in consumers:
            cov[(h, k, "pv")] = cons(h, k) * s
            cov[(h, k, "contract")] = cov[(h, k, "gec")] = 0.0
            rem[(h, k)] = cons(h, k) * (1 - s)
            kg[(h, k)] += cov[(h, k, "pv")] * pv_factor
    windows = defaultdict(list)
    for h in hours:
        windows[window_of(h, mode, ZoneInfo(topo.timezone))].append(h)
    used_total = 0.0

    def members(earmark):
        if earmark is None:
            return consumers
        if any(p.product_id == earmark for p in topo.products):
            return [earmark]
        return [p.product_id for p in topo.products if p.line == earmark]

    def cover(hs, ks, amount, factor, stage):
        demand = sum(rem[(h, k)] for h in hs for k in ks)
        used = min(amount, demand)
        if used > 0:
            for h in hs:
                for k in ks:
                    c = rem[(h, k)] * used / demand
                    cov[(h, k, stage)] += c
                    kg[(h, k)] += c * factor
                    rem[(h, k)] -= c
        return used

    for w, hs in windows.items():
        for stage, name in ((0, "contract"), (1, "gec")):
            mine = [i for i in instruments if i[0] == stage and i[4] == w]
            for _, earmark, kwh, factor, _ in mine:
                if earmark is not None:
                    used_total += cover(hs, members(earmark), kwh, factor, name)
            pool = [i for i in mine if i[1] is None]
            amount = sum(i[2] for i in pool)
            if amount > 0:
                factor = sum(i[2] * i[3] for i in pool) / amount
                used_total += cover(hs, consumers, amount, factor, name)
    for h in hours:
        for k in consumers:
            kg[(h, k)] += rem[(h, k)] * uncovered_factor[h]
    return cov, kg, used_total


# ---------------------------------------------------------------- 5. footprints
def reference_footprints(topo, dataset, readings, start_ms, end_ms, *, portfolio=None,
                         mode=None, regional=False, gap_polls=3.0):
    """Footprints {product_id: dict} for hours starting in [start_ms, end_ms), and the per-hour
    site results. ``readings`` is [(meter_id, channel, ts_ms, value)] in arrival order; rejected
    ones (negative, non-finite) must be filtered by the caller."""
    mode = mode or topo.matching_mode
    per_channel = defaultdict(list)
    for meter, ch, t, v in readings:
        per_channel[(meter, ch)].append((t, v))
    chan_e, chan_x = {}, {}
    for m in topo.meters:
        for ch in m.counter_channels:
            key = (m.meter_id, ch)
            chan_e[key], chan_x[key] = channel_hourly(
                per_channel[key], m.rollover_kwh, m.max_power_kw, gap_polls * m.poll_period_s * 1000,
                [(r.at_ms, r.old_final[ch], r.new_initial[ch]) for r in m.replacements if ch in r.old_final])
    all_hours = sorted({h for d in chan_e.values() for h in d})
    if not all_hours:
        return {}, {}
    hours = list(range(all_hours[0], all_hours[-1] + 1))
    results = {h: allocate_hour(topo, chan_e, chan_x, h) for h in hours}
    off = ZoneInfo(topo.timezone)
    region = topo.grid_region if topo.grid_region in dataset.factors else "CN"
    loc = {h: factor_for_hour(dataset.factors[region], dataset.granularity, h, off) for h in hours}
    if region in dataset.residual_mix:
        uncovered = {h: factor_for_hour(dataset.residual_mix[region], dataset.granularity, h, off)
                     for h in hours}
    else:
        uncovered = loc
    has_pv = any(m.role == "pv" for m in topo.meters)
    pv_factor = 0.0
    if has_pv and dataset.gas_basis != "co2":
        pv_factor = dataset.technology_factors["solar_pv_rooftop"]
    instruments = instruments_list(portfolio, topo, dataset, mode, regional)
    cov, kg, _ = market_match(topo, hours, results, instruments, pv_factor, uncovered, mode)

    out = {}
    window = [h for h in hours if start_ms <= h * HOUR < end_ms]
    for p in topo.products:
        k = p.product_id
        energy = sum(results[h].product_energy[k] for h in window)
        units = sum(results[h].product_units[k] for h in window)
        kg_loc = sum(results[h].product_energy[k] * loc[h] for h in window)
        kg_mkt = sum(kg[(h, k)] for h in window)
        covered = sum(cov[(h, k, s)] for h in window for s in ("pv", "contract", "gec"))
        fp = {"units": units, "energy_kwh": energy, "kgco2e_location": kg_loc,
              "kgco2e_market": kg_mkt, "renewable_share": covered / energy if energy > 0 else 0.0,
              "covered_gec_kwh": sum(cov[(h, k, "gec")] for h in window),
              "covered_contract_kwh": sum(cov[(h, k, "contract")] for h in window),
              "covered_pv_kwh": sum(cov[(h, k, "pv")] for h in window)}
        if energy > 0:
            fp["share_metered"] = sum(results[h].product_metered[k] for h in window) / energy
            fp["share_allocated"] = sum(results[h].product_allocated[k] for h in window) / energy
            fp["share_estimated"] = sum(results[h].product_estimated[k] for h in window) / energy
            u_energy = sum(results[h].product_unc[k] for h in window) / energy
            fp["uncertainty_pct_95"] = 100 * math.sqrt(u_energy ** 2 + (dataset.uncertainty_pct_95 / 100) ** 2)
        out[k] = fp
    return out, results

"""Site balance and allocation per hour (ACCOUNTING.md section 2), as a numba kernel.

Per site and hour: C = import - export + PV, S = max(0, PV - export), R = C - sum(submeters).
A negative R is reconciled: the submeters are scaled by C / sum(submeters) so that energy is
conserved against the incomer (the billing-grade meter), R becomes 0, and if R was below minus
the meters' combined accuracy the hour raises the ``alarm`` flag and all its energy counts as
estimated. Utilities and R are shared among production cost centres by their keys, then each
line's energy among the products it made in the hour by the products' keys.

Each product-hour also gets an absolute 95 % uncertainty: within the hour, the parts of its
energy (line submeter, each utility, the remainder) combine by weighted root-sum-square, each
part's relative uncertainty being the product rule of meter class and allocation key.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

KEY_ENERGY = 0
KEY_UNITS = 1
KEY_FIXED = 2

# Rows of the per-hour site balance matrix (columns of ``site`` in allocate_hours).
SITE_IMPORT = 0
SITE_EXPORT = 1
SITE_PV = 2
SITE_CONSUMPTION = 3
SITE_PV_SELF = 4
SITE_SUBMETERED = 5
SITE_REMAINDER = 6
SITE_ALLOCATED = 7
SITE_UNALLOCATED = 8
SITE_ALARM = 9
SITE_REMAINDER_RAW = 10
SITE_TOLERANCE = 11
SITE_COLUMNS = ("import_kwh", "export_kwh", "pv_kwh", "consumption_kwh", "pv_self_kwh",
                "submetered_kwh", "remainder_kwh", "allocated_kwh", "unallocated_kwh", "alarm",
                "remainder_raw_kwh", "tolerance_kwh")


@numba.njit(cache=True, inline="always")
def _key_weights(key: int, shares: np.ndarray, direct: np.ndarray, units_cc: np.ndarray,
                 is_prod: np.ndarray, out: np.ndarray) -> float:
    total = 0.0
    for c in range(out.shape[0]):
        if not is_prod[c]:
            w = 0.0
        elif key == KEY_ENERGY:
            w = max(direct[c], 0.0)
        elif key == KEY_UNITS:
            w = units_cc[c]
        else:
            w = shares[c]
        out[c] = w
        total += w
    return total


class AllocationTopology(NamedTuple):
    """The topology as ``allocate_hours`` reads it (built by ``arrays.build_topology_arrays``).

    Channels: ``ch_unc`` accuracy (fraction) of each; ``imp_ch``/``exp_ch``/``pv_ch`` the
    incomer's import and export and the PV generation channels; ``sub_ch`` submeter channels
    with their cost centre ``sub_cc`` and sign ``sub_sign`` (-1 for an export register).
    Cost centres: ``cc_is_prod``, allocation key ``cc_key`` (``KEY_*``), fixed shares
    ``cc_shares[u, c]``, key uncertainty ``cc_key_unc``. Remainder: key, shares, uncertainty.
    Products: line ``prod_cc``, units channel ``prod_units_ch``, key weight per unit
    ``prod_w``, key uncertainty ``prod_key_unc``.
    """

    ch_unc: np.ndarray
    imp_ch: np.ndarray
    exp_ch: np.ndarray
    pv_ch: np.ndarray
    sub_ch: np.ndarray
    sub_cc: np.ndarray
    sub_sign: np.ndarray
    cc_is_prod: np.ndarray
    cc_key: np.ndarray
    cc_shares: np.ndarray
    cc_key_unc: np.ndarray
    rem_key: int
    rem_shares: np.ndarray
    rem_key_unc: float
    prod_cc: np.ndarray
    prod_units_ch: np.ndarray
    prod_w: np.ndarray
    prod_key_unc: np.ndarray


class AllocationOutputs(NamedTuple):
    """What ``allocate_hours`` fills: ``(n_hours, n_products)`` matrices and the site balance
    ``(n_hours, len(SITE_COLUMNS))``."""

    energy: np.ndarray
    metered: np.ndarray
    allocated: np.ndarray
    estimated: np.ndarray
    unc: np.ndarray
    units: np.ndarray
    site: np.ndarray


def allocation_outputs(n_hours: int, n_products: int) -> AllocationOutputs:
    """Zeroed outputs for ``n_hours`` hours."""
    return AllocationOutputs(*(np.zeros((n_hours, n_products)) for _ in range(6)),
                             np.zeros((n_hours, len(SITE_COLUMNS))))


@numba.njit(cache=True, parallel=True)
def allocate_hours(energy: np.ndarray, est: np.ndarray, t: AllocationTopology,
                   out: AllocationOutputs) -> None:
    """Allocate every hour. ``energy``/``est`` are ``(n_hours, n_channels)`` (hour-major, C
    order, the engine's own layout). Uncertainties are fractions (0.01 for 1 %)."""
    ch_unc, imp_ch, exp_ch, pv_ch = t.ch_unc, t.imp_ch, t.exp_ch, t.pv_ch
    sub_ch, sub_cc, sub_sign = t.sub_ch, t.sub_cc, t.sub_sign
    cc_is_prod, cc_key, cc_shares, cc_key_unc = t.cc_is_prod, t.cc_key, t.cc_shares, t.cc_key_unc
    rem_key, rem_shares, rem_key_unc = t.rem_key, t.rem_shares, t.rem_key_unc
    prod_cc, prod_units_ch, prod_w, prod_key_unc = t.prod_cc, t.prod_units_ch, t.prod_w, t.prod_key_unc
    out_energy, out_metered, out_allocated = out.energy, out.metered, out.allocated
    out_estimated, out_unc, out_units, site = out.estimated, out.unc, out.units, out.site
    n_h = energy.shape[0]
    n_cc = cc_is_prod.shape[0]
    n_p = prod_cc.shape[0]
    for h in numba.prange(n_h):
        e = energy[h]
        x = est[h]
        imp = 0.0
        exp_ = 0.0
        pv = 0.0
        est_flows = 0.0
        tol2 = 0.0
        for i in imp_ch:
            imp += e[i]
            est_flows += x[i]
            tol2 += (ch_unc[i] * e[i]) ** 2
        for i in exp_ch:
            exp_ += e[i]
            est_flows += x[i]
            tol2 += (ch_unc[i] * e[i]) ** 2
        for i in pv_ch:
            pv += e[i]
            est_flows += x[i]
            tol2 += (ch_unc[i] * e[i]) ** 2
        cons = imp - exp_ + pv
        alarm = False
        if cons < 0.0:
            alarm = True
            cons = 0.0
        direct = np.zeros(n_cc)
        direct_est = np.zeros(n_cc)
        direct_unc2 = np.zeros(n_cc)
        for j in range(sub_ch.shape[0]):
            i = sub_ch[j]
            c = sub_cc[j]
            direct[c] += sub_sign[j] * e[i]
            direct_est[c] += x[i]
            direct_unc2[c] += (ch_unc[i] * e[i]) ** 2
            tol2 += (ch_unc[i] * e[i]) ** 2
        subtotal = 0.0
        for c in range(n_cc):
            subtotal += direct[c]
        tol = math.sqrt(tol2)
        rem_raw = cons - subtotal
        rem = rem_raw
        if rem < 0.0:
            if rem < -tol:
                alarm = True
            scale = cons / subtotal
            for c in range(n_cc):
                direct[c] *= scale
                direct_est[c] *= scale
                direct_unc2[c] *= scale * scale
            rem = 0.0
            subtotal = cons
        gross = imp + exp_ + pv
        rem_est = rem * (est_flows / gross) if gross > 0.0 else 0.0
        units_cc = np.zeros(n_cc)
        for p in range(n_p):
            u = energy[h, prod_units_ch[p]]
            out_units[h, p] = u
            units_cc[prod_cc[p]] += u
        # line energy: direct + shares of utilities and remainder
        line = np.zeros(n_cc)
        line_est = np.zeros(n_cc)
        line_alloc = np.zeros(n_cc)
        line_unc2 = np.zeros(n_cc)
        weights = np.zeros(n_cc)
        unallocated = 0.0
        for c in range(n_cc):
            if cc_is_prod[c]:
                line[c] += direct[c]
                line_est[c] += direct_est[c]
                line_unc2[c] += direct_unc2[c]
        for u in range(n_cc):
            if cc_is_prod[u] or direct[u] == 0.0:
                continue
            total = _key_weights(cc_key[u], cc_shares[u], direct, units_cc, cc_is_prod, weights)
            if total <= 0.0:
                unallocated += direct[u]
                continue
            rel2 = direct_unc2[u] / (direct[u] * direct[u]) + cc_key_unc[u] ** 2
            for c in range(n_cc):
                if weights[c] > 0.0:
                    part = direct[u] * (weights[c] / total)
                    line[c] += part
                    line_alloc[c] += part
                    line_est[c] += direct_est[u] * (weights[c] / total)
                    line_unc2[c] += rel2 * part * part
        if rem > 0.0:
            total = _key_weights(rem_key, rem_shares, direct, units_cc, cc_is_prod, weights)
            if total <= 0.0:
                unallocated += rem
            else:
                rel2 = (tol / rem) ** 2 + rem_key_unc ** 2
                for c in range(n_cc):
                    if weights[c] > 0.0:
                        part = rem * (weights[c] / total)
                        line[c] += part
                        line_alloc[c] += part
                        line_est[c] += rem_est * (weights[c] / total)
                        line_unc2[c] += rel2 * part * part
        # lines -> products
        line_w = np.zeros(n_cc)
        line_n = np.zeros(n_cc, dtype=np.int64)
        for p in range(n_p):
            w = out_units[h, p] * prod_w[p]
            if w > 0.0:
                line_w[prod_cc[p]] += w
                line_n[prod_cc[p]] += 1
        allocated = 0.0
        for p in range(n_p):
            c = prod_cc[p]
            w = out_units[h, p] * prod_w[p]
            if w <= 0.0 or line_w[c] <= 0.0:
                out_energy[h, p] = 0.0
                out_metered[h, p] = 0.0
                out_allocated[h, p] = 0.0
                out_estimated[h, p] = 0.0
                out_unc[h, p] = 0.0
                continue
            phi = w / line_w[c]
            ep = line[c] * phi
            est_p = line[c] * phi if alarm else line_est[c] * phi
            alloc_total = line_alloc[c] * phi
            alloc_est = (line_est[c] - direct_est[c]) * phi
            alloc_p = 0.0 if alarm else alloc_total - alloc_est
            out_energy[h, p] = ep
            out_estimated[h, p] = est_p
            out_allocated[h, p] = alloc_p
            out_metered[h, p] = ep - est_p - alloc_p
            unc2 = line_unc2[c] * phi * phi
            if line_n[c] > 1:
                unc2 += (prod_key_unc[p] * ep) ** 2
            out_unc[h, p] = math.sqrt(unc2)
            allocated += ep
        for c in range(n_cc):
            if cc_is_prod[c] and line_w[c] <= 0.0:
                unallocated += line[c]
        s = site[h]
        s[SITE_IMPORT] = imp
        s[SITE_EXPORT] = exp_
        s[SITE_PV] = pv
        s[SITE_CONSUMPTION] = cons
        s[SITE_PV_SELF] = max(0.0, pv - exp_)
        s[SITE_SUBMETERED] = subtotal
        s[SITE_REMAINDER] = rem
        s[SITE_ALLOCATED] = allocated
        s[SITE_UNALLOCATED] = unallocated
        s[SITE_ALARM] = 1.0 if alarm else 0.0
        s[SITE_REMAINDER_RAW] = rem_raw
        s[SITE_TOLERANCE] = tol

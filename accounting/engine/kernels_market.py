"""Market-based coverage (ACCOUNTING.md section 4), as a numba kernel.

Consumers are the products plus one last column for energy left unallocated. Per hour, on-site
PV self-consumption covers every consumer pro rata (fraction min(1, S/C)). Then, per matching
window (a contiguous range of hours: a calendar year, a month or an hour), instrument rows are
applied in the order prepared by the caller: green-power contracts before certificates, and
within each stage earmarked rows (covering their consumer group first) before the pooled rows,
which are shared pro rata to the consumers' remaining energy in the window. Energy still
uncovered gets the residual-mix factor (or the location factor when there is none).
"""

from __future__ import annotations

import numba
import numpy as np

STAGE_CONTRACT = 0
STAGE_GEC = 1


@numba.njit(cache=True)
def _cover(rem: np.ndarray, lo: int, hi: int, member: np.ndarray, frac: float, factor: float,
           cov: np.ndarray, emis: np.ndarray) -> None:
    for h in range(lo, hi):
        for k in range(rem.shape[1]):
            if member[k] and rem[h, k] > 0.0:
                c = rem[h, k] * frac
                cov[h, k] += c
                emis[h, k] += c * factor
                rem[h, k] -= c


@numba.njit(cache=True)
def _demand(rem: np.ndarray, lo: int, hi: int, member: np.ndarray) -> float:
    d = 0.0
    for h in range(lo, hi):
        for k in range(rem.shape[1]):
            if member[k]:
                d += rem[h, k]
    return d


@numba.njit(cache=True, parallel=True)
def match_market(cons: np.ndarray, pv_self: np.ndarray, pv_factor: float, uncovered_factor: np.ndarray,
                 win_lo: np.ndarray, win_hi: np.ndarray, row_ptr: np.ndarray,
                 row_stage: np.ndarray, row_group: np.ndarray, row_kwh: np.ndarray,
                 row_factor: np.ndarray, group_member: np.ndarray,
                 cov_pv: np.ndarray, cov_contract: np.ndarray, cov_gec: np.ndarray,
                 emis: np.ndarray, row_used: np.ndarray) -> None:
    """Fill the coverage and market-based emission matrices ``(n_hours, n_consumers)``.

    Window ``w`` spans hours ``win_lo[w]:win_hi[w]`` and owns rows ``row_ptr[w]:row_ptr[w+1]``
    (sorted: stage, then earmarked before pooled). ``row_group[r]`` is -1 for a pooled row or
    the index of its earmark group in ``group_member`` (``(n_groups, n_consumers)``, 0/1).
    ``row_used[r]`` receives the kWh of the row actually used.
    """
    n_k = cons.shape[1]
    everyone = np.ones(n_k, dtype=np.uint8)
    rem = np.empty_like(cons)
    inst_emis = np.zeros_like(cons)
    for w in numba.prange(win_lo.shape[0]):
        lo = win_lo[w]
        hi = win_hi[w]
        for h in range(lo, hi):
            total = 0.0
            for k in range(n_k):
                total += cons[h, k]
            s = 0.0
            if total > 0.0:
                s = min(1.0, pv_self[h] / total)
            for k in range(n_k):
                c = cons[h, k] * s
                cov_pv[h, k] = c
                rem[h, k] = cons[h, k] - c
                cov_contract[h, k] = 0.0
                cov_gec[h, k] = 0.0
                inst_emis[h, k] = 0.0
        r = row_ptr[w]
        end = row_ptr[w + 1]
        while r < end:
            cov = cov_contract if row_stage[r] == STAGE_CONTRACT else cov_gec
            if row_group[r] >= 0:
                member = group_member[row_group[r]]
                demand = _demand(rem, lo, hi, member)
                used = min(row_kwh[r], demand)
                row_used[r] = used
                if used > 0.0:
                    _cover(rem, lo, hi, member, used / demand, row_factor[r], cov, inst_emis)
                r += 1
                continue
            # pooled rows of this stage: one pool, shared pro rata
            q = r
            avail = 0.0
            weighted = 0.0
            while q < end and row_group[q] < 0 and row_stage[q] == row_stage[r]:
                avail += row_kwh[q]
                weighted += row_kwh[q] * row_factor[q]
                q += 1
            demand = _demand(rem, lo, hi, everyone)
            used = min(avail, demand)
            for i in range(r, q):
                row_used[i] = row_kwh[i] * (used / avail) if avail > 0.0 else 0.0
            if used > 0.0:
                _cover(rem, lo, hi, everyone, used / demand, weighted / avail, cov, inst_emis)
            r = q
        for h in range(lo, hi):
            for k in range(n_k):
                emis[h, k] = cov_pv[h, k] * pv_factor + inst_emis[h, k] + rem[h, k] * uncovered_factor[h]

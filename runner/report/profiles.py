"""Performance profiles (Dolan and Moré, 2002) and data profiles (Moré and Wild, 2009).

Both start from a cost table t[p, s]: what solver s spent on problem p before it solved it (steps
or seconds), inf where it never did (failed, diverged, or never reached the tolerance).

- Performance profile: r[p, s] = t[p, s] / min over solvers of t[p, :], and
  rho_s(tau) = share of problems with r[p, s] <= tau. rho_s(1) is how often s was (one of) the
  fastest; rho_s(tau) for large tau is how often it solved the problem at all. A problem no solver
  solved has r = inf for everyone: it counts against every solver.
- Data profile: d_s(alpha) = share of problems that s solved within a budget alpha,
  t[p, s] <= alpha. With the cost in optimiser steps this is Moré and Wild's unit for gradient
  methods (one step = one gradient = one "simplex gradient" of n + 1 function values).
"""
from __future__ import annotations

import numpy as np


def _table(costs) -> np.ndarray:
    t = np.asarray(costs, dtype=np.float64)
    if t.ndim != 2:
        raise ValueError(f"costs must be a (problems, solvers) table; got shape {t.shape}")
    if np.isnan(t).any() or (t < 0).any():
        raise ValueError("costs must be >= 0, with inf for a problem the solver did not solve")
    return t


def performance_ratios(costs) -> np.ndarray:
    """r[p, s] = t[p, s] / min_s t[p, s]; inf where s did not solve p (or nobody did).

    A cost of 0 (solved before spending anything) is a tie with any other zero and ranks first."""
    t = _table(costs)
    best = t.min(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = t / best
    r[np.isinf(t)] = np.inf
    r[(t == 0) & (best == 0)] = 1.0
    r[(t > 0) & (best == 0) & np.isfinite(t)] = np.inf  # another solver solved it at no cost
    return r


def performance_profile(costs, taus) -> np.ndarray:
    """rho[i, s]: the share of problems with r[p, s] <= taus[i]."""
    return _share_within(performance_ratios(costs), taus)


def data_profile(costs, budgets) -> np.ndarray:
    """d[i, s]: the share of problems solver s solved with a cost of at most budgets[i]."""
    return _share_within(_table(costs), budgets)


def _share_within(table: np.ndarray, limits) -> np.ndarray:
    """out[i, s]: the share of rows p with table[p, s] <= limits[i] (0 when there are no rows)."""
    limits = np.asarray(limits, dtype=np.float64)
    if table.shape[0] == 0:
        return np.zeros((len(limits), table.shape[1]))
    return (table[None, :, :] <= limits[:, None, None]).mean(axis=1)


def breakpoints(values, start: float) -> np.ndarray:
    """Where a profile steps: `start` and every distinct finite value above it (for plotting
    the exact step function rather than a sampled one)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v >= start)]
    return np.unique(np.concatenate([[start], v]))

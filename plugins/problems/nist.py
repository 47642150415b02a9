"""NIST StRD linear regression: certified data, and how many digits a fit gets right.

`problem=nist problem.dataset=Filip` (Norris, Pontius, NoInt1, NoInt2, Filip, Longley,
Wampler1 to Wampler5, shipped with the package) or `problem.path=FILE.dat` for any StRD file.
Metrics: the log relative error per coefficient, LRE = -log10(|estimate - certified| / |certified|)
(the absolute error where the certified value is 0), capped at 15 digits as NIST's 15-digit
values allow, and its minimum `min_lre`.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from plugins.problems.least_squares import LinearLeastSquares, polynomial_setup
from plugins.problems.strd import StrdError, read_strd
from runner.lre import lre

DATA = Path(__file__).resolve().parent / "nist_data"
DATASETS = ("Norris", "Pontius", "NoInt1", "NoInt2", "Filip", "Longley",
            "Wampler1", "Wampler2", "Wampler3", "Wampler4", "Wampler5")


class Nist(LinearLeastSquares):
    """Least squares on a NIST StRD dataset, in a well-conditioned internal basis."""

    preferred_dtype = "float64"  # trainer.dtype=auto: certified digits need float64

    def __init__(self, dataset: str = "Pontius", path: Optional[str] = None,
                 basis: Literal["chebyshev", "legendre", "monomial"] = "chebyshev", scale: bool = True,
                 loss: Literal["sse", "mse"] = "sse"):
        if path is None and dataset not in DATASETS:
            raise ValueError(f"problem.dataset={dataset!r} is not a shipped NIST StRD dataset; allowed: "
                             f"{', '.join(DATASETS)}, or problem.path=FILE.dat for your own.")
        try:
            self.data = read_strd(path if path is not None else DATA / f"{dataset}.dat")
        except StrdError as exc:
            raise ValueError(f"problem.path: {exc}") from None
        d = self.data
        degree = d.polynomial_degree
        if degree is not None:
            Phi, t, y_scale, M, o, X, M_exact, o_exact = polynomial_setup(d.x[:, 0], d.y, degree, basis, scale, d.intercept)
        else:
            Phi, t, y_scale, M, o, X, M_exact, o_exact = _linear_setup(d.design(), d.y, d.intercept, scale)
        self.setup(Phi, t, y_scale, M, o, X, d.y, M_exact, o_exact, loss=loss, names=[b for b, _, _ in d.terms])

    def metrics(self, params):
        B = self.reported(params)
        out = {f"lre_{name}": lre(b, self.data.certified[name]) for name, b in zip(self.names, B)}
        out["min_lre"] = min(out.values())
        ref = self.reference().B
        out["ref_min_lre"] = min(lre(b, self.data.certified[n]) for n, b in zip(self.names, ref))
        return {**out, **super().metrics(params)}

    def truth(self):
        """NIST's certified values, named as in `solution` (B0, B1, ...)."""
        return {name: self.data.certified[name] for name in self.names}

    def solution(self, params):
        B = self.reported(params)
        return {
            **{name: float(b) for name, b in zip(self.names, B)},
            "certified": {name: self.data.certified[name] for name in self.names},
            "reference": {name: float(b) for name, b in zip(self.names, self.reference().B)},
        }


def _linear_setup(X: np.ndarray, y: np.ndarray, intercept: bool, scale: bool):
    """Several predictors (Longley): each non-constant column mapped onto [-1, 1], y standardised."""
    k = X.shape[1]
    const = [j for j in range(k) if np.all(X[:, j] == 1.0)]
    mids, halves = np.zeros(k), np.ones(k)
    if scale:
        for j in range(k):
            if j in const:
                continue
            lo, hi = X[:, j].min(), X[:, j].max()
            mids[j], halves[j] = ((lo + hi) / 2, (hi - lo) / 2 or 1.0) if intercept else (0.0, max(abs(lo), abs(hi)) or 1.0)
    y_mean = float(y.mean()) if scale and intercept else 0.0
    y_scale = (float(np.sqrt(np.mean((y - y_mean) ** 2))) or 1.0) if scale else 1.0
    Phi = (X - mids) / halves
    # B_j = y_scale c_j / h_j for predictors; B_const = y_mean + y_scale (c_const - sum_j c_j m_j / h_j)
    M_exact = [[Fraction(0)] * k for _ in range(k)]
    ys = Fraction(y_scale)
    for j in range(k):
        if j in const:
            M_exact[j][j] = ys
        else:
            M_exact[j][j] = ys / Fraction(halves[j])
            for c in const:
                M_exact[c][j] = -ys * Fraction(mids[j]) / Fraction(halves[j])
    o_exact = [Fraction(y_mean) if j in const else Fraction(0) for j in range(k)]
    M = np.array([[float(v) for v in row] for row in M_exact])
    o = np.array([float(v) for v in o_exact])
    return Phi, (y - y_mean) / y_scale, y_scale, M, o, X, M_exact, o_exact

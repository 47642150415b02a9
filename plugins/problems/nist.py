"""NIST StRD regression: certified data, and how many digits a fit gets right.

`problem=nist problem.dataset=Filip` for the 11 linear sets (Norris, Pontius, NoInt1, NoInt2,
Filip, Longley, Wampler1 to Wampler5) and `problem.dataset=MGH09 problem.start=1|2` for the 27
nonlinear ones (Misra1a ... Bennett5), all shipped with the package, or `problem.path=FILE.dat`
for any StRD file of either kind. Metrics: the log relative error per coefficient,
LRE = -log10(|estimate - certified| / |certified|) (the absolute error where the certified value
is 0), capped at the digits NIST certifies (15 for the linear sets, 11 for the nonlinear ones),
and its minimum `min_lre`.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from runner_plugins.problems.formula import parse
from runner_plugins.problems.formula_fit import FormulaFit
from runner_plugins.problems.least_squares import LinearLeastSquares, polynomial_setup
from runner_plugins.problems.strd import StrdError, read_strd
from runner_plugins.problems.strd_nls import StrdNlsError, read_strd_nls
from runner.lre import lre

DATA = Path(__file__).resolve().parent / "nist_data"
NLS_DATA = Path(__file__).resolve().parent / "nist_nls_data"
DATASETS = ("Norris", "Pontius", "NoInt1", "NoInt2", "Filip", "Longley",
            "Wampler1", "Wampler2", "Wampler3", "Wampler4", "Wampler5")
# NIST's order: lower, average, higher difficulty.
NONLINEAR = ("Misra1a", "Chwirut2", "Chwirut1", "Lanczos3", "Gauss1", "Gauss2", "DanWood", "Misra1b",
             "Kirby2", "Hahn1", "Nelson", "MGH17", "Lanczos1", "Lanczos2", "Gauss3", "Misra1c", "Misra1d",
             "Roszman1", "ENSO", "MGH09", "Thurber", "BoxBOD", "Rat42", "MGH10", "Eckerle4", "Rat43", "Bennett5")
MAX_LRE_NONLINEAR = 11.0  # NIST certifies the nonlinear sets' values to 11 significant digits


def Nist(dataset: str = "Pontius", path: Optional[str] = None, start: int = 1,
         basis: Literal["chebyshev", "legendre", "monomial"] = "chebyshev", scale: bool = True,
         loss: Literal["sse", "mse"] = "sse"):
    """A NIST StRD dataset: linear (basis, scale apply) or nonlinear (start=1|2 picks NIST's start)."""
    if path is None and dataset not in DATASETS + NONLINEAR:
        raise ValueError(f"problem.dataset={dataset!r} is not a shipped NIST StRD dataset; allowed: linear "
                         f"{', '.join(DATASETS)}; nonlinear {', '.join(NONLINEAR)}; or problem.path=FILE.dat for your own.")
    nonlinear = dataset in NONLINEAR if path is None else _is_nonlinear_file(path)
    if nonlinear:
        if basis != "chebyshev" or not scale:
            raise ValueError("problem.basis and problem.scale apply to the linear StRD sets; a nonlinear set is fitted "
                             "in its own parameters (leave them at their defaults).")
        return NistNonlinear(path if path is not None else NLS_DATA / f"{dataset}.dat", start, loss)
    if start != 1:
        raise ValueError(f"problem.start={start} applies to the nonlinear StRD sets (NIST's Start 1 or 2); a linear "
                         "set starts from a draw of trainer.seed (leave problem.start at 1).")
    return NistLinear(dataset, path, basis, scale, loss)


def _is_nonlinear_file(path: str) -> bool:
    """StRD files say which procedure they certify in their header."""
    import os

    from runner.datafiles import open_data_file  # refuses a FIFO or a device before reading a byte

    with os.fdopen(open_data_file(path, "problem.path", "a NIST StRD .dat file"), "rb") as fh:
        head = fh.read(4096).decode("latin-1")
    return "Nonlinear Least Squares Regression" in head


class NistNonlinear(FormulaFit):
    """A nonlinear StRD set: NIST's model and data, from NIST's Start 1 or Start 2."""

    def __init__(self, path, start: int = 1, loss: str = "sse"):
        if start not in (1, 2) or isinstance(start, bool):
            raise ValueError(f"problem.start={start!r} is not allowed: NIST gives two starting points, 1 (far) and 2 (near).")
        try:
            self.data = read_strd_nls(path)
        except StrdNlsError as exc:
            raise ValueError(f"problem.path: {exc}") from None
        d = self.data
        self.start_number = start
        self.setup_fit(parse(d.model), parse(d.response), d.columns, d.parameters, d.starts[start - 1], loss)

    def metrics(self, params):
        out = {f"lre_{name}": lre(v, self.data.certified[name], MAX_LRE_NONLINEAR)
               for name, v in zip(self.parameters, self.values(params))}
        out["min_lre"] = min(out.values())
        fit = super().metrics(params)
        out["lre_rss"] = lre(fit["rss"], self.data.certified_rss, MAX_LRE_NONLINEAR)
        return {**out, **fit}

    def truth(self):
        """NIST's certified values, named as in `solution` (b1, b2, ...)."""
        return dict(self.data.certified)

    def solution(self, params):
        return {**super().solution(params), "certified": dict(self.data.certified),
                "start": dict(self.data.starts[self.start_number - 1]), "certified_rss": self.data.certified_rss}

    def optimum_loss(self):
        """The certified residual sum of squares (its mean for loss=mse)."""
        return self.data.certified_rss / (self.n if self.loss_kind == "mse" else 1)

    SOLVED_RTOL = 1e-7

    def target_loss(self):
        """Solved: the sum of squares within 1e-7 of the certified one, relative, plus the
        rounding float64 leaves in it (n (16 eps max|y|)^2: Lanczos1's certified RSS, 1.4e-25, is
        below what its residuals can resolve). Stricter than Moré and Wild's test from NIST's
        start, which a far start (Bennett5, BoxBOD) makes loose enough to pass at no digit."""
        optimum = self.optimum_loss()
        floor = self.n * (16 * float(np.finfo(np.float64).eps) * float(np.max(np.abs(self.target)))) ** 2
        return optimum * (1 + self.SOLVED_RTOL) + floor / (self.n if self.loss_kind == "mse" else 1)


class NistLinear(LinearLeastSquares):
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

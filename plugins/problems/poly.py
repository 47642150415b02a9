"""Polynomial regression: recover a polynomial's coefficients from samples (the tutorial's problem).

The fit runs in a well-conditioned internal basis (x mapped onto [-1, 1], y standardised, Chebyshev
polynomials by default), and the solution is reported in the ordinary monomial basis of the
original x, highest power first (numpy.poly1d order). `basis=monomial scale=false` fits the raw
coefficients directly, as the tutorial did.

Loss (`loss`): `scaled` (the default) is the mean squared error of the standardised fit,
sse / (n var(y)): 1 - R^2, the fraction of y's variance left unexplained (1 at the start
c = 0), whatever y's and x's units and the number of samples; `sse` is the tutorial's sum of
squared errors in y's units, `mse` its mean. The sse is logged in every case (metric `sse`).
"""
from __future__ import annotations

import csv
import math
from typing import Literal, Optional

import numpy as np
import torch

from runner_plugins.problems.least_squares import LinearLeastSquares, polynomial_setup
from runner.datafiles import read_data_text

TUTORIAL_COEFFICIENTS = [1.0, 2.0, 3.0]  # x^2 + 2x + 3
MAX_DEGREE = 1000  # the design alone costs O(n degree^2); monomial coefficients of such a fit mean little
_fit_figure = None  # (figure, axes, lines): see Poly.figures


class Poly(LinearLeastSquares):
    """Least-squares polynomial fit. Loss: scaled (1 - R^2), or the sum (sse) or mean (mse) of
    squared errors in y's units."""

    def __init__(
        self,
        coefficients: Optional[list[float]] = tuple(TUTORIAL_COEFFICIENTS),  # type: ignore[assignment]  # the value used: --cfg job shows it
        degree: Optional[int] = None,
        n_samples: int = 20,
        x_std: float = 5.0,
        noise: float = 0.0,
        loss: Literal["scaled", "sse", "mse"] = "scaled",
        data: Optional[str] = None,
        basis: Literal["chebyshev", "legendre", "monomial"] = "chebyshev",
        scale: bool = True,
        data_seed: int = 0,
    ):
        if coefficients is not None and len(coefficients) == 0:
            raise ValueError("problem.coefficients must list at least one coefficient (highest power first).")
        if n_samples < 1:
            raise ValueError(f"problem.n_samples must be at least 1; got {n_samples}.")
        if x_std <= 0 or noise < 0:
            raise ValueError(f"problem.x_std must be > 0 and problem.noise >= 0; got {x_std} and {noise}.")
        if data is not None:
            x, y = read_xy_csv(data)
            # a user who knows the truth of their data may give it; the tutorial's default is not theirs
            truth = None if coefficients is None or list(coefficients) == TUTORIAL_COEFFICIENTS else coefficients
        else:
            truth = list(coefficients) if coefficients is not None else TUTORIAL_COEFFICIENTS
            g = np.random.default_rng(data_seed)
            x = g.normal(0.0, x_std, n_samples)
            y = np.polyval(truth, x) + (g.normal(0.0, noise, n_samples) if noise else 0.0)
        self.degree = degree if degree is not None else (len(truth) - 1 if truth else 2)
        if not 0 <= self.degree <= MAX_DEGREE:
            raise ValueError(f"problem.degree must be from 0 to {MAX_DEGREE}; got {self.degree}.")
        if len(x) < self.degree + 1:
            raise ValueError(
                f"A degree-{self.degree} fit needs at least {self.degree + 1} samples; the data have {len(x)}."
            )
        self.x, self.y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        self.true_coefficients = None if truth is None else np.asarray(truth, np.float64)
        Phi, t, y_scale, M, o, X, M_exact, o_exact = polynomial_setup(self.x, self.y, self.degree, basis, scale)
        self.setup(Phi, t, y_scale, M, o, X, self.y, M_exact, o_exact, loss=loss)
        self.basis = basis
        lo, hi = (float(self.x.min()), float(self.x.max())) if scale and self.x.max() > self.x.min() else (-1.0, 1.0)
        self.x_map = ((lo + hi) / 2, (hi - lo) / 2)  # the internal variable: (x - mid) / half, in [-1, 1]

    # -- large data: one fused pass over x and t instead of the N x (degree+1) design matrix ---------
    FUSED_MIN_ROWS = 1_000_000

    def fused(self, dtype) -> bool:
        """float64 runs on large data: float32 runs use the sufficient statistics instead, which
        read no data at all per step (least_squares.py)."""
        return self.n >= self.FUSED_MIN_ROWS and dtype != torch.float32

    def compile_pays(self, device, dtype) -> bool:
        """trainer.compile=auto: compiled, the fused pass reads x and t once per step."""
        return self.fused(dtype)

    def _to(self, device, dtype) -> None:
        super()._to(device, dtype)
        if self.fused(dtype) and "x_int" not in self._tensors:
            mid, half = self.x_map
            self._tensors["x_int"] = torch.as_tensor((self.x - mid) / half, dtype=dtype, device=device)

    def loss(self, params):
        # Only inside torch.compile (trainer.compile): eagerly the recurrence's temporaries make it
        # slower than the design-matrix product; compiled it is one pass, 35x faster (BENCHMARKS.md).
        if "x_int" in self._tensors and torch.compiler.is_compiling():
            return self.fused_loss(params)
        return super().loss(params)

    def fused_loss(self, params):
        """The same loss from x and t alone, never forming the design matrix."""
        r = self.series(params["c"], self._tensors["x_int"]) - self._tensors["t"]
        return self._scaled((r * r).sum())

    def series(self, c, u):
        """sum_k c_k P_k(u) by the basis's recurrence: elementwise code that torch.compile fuses
        into one pass (eagerly, each term is a temporary of N values)."""
        if self.basis == "monomial":  # Horner
            out = c[-1] * torch.ones_like(u)
            for k in range(len(c) - 2, -1, -1):
                out = out * u + c[k]
            return out
        prev, cur = torch.ones_like(u), u
        out = c[0] * prev + (c[1] * cur if len(c) > 1 else 0)
        for k in range(2, len(c)):
            if self.basis == "chebyshev":
                prev, cur = cur, 2 * u * cur - prev
            else:  # legendre
                prev, cur = cur, ((2 * k - 1) * u * cur - (k - 1) * prev) / k
            out = out + c[k] * cur
        return out

    def metrics(self, params):
        coef = self.coefficients(params)
        out = {"rmse": float(np.sqrt(np.mean((np.polyval(coef, self.x) - self.y) ** 2))), **super().metrics(params)}
        if self.true_coefficients is not None:
            n = max(len(coef), len(self.true_coefficients))
            pad = lambda c: np.concatenate([np.zeros(n - len(c)), c])  # noqa: E731
            out["coef_error"] = float(np.max(np.abs(pad(coef) - pad(self.true_coefficients))))
        return out

    def truth(self):
        """The coefficients the data were drawn from (reports set them beside the fitted ones)."""
        return {"coefficients": [float(c) for c in self.true_coefficients]} if self.true_coefficients is not None else {}

    def solution(self, params):
        out = {"coefficients": [float(c) for c in self.coefficients(params)],
               "reference": [float(c) for c in self.reference().B[::-1]]}
        if self.true_coefficients is not None:
            out["truth"] = [float(c) for c in self.true_coefficients]
        return out

    def figures(self, params):
        """fit.png: the data, the fitted polynomial and the truth where known. The Figure is built
        once per process and redrawn with each run's data (building axes and ticks anew cost more
        than a short run's loop); save it before the next call."""
        global _fit_figure
        if _fit_figure is None:
            from matplotlib.figure import Figure

            fig = Figure(figsize=(6, 4))
            fig.subplots_adjust(left=0.13, right=0.97, top=0.9, bottom=0.12)
            ax = fig.add_subplot()
            lines = (ax.plot([], [], "o", ms=4)[0], ax.plot([], [], "-")[0], ax.plot([], [], "--", lw=1)[0])
            ax.set_xlabel("x")
            ax.set_ylabel("y")
            _fit_figure = fig, ax, lines
        fig, ax, (data, fit, truth) = _fit_figure
        coef = self.coefficients(params)
        xs = np.linspace(self.x.min(), self.x.max(), 400)
        data.set_data(self.x, self.y)
        data.set_label(f"data ({len(self.x)} samples)")
        fit.set_data(xs, np.polyval(coef, xs))
        fit.set_label("fit")
        known = self.true_coefficients is not None
        truth.set_data(*((xs, np.polyval(self.true_coefficients, xs)) if known else ([], [])))
        truth.set_label("truth" if known else "_nolegend_")
        ax.relim()
        ax.autoscale_view()
        ax.set_title("Polynomial fit: " + _format_poly(coef), fontsize=10, y=1.0)  # given height: no search
        ax.legend()
        return {"fit": fig}

    def coefficients(self, params) -> np.ndarray:
        """The fitted polynomial in the monomial basis of x, highest power first."""
        return self.reported(params)[::-1].copy()


CSV_LIMIT = 512 << 20  # parsed in Python (about 10 s a 100 MB here): larger data belong in memory, not in a CSV


def read_xy_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Columns x and y from a CSV file with a header; every value must be a finite number."""
    allowed = "a CSV file with a header row naming columns 'x' and 'y', one finite number per cell"
    try:  # a FIFO, a device, a directory or a file over the limit is refused before a byte is read
        text = read_data_text(path, "problem.data", allowed, limit=CSV_LIMIT, encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"problem.data={path!r} cannot be read ({exc.__class__.__name__}: {exc}); expected {allowed}.") from None
    rows = list(csv.reader(line for line in text.splitlines() if line.strip()))
    if not rows:
        raise ValueError(f"problem.data={path!r} is empty; expected {allowed}.")
    header = [h.strip().lower() for h in rows[0]]
    if "x" not in header or "y" not in header:
        raise ValueError(f"problem.data={path!r} has header {rows[0]}, without columns 'x' and 'y'; expected {allowed}.")
    ix, iy = header.index("x"), header.index("y")
    xs, ys = [], []
    for lineno, row in enumerate(rows[1:], start=2):
        try:
            xv, yv = float(row[ix]), float(row[iy])
        except (ValueError, IndexError):
            raise ValueError(f"problem.data={path!r}, row {lineno}: {','.join(row)!r} does not hold numbers in columns x and y; expected {allowed}.") from None
        if not (math.isfinite(xv) and math.isfinite(yv)):
            raise ValueError(f"problem.data={path!r}, row {lineno}: values must be finite; got x={row[ix]}, y={row[iy]}.")
        xs.append(xv)
        ys.append(yv)
    if not xs:
        raise ValueError(f"problem.data={path!r} has a header but no data rows; expected {allowed}.")
    return np.array(xs), np.array(ys)


def _format_poly(coef) -> str:
    n = len(coef) - 1
    terms = [f"{c:.4g}" + (f"x^{n - i}" if n - i > 1 else ("x" if n - i == 1 else "")) for i, c in enumerate(coef)]
    return " + ".join(terms).replace("+ -", "- ")

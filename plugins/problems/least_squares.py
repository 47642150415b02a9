"""The engine shared by every linear least-squares problem (poly, nist, puzzle, linsys).

A problem is minimised over internal coefficients c in a well-conditioned basis, where the data
are y = y_mean + y_scale * t (t unit-free). The loss the optimiser sees is one of
    loss="scaled":  mean_i (Phi c - t)_i^2                 = sse / (n y_scale^2): unit-free
    loss="sse":     y_scale^2 * sum_i (Phi c - t)_i^2      = sse, the data's own units
    loss="mse":     y_scale^2 * mean_i (Phi c - t)_i^2     = sse / n
where sse is the sum of squared errors of the user's model in the data's units (always logged,
metric `sse`). All three have the same minimiser; only "scaled" has a curvature that does not
grow with the data's units or their number (Phi'Phi/n has O(1) eigenvalues), so that an
optimiser's default step size means the same on any data.
and reported as coefficients B = M c + o of the user's model (monomials of x, NIST's B0..Bk, the
unknowns of a system). Beside the iterative solution the engine computes a reference: a direct
least-squares solve in float64 (SVD), refined with residuals y - X B computed exactly in rational
arithmetic for small problems, so it carries the digits the data allow.

Reading B for a float64 c through M can amplify c's rounding by M's condition (about six digits
for Wampler's centred basis). The reading is therefore anchored at the reference:
B(c) = B_ref + M (c - c_ref), the same affine map, evaluated where it does not cancel.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np
import torch

# The exact refinement's work grows with the entries of X and of M and with the bits of each
# (x^p carries about p times 53 bits): cost = (n k + k^2) * max(1, degree). Measured here: 25,000
# units take about 2 s (linsys 100 x 100, poly degree 20 on 42 samples); 200,000 take 20 s and
# poly degree 80 half a minute. Above the limit the reference is refined in float64 instead
# (metric `ref_exact` = 0), where the exact digits would cost more than the run.
EXACT_REFINEMENT_LIMIT = 30_000


def exact_refinement_pays(n: int, k: int, degree: int = 1) -> bool:
    return (n * k + k * k) * max(1, degree) <= EXACT_REFINEMENT_LIMIT
GRAM_MIN_ROWS = 1024  # below this a single run's residual form takes fewer kernel launches
GRAM_BLOCK = 1 << 25  # entries of Phi per block when the sufficient statistics are made (256 MB in float64)


@dataclass
class Reference:
    c: np.ndarray  # internal coefficients of the reference solution
    B: np.ndarray  # reported coefficients, refined
    rank: int
    full_rank: bool
    exact: bool = False  # refined with exact rational residuals (else float64, or LSQR alone)


class LinearLeastSquares:
    """Base class: a subclass calls `self.setup(...)` in its constructor."""

    def setup(self, Phi, t: np.ndarray, y_scale: float, M: np.ndarray, o: np.ndarray,
              X, y: np.ndarray, M_exact=None, o_exact=None, loss: str = "sse",
              names: Optional[Sequence[str]] = None, sparse: bool = False) -> None:
        """Phi, t: internal design and target; y = y_mean + y_scale * t. M, o: B = M c + o.
        X, y: the user's design and data (for exact residuals); M_exact, o_exact: Fractions."""
        self.Phi, self.t, self.y_scale, self.M, self.o = Phi, np.asarray(t, np.float64), float(y_scale), M, o
        self.X, self.y, self.M_exact, self.o_exact = X, y, M_exact, o_exact
        self.loss_kind, self.names, self.sparse = loss, list(names or []), sparse
        self.n = Phi.shape[0]
        # loss = loss_factor * ||Phi c - t||^2 (see the module doc)
        factors = {"scaled": 1.0 / self.n, "sse": self.y_scale**2, "mse": self.y_scale**2 / self.n}
        if loss not in factors:
            raise ValueError(f"problem.loss must be one of {', '.join(factors)}; got {loss!r}.")
        self.loss_factor = factors[loss]
        self._tensors: dict = {}  # what a step reads, for the current (device, dtype)
        self._sets: dict = {}  # every (device, dtype) made so far: {key: tensors}
        self._reference: Optional[Reference] = None

    # -- the problem contract ---------------------------------------------------------------
    def initial_params(self, generator: torch.Generator, device, dtype):
        self._to(device, dtype)
        start = torch.randn(self.Phi.shape[1], generator=generator, dtype=torch.float64)
        return {"c": start.to(device=device, dtype=dtype)}

    def loss(self, params):
        if "G" in self._tensors:
            c = params["c"].to(torch.float64)
            sse = c @ (self._tensors["G"] @ c) - 2 * (self._tensors["h"] @ c) + self._tensors["tt"]
            return self._scaled(sse).to(params["c"].dtype)
        residual = self._product(params["c"]) - self._tensors["t"]
        return self._scaled(residual.square().sum())

    def _product(self, c):
        """Phi c, or for replicas (R, k) -> (R, n). Sparse: through SparseProduct, whose backward
        multiplies by the transpose made once (autograd's own would convert Phi' every step)."""
        if self.sparse:
            return SparseProduct.apply(c, self._tensors["Phi"], self._tensors["PhiT"])
        return self._tensors["Phi"] @ c if c.dim() == 1 else c @ self._tensors["Phi"].T

    def work_per_step(self, dtype) -> int:
        """About how many numbers one step reads (trainer.device=auto keeps small ones on the CPU):
        the k x k statistics in the Gram form, the nonzeros of a sparse Phi, else all of Phi."""
        k = self.Phi.shape[1]
        if self._gram_form(dtype):
            return k * k
        return int(self.Phi.nnz) if self.sparse else self.n * k

    def _gram_form(self, dtype) -> bool:
        return dtype == torch.float32 and not self.sparse and self.n >= GRAM_MIN_ROWS

    def residuals(self, params):
        """sqrt(loss_factor) (Phi c - t): loss(params) == sum(residuals**2); for loss=sse the
        residuals of the user's model, y_scale (Phi c - t). Used by optim=lm."""
        c = params["c"]
        current = self._tensors
        self._to(c.device, c.dtype)  # optim=lm works in float64 on float32 parameters: its own set
        try:
            if "t" in self._tensors:
                fitted, t = self._product(c), self._tensors["t"]
            else:  # the Gram form keeps Phi and t on the host: read them for this call only
                fitted = torch.as_tensor(self.Phi, dtype=c.dtype, device=c.device) @ c
                t = torch.as_tensor(self.t, dtype=c.dtype, device=c.device)
        finally:
            if "key" in current:  # the loop's loss keeps the parameters' dtype
                self._tensors = current
        return (fitted - t) * self.loss_factor**0.5

    def batched_loss(self, params):
        """R replicas at once (trainer.replicas): c is (R, k); one matrix product for all, where
        torch.func.vmap would pay its per-call overhead on every step of a small problem."""
        if "G" in self._tensors:  # few rows: the residual form (below) has fewer kernels
            c = params["c"].to(torch.float64)
            sse = ((c @ self._tensors["G"]) * c).sum(1) - 2 * (c @ self._tensors["h"]) + self._tensors["tt"]
            return self._scaled(sse).to(params["c"].dtype)
        scale = self.loss_factor
        if self.sparse:  # never densified: (R, n) residuals through the sparse product
            residual = self._product(params["c"]) - self._tensors["t"]
            return residual.square().sum(1) * scale
        if "PhiT" not in self._tensors:  # contiguous: the backward through a transposed view is 20x slower
            dense = self._tensors["Phi"]
            self._tensors["PhiT"], self._tensors["PhiD"] = dense.T.contiguous(), dense
        return _ReplicaSSE.apply(params["c"], self._tensors["PhiT"], self._tensors["PhiD"], self._tensors["t"], scale)

    def _scaled(self, sse):
        """The loss from the internal sum of squares ||Phi c - t||^2."""
        return sse * self.loss_factor

    def sse(self, params) -> float:
        """The sum of squared errors of the user's model, in the data's units (float64)."""
        r = self.Phi @ self.internal(params) - self.t
        return float(self.y_scale**2 * np.dot(r, r))

    def metrics(self, params) -> dict[str, float]:
        ref = self.reference()
        c = self.internal(params)
        diff = c - ref.c
        if not ref.full_rank:  # the solutions form an affine set: distance to it
            diff = np.linalg.lstsq(self.dense_Phi(), self.dense_Phi() @ diff, rcond=None)[0]
        return {"sse": self.sse(params), "ref_distance": float(np.max(np.abs(self.M @ diff))) if diff.size else 0.0,
                "rank": float(ref.rank), "ref_exact": float(ref.exact)}

    # How solved a run is (reports): within SOLVED_RTOL of the way from c = 0 down to the optimum.
    SOLVED_RTOL = 1e-7  # Moré and Wild's most demanding level, tau = 1e-7, with the zero start as x0

    def optimum_loss(self):
        """The least loss there is: the loss at the reference solution (None when it is skipped)."""
        if not getattr(self, "with_reference", True):
            return None
        if getattr(self, "_optimum", None) is None:  # a pass over the data: once (target_loss asks too)
            ref = self.reference()
            Phi = self.Phi if hasattr(self.Phi, "tocsr") else np.asarray(self.Phi, np.float64)
            self._optimum = float(self._scaled(float(np.sum((Phi @ ref.c - self.t) ** 2))))
        return self._optimum

    def target_loss(self):
        """Solved: loss - optimum <= SOLVED_RTOL * (loss at c = 0 - optimum), a test that does not
        depend on the data's scale or the starting point."""
        optimum = self.optimum_loss()
        if optimum is None:
            return None
        at_zero = float(self._scaled(float(self.t @ self.t)))
        return optimum + self.SOLVED_RTOL * max(at_zero - optimum, 0.0)

    def reference_is_cheap(self) -> bool:
        return self.Phi.shape[0] * self.Phi.shape[1] <= 50_000_000

    # -- helpers for subclasses -----------------------------------------------------------
    def internal(self, params) -> np.ndarray:
        return params["c"].detach().to("cpu", torch.float64).numpy()

    def reported(self, params) -> np.ndarray:
        """B for the current parameters, read relative to the reference (see the module doc)."""
        ref = self.reference()
        return ref.B + self.M @ (self.internal(params) - ref.c)

    def dense_Phi(self) -> np.ndarray:
        return self.Phi.toarray() if hasattr(self.Phi, "toarray") else self.Phi

    def reference(self) -> Reference:
        if self._reference is None:
            self._reference = self._solve()
        return self._reference

    def _solve(self) -> Reference:
        if hasattr(self.Phi, "tocsr") or not self.reference_is_cheap():
            return self._solve_iteratively()
        Phi = np.asarray(self.dense_Phi(), np.float64)
        c, _, rank, _ = np.linalg.lstsq(Phi, self.t, rcond=None)
        full_rank = bool(rank == Phi.shape[1])
        degree = max(self.X.powers) if isinstance(self.X, PolynomialDesign) and self.X.powers else 1
        exact = (self.M_exact is not None and not hasattr(self.X, "toarray")
                 and exact_refinement_pays(self.X.shape[0], self.X.shape[1], degree))
        if exact:
            c, B = self._refine_exactly(Phi, c, full_rank)
        else:  # one refinement step with a float64 residual
            B = self.M @ c + self.o
            with np.errstate(all="ignore"):  # x^p overflows float64 for a high degree: no refinement then
                dc = np.linalg.lstsq(Phi, (self.y - self.X @ B) / self.y_scale, rcond=None)[0]
            if np.all(np.isfinite(dc)):
                c, B = c + dc, B + self.M @ dc
        return Reference(c=c, B=np.asarray(B, np.float64), rank=int(rank), full_rank=full_rank, exact=exact)

    def _solve_iteratively(self) -> Reference:
        """Sparse or very large: LSQR (scipy), which needs only products with Phi."""
        from scipy.sparse.linalg import lsqr

        result = lsqr(self.Phi, self.t, atol=1e-14, btol=1e-14, iter_lim=20 * self.Phi.shape[1])
        c = result[0]
        k = self.Phi.shape[1]
        return Reference(c=c, B=self.M @ c + self.o, rank=k, full_rank=True)

    def _refine_exactly(self, Phi: np.ndarray, c: np.ndarray, full_rank: bool, steps: int = 6):
        """Refine on the normal equations with their residual g = M^T X^T (y - X B) computed in
        exact rational arithmetic: g vanishes at the least-squares solution however large the
        residual y - X B stays (Wampler5), so each step gains digits instead of re-injecting
        float64 error. The correction is solved through Phi's R factor (well conditioned)."""
        k = len(c)
        M, o = self.M_exact, self.o_exact
        if isinstance(self.X, PolynomialDesign) and self.X.x is not None:
            X = [[Fraction(v) ** p for p in self.X.powers] for v in self.X.x]
        else:
            X = [[Fraction(v) for v in row] for row in self.X]
        y = [Fraction(v) for v in self.y]
        if full_rank:
            R = np.linalg.qr(Phi, mode="r")
            solve = lambda g: np.linalg.solve(R, np.linalg.solve(R.T, g))  # noqa: E731
        else:
            pinv = np.linalg.pinv(Phi.T @ Phi)
            solve = lambda g: pinv @ g  # noqa: E731
        B = [sum((M[i][j] * Fraction(c[j]) for j in range(k)), o[i]) for i in range(len(o))]
        scale2 = self.y_scale**2
        for _ in range(steps):
            r = [yi - sum((a * b for a, b in zip(row, B)), Fraction(0)) for row, yi in zip(X, y)]
            gB = [sum((row[i] * ri for row, ri in zip(X, r)), Fraction(0)) for i in range(len(B))]
            gc = np.array([float(sum((M[i][j] * gB[i] for i in range(len(B))), Fraction(0))) for j in range(k)])
            dc = solve(gc) / scale2
            if not np.any(dc):
                break
            c = c + dc
            B = [b + sum((M[i][j] * Fraction(dc[j]) for j in range(k)), Fraction(0)) for i, b in enumerate(B)]
        return c, [float(b) for b in B]

    def _to(self, device, dtype) -> None:
        """Put on the device what a step reads, and only that: the Gram form's statistics (Phi and
        t stay on the host), or Phi (and, sparse, its transpose) and t."""
        key = (str(device), dtype)
        if self._tensors.get("key") == key:
            return
        if key in self._sets:  # made before (optim=lm's float64 residuals beside a float32 loss)
            self._tensors = self._sets[key]
            return
        self._tensors = self._sets[key] = {"key": key}
        if self._gram_form(dtype):
            self._tensors.update(self._gram(device))
            return
        if self.sparse:  # CSR: A c and A^T r without densifying; the transpose made once, here
            self._tensors["Phi"] = _csr(self.Phi, device, dtype)
            self._tensors["PhiT"] = _csr(self.Phi.T.tocsr(), device, dtype)
        else:
            self._tensors["Phi"] = torch.as_tensor(self.Phi, dtype=dtype, device=device)
        self._tensors["t"] = torch.as_tensor(self.t, dtype=dtype, device=device)

    def _gram(self, device) -> dict:
        """float32 runs evaluate ||Phi c - t||^2 as c'Gc - 2h'c + t't from G = Phi'Phi, h = Phi't and
        t't accumulated once in float64: a step then costs O(k^2) whatever N is (1e7 samples: a
        k x k product instead of two passes over an N x k matrix), and the loss is more precise
        than float32 residuals would give. float64 runs keep the residual form: its cancellation
        near the optimum would cost the certified digits (NIST) the residual form keeps.
        Made on the device in blocks of Phi's rows, each moved in Phi's own precision: never a
        float64 copy of a large Phi, never all of Phi on the device."""
        k = self.Phi.shape[1]
        f64 = dict(dtype=torch.float64, device=device)
        G, h, tt = torch.zeros((k, k), **f64), torch.zeros(k, **f64), torch.zeros((), **f64)
        rows = max(1, GRAM_BLOCK // k)
        for i in range(0, self.n, rows):
            block = torch.as_tensor(np.ascontiguousarray(self.Phi[i : i + rows]), device=device).to(torch.float64)
            tb = torch.as_tensor(self.t[i : i + rows], **f64)
            G.addmm_(block.T, block)
            h.addmv_(block.T, tb)
            tt += tb @ tb
        return {"G": G, "h": h, "tt": tt}


def _csr(m, device, dtype) -> torch.Tensor:
    """A scipy CSR matrix as a torch CSR tensor on the device."""
    return torch.sparse_csr_tensor(
        torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64)),
        torch.from_numpy(m.data), size=m.shape, dtype=dtype, device=device)


class SparseProduct(torch.autograd.Function):
    """Phi c for a CSR Phi, with the gradient Phi' g through PhiT, the transpose made once.
    Autograd's own backward of a CSR product multiplies by Phi.t(), a CSC view that it converts
    back to CSR on every step: on the CPU, 110-175 ms a step at 2e6 nonzeros against 2 ms forward.
    c is (k,) for one run or (R, k) for R replicas, whose result is (R, n)."""

    @staticmethod
    def forward(ctx, c, Phi, PhiT):
        ctx.save_for_backward(PhiT)
        return Phi @ c if c.dim() == 1 else (Phi @ c.T).T

    @staticmethod
    def backward(ctx, grad):
        (PhiT,) = ctx.saved_tensors
        return (PhiT @ grad if grad.dim() == 1 else (PhiT @ grad.T).T), None, None


class _ReplicaSSE(torch.autograd.Function):
    """scale * ||c_r Phi' - t||^2 for each replica r, with its analytic gradient
    2 scale (c_r Phi' - t) Phi: three kernels backward where autograd's graph of the same
    expression takes twice as many, which is most of a small problem's replica step."""

    @staticmethod
    def forward(ctx, c, PhiT, Phi, t, scale):
        residual = torch.addmm(t, c, PhiT, beta=-1)  # c Phi' - t, (R, n), one kernel
        ctx.save_for_backward(residual, Phi)
        ctx.scale = scale
        return torch.linalg.vecdot(residual, residual) * scale

    @staticmethod
    def backward(ctx, grad):
        residual, Phi = ctx.saved_tensors
        # Scaled after the product: (R, k) values instead of (R, n).
        return (residual @ Phi) * (grad * (2 * ctx.scale))[:, None], None, None, None, None


# -- polynomial bases ---------------------------------------------------------------------------
BASES = {"monomial": np.polynomial.Polynomial, "chebyshev": np.polynomial.Chebyshev, "legendre": np.polynomial.Legendre}


def basis_to_monomial_exact(basis: str, lo: float, hi: float, degree: int) -> list[list[Fraction]]:
    """M with M[i][k] = coefficient of x^i in basis polynomial k of t = (x - mid) / half, exactly."""
    mid, half = (Fraction(lo) + Fraction(hi)) / 2, (Fraction(hi) - Fraction(lo)) / 2
    t = [-mid / half, 1 / half]  # t as a polynomial in x, low power first

    def mul(p, q):
        out = [Fraction(0)] * (len(p) + len(q) - 1)
        for i, a in enumerate(p):
            for j, b in enumerate(q):
                out[i + j] += a * b
        return out

    def add(p, q, a=Fraction(1), b=Fraction(1)):
        n = max(len(p), len(q))
        p, q = p + [Fraction(0)] * (n - len(p)), q + [Fraction(0)] * (n - len(q))
        return [a * x + b * y for x, y in zip(p, q)]

    polys = [[Fraction(1)], t]
    for k in range(2, degree + 1):
        if basis == "monomial":
            polys.append(mul(polys[-1], t))
        elif basis == "chebyshev":  # T_k = 2 t T_{k-1} - T_{k-2}
            polys.append(add(mul([2 * a for a in t], polys[-1]), polys[-2], b=Fraction(-1)))
        elif basis == "legendre":  # k P_k = (2k-1) t P_{k-1} - (k-1) P_{k-2}
            polys.append(add(mul(t, polys[-1]), polys[-2], Fraction(2 * k - 1, k), Fraction(-(k - 1), k)))
        else:
            raise ValueError(f"unknown basis {basis!r}; allowed: {', '.join(BASES)}")
    polys = polys[: degree + 1]
    return [[(polys[k][i] if i < len(polys[k]) else Fraction(0)) for k in range(degree + 1)] for i in range(degree + 1)]


def basis_to_monomial_float(basis: str, lo: float, hi: float, degree: int) -> np.ndarray:
    """basis_to_monomial_exact in float64 (numpy's convolutions: a degree-300 map in milliseconds
    where the exact one takes minutes), for fits whose reference is not refined exactly."""
    from numpy.polynomial import polynomial as P

    if basis not in BASES:
        raise ValueError(f"unknown basis {basis!r}; allowed: {', '.join(BASES)}")
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    t = np.array([-mid / half, 1 / half])
    polys = [np.array([1.0]), t]
    for k in range(2, degree + 1):
        if basis == "monomial":
            polys.append(P.polymul(polys[-1], t))
        elif basis == "chebyshev":
            polys.append(P.polysub(P.polymul(2 * t, polys[-1]), polys[-2]))
        else:
            polys.append(P.polysub(P.polymul(t, polys[-1]) * ((2 * k - 1) / k), polys[-2] * ((k - 1) / k)))
    M = np.zeros((degree + 1, degree + 1))
    for k, p in enumerate(polys[: degree + 1]):
        M[: len(p), k] = p
    return M


def polynomial_setup(x: np.ndarray, y: np.ndarray, degree: int, basis: str, scale: bool, intercept: bool = True):
    """(Phi, t, y_mean, y_scale, M, o, X, M_exact, o_exact) for y ~ sum_k B_k x^k.

    `scale`: x mapped onto [-1, 1] and y standardised. Without an intercept the model has no
    constant term (NIST's NoInt sets): x is only scaled, not shifted, and y not centred."""
    lo, hi = float(x.min()), float(x.max())
    powers = list(range(0 if intercept else 1, degree + 1))
    if not intercept:
        half = max(abs(lo), abs(hi)) if scale else 1.0
        lo, hi = (-half, half) if half > 0 else (-1.0, 1.0)
    elif not (scale and hi > lo):
        lo, hi = -1.0, 1.0
    y_mean = float(y.mean()) if scale and intercept else 0.0
    y_scale = (float(np.sqrt(np.mean((y - y_mean) ** 2))) or 1.0) if scale else 1.0
    t_x = (x - (lo + hi) / 2) / ((hi - lo) / 2)
    # Columns used: all basis polynomials, or for no intercept the pure powers t^k, k >= 1.
    Phi = np.stack([BASES[basis].basis(k)(t_x) if intercept else t_x**k for k in powers], 1)
    kind = basis if intercept else "monomial"
    if exact_refinement_pays(len(x), len(powers), degree):  # the exact map is only worth its cost there
        full = basis_to_monomial_exact(kind, lo, hi, degree)  # (degree+1)^2 Fractions
        M_exact = [[full[i][k] * Fraction(y_scale) for k in powers] for i in powers]
        o_exact = [Fraction(y_mean) if i == 0 else Fraction(0) for i in powers]
        M = np.array([[float(v) for v in row] for row in M_exact])
    else:
        M_exact = o_exact = None
        M = basis_to_monomial_float(kind, lo, hi, degree)[np.ix_(powers, powers)] * y_scale
    o = np.array([y_mean if i == 0 else 0.0 for i in powers])
    with np.errstate(over="ignore"):  # x^p may overflow for a high degree: the float64 refinement is then skipped
        X = PolynomialDesign(np.stack([x**k for k in powers], 1), x, powers)
    return Phi, (y - y_mean) / y_scale, y_scale, M, o, X, M_exact, o_exact


class PolynomialDesign(np.ndarray):
    """The float64 design X[i, k] = x_i^p_k, which also knows its exact rational powers:
    float64 rounds x^10, and on Filip that rounding alone costs six digits."""

    def __new__(cls, X, x, powers):
        obj = np.asarray(X).view(cls)
        obj.x, obj.powers = np.asarray(x), list(powers)
        return obj

    def __array_finalize__(self, obj):
        self.x, self.powers = getattr(obj, "x", None), getattr(obj, "powers", None)

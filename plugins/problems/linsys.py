"""Least squares for A x = b with A and b read from files (.npy, .csv, Matrix Market .mtx).

Overdetermined, square and underdetermined systems alike; rank deficiency is reported with the
minimum-norm solution beside the found one (metrics `rank`, `min_norm_distance`). A sparse A
(.mtx, or a scipy .npz) stays sparse, on the device too. Columns are scaled to unit norm
internally (x = D^-1 c), which evens out badly scaled unknowns; `scale=false` fits x directly.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from plugins.problems.least_squares import LinearLeastSquares

FORMATS = ".npy, .csv (comma-separated numbers), .mtx (Matrix Market) or .npz (scipy.sparse.save_npz)"


class Linsys(LinearLeastSquares):
    def __init__(self, A: str = "???", b: str = "???", loss: Literal["sse", "mse"] = "sse", scale: bool = True,
                 reference: Optional[bool] = None):
        """reference: compute the direct-solve reference (null: when A has at most 5e7 entries)."""
        A_m = read_matrix(A, "problem.A")
        b_v = read_matrix(b, "problem.b")
        b_v = np.asarray(b_v.toarray() if hasattr(b_v, "toarray") else b_v, np.float64)
        b_v = b_v.reshape(-1) if b_v.ndim == 2 and 1 in b_v.shape else b_v
        if b_v.ndim != 1 or b_v.shape[0] != A_m.shape[0]:
            raise ValueError(f"problem.b must be a vector with one entry per row of A ({A_m.shape[0]}); got shape {b_v.shape}.")
        if A_m.ndim != 2 or 0 in A_m.shape:
            raise ValueError(f"problem.A must be a non-empty 2-D matrix; got shape {A_m.shape}.")
        sparse = hasattr(A_m, "tocsr")
        n, k = A_m.shape
        if scale:
            norms = np.sqrt(np.asarray(A_m.multiply(A_m).sum(0)).ravel()) if sparse else np.linalg.norm(A_m, axis=0)
            d = np.where(norms > 0, norms, 1.0)
        else:
            d = np.ones(k)
        if sparse:
            import scipy.sparse as sp

            Phi = (A_m.tocsr() @ sp.diags(1.0 / d)).tocsr().astype(A_m.dtype)
        else:
            Phi = A_m / d.astype(A_m.dtype) if scale else A_m
        y_scale = float(np.sqrt(np.mean(b_v**2))) or 1.0 if scale else 1.0
        import scipy.sparse as sp

        M = sp.diags(y_scale / d).tocsr()  # x = M c: diagonal, never a dense k x k matrix
        small = n * k <= 200_000 and not sparse
        M_exact = [[Fraction(M[i, j]) for j in range(k)] for i in range(k)] if small else None
        o = np.zeros(k)
        o_exact = [Fraction(0)] * k if small else None
        self.shape, self.sparse_input = (n, k), sparse
        self.with_reference = reference if reference is not None else n * k <= 50_000_000
        self.setup(Phi, b_v / y_scale, y_scale, M, o, A_m, b_v, M_exact, o_exact, loss=loss, sparse=sparse)

    def reported(self, params):
        if self.with_reference:
            return super().reported(params)
        return self.M @ self.internal(params) + self.o

    def metrics(self, params):
        x = self.reported(params)
        residual = self.X @ x.astype(self.X.dtype) - self.y  # in A's own precision: no float64 copy of A
        out = {"max_residual": float(np.max(np.abs(residual))), "residual_norm": float(np.linalg.norm(residual))}
        if not self.with_reference:
            return out
        out.update(super().metrics(params))
        ref = self.reference()
        if not ref.full_rank:
            out["min_norm_distance"] = float(np.max(np.abs(x - ref.B)))
        return out

    def solution(self, params):
        x = self.reported(params)
        out = {"x": [float(v) for v in x[:1000]]}
        if not self.with_reference:
            return out
        ref = self.reference()
        if not ref.full_rank:
            out["rank"] = ref.rank
            out["min_norm_x"] = [float(v) for v in ref.B[:1000]]
        return out


def read_matrix(path: str, key: str):
    """A matrix or vector from a file; float32 data stay float32 (a 1e6 x 1e3 system is 4 GB)."""
    if path == "???":
        raise ValueError(f"{key} is required: a file in {FORMATS}.")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"{key}={path!r} cannot be read: no such file. Expected {FORMATS}.")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            m = np.load(p, allow_pickle=False, mmap_mode="r")  # never unpickle; map, do not copy
        elif suffix == ".csv":
            m = np.loadtxt(p, delimiter=",", dtype=np.float64, ndmin=2)
        elif suffix == ".mtx":
            import scipy.io

            m = scipy.io.mmread(str(p))
        elif suffix == ".npz":
            import scipy.sparse

            m = scipy.sparse.load_npz(p)
        else:
            raise ValueError(f"unknown file type {suffix!r}")
    except Exception as exc:
        raise ValueError(f"{key}={path!r} could not be read as a matrix ({type(exc).__name__}: {exc}); expected {FORMATS}.") from None
    if hasattr(m, "tocsr"):
        m = m.tocsr()
        m = m.astype(np.float32 if m.dtype == np.float32 else np.float64)
        values = m.data
    else:
        m = np.asarray(m)
        if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
            raise ValueError(f"{key}={path!r} holds {m.dtype} values; expected real numbers.")
        m = m.astype(np.float32 if m.dtype == np.float32 else np.float64, copy=False)
        values = m
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{key}={path!r} holds non-finite values (nan or inf); every entry must be a finite number.")
    return m

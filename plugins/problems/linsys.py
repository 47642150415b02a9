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

from runner_plugins.problems.least_squares import LinearLeastSquares, exact_refinement_pays
from runner.datafiles import DataFileError, check_data_file, read_data_bytes

FORMATS = ".npy, .csv (comma-separated numbers), .mtx (Matrix Market) or .npz (scipy.sparse.save_npz)"


class Linsys(LinearLeastSquares):
    def __init__(self, A: str = "???", b: str = "???", loss: Literal["sse", "mse"] = "sse", scale: bool = True,
                 reference: Optional[bool] = None):
        """reference: compute the direct-solve reference (null: when A has at most 5e7 entries)."""
        A_m = read_matrix(A, "problem.A")
        if A_m.ndim != 2 or 0 in A_m.shape:  # A first: a bad A is not reported as a bad b
            raise ValueError(f"problem.A={A!r} must be a non-empty 2-D matrix; got shape {A_m.shape}.")
        b_v = read_matrix(b, "problem.b")
        b_v = np.asarray(b_v.toarray() if hasattr(b_v, "toarray") else b_v, np.float64)
        b_v = b_v.reshape(-1) if b_v.ndim == 2 and 1 in b_v.shape else b_v
        if b_v.ndim != 1 or b_v.shape[0] != A_m.shape[0]:
            raise ValueError(f"problem.b={b!r} must be a vector with one entry per row of A ({A_m.shape[0]}); got shape {b_v.shape}.")
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
        small = not sparse and exact_refinement_pays(n, k)
        M_exact = None
        if small:  # M is diagonal: k Fractions on the diagonal, never k^2 conversions
            diagonal = M.diagonal()
            M_exact = [[Fraction(0)] * k for _ in range(k)]
            for i in range(k):
                M_exact[i][i] = Fraction(diagonal[i])
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


# A sparse matrix's shape may exceed its stored entries (empty rows and columns), but the runner
# allocates vectors of that shape: a few-KB file must not make it allocate gigabytes.
MAX_SPARSE_EXCESS = 10_000_000
TEXT_LIMIT = 1024 << 20  # .csv and .mtx are parsed in Python: larger files belong in .npy or .npz


def read_matrix(path: str, key: str):
    """A matrix or vector from a file; float32 data stay float32 (a 1e6 x 1e3 system is 4 GB).

    Every reader refuses what it cannot represent faithfully: complex values, structured or
    object arrays, non-finite entries; and what is not a regular file."""
    if path == "???":
        raise ValueError(f"{key} is required: a file in {FORMATS}.")
    suffix = Path(path).suffix.lower()
    try:
        # .npy is memory-mapped (its size is the data's); the text formats and .npz are read whole
        p = check_data_file(path, key, FORMATS, limit=None if suffix == ".npy" else TEXT_LIMIT)
    except DataFileError as exc:
        raise ValueError(str(exc)) from None
    if suffix not in (".npy", ".csv", ".mtx", ".npz"):
        raise ValueError(f"{key}={path!r} has unknown file type {suffix!r}; expected {FORMATS}.")
    try:
        if suffix == ".npy":
            m = np.load(p, allow_pickle=False, mmap_mode="r")  # never unpickle; map, do not copy
        elif suffix == ".csv":
            text = read_data_bytes(p, key, FORMATS, TEXT_LIMIT).decode("utf-8-sig")
            m = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.float64, ndmin=2)
        elif suffix == ".mtx":
            m = _read_matrix_market(p, key, path)
        else:
            m = _read_npz(p, key, path)
    except (ValueError, DataFileError) as exc:
        if str(exc).startswith(key):
            raise ValueError(str(exc)) from None
        raise ValueError(f"{key}={path!r} could not be read as a matrix (ValueError: {exc}); expected {FORMATS}.") from None
    except Exception as exc:
        raise ValueError(f"{key}={path!r} could not be read as a matrix ({type(exc).__name__}: {exc}); expected {FORMATS}.") from None
    _check_real(m.dtype, key, path)
    if hasattr(m, "tocsr"):
        m = m.tocsr()
        m = m.astype(np.float32 if m.dtype == np.float32 else np.float64)
        values = m.data
    else:
        if m.ndim == 0:
            raise ValueError(f"{key}={path!r} holds a single number (a 0-d array); expected a matrix or a vector.")
        m = np.asarray(m)
        m = m.astype(np.float32 if m.dtype == np.float32 else np.float64, copy=False)
        values = m
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{key}={path!r} holds non-finite values (nan or inf); every entry must be a finite number.")
    return m


def _check_real(dtype, key: str, path: str) -> None:
    if dtype.kind == "c":
        raise ValueError(f"{key}={path!r} holds complex values ({dtype}); linsys solves real systems only: "
                         "split a complex system into its real and imaginary parts.")
    if dtype.kind not in "biuf":
        raise ValueError(f"{key}={path!r} holds {dtype} values; expected real numbers.")


def _check_sparse_shape(rows: int, cols: int, stored: int, key: str, path: str) -> None:
    if rows + cols > stored + MAX_SPARSE_EXCESS:
        raise ValueError(f"{key}={path!r} declares a {rows} x {cols} matrix with only {stored} stored entries; the "
                         f"runner allocates vectors of that shape, so rows + columns may exceed the stored entries "
                         f"by at most {MAX_SPARSE_EXCESS:,}.")


def _read_matrix_market(p: Path, key: str, path: str):
    """Matrix Market, with its header checked first: complex and integer-overflowing fields are
    refused (scipy would make a complex matrix real by dropping the imaginary parts)."""
    import scipy.io

    with open(p, "rb") as fh:
        banner = fh.readline(1024).decode("latin-1").strip().lower().split()
    if len(banner) < 5 or banner[0] != "%%matrixmarket":
        raise ValueError(f"{key}={path!r} is not a Matrix Market file (its first line should be '%%MatrixMarket matrix ...').")
    field = banner[3]
    if field in ("complex", "hermitian") or banner[4] == "hermitian":
        raise ValueError(f"{key}={path!r} holds complex values (Matrix Market field '{field}'); linsys solves real "
                         "systems only: split a complex system into its real and imaginary parts.")
    if field not in ("real", "double", "integer", "pattern"):
        raise ValueError(f"{key}={path!r} has Matrix Market field '{field}'; expected real, integer or pattern.")
    rows, cols, entries = scipy.io.mminfo(str(p))[:3]
    if banner[2] == "coordinate":
        _check_sparse_shape(rows, cols, entries, key, path)
    elif rows * cols > p.stat().st_size // 2:  # a dense array writes every entry, two bytes at least
        raise ValueError(f"{key}={path!r} declares a dense {rows} x {cols} array but holds far fewer entries.")
    return scipy.io.mmread(str(p))


def _read_npz(p: Path, key: str, path: str):
    """scipy.sparse.save_npz's format. A zip can declare arrays far larger than itself: every
    member's header is checked against its stored size before anything is allocated."""
    import zipfile

    import scipy.sparse

    with zipfile.ZipFile(p) as z:
        total = 0
        for info in z.infolist():
            total += info.file_size
            if total > 4 * TEXT_LIMIT:
                raise ValueError(f"{key}={path!r} unpacks to more than {4 * TEXT_LIMIT >> 20} MiB.")
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(fh)
            count = int(np.prod(shape, dtype=object)) if shape else 1
            if count * dtype.itemsize > info.file_size:
                raise ValueError(f"{key}={path!r}: member {info.filename} declares shape {shape} of {dtype}, more than the "
                                 f"{info.file_size} bytes it holds.")
            if info.filename == "data.npy":
                _check_real(dtype, key, path)
        if "shape.npy" in z.namelist():
            with z.open("shape.npy") as fh:
                shape = np.lib.format.read_array(fh, allow_pickle=False)
            data_size = z.getinfo("data.npy").file_size if "data.npy" in z.namelist() else 0
            if len(shape) == 2:
                _check_sparse_shape(int(shape[0]), int(shape[1]), data_size, key, path)
    return scipy.sparse.load_npz(p)

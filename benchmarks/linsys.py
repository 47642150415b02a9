"""linsys at scale: a dense 1e6 x 1e3 float32 system and a sparse one with 1e7 nonzeros, per-step
time (Adam, loss and gradient) against reading A once."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Row, median_time
from plugins.problems.linsys import Linsys
from runner.loop import optimise


def per_step(problem, steps: int) -> float:
    params = problem.initial_params(torch.Generator().manual_seed(0), torch.device("cpu"), torch.float32)
    params["c"].requires_grad_(True)
    opt = torch.optim.Adam([params["c"]], lr=0.01)
    optimise(lambda: problem.loss(params), opt, steps=1)  # warm-up
    start = time.perf_counter()
    optimise(lambda: problem.loss(params), opt, steps=steps)
    return (time.perf_counter() - start) / steps


def run(quick: bool = False) -> list[Row]:
    rows = []
    n, k = (100_000, 1000) if quick else (1_000_000, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        g = np.random.default_rng(0)
        A = np.lib.format.open_memmap(tmp / "A.npy", mode="w+", dtype=np.float32, shape=(n, k))
        for i in range(0, n, 100_000):  # written in chunks: never two copies of A in memory
            A[i : i + 100_000] = g.standard_normal((min(100_000, n - i), k), dtype=np.float32)
        np.save(tmp / "b.npy", np.asarray(A @ np.ones(k, np.float32), np.float64))
        A.flush()
        del A
        problem = Linsys(A=str(tmp / "A.npy"), b=str(tmp / "b.npy"))
        step = per_step(problem, 3)
        Phi = problem._tensors["Phi"]
        read = median_time(lambda: Phi.sum(), repeats=3)
        rows.append(Row("linsys", f"dense {n:.0e} x {k} float32 ({Phi.numel() * 4 / 1e9:.1f} GB), Adam", "s per step", step, "s",
                        detail=f"reading A once takes {read:.3f} s; a float32 step is {step / read:.3f}x that: it uses A'A and A'b, "
                               "made in one pass, not A"))
        del problem, Phi

        import scipy.sparse as sp

        nnz = 1_000_000 if quick else 10_000_000
        rows_s, cols_s = (nnz // 10, 100_000) if not quick else (nnz // 10, 10_000)
        # From random coordinates: sp.random would index the whole rows x cols grid.
        r, c = g.integers(0, rows_s, nnz), g.integers(0, cols_s, nnz)
        S = sp.coo_matrix((g.standard_normal(nnz), (r, c)), shape=(rows_s, cols_s)).tocsr()
        S = (S + sp.eye(rows_s, cols_s, format="csr")).tocsr()
        sp.save_npz(tmp / "S.npz", S)
        np.save(tmp / "bs.npy", S @ np.ones(cols_s))
        problem = Linsys(A=str(tmp / "S.npz"), b=str(tmp / "bs.npy"))
        step = per_step(problem, 2)
        rows.append(Row("linsys", f"sparse {rows_s:.0e} x {cols_s:.0e}, {S.nnz:.1e} nonzeros, Adam", "s per step", step, "s",
                        detail="CSR on the device, never densified"))
    return rows

"""linsys at scale: a dense 1e6 x 1e3 float32 system and a sparse one with 1e7 nonzeros, per-step
time (Adam, loss and gradient) against reading A once, on each device (CPU, and CUDA where there
is one). The sparse row also times autograd's own backward of the CSR product (which converts the
transposed matrix back to CSR every step) against the engine's transpose made once."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Row, bench_devices, median_time, sync
from runner_plugins.problems.linsys import Linsys
from runner.loop import optimise


def per_step(problem, steps: int, device, loss=None) -> float:
    """Seconds per step after one untimed step (first-use costs: kernels, cuSPARSE handles)."""
    params = problem.initial_params(torch.Generator().manual_seed(0), device, torch.float32)
    params["c"].requires_grad_(True)
    opt = torch.optim.Adam([params["c"]], lr=0.01)
    loss = loss or problem.loss
    optimise(lambda: loss(params), opt, steps=1, device=device)  # warm-up
    return optimise(lambda: loss(params), opt, steps=steps, device=device).seconds / steps


def autograd_sparse_loss(problem):
    """The loss before the transpose was made once: autograd differentiates Phi @ c itself."""
    def loss(params):
        residual = problem._tensors["Phi"] @ params["c"] - problem._tensors["t"]
        return problem._scaled(residual.square().sum())
    return loss


def dense_rows(tmp: Path, quick: bool, devices) -> list[Row]:
    n, k = (100_000, 1000) if quick else (1_000_000, 1000)
    g = np.random.default_rng(0)
    A = np.lib.format.open_memmap(tmp / "A.npy", mode="w+", dtype=np.float32, shape=(n, k))
    for i in range(0, n, 100_000):  # written in chunks: never two copies of A in memory
        A[i : i + 100_000] = g.standard_normal((min(100_000, n - i), k), dtype=np.float32)
    np.save(tmp / "b.npy", np.asarray(A @ np.ones(k, np.float32), np.float64))
    A.flush()
    del A
    rows = []
    for device in devices:
        problem = Linsys(A=str(tmp / "A.npy"), b=str(tmp / "b.npy"))
        step = per_step(problem, 3, device)
        Phi = torch.as_tensor(np.asarray(problem.Phi), device=device)  # the probe's own copy: a step never reads A

        def probe():
            Phi.sum().item()

        read = median_time(probe, repeats=3)
        rows.append(Row("linsys", f"dense {n:.0e} x {k} float32 ({Phi.numel() * 4 / 1e9:.1f} GB), Adam, {device.type}", "s per step", step, "s",
                        detail=f"reading A once takes {read:.3f} s; a float32 step is {step / read:.3f}x that: it uses A'A and A'b, "
                               "made in one pass on the device, not A"))
        del problem, Phi
    return rows


def sparse_rows(tmp: Path, quick: bool, devices) -> list[Row]:
    import scipy.sparse as sp

    g = np.random.default_rng(0)
    nnz = 1_000_000 if quick else 10_000_000
    rows_s, cols_s = (nnz // 10, 100_000) if not quick else (nnz // 10, 10_000)
    # From random coordinates: sp.random would index the whole rows x cols grid.
    r, c = g.integers(0, rows_s, nnz), g.integers(0, cols_s, nnz)
    S = sp.coo_matrix((g.standard_normal(nnz), (r, c)), shape=(rows_s, cols_s)).tocsr()
    S = (S + sp.eye(rows_s, cols_s, format="csr")).tocsr()
    sp.save_npz(tmp / "S.npz", S)
    np.save(tmp / "bs.npy", S @ np.ones(cols_s))
    rows = []
    for device in devices:
        problem = Linsys(A=str(tmp / "S.npz"), b=str(tmp / "bs.npy"), reference=False)
        step = per_step(problem, 3, device)
        old = per_step(problem, 2, device, autograd_sparse_loss(problem))
        rows.append(Row("linsys", f"sparse {rows_s:.0e} x {cols_s:.0e}, {S.nnz:.1e} nonzeros, Adam, {device.type}", "s per step", step, "s",
                        detail=f"CSR on the device, never densified; the transpose made once: autograd's own backward, "
                               f"which converts Phi' to CSR every step, takes {old:.3f} s per step ({old / step:.0f}x)"))
    return rows


def run(quick: bool = False, parts=("dense", "sparse"), only: str | None = None) -> list[Row]:
    rows = []
    devices = bench_devices(only)
    with tempfile.TemporaryDirectory() as tmp:
        if "dense" in parts:
            rows += dense_rows(Path(tmp), quick, devices)
        if "sparse" in parts:
            rows += sparse_rows(Path(tmp), quick, devices)
    return rows

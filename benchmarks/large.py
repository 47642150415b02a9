"""Large data: poly with 1e7 samples, degree 2, float32. Per-step time (loss, gradient, Adam)
against a memory-bandwidth probe that reads x and y once, the bytes a step must at least read."""
from __future__ import annotations

import torch

from benchmarks.common import Row, median_time
from runner.loop import optimise


def run(quick: bool = False) -> list[Row]:
    from plugins.problems.poly import Poly

    n = 1_000_000 if quick else 10_000_000
    rows = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    problem = Poly(n_samples=n)
    for dev in devices:
        device = torch.device(dev)
        params = problem.initial_params(torch.Generator().manual_seed(0), device, torch.float32)
        params["c"].requires_grad_(True)
        opt = torch.optim.Adam([params["c"]], lr=0.1)
        optimise(lambda: problem.loss(params), opt, steps=3, device=device)
        steps = 10 if quick else 20
        step = optimise(lambda: problem.loss(params), opt, steps=steps, device=device).seconds / steps
        x = torch.tensor(problem.x, dtype=torch.float32, device=device)
        y = torch.tensor(problem.y, dtype=torch.float32, device=device)

        def probe():
            (x.sum() + y.sum()).item()

        read = median_time(probe, repeats=7)
        rows.append(Row("large", f"poly, {n:.0e} samples, degree 2, float32, adam, {dev}: per-step time / reading x and y once",
                        "ratio", step / read, target="<= 2.0", detail=f"{step * 1e3:.2f} ms per step, probe {read * 1e3:.2f} ms; float32 runs evaluate the "
                        "least-squares loss from float64 sufficient statistics (G = Phi'Phi, h = Phi't) made in one pass, so a "
                        "step no longer reads the data"))
        if dev == "cpu":
            direct = problem._tensors.pop("G"), problem._tensors.pop("h"), problem._tensors.pop("tt")
            residual_step = optimise(lambda: problem.loss(params), opt, steps=5, device=device).seconds / 5
            rows.append(Row("large", "same, residual form (the float64 path: two passes over the N x 3 design matrix)", "ratio",
                            residual_step / read, detail=f"{residual_step * 1e3:.1f} ms per step"))
            problem._tensors.update(zip(("G", "h", "tt"), direct))
    return rows

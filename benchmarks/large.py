"""Large data: poly with 1e7 samples, degree 2. Per-step time (loss, gradient, Adam) against a
memory-bandwidth probe that reads x and y once, the bytes a step must at least read.

float32 runs read no data per step (sufficient statistics). float64 runs must read the data:
eagerly through the N x 3 design matrix, or, with trainer.compile, in one fused pass over x and t
(torch.compile of poly's recurrence); the compile time is reported apart. Each device (CPU, and
CUDA where there is one) gets its own rows; every timed figure follows an untimed first call."""
from __future__ import annotations

import torch

from benchmarks.common import Row, bench_devices, median_time
from runner.compiling import CompilePlan, compile_loss, warm_up
from runner.loop import optimise


def run(quick: bool = False, only: str | None = None) -> list[Row]:
    from runner_plugins.problems.poly import Poly

    n = 1_000_000 if quick else 10_000_000
    rows = []
    problem = Poly(n_samples=n)
    for device in bench_devices(only):
        dev = device.type
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
        rows += _float64_rows(problem, device, steps)
    return rows


def _float64_rows(problem, device, steps: int) -> list[Row]:
    params = problem.initial_params(torch.Generator().manual_seed(0), device, torch.float64)
    c = params["c"].requires_grad_(True)
    opt = torch.optim.Adam([c], lr=0.1)
    x = torch.tensor(problem.x, dtype=torch.float64, device=device)
    t = torch.tensor(problem.t, dtype=torch.float64, device=device)

    def probe():
        (x.sum() + t.sum()).item()

    read = median_time(probe, repeats=7)
    optimise(lambda: problem.loss(params), opt, steps=1, device=device)  # first use: not timed
    eager = optimise(lambda: problem.loss(params), opt, steps=3, device=device).seconds / 3
    plan = CompilePlan(True, "benchmark")
    compiled = compile_loss(problem.loss)
    warm_up(plan, lambda: compiled(params), [c])
    optimise(lambda: compiled(params), opt, steps=3, device=device)
    fused = optimise(lambda: compiled(params), opt, steps=steps, device=device).seconds / steps
    n = len(problem.x)
    return [
        Row("large", f"poly, {n:.0e} samples, float64, {device.type}, eager (design matrix N x 3): per-step time / reading x and t once", "ratio",
            eager / read, detail=f"{eager * 1e3:.1f} ms per step, probe {read * 1e3:.2f} ms"),
        Row("large", "same, trainer.compile (auto picks it here): one fused pass over x and t / reading x and t once", "ratio", fused / read,
            detail=f"{fused * 1e3:.2f} ms per step, {eager / fused:.0f}x faster than eager; compile_seconds {plan.seconds:.1f} s, "
            "outside loop_seconds"),
    ]

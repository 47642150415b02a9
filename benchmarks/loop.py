"""The runner's loop against the loop a user would write by hand, and what logging costs.

Baseline: the same poly data (the runner's own internal design matrix), the same Adam, a bare
PyTorch closure loop, no runner. The runner runs as a real process with MLflow on; its own
`loop_seconds` metric is compared, median over repeats. Both on the CPU (`trainer.device=cpu`): a
GPU machine must not compare a CUDA runner with a CPU bare loop (benchmarks/gpu.py has the CUDA
figures).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import Row, runner_cli

STEPS = 10_000


def bare_loop_seconds(steps: int = STEPS, fused: bool = False) -> float:
    """The loop a user writes by hand: torch.optim.Adam as constructed by default (fused=False
    here), or with its fused kernel (the runner's default, see plugins/optimizers/torch_optim.py)."""
    from runner_plugins.problems.poly import Poly

    p = Poly()
    Phi = torch.tensor(p.Phi, dtype=torch.float32)
    t = torch.tensor(p.t, dtype=torch.float32)
    scale2 = p.y_scale**2
    # The runner's own starting point for seed 0 (drawn in float64, then cast).
    c = torch.randn(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float().requires_grad_(True)
    opt = torch.optim.Adam([c], lr=0.1, fused=fused or None)

    def closure():
        opt.zero_grad()
        loss = (Phi @ c - t).square().sum() * scale2
        loss.backward()
        return loss

    start = time.perf_counter()
    for _ in range(steps):
        opt.step(closure)
    float(closure().detach())
    return time.perf_counter() - start


def runner_loop_seconds(cwd: Path, *overrides: str) -> float:
    """One runner process; its own loop_seconds metric."""
    from mlflow.tracking import MlflowClient

    proc = runner_cli(cwd, f"trainer.steps={STEPS}", "trainer.progress=off", "trainer.device=cpu", *overrides)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("runner").experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    return run.data.metrics["loop_seconds"]


def run(quick: bool = False) -> list[Row]:
    """Each repeat measures the bare loops and then the runner, back to back, and keeps the
    ratios: the machine drifts between repeats (other tenants), a repeat sees one machine."""
    repeats = 2 if quick else 4
    ratios: dict[str, list[float]] = {"default": [], "same kernel": [], "every": []}
    seconds: dict[str, list[float]] = {"default": [], "every": [], "bare": [], "bare fused": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runner_cli(tmp, "trainer.steps=1", "trainer.progress=off")  # the store exists
        bare_loop_seconds(100)  # torch's optimiser machinery imported
        bare_loop_seconds(100, fused=True)
        for i in range(repeats):
            bare, fused = bare_loop_seconds(), bare_loop_seconds(fused=True)
            ran = runner_loop_seconds(tmp, f"tracking.run_name=bench-default-{i}")
            seconds["bare"].append(bare)
            seconds["bare fused"].append(fused)
            seconds["default"].append(ran)
            ratios["default"].append(ran / bare)
            ratios["same kernel"].append(ran / fused)
            if i < 2:  # logging every step: two pairs
                bare = bare_loop_seconds()
                every = runner_loop_seconds(tmp, f"tracking.run_name=bench-every-{i}", "trainer.log_every=1")
                seconds["every"].append(every)
                ratios["every"].append(every / bare)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    per_point = (med["every"] - med["default"]) / (STEPS - STEPS // 10)  # 10,000 points against 1,000
    return [
        Row("loop", f"poly + adam, {STEPS} steps, cpu, tracking on (log_every=10) / bare PyTorch loop on the cpu", "ratio", statistics.median(ratios["default"]), target="<= 1.10",
            detail=f"median of {repeats} back-to-back pairs; runner {med['default']:.3f} s, bare {med['bare']:.3f} s ({med['bare'] / STEPS * 1e6:.0f} us/step); "
                   "the runner's Adam is torch's fused kernel, the bare loop's torch's default"),
        Row("loop", "same, against a bare loop with the same (fused) Adam: the runner's own overhead", "ratio", statistics.median(ratios["same kernel"]),
            detail=f"bare fused {med['bare fused']:.3f} s"),
        Row("loop", f"same, logging every step ({STEPS} points) / bare loop", "ratio", statistics.median(ratios["every"]), target="<= 1.25",
            detail=f"median of {len(ratios['every'])} pairs"),
        Row("loop", "extra cost per logged point, amortised (log_every=1 vs log_every=10)", "us per point", per_point * 1e6, "us", target="<= 100",
            detail="points go to the MLflow helper process in batches, once a second"),
    ]

"""The runner's loop against the loop a user would write by hand, and what logging costs.

Baseline: the same poly data (the runner's own internal design matrix), the same Adam, a bare
PyTorch closure loop, no runner. The runner runs as a real process with MLflow on; its own
`loop_seconds` metric is compared, median over repeats.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import Row, runner_cli

STEPS = 10_000


def bare_loop_seconds(steps: int = STEPS) -> float:
    from plugins.problems.poly import Poly

    p = Poly()
    Phi = torch.tensor(p.Phi, dtype=torch.float32)
    t = torch.tensor(p.t, dtype=torch.float32)
    scale2 = p.y_scale**2
    c = torch.randn(3, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    opt = torch.optim.Adam([c], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (Phi @ c - t).square().sum() * scale2
        loss.backward()
        return loss

    start = time.perf_counter()
    for _ in range(steps):
        opt.step(closure)
    float(closure())
    return time.perf_counter() - start


def runner_loop_seconds(cwd: Path, *overrides: str, repeats: int) -> float:
    from mlflow.tracking import MlflowClient

    values = []
    for i in range(repeats):
        proc = runner_cli(cwd, f"trainer.steps={STEPS}", "trainer.progress=off", f"tracking.run_name=bench-{i}-{len(overrides)}", *overrides)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
        run = client.search_runs([client.get_experiment_by_name("runner").experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
        values.append(run.data.metrics["loop_seconds"])
    return statistics.median(values)


def run(quick: bool = False) -> list[Row]:
    repeats = 2 if quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runner_cli(tmp, "trainer.steps=1", "trainer.progress=off")  # the store exists
        bare = statistics.median(bare_loop_seconds() for _ in range(repeats))
        default = runner_loop_seconds(tmp, repeats=repeats)
        every = runner_loop_seconds(tmp, "trainer.log_every=1", repeats=2)
        none = runner_loop_seconds(tmp, f"trainer.log_every={STEPS * 10}", repeats=2)
        bare_after = statistics.median(bare_loop_seconds() for _ in range(repeats))  # the machine drifts
        bare = min(bare, bare_after)
    per_point = (every - none) / STEPS
    return [
        Row("loop", f"poly + adam, {STEPS} steps, tracking on (log_every=10) / bare PyTorch loop", "ratio", default / bare, target="<= 1.10",
            detail=f"runner {default:.3f} s, bare {bare:.3f} s ({bare / STEPS * 1e6:.0f} us/step)"),
        Row("loop", f"same, logging every step ({STEPS} points) / bare loop", "ratio", every / bare, target="<= 1.25"),
        Row("loop", "extra cost per logged point, amortised (log_every=1 vs 1 point)", "us per point", per_point * 1e6, "us", target="<= 100",
            detail="points go to SQLite from a background thread in batches"),
    ]

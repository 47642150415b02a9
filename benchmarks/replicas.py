"""trainer.replicas: R seeds of poly + adam as one batched program, against one replica.
Both through the runner's own Job (the engine's path), 1000 steps, loop time only."""
from __future__ import annotations

import statistics

import torch

from benchmarks.common import Row
from runner.job import Job

STEPS = 1000


def loop_seconds(replicas: int, device: torch.device) -> float:
    from plugins.optimizers.torch_optim import adam
    from plugins.problems.poly import Poly

    problem = Poly()

    def initial(generator):
        return {k: v.requires_grad_(True) for k, v in problem.initial_params(generator, device, torch.float32).items()}

    job = Job(problem, list(range(replicas)), device, torch.float32, lambda leaves: adam(leaves), None, adam, initial)
    return job.run(steps=STEPS, device=device).seconds  # the loop alone, as loop_seconds records it


def run(quick: bool = False) -> list[Row]:
    repeats = 2 if quick else 3
    rows = []
    for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        device = torch.device(dev)
        one = statistics.median(loop_seconds(1, device) for _ in range(repeats))
        for R in (256, 4096):
            many = statistics.median(loop_seconds(R, device) for _ in range(repeats))
            target = ("<= 1.5" if R == 256 else "<= 4.0") if dev == "cpu" else ("<= 1.5" if R == 4096 else None)
            rows.append(Row("replicas", f"poly + adam, R={R} replicas in one run / one replica, {dev}", "loop-time ratio", many / one,
                            target=target, detail=f"R={R}: {many:.3f} s, one: {one:.3f} s for {STEPS} steps"))
            if R == 256:
                per_replica_step = many / (R * STEPS)
                rows.append(Row("replicas", f"replica-steps per second at R=256 / steps per second of one run, {dev}", "ratio",
                                (R * STEPS / many) / (STEPS / one), target=">= 170" if dev == "cpu" else None,
                                detail=f"one replica-step {per_replica_step * 1e6:.2f} us"))
    return rows

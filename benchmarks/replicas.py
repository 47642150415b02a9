"""trainer.replicas: R seeds of poly + adam as one batched program, against one replica.
Both through the runner's own Job (the engine's path), 1000 steps, loop time only."""
from __future__ import annotations

import statistics

import torch

from benchmarks.common import Row, bench_devices
from runner.job import Job

STEPS = 1000


def loop_seconds(replicas: int, device: torch.device) -> float:
    from runner_plugins.optimizers.torch_optim import adam
    from runner_plugins.problems.poly import Poly

    problem = Poly()

    def initial(generator):
        return {k: v.requires_grad_(True) for k, v in problem.initial_params(generator, device, torch.float32).items()}

    job = Job(problem, list(range(replicas)), device, torch.float32, lambda leaves: adam(leaves), None, adam, initial)
    return job.run(steps=STEPS, device=device).seconds  # the loop alone, as loop_seconds records it


def run(quick: bool = False, only: str | None = None) -> list[Row]:
    """Each repeat times one replica, then R=256, then R=4096, back to back, and keeps the ratios:
    the machine drifts between repeats, a repeat sees one machine."""
    repeats = 2 if quick else 9  # cheap (a second a repeat), and the machine is noisy
    rows = []
    for device in bench_devices(only):
        dev = device.type
        loop_seconds(1, device)  # warm: the optimiser machinery, the problem's tensors
        seconds: dict[int, list[float]] = {1: [], 256: [], 4096: []}
        for _ in range(repeats):
            for R in seconds:
                seconds[R].append(loop_seconds(R, device))
        one = statistics.median(seconds[1])
        for R in (256, 4096):
            ratios = [many / single for many, single in zip(seconds[R], seconds[1])]
            many = statistics.median(seconds[R])
            target = ("<= 1.5" if R == 256 else "<= 4.0") if dev == "cpu" else ("<= 1.5" if R == 4096 else None)
            rows.append(Row("replicas", f"poly + adam, R={R} replicas in one run / one replica, {dev}", "loop-time ratio", statistics.median(ratios),
                            target=target, detail=f"median of {repeats} back-to-back pairs; R={R}: {many:.3f} s, one: {one:.3f} s for {STEPS} steps"))
            if R == 256:
                rows.append(Row("replicas", f"replica-steps per second at R=256 / steps per second of one run, {dev}", "ratio",
                                statistics.median(R / r for r in ratios), target=">= 170" if dev == "cpu" else None,
                                detail=f"one replica-step {many / (R * STEPS) * 1e6:.2f} us"))
    return rows

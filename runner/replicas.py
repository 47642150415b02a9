"""`trainer.replicas=R`: R independent runs (seeds seed .. seed+R-1) as one batched program.

Parameters get a leading replica dimension; `torch.func.vmap` over the plugin's own `loss` gives
R losses, so problems need not know about replicas. Their sum is differentiated: each replica
gets exactly its own gradient. An optimiser whose update treats every element on its own
(`elementwise`: sgd, adam, ...) then updates the stacked tensor exactly as R separate optimisers
would. Others (lbfgs couples all parameters through its line search and memory) run the
replicas one after another instead, and so does a problem that vmap cannot batch.
"""
from __future__ import annotations

import contextlib
import math
import statistics
from dataclasses import dataclass
from typing import Optional

import torch

from runner.adapter import display_name, is_elementwise


@dataclass
class ReplicaPlan:
    mode: str  # "batched" or "sequential"
    reason: str  # why sequential, for the record


def plan(problem, optim_factory, seeds: list[int], device, dtype) -> ReplicaPlan:
    """`problem`: a adapter.ProblemHooks."""
    if not is_elementwise(optim_factory):
        name = display_name(optim_factory)
        return ReplicaPlan("sequential", f"{name} couples parameters (not elementwise): replicas run one after another")
    try:
        params = batched_initial_params(problem, seeds[:2], device, dtype)
        batched_loss(problem, params)
    except Exception as exc:  # the problem's loss cannot be batched by vmap
        return ReplicaPlan("sequential", f"the problem's loss cannot be vmapped ({type(exc).__name__}: {str(exc)[:200]}): replicas run one after another")
    return ReplicaPlan("batched", "one batched tensor program (torch.func.vmap)")


SMALL_WORK = 1_000_000  # numbers one step reads, all replicas together: below it, one CPU thread


@contextlib.contextmanager
def one_thread_if_small(problem, replicas: int, device, dtype):
    """Run a batched loop on one CPU thread when its step reads few numbers (the problem's
    `work_per_step`, times the replicas): each operation is then too small to gain from torch's
    intra-op threads, whose fork and join cost more than the work, the more so on shared cores
    (measured here, poly + adam, 1000 steps, the cores shared with other work: R=256 took 45x one
    replica's loop on two threads, 0.9x on one; R=4096 74x and 2.6x). Unknown work: as it is."""
    work = problem.work_per_step(dtype) if device.type == "cpu" else None
    if work is None or work * replicas >= SMALL_WORK or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def batched_initial_params(problem, seeds: list[int], device, dtype) -> dict[str, torch.Tensor]:
    """Each replica's starting point drawn from its own seed, exactly as a separate run would."""
    per_replica = [problem.raw_initial_params(torch.Generator().manual_seed(s), device, dtype) for s in seeds]
    return {k: torch.stack([p[k].detach() for p in per_replica]) for k in per_replica[0]}


def batched_loss(problem, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """A problem may batch itself (`batched_loss`, as the built-in least-squares problems do);
    any other is batched by torch.func.vmap over its ordinary `loss` (adapter.ProblemHooks)."""
    return problem.batched_loss(params)


def replica(params: dict[str, torch.Tensor], r: int) -> dict[str, torch.Tensor]:
    """Replica r's parameters, as the problem's own methods (metrics, solution) expect them."""
    return {k: v[r].detach() for k, v in params.items()}


@dataclass
class Finals:
    """The replicas' final losses, summarised the one way loop, job and record use: the median
    of the finite ones (statistics.median: torch's takes the lower middle) and how many diverged."""
    losses: list[float]

    @property
    def finite(self) -> list[float]:
        return [v for v in self.losses if math.isfinite(v)]

    @property
    def median(self) -> float:
        return statistics.median(self.finite) if self.finite else math.nan

    @property
    def diverged(self) -> int:
        return len(self.losses) - len(self.finite)

    @property
    def error(self) -> Optional[str]:
        return f"{self.diverged} of {len(self.losses)} replicas diverged" if self.diverged else None

    def metrics(self) -> dict[str, float]:
        """replicas_diverged, final_loss_min, final_loss_max: for the run's final metrics."""
        return {"replicas_diverged": float(self.diverged), "final_loss_min": min(self.finite, default=math.nan),
                "final_loss_max": max(self.finite, default=math.nan)}

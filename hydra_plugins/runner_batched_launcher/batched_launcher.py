"""hydra/launcher=batched: jobs that differ only in seeds and numeric optimiser or schedule
arguments run as one vectorised program, each job still its own MLflow child run; every other job
runs as Hydra's basic launcher runs it, in the same sweep (runner/batched/launch.py)."""

# No `from __future__ import annotations`: Hydra execs plugin modules without registering them in
# sys.modules (see the Optuna sweeper beside this one).
from typing import Optional, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class BatchedLauncher(Launcher):
    def __init__(self, max_batch: int = 10000, verify: bool = True, figures: str = "auto") -> None:
        self.max_batch, self.verify, self.figures = max_batch, verify, str(figures).lower()
        self.sweep = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from runner.batched.launch import BatchedSweep, validate_once_per_group

        self.sweep = BatchedSweep(hydra_context, task_function, config, self.max_batch, self.verify, self.figures)
        validate_once_per_group()

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return self.sweep.launch(job_overrides, initial_job_idx)

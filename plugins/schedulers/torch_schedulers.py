"""torch.optim.lr_scheduler's schedules as plugins: `sched=cosine`, `sched=exponential`, ...

A scheduler plugin is a callable `(optimizer, **kwargs)` returning an object with `step()`,
called once after every optimiser step. It may also ask for `total_steps` (trainer.steps),
which the engine supplies, so `sched=cosine` needs no length of its own.
"""
from __future__ import annotations

from typing import Optional

from torch.optim import lr_scheduler as ls


def cosine(optimizer, total_steps: int, eta_min: float = 0.0, t_max: Optional[int] = None):
    """Cosine annealing from the optimiser's lr to eta_min over t_max steps (default: the run)."""
    return ls.CosineAnnealingLR(optimizer, T_max=t_max or total_steps, eta_min=eta_min)


def exponential(optimizer, gamma: float = 0.999):
    """lr times gamma after every step."""
    if not 0 < gamma <= 1:
        raise ValueError(f"sched.gamma must be in (0, 1]; got {gamma}")
    return ls.ExponentialLR(optimizer, gamma=gamma)


def step(optimizer, step_size: int = 1000, gamma: float = 0.1):
    """lr times gamma every step_size steps."""
    if step_size < 1:
        raise ValueError(f"sched.step_size must be at least 1; got {step_size}")
    return ls.StepLR(optimizer, step_size=step_size, gamma=gamma)


def multistep(optimizer, milestones: list[int] = (500, 800), gamma: float = 0.1):  # type: ignore[assignment]
    """lr times gamma at each milestone step."""
    return ls.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)


def linear(optimizer, total_steps: int, start_factor: float = 1.0, end_factor: float = 0.0, total_iters: Optional[int] = None):
    """lr scaled linearly from start_factor to end_factor over total_iters steps (default: the run)."""
    if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
        raise ValueError("sched.start_factor must be in (0, 1] and sched.end_factor in [0, 1]")
    return ls.LinearLR(optimizer, start_factor=start_factor, end_factor=end_factor or 1e-12, total_iters=total_iters or total_steps)


def polynomial(optimizer, total_steps: int, power: float = 1.0, total_iters: Optional[int] = None):
    """lr decays as (1 - t/total)^power to zero over the run."""
    return ls.PolynomialLR(optimizer, total_iters=total_iters or total_steps, power=power)


def onecycle(optimizer, total_steps: int, max_lr: float = 0.1, pct_start: float = 0.3):
    """Warm up to max_lr, then anneal, over the run (Smith's one-cycle policy)."""
    return ls.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps + 1, pct_start=pct_start)

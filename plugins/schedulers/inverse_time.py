"""A schedule written by hand, registered like any third-party one: inverse-time decay,
lr_t = lr_0 / (1 + t / tau)^power, the classic step size for stochastic approximation."""
from __future__ import annotations

from torch.optim.lr_scheduler import LambdaLR


def inverse_time(optimizer, tau: float = 1000.0, power: float = 1.0):
    if tau <= 0 or power <= 0:
        raise ValueError(f"sched.tau and sched.power must be > 0; got {tau} and {power}")
    return LambdaLR(optimizer, lambda t: (1.0 + t / tau) ** -power)

"""The optimisation loop: PyTorch autograd, one `optimizer.step(closure)` per step.

The hot path does no host-device synchronisation: step losses are kept as device tensors and read
back every `check_every` steps, where divergence and the stopping tolerance are checked and the
logged points are handed to `on_points` (tracking and progress; never blocking).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

Points = list[tuple[int, float]]


@dataclass
class LoopResult:
    steps: int  # optimiser steps taken
    final_loss: float  # loss at the final parameters
    seconds: float  # wall time of the loop alone
    stop_reason: str  # "steps", "tol" or "diverged"
    error: Optional[str] = None  # why it diverged


def optimise(
    loss_fn: Callable[[], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    log_every: int = 10,
    check_every: int = 10,
    tol: Optional[float] = None,
    on_points: Callable[[int, Points], None] = lambda step, points: None,
    device: Optional[torch.device] = None,
    scheduler=None,
) -> LoopResult:
    """Run up to `steps` steps; the loss at step s is the loss before that step's update."""
    first_eval: list[Optional[torch.Tensor]] = [None]

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        if first_eval[0] is None:
            first_eval[0] = loss
        return loss

    pending: list[torch.Tensor] = []  # this chunk's losses, still on the device
    done = 0
    stop, error = "steps", None

    def drain() -> bool:
        """Read the chunk back, hand over its points; True when the loop must stop."""
        nonlocal stop, error, done
        if not pending:
            return False
        values = torch.stack(pending).tolist()
        base = done - len(values)
        pending.clear()
        points: Points = []
        halt = False
        for i, v in enumerate(values):
            s = base + i
            if not math.isfinite(v):
                stop, error, halt = "diverged", f"diverged: the loss became {v} at step {s}", True
                done = s
                break
            if s % log_every == 0:
                points.append((s, v))
            if tol is not None and v <= tol:
                stop, halt = "tol", True
        on_points(done, points)
        return halt

    start = time.perf_counter()
    try:
        while done < steps:
            first_eval[0] = None
            loss = optimizer.step(closure)
            if scheduler is not None:
                scheduler.step()
            pending.append((loss if loss is not None else first_eval[0]).detach())
            done += 1
            if (done % check_every == 0 or done == steps) and drain():
                break
    finally:
        drain()  # on an interrupt too: keep what was computed
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        final = float(loss_fn())
    if stop != "diverged" and not math.isfinite(final):
        stop, error = "diverged", f"diverged: the loss became {final} after the last step"
    return LoopResult(done, final, seconds, stop, error)

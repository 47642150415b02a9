"""The optimisation loop: PyTorch autograd, one `optimizer.step(closure)` per step.

The hot path does no host-device synchronisation: step losses are kept as device tensors and read
back every `check_every` steps, where divergence and the stopping tolerance are checked and the
logged points are handed to `on_points` (tracking and progress; never blocking) with the wall-clock
time at which each step ended, interpolated within the chunk (reports plot loss against seconds).
"""
from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

Points = list[tuple[int, float]]


@dataclass
class LoopResult:
    steps: int  # optimiser steps taken
    final_loss: float  # loss at the final parameters (the median over replicas)
    seconds: float  # wall time of the loop alone
    stop_reason: str  # "steps", "tol" or "diverged"
    started_at: float = 0.0  # epoch seconds when the loop began (the origin of the points' times)
    error: Optional[str] = None  # why it diverged
    final_losses: Optional[list[float]] = None  # one per replica, when the loss is a vector
    bands: Optional[dict[str, Points]] = None  # loss_q10 / loss_q90 histories over replicas


QUANTILES = (0.1, 0.5, 0.9)


def optimise(
    loss_fn: Callable[[], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    log_every: int = 10,
    check_every: int = 10,
    tol: Optional[float] = None,
    on_points: Callable[[int, Points, list[float]], None] = lambda step, points, times: None,
    device: Optional[torch.device] = None,
    scheduler=None,
) -> LoopResult:
    """Run up to `steps` steps; the loss at step s is the loss before that step's update.

    `loss_fn` may return a vector, one loss per replica (trainer.replicas): their sum is
    differentiated, which gives each replica its own gradient; the history is then the median
    over replicas with a 10-90 % band, and the run diverges only when every replica has."""
    first_eval: list[Optional[torch.Tensor]] = [None]

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        total = loss.sum() if loss.dim() else loss
        total.backward()
        if first_eval[0] is None:
            first_eval[0] = loss
        return total

    batched = [False]
    cache: dict = {}
    bands: dict[str, Points] = {"loss_q10": [], "loss_q90": []}

    pending: list[torch.Tensor] = []  # this chunk's losses, still on the device
    chunk_started = [0.0]  # epoch seconds at the start of the pending chunk
    done = 0
    stop, error = "steps", None

    def drain() -> bool:
        """Read the chunk back, hand over its points; True when the loop must stop."""
        nonlocal stop, error, done
        if not pending:
            return False
        stacked = torch.stack(pending)
        pending.clear()
        now, began = time.time(), chunk_started[0]
        chunk_started[0] = now
        if stacked.dim() == 2:  # (steps, replicas): one host sync for all statistics
            batched[0] = True
            n = stacked.shape[0]
            base = done - n
            # Quantiles only where they are used: logged steps, or every step when tol needs the median.
            rows = list(range(n)) if tol is not None else [i for i in range(n) if (base + i) % log_every == 0]
            finite = torch.isfinite(stacked)
            if "q" not in cache:
                cache["q"] = torch.tensor(QUANTILES, dtype=stacked.dtype, device=stacked.device)
            picked = stacked[rows]
            q = torch.nanquantile(torch.where(finite[rows], picked, torch.nan), cache["q"], dim=1) if rows else picked.new_zeros((3, 0))
            read = torch.cat([q.flatten(), finite.any(1).to(q.dtype)]).tolist()
            alive = read[3 * len(rows):]
            values = [0.0 if a else math.nan for a in alive]  # a step nobody logs: only whether it diverged
            for j, i in enumerate(rows):
                values[i] = read[len(rows) + j] if alive[i] else math.nan
                if (base + i) % log_every == 0 and alive[i]:
                    bands["loss_q10"].append((base + i, read[j]))
                    bands["loss_q90"].append((base + i, read[2 * len(rows) + j]))
        else:
            values = stacked.tolist()
            base = done - len(values)
        points: Points = []
        times: list[float] = []
        halt = False
        per_step = (now - began) / max(len(values), 1)
        for i, v in enumerate(values):
            s = base + i
            if not math.isfinite(v):
                stop, error, halt = "diverged", f"diverged: the loss became {v} at step {s}", True
                done = s
                break
            if s % log_every == 0:
                points.append((s, v))
                times.append(began + (i + 1) * per_step)  # when the step that evaluated it ended
            if tol is not None and v <= tol:
                stop, halt = "tol", True
        on_points(done, points, times)
        return halt

    # The runner's process holds a large heap (MLflow, SQLAlchemy, Hydra) that the cyclic GC would
    # rescan while autograd churns out small objects: freeze it for the loop (no collect first:
    # a full collection of that heap costs a short run more than it saves).
    gc.freeze()
    started_at = chunk_started[0] = time.time()
    start = time.perf_counter()
    try:
        while done < steps:
            first_eval[0] = None
            optimizer.step(closure)
            loss = first_eval[0]  # the loss before this step's update (a vector for replicas)
            if loss is None:  # an optimiser that ignored the closure
                with torch.no_grad():
                    loss = loss_fn()
            if scheduler is not None:
                scheduler.step()
            pending.append(loss.detach())
            done += 1
            if (done % check_every == 0 or done == steps) and drain():
                break
    finally:
        gc.unfreeze()
        drain()  # on an interrupt too: keep what was computed
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        final_t = loss_fn().detach()
    if final_t.dim():
        finals = final_t.tolist()
        ok = [v for v in finals if math.isfinite(v)]
        final = statistics.median(ok) if ok else math.nan  # torch's median takes the lower middle
        if ok and len(ok) < len(finals):
            error = f"{len(finals) - len(ok)} of {len(finals)} replicas diverged"
    else:
        finals, final = None, float(final_t)
    if stop != "diverged" and not math.isfinite(final):
        stop, error = "diverged", f"diverged: the loss became {final} after the last step"
    return LoopResult(done, final, seconds, stop, started_at, error, finals, bands if batched[0] else None)

"""The optimisation loop: PyTorch autograd, one `optimizer.step(closure)` per step.

The hot path does no host-device synchronisation: step losses are kept as device tensors and read
back every `check_every` steps, where divergence and the stopping tolerance are checked and the
logged points are handed to `on_points` (tracking and progress; never blocking) with the wall-clock
time at which each step ended, interpolated within the chunk (reports plot loss against seconds).
With replicas and no `tol`, a check reads back only whether any replica is alive; the logged steps'
median and band are computed for many checks at once and handed over at most every
`HAND_OVER_SECONDS` (and at the end, a divergence or an interrupt): the same points, a little later.
"""
from __future__ import annotations

import gc
import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from runner.best import BestPoint, BestTracker
from runner.devices import sync
from runner.replicas import Finals

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
    evaluations: tuple[int, int] = (0, 0)  # (loss, gradient) evaluations the optimiser spent
    best: Optional[BestPoint] = None  # the least loss seen at a check point or at the end (runner/best.py)


QUANTILES = (0.1, 0.5, 0.9)
# Replicas without tol: how often the logged steps' quantiles are computed and handed over. A
# nanquantile per check was a sixth of a small replica run's loop (R=256 poly + adam); the store's
# writer takes points once a second and a progress bar redraws every 0.1 s.
HAND_OVER_SECONDS = 0.1
Costs = list[tuple[int, int]]  # (loss, gradient) evaluations spent by the end of each point's step
OnPoints = Callable[[int, Points, list[float], Costs], None]


def optimise(
    loss_fn: Callable[[], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    log_every: int = 10,
    check_every: int = 10,
    tol: Optional[float] = None,
    on_points: OnPoints = lambda step, points, times, costs: None,
    device: Optional[torch.device] = None,
    scheduler=None,
    needs=None,
    params: Optional[dict[str, torch.Tensor]] = None,
) -> LoopResult:
    """Run up to `steps` steps; the loss at step s is the loss before that step's update.

    `loss_fn` may return a vector, one loss per replica (trainer.replicas): their sum is
    differentiated, which gives each replica its own gradient; the history is then the median
    over replicas with a 10-90 % band, and the run diverges only when every replica has.

    `needs` (runner/needs.py) is what the optimiser asks of the loop: a backward that keeps its
    graph, train()/eval() modes, the gradient before each step.

    `params` ({name: tensor}, the optimiser's): given, the best point seen is tracked at the check
    points and returned in `best` (runner/best.py)."""
    step = _Step(loss_fn, optimizer, needs)
    reader = ChunkReader(log_every, tol, on_points)
    reader.best = BestTracker(params, check_every) if params else None
    train_eval = bool(needs and needs.train_eval)
    # The runner's process holds a large heap (Hydra, plugins' data) that the cyclic GC would
    # rescan while autograd churns out small objects: freeze it for the loop (no collect first:
    # a full collection of that heap costs a short run more than it saves).
    gc.freeze()
    if train_eval:
        optimizer.train()
    sync(device)  # whatever was queued before (a warm-up) is not the loop's time
    started_at = reader.chunk_started = time.time()
    start = time.perf_counter()
    try:
        _run_steps(step, reader, optimizer, scheduler, steps, check_every)
    finally:
        gc.unfreeze()
        reader.read(final=True)  # on an interrupt too: keep what was computed
    sync(device)
    seconds = time.perf_counter() - start
    if train_eval:
        optimizer.eval()  # the point the method returns: the final loss, metrics and solution are its
    stop, error, finals, final = _final_loss(loss_fn, reader)
    best = reader.best.finish(finals or [final], reader.done, finals is not None) if reader.best else None
    return LoopResult(reader.done, final, seconds, stop, started_at, error, finals, reader.bands if reader.batched else None,
                      step.spent(), best)


def _run_steps(step: "_Step", reader: "ChunkReader", optimizer, scheduler, steps: int, check_every: int) -> None:
    best = reader.best
    while reader.done < steps:
        if best is not None:
            best.before_step(reader.done)
        try:
            loss = step()
        except Exception as exc:
            # A numeric breakdown inside the optimiser (a division by a vanished norm), or any
            # error once its parameters are no longer finite, is the run diverging; else a bug.
            if not isinstance(exc, ArithmeticError) and _finite(optimizer):
                raise
            reader.stop, reader.error = "diverged", f"diverged: the optimiser's step {reader.done} raised {type(exc).__name__}: {exc}"
            return
        reader.add(loss, step.spent())
        if scheduler is not None:
            scheduler.step()
        if (reader.done % check_every == 0 or reader.done == steps) and reader.read():
            return


def _final_loss(loss_fn, reader: "ChunkReader"):
    """(stop reason, error, per-replica final losses or None, final loss) at the final parameters."""
    # Evaluated in the steps' grad mode, not under no_grad: a compiled loss guards on the grad
    # mode, and a no_grad call would compile it a second time, outside every timed figure.
    final_t = loss_fn().detach()
    stop, error, finals = reader.stop, reader.error, None
    if final_t.dim():
        summary = Finals(final_t.tolist())
        finals, final = summary.losses, summary.median
        if summary.finite and summary.diverged:
            error = summary.error
    else:
        final = float(final_t)
    if stop != "diverged" and not math.isfinite(final):
        stop, error = "diverged", f"diverged: the loss became {final} after the last step"
    return stop, error, finals, final


class _Step:
    """One optimiser step through a closure; returns the loss before the update (on the device).

    It counts evaluations, the honest cost axis: a call of the closure is one loss and one
    gradient evaluation (forward and backward). An optimiser that evaluates the problem itself
    (optim=lm) keeps its own in an `evaluations` dict ({"loss": n, "gradient": n}; a Jacobian of m
    residuals in n parameters is n gradient evaluations in forward mode, m in reverse), added here.
    The loop's own evaluations for the record (the loss of an optimiser that ignores the closure
    and returns none, the final loss) are not counted."""

    def __init__(self, loss_fn: Callable[[], torch.Tensor], optimizer, needs=None):
        self.loss_fn, self.optimizer = loss_fn, optimizer
        self.first: Optional[torch.Tensor] = None  # the closure's first evaluation in this step
        self.create_graph = bool(needs and needs.create_graph)  # Hessian-vector products
        self.grad_before_step = bool(needs and needs.grad_before_step)
        if self.create_graph:  # the graph kept by backward is released by zero_grad(set_to_none) every step
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")

        self.calls = 0  # closure calls so far
        self.own = getattr(optimizer, "evaluations", None)

    def spent(self) -> tuple[int, int]:
        """(loss, gradient) evaluations so far."""
        if isinstance(self.own, dict):
            return self.calls + int(self.own.get("loss", 0)), self.calls + int(self.own.get("gradient", 0))
        return self.calls, self.calls

    def closure(self) -> torch.Tensor:
        if not torch.is_grad_enabled():  # an optimiser that calls it under no_grad (torch's own enable it)
            with torch.enable_grad():
                return self.closure()
        self.calls += 1
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn()
        total = loss.sum() if loss.dim() else loss
        total.backward(create_graph=self.create_graph)
        if self.first is None:
            self.first = loss
        return total

    def __call__(self) -> torch.Tensor:
        self.first = None
        if self.grad_before_step:
            self.closure()
        returned = self.optimizer.step(self.closure)
        loss = self.first
        if loss is None and isinstance(returned, torch.Tensor):  # it evaluated the loss itself (lm)
            loss = returned
        if loss is None:  # an optimiser that ignored the closure
            loss = self.loss_fn()  # grad mode as in a step: a compiled loss is not compiled again
        return loss.detach()


class ChunkReader:
    """The step losses of one chunk stay on the device until `read`: one host sync reads them
    back, checks divergence and tol, and hands the logged points to `on_points`, each with the
    evaluations spent by the end of its step (as its time: when that step ended)."""

    def __init__(self, log_every: int, tol: Optional[float], on_points: OnPoints):
        self.log_every, self.tol, self.on_points = log_every, tol, on_points
        self.pending: list[torch.Tensor] = []
        self.pending_costs: Costs = []
        self.done = 0  # steps taken (after a divergence: the step that diverged)
        self.chunk_started = 0.0  # epoch seconds at the start of the pending chunk
        self.stop, self.error = "steps", None
        self.batched = False  # losses were vectors (replicas)
        self.bands: dict[str, Points] = {"loss_q10": [], "loss_q90": []}
        self._quantiles: Optional[torch.Tensor] = None
        self.best: Optional[BestTracker] = None
        # Replicas without tol: the logged steps' loss rows (views on the device), with their
        # steps, times and costs, waiting for _hand_over_rows.
        self._rows: list[torch.Tensor] = []
        self._row_points: tuple[list[int], list[float], Costs] = ([], [], [])
        self._handed_over = time.time()  # epoch seconds of the last hand-over
        self._handed_done = 0  # `done` as last handed over

    def add(self, loss: torch.Tensor, cost: tuple[int, int] = (0, 0)) -> None:
        self.pending.append(loss)
        self.pending_costs.append(cost)
        self.done += 1

    def read(self, final: bool = False) -> bool:
        """Read the chunk back, hand over its points; True when the loop must stop. `final`: the
        loop has ended (or is interrupted): nothing may stay unhanded."""
        if not self.pending:
            if final:
                self._hand_over_rows()
            return False
        stacked = torch.stack(self.pending)
        self.pending.clear()
        sync(stacked.device)  # the chunk's steps have run, not only been queued, when the clock is read
        costs, self.pending_costs = self.pending_costs, []
        now, began = time.time(), self.chunk_started
        self.chunk_started = now
        base = self.done - stacked.shape[0]
        if stacked.dim() == 2 and self.tol is None:
            halt = self._queue_rows(stacked, base, began, now, costs)
            if halt or final or now - self._handed_over >= HAND_OVER_SECONDS:
                self._hand_over_rows(now)
            return halt
        values = self._replica_medians(stacked, base) if stacked.dim() == 2 else stacked.tolist()
        if self.best is not None:
            self.best.on_chunk(stacked, values, base)
        return self._hand_over(values, base, began, now, costs)

    def _queue_rows(self, stacked: torch.Tensor, base: int, began: float, now: float, chunk_costs: Costs) -> bool:
        """(steps, replicas) without tol: the chunk's one host read is whether any replica is
        alive at each step (the run diverges at the first step where none is); its logged rows
        wait on the device for _hand_over_rows. True when the loop must stop."""
        self.batched = True
        alive = _any_finite(stacked)
        if self.best is not None:
            self.best.on_chunk(stacked, [], base)
        steps, times, costs = self._row_points
        per_step = (now - began) / len(alive)
        for i, a in enumerate(alive):
            s = base + i
            if not a:
                self.stop, self.error, self.done = "diverged", f"diverged: the loss became {math.nan} at step {s}", s
                return True
            if s % self.log_every == 0:
                self._rows.append(stacked[i])
                steps.append(s)
                times.append(began + (i + 1) * per_step)  # when the step that evaluated it ended
                costs.append(chunk_costs[i])
        return False

    def _hand_over_rows(self, now: Optional[float] = None) -> None:
        """The queued rows' median (the points) and 10-90 % band over their finite replicas, in
        one nanquantile and one host read, handed over with `done` as it is now."""
        self._handed_over = time.time() if now is None else now
        if not self._rows and self._handed_done == self.done:
            return
        steps, times, costs = self._row_points
        points: Points = []
        if self._rows:
            rows = torch.stack(self._rows)
            q10, median, q90 = torch.nanquantile(torch.where(torch.isfinite(rows), rows, torch.nan), self._quantiles_of(rows), dim=1).tolist()
            points = list(zip(steps, median))
            self.bands["loss_q10"].extend(zip(steps, q10))
            self.bands["loss_q90"].extend(zip(steps, q90))
        self._rows, self._row_points = [], ([], [], [])
        self._handed_done = self.done
        self.on_points(self.done, points, times, costs)

    def _quantiles_of(self, like: torch.Tensor) -> torch.Tensor:
        if self._quantiles is None:
            self._quantiles = torch.tensor(QUANTILES, dtype=like.dtype, device=like.device)
        return self._quantiles

    def _replica_medians(self, stacked: torch.Tensor, base: int) -> list[float]:
        """(steps, replicas): median and band in one host sync. Quantiles only where they are
        used: logged steps, or every step when tol needs the median; elsewhere only whether any
        replica is alive (0.0) or all diverged (nan)."""
        self.batched = True
        n = stacked.shape[0]
        rows = list(range(n)) if self.tol is not None else [i for i in range(n) if (base + i) % self.log_every == 0]
        finite = torch.isfinite(stacked)
        picked = stacked[rows]
        q = torch.nanquantile(torch.where(finite[rows], picked, torch.nan), self._quantiles_of(stacked), dim=1) if rows else picked.new_zeros((3, 0))
        read = torch.cat([q.flatten(), finite.any(1).to(q.dtype)]).tolist()
        alive = read[3 * len(rows):]
        values = [0.0 if a else math.nan for a in alive]
        for j, i in enumerate(rows):
            values[i] = read[len(rows) + j] if alive[i] else math.nan
            if (base + i) % self.log_every == 0 and alive[i]:
                self.bands["loss_q10"].append((base + i, read[j]))
                self.bands["loss_q90"].append((base + i, read[2 * len(rows) + j]))
        return values

    def _hand_over(self, values: list[float], base: int, began: float, now: float, chunk_costs: Costs) -> bool:
        points: Points = []
        times: list[float] = []
        costs: Costs = []
        halt = False
        per_step = (now - began) / max(len(values), 1)
        for i, v in enumerate(values):
            s = base + i
            if not math.isfinite(v):
                self.stop, self.error, halt = "diverged", f"diverged: the loss became {v} at step {s}", True
                self.done = s
                break
            if s % self.log_every == 0:
                points.append((s, v))
                times.append(began + (i + 1) * per_step)  # when the step that evaluated it ended
                costs.append(chunk_costs[i])
            if self.tol is not None and v <= self.tol:
                self.stop, halt = "tol", True
        self.on_points(self.done, points, times, costs)
        return halt


def _any_finite(stacked: torch.Tensor) -> list[bool]:
    """Per row of (steps, replicas): whether any replica's loss is finite. On the CPU through numpy,
    on the same memory: torch's isfinite is several kernels (13 us against 3 at R=256 here)."""
    if stacked.device.type == "cpu" and stacked.dtype in (torch.float32, torch.float64):
        return np.isfinite(stacked.numpy()).any(1).tolist()
    return torch.isfinite(stacked).any(1).tolist()


def _finite(optimizer) -> bool:
    with torch.no_grad():
        return all(bool(torch.isfinite(p).all()) for group in optimizer.param_groups for p in group["params"])

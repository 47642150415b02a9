"""The best point a run has seen, so that a longer run never reports a worse answer than it found.

The loop reads its losses back every `check_every` steps (runner/loop.py); the best is tracked
at those points only, so that it costs the hot path no host sync: before the first step of each
chunk the parameters are copied into a buffer on the device (made once), that step evaluates
their loss, and when the chunk is read that loss is compared with the best so far. A better one
swaps the buffers (no copy); for replicas (a loss vector) each replica keeps its own best, chosen
on the device with `torch.where`. The final parameters count too (`finish`). A lower loss between
two check points is in the history, but its parameters are not kept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class BestPoint:
    """Per replica (one entry for a single run): the least loss seen, the step whose loss it is
    (the loss at step s is evaluated before step s's update; `steps` means the final parameters),
    and the parameters there ({name: tensor}, replicas along the first dimension when batched)."""
    losses: list[float]
    steps: list[int]
    params: dict[str, torch.Tensor]


class BestTracker:
    def __init__(self, params: dict[str, torch.Tensor], check_every: int):
        self.names = list(params)
        self.live = [params[k] for k in self.names]
        self.check_every = check_every
        self.snap: Optional[list[torch.Tensor]] = None  # the buffer the next snapshot goes to
        self.best: Optional[list[torch.Tensor]] = None
        self.snap_step = -1  # the step whose loss is the snapshot's (-1: none pending)
        self.loss: Optional[float] = None  # single run: the best loss on the host
        self.step = -1
        self.batched_loss: Optional[torch.Tensor] = None  # replicas: (R,) on the device
        self.batched_step: Optional[torch.Tensor] = None

    def before_step(self, done: int) -> None:
        """Called before step `done` (0-based): the first step of each chunk snapshots the
        parameters it evaluates, whose loss the chunk's read brings back (a logged point when
        log_every divides check_every)."""
        if done % self.check_every:
            return
        with torch.no_grad():
            if self.snap is None:
                self.snap = [p.detach().clone() for p in self.live]
            else:
                for s, p in zip(self.snap, self.live):
                    s.copy_(p)
        self.snap_step = done

    def on_chunk(self, stacked: torch.Tensor, values: list[float], base: int) -> None:
        """A chunk of step losses was read: `stacked` on the device ((n,) or (n, R)), `values`
        on the host (the single run's losses), the first of them step `base`."""
        i = self.snap_step - base
        if self.snap_step < 0 or not 0 <= i < stacked.shape[0]:
            return
        self.snap_step = -1
        if stacked.dim() == 1:
            v = values[i] if i < len(values) else math.nan
            if math.isfinite(v) and (self.loss is None or v < self.loss):
                self.loss, self.step = v, base + i
                self.best, self.snap = self.snap, self.best
            return
        row = stacked[i].detach()
        with torch.no_grad():
            if self.batched_loss is None:
                self.batched_loss = torch.full_like(row, math.inf)
                self.batched_step = torch.full(row.shape, -1, dtype=torch.int64, device=row.device)
                self.best = [s.clone() for s in self.snap]
            # In place, one kernel each: this runs at every check of a replica run.
            better = row < self.batched_loss  # nan: never better
            torch.where(better, row, self.batched_loss, out=self.batched_loss)
            self.batched_step.masked_fill_(better, base + i)
            for b, s in zip(self.best, self.snap):
                torch.where(better.view(-1, *([1] * (s.dim() - 1))), s, b, out=b)

    def finish(self, final_losses: list[float], done: int, batched: bool) -> BestPoint:
        """The best point, the final parameters (step `done`, loss `final_losses`) included."""
        with torch.no_grad():
            final = [p.detach() for p in self.live]
            if not batched:
                f = final_losses[0]
                if self.best is None or (math.isfinite(f) and f <= self.loss):
                    return BestPoint([f], [done], {k: p.clone() for k, p in zip(self.names, final)})
                return BestPoint([self.loss], [self.step], dict(zip(self.names, self.best)))
            n = len(final_losses)
            losses = self.batched_loss.tolist() if self.batched_loss is not None else [math.inf] * n
            steps = self.batched_step.tolist() if self.batched_step is not None else [-1] * n
            take_final = [s < 0 or (math.isfinite(f) and f <= b) for f, b, s in zip(final_losses, losses, steps)]
            mask = torch.tensor(take_final, device=final[0].device)
            best = self.best or final
            params = {k: torch.where(mask.view(-1, *([1] * (p.dim() - 1))), p, b) for k, p, b in zip(self.names, final, best)}
            return BestPoint([f if t else b for f, b, t in zip(final_losses, losses, take_final)],
                             [done if t else s for s, t in zip(steps, take_final)], params)

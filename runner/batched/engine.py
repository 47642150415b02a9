"""One batch of sweep jobs as one tensor program: each job is a slice along a leading job axis.

Parameters are stacked as for `trainer.replicas` (runner/replicas.py): each job's starting point is
drawn from its own seed, `problem.batched_loss` gives one loss per job and the gradient of their
sum gives each job exactly its own gradient. How the jobs are stepped depends on what differs:

- `shared`: one optimiser config for all (only seeds differ): the plugin's own optimiser on the
  stacked tensors, exactly the replicas path;
- `vector`: torch.optim classes with a vectorised rule (runner/batched/optim.py): per-job
  hyperparameters as tensors along the job axis;
- `per-job`: any other elementwise optimiser (a third-party one): each job's own optimiser
  instance on its own leaf tensors, stepped in turn, the loss still evaluated once for all.

Each job keeps its own history, divergence (the first non-finite loss stops that job only: its
parameters are kept from then on), `tol`, final loss and best point, exactly as runner/loop.py and
runner/best.py decide them for a job alone: checks happen every `check_every` steps, at the same
steps for every job, and a job's best is compared only at the check points it was still running.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from runner import replicas as rep
from runner.batched.optim import HyperSource, rule_for
from runner.best import BestPoint, BestTracker
from runner.devices import sync
from runner.loop import LoopResult


@dataclass
class Member:
    """One job as the engine sees it."""
    seed: int
    make_optimizer: Callable  # its plugin factory with its own arguments: (leaves) -> optimiser
    make_scheduler: Optional[Callable]  # (optimiser) -> schedule, or None
    key: str  # its optimiser and schedule arguments: equal keys, equal hyperparameters at every step


# (job index, steps done, points, times, costs), as runner/loop.py's on_points for one job
OnJobPoints = Callable[[int, int, list, list, list], None]


class Batch:
    def __init__(self, problem, members: list[Member], device, dtype):
        self.problem, self.members, self.device, self.dtype = problem, members, device, dtype
        self.n = len(members)
        stacked = rep.batched_initial_params(problem, [m.seed for m in members], device, dtype)
        keys = {m.key for m in members}
        self.schedulers: list = []
        if len(keys) == 1:
            self.mode = "shared"
            self.params = {k: v.requires_grad_(True) for k, v in stacked.items()}
            self.optimizers = [members[0].make_optimizer(list(self.params.values()))]
            if members[0].make_scheduler is not None:
                self.schedulers = [members[0].make_scheduler(self.optimizers[0])]
            return
        hypers = HyperSource([(m.make_optimizer, m.make_scheduler, m.key) for m in members], device, dtype)
        rule = rule_for(hypers.cls)
        if rule is not None:
            self.mode = "vector"
            self.params = {k: v.requires_grad_(True) for k, v in stacked.items()}
            self.optimizers = [rule(list(self.params.values()), hypers)]
            return
        self.mode = "per-job"
        self.leaves = [{k: v[j].clone().requires_grad_(True) for k, v in stacked.items()} for j in range(self.n)]
        self.optimizers = [m.make_optimizer(list(leaves.values())) for m, leaves in zip(members, self.leaves)]
        self.schedulers = [m.make_scheduler(o) if m.make_scheduler else None for m, o in zip(members, self.optimizers)]

    @property
    def describe(self) -> str:
        if self.mode == "vector":
            return f"torch.optim.{self.optimizers[0].hypers.cls.__name__}'s rule with per-job hyperparameters as tensors"
        return {"shared": "one optimiser over the stacked jobs (only seeds differ)",
                "per-job": "each job's own optimiser on its slice, one loss evaluation for all"}[self.mode]

    def stacked(self) -> dict[str, torch.Tensor]:
        if self.mode == "per-job":
            return {k: torch.stack([leaves[k] for leaves in self.leaves]) for k in self.leaves[0]}
        return self.params

    def losses(self) -> torch.Tensor:
        return rep.batched_loss(self.problem, self.stacked())

    def step(self) -> torch.Tensor:
        """One step of every job; the losses before it (detached, one per job)."""
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            losses = self.losses()
            losses.sum().backward()
        held = losses.detach()
        if self.mode == "per-job":
            for j, opt in enumerate(self.optimizers):
                opt.step(lambda j=j: held[j])
        else:
            self.optimizers[0].step(lambda: held)
        if self.mode == "vector":
            self.optimizers[0].after_step()
        for s in self.schedulers:
            if s is not None:
                s.step()
        return held

    def params_of(self, j: int) -> dict[str, torch.Tensor]:
        if self.mode == "per-job":
            return {k: v.detach().clone() for k, v in self.leaves[j].items()}
        return {k: v[j].detach().clone() for k, v in self.params.items()}

    def run(self, *, steps: int, log_every: int, check_every: int, tol: Optional[float], on_points: OnJobPoints
            ) -> tuple[list[LoopResult], list[dict]]:
        """Every job's LoopResult and final parameters. On an interrupt, the points computed so
        far are handed over first (each job's record then closes KILLED with them)."""
        state = _State(self.n)
        state.best = BestTracker(self.stacked(), check_every)  # runner/best.py's replica path, on the job axis
        pending: list[torch.Tensor] = []
        threads = rep.one_thread_if_small(self.problem, self.n, self.device, self.dtype)
        threads.__enter__()
        gc.freeze()  # as runner/loop.py: the heap stays out of the cyclic collector's way
        sync(self.device)
        started_at = state.chunk_started = time.time()
        start = time.perf_counter()
        done = 0
        try:
            while done < steps and state.active:
                if done % check_every == 0:  # a chunk begins: its first loss is compared with each running job's best
                    state.chunk_active = set(state.active)
                    if self.mode == "per-job":  # each job's own leaves: stacked afresh
                        state.best.live = list(self.stacked().values())
                    state.best.before_step(done)
                try:
                    pending.append(self.step())
                except Exception as exc:
                    if not isinstance(exc, ArithmeticError) and _finite(self):
                        raise
                    state.fail_all(done, f"diverged: the optimiser's step {done} raised {type(exc).__name__}: {exc}")
                    for j in state.stopped_now():
                        state.final_params[j] = self.params_of(j)
                    break
                done += 1
                if done % check_every == 0 or done == steps:
                    self._read(state, pending, done, log_every, tol, on_points)
        finally:
            gc.unfreeze()
            threads.__exit__(None, None, None)
            self._read(state, pending, done, log_every, tol, on_points)
        sync(self.device)
        seconds = time.perf_counter() - start
        for j in list(state.active):  # ran every step
            state.done[j], state.calls[j] = done, done
            state.final_params[j] = self.params_of(j)
        finals = self._final_losses(state.final_params)
        bests = self._best_points(state, finals)
        results = []
        for j in range(self.n):
            stop, error, final = state.stop[j], state.error[j], finals[j]
            if stop != "diverged" and not math.isfinite(final):
                stop, error = "diverged", f"diverged: the loss became {final} after the last step"
            results.append(LoopResult(state.done[j], final, seconds, stop, started_at, error, evaluations=(state.calls[j], state.calls[j]),
                                      best=bests[j]))
        return results, state.final_params

    @staticmethod
    def _best_points(state: "_State", finals: list[float]) -> list[BestPoint]:
        """Each job's best point as BestTracker.finish decides it for a job alone: the final
        parameters (step `done`) unless a check point's loss was lower."""
        tracker = state.best
        losses = tracker.batched_loss.tolist() if tracker.batched_loss is not None else [math.inf] * len(finals)
        steps = tracker.batched_step.tolist() if tracker.batched_step is not None else [-1] * len(finals)
        out = []
        for j, (f, b, s) in enumerate(zip(finals, losses, steps)):
            if s < 0 or (math.isfinite(f) and f <= b):
                out.append(BestPoint([f], [state.done[j]], dict(state.final_params[j])))
            else:
                out.append(BestPoint([b], [s], {k: v[j].detach().clone() for k, v in zip(tracker.names, tracker.best)}))
        return out

    def _read(self, state: "_State", pending: list, done: int, log_every: int, tol, on_points: OnJobPoints) -> None:
        """One host sync for the chunk: each active job's logged points, divergence and tol."""
        if not pending:
            return
        stacked = torch.stack(pending)  # (steps of the chunk, jobs)
        pending.clear()
        sync(stacked.device)
        now, began = time.time(), state.chunk_started
        state.chunk_started = now
        k = stacked.shape[0]
        base = done - k
        if state.best is not None:  # jobs stopped before this chunk: their later losses are not theirs
            running = torch.zeros(stacked.shape[1], dtype=torch.bool, device=stacked.device)
            running[list(state.chunk_active)] = True
            state.best.on_chunk(torch.where(running, stacked, torch.nan), [], base)
        per_step = (now - began) / k
        finite = torch.isfinite(stacked)
        first_bad = torch.where(finite.all(0), k, (~finite).to(torch.int8).argmax(0)).tolist()
        logged = [i for i in range(k) if (base + i) % log_every == 0]
        hit = ((stacked <= tol) & finite).any(0).tolist() if tol is not None else None
        columns = stacked.T.tolist()
        times = [began + (i + 1) * per_step for i in logged]
        for j in list(state.active):
            col, bad = columns[j], first_bad[j]
            points = [(base + i, col[i]) for i in logged if i < bad]
            costs = [(base + i + 1, base + i + 1) for i in logged if i < bad]
            if bad < k:
                s = base + bad
                state.stop_job(j, s, done, "diverged", f"diverged: the loss became {col[bad]} at step {s}")
            elif hit is not None and hit[j]:
                state.stop_job(j, done, done, "tol", None)
            on_points(j, state.done[j] if j not in state.active else done, points, times[: len(points)], costs)
        for j in state.stopped_now():
            state.final_params[j] = self.params_of(j)  # where a job alone would have stopped: the end of this chunk

    def _final_losses(self, final_params: list) -> list[float]:
        stacked = {k: torch.stack([p[k] for p in final_params]) for k in final_params[0]}
        with torch.no_grad():
            return rep.batched_loss(self.problem, stacked).tolist()


class _State:
    def __init__(self, n: int):
        self.active: set[int] = set(range(n))
        self.done = [0] * n
        self.calls = [0] * n
        self.stop = ["steps"] * n
        self.error: list[Optional[str]] = [None] * n
        self.final_params: list = [None] * n
        self.chunk_started = 0.0
        self._just_stopped: list[int] = []
        self.best: Optional[BestTracker] = None
        self.chunk_active: set[int] = set(range(n))  # the jobs running when the pending chunk began

    def stop_job(self, j: int, done: int, calls: int, stop: str, error: Optional[str]) -> None:
        self.active.discard(j)
        self.done[j], self.calls[j], self.stop[j], self.error[j] = done, calls, stop, error
        self._just_stopped.append(j)

    def fail_all(self, done: int, error: str) -> None:
        for j in list(self.active):
            self.stop_job(j, done, done, "diverged", error)

    def stopped_now(self) -> list[int]:
        out, self._just_stopped = self._just_stopped, []
        return out


def _finite(batch: Batch) -> bool:
    with torch.no_grad():
        return all(bool(torch.isfinite(v).all()) for v in batch.stacked().values())

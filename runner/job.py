"""What one run optimises: one set of parameters, or R replicas (trainer.replicas), batched or in
sequence. The task records whatever `run` returns the same way in every case."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from runner import compiling
from runner import needs as optim_needs
from runner import replicas as rep
from runner.adapter import ProblemHooks
from runner.best import BestPoint
from runner.loop import LoopResult, optimise


class Job:
    def __init__(self, problem, seeds: list[int], device, dtype, make_optimizer: Callable,
                 make_scheduler: Optional[Callable], optim_factory, initial_params: Callable,
                 compile_mode: str = "false", needs: Optional[optim_needs.Needs] = None,
                 steps: Optional[int] = None):
        problem = ProblemHooks.of(problem)  # the plugin, through the contract's adapter
        self.problem, self.seeds, self.device, self.dtype = problem, seeds, device, dtype
        # What the optimiser asks of the loop (runner/needs.py); replicas batch only elementwise ones.
        self.needs = needs or optim_needs.of(optim_factory, getattr(optim_factory, "__name__", "optimiser"))
        self.compile = compiling.decide(compile_mode, problem, device, dtype, steps)
        self.make_optimizer, self.make_scheduler = make_optimizer, make_scheduler
        self.plan = rep.plan(problem, self.needs, seeds, device, dtype) if len(seeds) > 1 else rep.ReplicaPlan("single", "")
        if self.plan.mode == "batched":
            self.params = {k: v.requires_grad_(True) for k, v in rep.batched_initial_params(problem, seeds, device, dtype).items()}
        else:
            self.params = initial_params(torch.Generator().manual_seed(seeds[0]))
        optim_needs.check_parameters(self.needs, {k: tuple(v.shape[1:] if self.plan.mode == "batched" else v.shape) for k, v in self.params.items()})
        # Built now, so that bad optimiser or schedule arguments are refused before a run exists.
        self.optimizer = make_optimizer(list(self.params.values()))
        self.scheduler = make_scheduler(self.optimizer) if make_scheduler else None
        self.final_params: list[dict] = []
        self.best_params: list[dict] = []  # per replica: the parameters of the least loss seen (runner/best.py)

    @property
    def replicas(self) -> int:
        return len(self.seeds)

    def run(self, **loop_kwargs) -> LoopResult:
        """The loop; with trainer.compile, after a timed warm-up that compiles (self.compile)."""
        if self.plan.mode == "single":
            loss = self._loss(self.problem.loss)
            result = optimise(lambda: loss(self.params), self.optimizer, scheduler=self.scheduler, needs=self.needs,
                              params=self.params, **loop_kwargs)
            self.final_params = [self.params]
            self.best_params = [result.best.params]
        elif self.plan.mode == "batched":
            loss = self._loss(lambda params: rep.batched_loss(self.problem, params))
            with rep.one_thread_if_small(self.problem, self.replicas, self.device, self.dtype):
                result = optimise(lambda: loss(self.params), self.optimizer, scheduler=self.scheduler, needs=self.needs,
                                  params=self.params, **loop_kwargs)
            self.final_params = [rep.replica(self.params, r) for r in range(self.replicas)]
            self.best_params = [rep.replica(result.best.params, r) for r in range(self.replicas)]
        else:
            result = self._sequential(**loop_kwargs)
        return result

    def _loss(self, eager: Callable) -> Callable:
        """The loss of params the loop calls: `eager`, or compiled once warmed up on self.params.
        Either is warmed up outside the loop's clock (the eager one only on CUDA)."""
        if not self.compile.compile:
            compiling.warm_up_eager(lambda: eager(self.params), list(self.params.values()))
            return eager
        compiled = compiling.compile_loss(eager)
        compiling.warm_up(self.compile, lambda: compiled(self.params), list(self.params.values()))
        return compiled if self.compile.compile else eager  # warm_up turns it off when compiling failed

    def _sequential(self, on_points=lambda done, points, times, costs: None, **loop_kwargs) -> LoopResult:
        """Each replica a loop of its own; the history is then the median over replicas, timed
        as the first replica's steps were (the time one replica takes)."""
        loss = self._loss(self.problem.loss)  # compiled once: every replica has the same shapes
        histories, results, first_times, first_costs = [], [], {}, {}
        for r, seed in enumerate(self.seeds):
            params = self.params if r == 0 else {k: v.detach().requires_grad_(True) for k, v in
                                                 self.problem.raw_initial_params(torch.Generator().manual_seed(seed), self.device, self.dtype).items()}
            opt = self.optimizer if r == 0 else self.make_optimizer(list(params.values()))
            sched = self.scheduler if r == 0 else (self.make_scheduler(opt) if self.make_scheduler else None)
            points: list = []

            def collect(done, pts, times, costs, first=(r == 0)):
                points.extend(pts)
                if first:  # the record's times and evaluations are the first replica's
                    first_times.update((s, t) for (s, _), t in zip(pts, times))
                    first_costs.update((s, c) for (s, _), c in zip(pts, costs))

            results.append(optimise(lambda: loss(params), opt, scheduler=sched, on_points=collect, needs=self.needs,
                                    params=params, **loop_kwargs))
            histories.append(dict(points))
            self.final_params.append(params)
            self.best_params.append(results[-1].best.params)
        steps = sorted(set().union(*histories))
        bands: dict = {"loss_q10": [], "loss_q90": []}
        median_points = []
        for s in steps:
            vals = torch.tensor([h[s] for h in histories if s in h and math.isfinite(h[s])], dtype=torch.float64)
            if len(vals):
                q = torch.quantile(vals, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
                median_points.append((s, q[1]))
                bands["loss_q10"].append((s, q[0]))
                bands["loss_q90"].append((s, q[2]))
        last = max(first_times.values(), default=results[0].started_at)
        on_points(max(r.steps for r in results), median_points, [first_times.get(s, last) for s, _ in median_points],
                  [first_costs.get(s, results[0].evaluations) for s, _ in median_points])
        finals = rep.Finals([r.final_loss for r in results])
        return LoopResult(
            steps=max(r.steps for r in results),
            final_loss=finals.median,
            seconds=sum(r.seconds for r in results),
            stop_reason="diverged" if not finals.finite else "steps",
            started_at=results[0].started_at,
            error=finals.error,
            final_losses=finals.losses,
            bands=bands,
            evaluations=results[0].evaluations,
            best=BestPoint([r.best.losses[0] for r in results], [r.best.steps[0] for r in results], {}),
        )

"""A direct least-squares solve as an optimiser, for comparisons: one step to the reference.

It asks the engine for the problem (a `problem` argument) and works with any problem built on
plugins/problems/least_squares.py (poly, nist, puzzle, linsys): the step sets the parameters to
the problem's reference solution (SVD in float64, refined with residuals in exact arithmetic).
Later steps keep them there. The reference is moved to the parameter's device once, on the
first step, and kept there: no copy from the host per step.
"""
from __future__ import annotations

import torch


class LstSq(torch.optim.Optimizer):
    elementwise = False

    def __init__(self, params, problem=None):
        if not callable(getattr(problem, "reference", None)):
            raise ValueError(
                "optim=lstsq solves linear least-squares problems directly (poly, nist, puzzle, linsys); "
                f"this problem ({type(problem).__name__}) has no reference solution to step to"
            )
        super().__init__(params, {})
        self.problem = problem
        self.target = None  # the reference on the parameter's device and dtype, made on the first step

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        (p,) = [p for group in self.param_groups for p in group["params"]]
        if self.target is None or self.target.device != p.device or self.target.dtype != p.dtype:
            self.target = torch.as_tensor(self.problem.reference().c, dtype=p.dtype, device=p.device)
        p.copy_(self.target)
        return loss

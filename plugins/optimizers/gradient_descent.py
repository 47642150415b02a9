"""Plain gradient descent, written by hand: the optimiser the tutorial suggests trying first.

It is registered through an entry point exactly as a third-party optimiser would be, and shows
the whole contract of an optimiser plugin: a torch.optim.Optimizer whose step takes a closure.
"""
from __future__ import annotations

import torch


class GradientDescent(torch.optim.Optimizer):
    """x <- x - lr * grad f(x)."""

    elementwise = True  # each element's update uses only its own gradient

    def __init__(self, params, lr: float = 1e-3):
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr} (optim.lr must be > 0)")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])
        return loss

"""The Rosenbrock function as a runner plugin, and sign-SGD as an optimiser plugin.

Written against runner/contract.py; inheriting from its classes is optional and only documents
the intent (this package would also work as plain classes). No file of the runner changes: the
entry points in pyproject.toml make `problem=rosenbrock` and `optim=signsgd` exist.
"""
from __future__ import annotations

import torch

try:  # the contract's base classes, when the runner is importable (it always is beside it)
    from runner.contract import Problem
except ImportError:  # pragma: no cover
    Problem = object


class Rosenbrock(Problem):
    """f(x) = sum_i b (x_{i+1} - x_i^2)^2 + (a - x_i)^2, minimum 0 at x = (a, a^2, ...)."""

    def __init__(self, dim: int = 2, a: float = 1.0, b: float = 100.0, spread: float = 1.0):
        if dim < 2:
            raise ValueError(f"problem.dim must be at least 2; got {dim}")
        if b <= 0:
            raise ValueError(f"problem.b must be > 0; got {b}")
        self.dim, self.a, self.b, self.spread = dim, a, b, spread

    def initial_params(self, generator, device, dtype):
        # The generator is a CPU torch.Generator: draw on the CPU, then move. A seed then gives
        # the same start on every device.
        x = -1.0 + self.spread * torch.randn(self.dim, generator=generator, dtype=dtype)
        return {"x": x.to(device)}

    def loss(self, params):
        x = params["x"]
        return (self.b * (x[1:] - x[:-1] ** 2) ** 2 + (self.a - x[:-1]) ** 2).sum()

    def _minimiser(self):
        """(a, a^2) in two dimensions, (1, ..., 1) for a = 1; otherwise not known in closed form."""
        if self.dim == 2:
            return [self.a, self.a ** 2]
        return [1.0] * self.dim if self.a == 1 else None

    def optimum_loss(self):
        return 0.0 if self._minimiser() is not None else None

    def target_loss(self):
        return 1e-10 if self._minimiser() is not None else None

    def truth(self):
        best = self._minimiser()
        return {"x": best} if best is not None else None

    def metrics(self, params):
        best = self._minimiser()
        if best is None:
            return {}
        x = params["x"].detach()
        return {"distance": float(torch.linalg.vector_norm(x - torch.tensor(best, dtype=x.dtype, device=x.device)))}

    def solution(self, params):
        return {"x": params["x"].detach().cpu().tolist()}


class SignSGD(torch.optim.Optimizer):
    """x <- x - lr * sign(grad f(x)): each element on its own, so replicas batch."""

    elementwise = True  # runner/contract.py Optimizer.elementwise

    def __init__(self, params, lr: float = 1e-3):
        if not lr > 0:
            raise ValueError(f"optim.lr must be > 0; got {lr}")
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
                    p.add_(p.grad.sign(), alpha=-group["lr"])
        return loss

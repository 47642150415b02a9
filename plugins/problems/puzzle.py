"""A system of linear equations written as text, solved by minimising the summed squared error."""
from __future__ import annotations

import numpy as np
import torch

from plugins.problems.linear_equations import EquationError, parse_system

TUTORIAL_EQUATIONS = ["A + B = 9", "C - D = 1", "A + C = 8", "B - D = 2"]


class Puzzle:
    """Unknowns named in the equations; loss = sum over equations of (left - right)^2."""

    def __init__(self, equations: list[str] = tuple(TUTORIAL_EQUATIONS)):  # type: ignore[assignment]
        try:
            self.system = parse_system(list(equations))
        except EquationError as exc:
            raise ValueError(f"problem.equations: {exc}") from None
        self._tensors: dict = {}

    def initial_params(self, generator, device, dtype):
        A, b = self.system.A, self.system.b
        self._tensors = {"A": torch.tensor(A, device=device, dtype=dtype), "b": torch.tensor(b, device=device, dtype=dtype)}
        start = torch.randn(len(self.system.names), generator=generator, dtype=torch.float64)
        return {"x": start.to(device=device, dtype=dtype)}

    def loss(self, params):
        return (self._tensors["A"] @ params["x"] - self._tensors["b"]).square().sum()

    def metrics(self, params):
        x = params["x"].detach().to("cpu", torch.float64).numpy()
        residual = self.system.A @ x - self.system.b
        return {"max_residual": float(np.max(np.abs(residual))), "rank": float(np.linalg.matrix_rank(self.system.A))}

    def solution(self, params):
        x = params["x"].detach().to("cpu", torch.float64).numpy()
        return {n: float(v) for n, v in zip(self.system.names, x)}

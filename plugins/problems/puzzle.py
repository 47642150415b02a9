"""A system of linear equations written as text, solved by minimising the summed squared error.

The text is only parsed into A x = b; the least-squares engine (shared with linsys) does the
rest, including the rank and the minimum-norm solution when the system does not pin x down.

Loss (`loss`): `scaled` (the default) is sum (left - right)^2 / (m s^2) for m equations, s the
root-mean-square coefficient of the left-hand sides (over every unknown of every equation): the
same for equations multiplied by any unit, and a curvature bounded by the number of unknowns.
`sse` is the tutorial's plain sum of squared errors, `mse` its mean. The sse is logged in every
case (metric `sse`).
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from runner_plugins.problems.least_squares import LinearLeastSquares
from runner_plugins.problems.linear_equations import EquationError, parse_system

TUTORIAL_EQUATIONS = ["A + B = 9", "C - D = 1", "A + C = 8", "B - D = 2"]


class Puzzle(LinearLeastSquares):
    """Unknowns named in the equations; sse = sum over equations of (left - right)^2."""

    def __init__(self, equations: list[str] = tuple(TUTORIAL_EQUATIONS),  # type: ignore[assignment]
                 loss: Literal["scaled", "sse", "mse"] = "scaled"):
        try:
            self.system = parse_system(list(equations))
        except EquationError as exc:
            raise ValueError(f"problem.equations: {exc}") from None
        A, b = self.system.A, self.system.b
        identity = np.eye(A.shape[1])
        s = float(np.sqrt(np.mean(A**2))) or 1.0  # the equations' unit: the internal system is A/s x = b/s
        self.setup(A / s, b / s, s, identity, np.zeros(A.shape[1]), X=A, y=b, names=self.system.names, loss=loss)

    def metrics(self, params):
        x = self.internal(params)
        residual = self.system.A @ x - self.system.b
        out = {"max_residual": float(np.max(np.abs(residual))), **super().metrics(params)}
        ref = self.reference()
        if not ref.full_rank:  # many x solve it (the tutorial's rank is 3): show the smallest beside
            out.update({f"min_norm_{n}": float(v) for n, v in zip(self.system.names, ref.c)})
        return out

    def solution(self, params):
        return {n: float(v) for n, v in zip(self.system.names, self.internal(params))}

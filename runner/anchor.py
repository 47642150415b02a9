"""What a user would pick instead: scipy.optimize.least_squares on a problem's own residuals.

Works for any problem plugin with `residuals(params)` (the optional contract method optim=lm
uses): the residuals become a numpy function of one float64 vector, the Jacobian is scipy's
finite differences (`jac="2-point"`, its default), tolerances 1e-15, scipy's default budget. The
evaluation count is every call of the residual function, the finite-difference ones included,
so it compares with the runner's `evals` (a Jacobian by autograd counts n, see runner/loop.py).
"""
from __future__ import annotations

import math
import time

import numpy as np

from runner.adapter import ProblemHooks

METHODS = ("lm", "trf")


def scipy_least_squares(problem, method: str, tol: float = 1e-15) -> dict:
    """Fit `problem` from its own starting point (seed 0); its metrics and the cost."""
    import torch
    from scipy.optimize import least_squares

    start = problem.initial_params(torch.Generator().manual_seed(0), torch.device("cpu"), torch.float64)
    names = list(start)
    shapes = [v.shape for v in start.values()]
    sizes = [v.numel() for v in start.values()]
    x0 = torch.cat([v.detach().reshape(-1) for v in start.values()]).double().numpy()
    calls = [0]

    def as_params(x):
        out, i = {}, 0
        for name, shape, k in zip(names, shapes, sizes):
            out[name] = torch.as_tensor(x[i : i + k], dtype=torch.float64).reshape(shape)
            i += k
        return out

    def fun(x):
        calls[0] += 1
        with torch.no_grad():
            r = problem.residuals(as_params(x)).reshape(-1).double().numpy()
        return np.where(np.isfinite(r), r, 1e150)  # scipy stops on a non-finite residual

    began = time.perf_counter()
    try:
        result = least_squares(fun, x0, jac="2-point", method=method, xtol=tol, ftol=tol, gtol=tol)
        x, status, message = result.x, int(result.status), str(result.message)
    except Exception as exc:  # scipy refuses (lm needs m >= n, ...): reported, not raised
        x, status, message = x0, -99, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - began
    params = as_params(x)
    metrics = ProblemHooks.of(problem).metrics(params)
    with torch.no_grad():
        loss = float(problem.loss(params))
    return {"method": method, "evals": calls[0], "seconds": seconds, "loss": loss if math.isfinite(loss) else math.nan,
            "status": status, "message": message, "metrics": metrics}

"""The engine shared by the nonlinear fits (problem=curve, and problem=nist on the nonlinear sets).

    residuals(b) = model(x; b) - response(y)        loss(b) = sum of residuals^2 (rss)

The model and the response are formulas as text (plugins/problems/formula.py) compiled into torch
functions, so autograd, float64, CUDA, torch.func (vmap for replicas, jacfwd for optim=lm) work on
them. The parameters are one vector `b`, in the order they are named; the starting point is fixed
(given by the user, or NIST's), so trainer.seed does not move it.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from runner_plugins.problems.formula import Formula

_fit_figure = None  # (figure, axes): built once per process, cleared and redrawn per run


class FormulaFit:
    preferred_dtype = "float64"  # trainer.dtype=auto: the fits' digits need float64

    def setup_fit(self, model: Formula, response: Formula, columns: Mapping[str, np.ndarray],
                  parameters: Sequence[str], start: Mapping[str, float], loss: str = "sse") -> None:
        self.model, self.response = model, response
        self.parameters = list(parameters)
        self.columns = {k: np.asarray(v, np.float64) for k, v in columns.items() if k in model.names or k in response.names}
        self.start = np.array([float(start[p]) for p in self.parameters], np.float64)
        self.loss_kind = loss
        self.n = len(next(iter(columns.values())))
        self._model_fn, self._response_fn = model.compile(), response.compile()
        target = response.evaluate_numpy(self.columns)
        target = np.broadcast_to(target, (self.n,)).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(target))
        if bad.size:
            raise ValueError(f"The response {response.text!r} is not finite for {bad.size} of {self.n} rows "
                             f"(first: row {bad[0] + 1}, y = {self.columns.get('y', [np.nan])[bad[0]]!r}).")
        self.target = target
        self._tensors: dict = {}

    # -- the problem contract ---------------------------------------------------------------
    def initial_params(self, generator: torch.Generator, device, dtype):
        self._to(device, dtype)
        return {"b": torch.as_tensor(self.start, dtype=dtype, device=device).clone()}

    def residuals(self, params) -> torch.Tensor:
        """model - response, one per observation; loss(params) == sum(residuals(params)**2)."""
        b = params["b"]
        self._to(b.device, b.dtype)
        env = dict(self._tensors["columns"])
        env.update({name: b[i] for i, name in enumerate(self.parameters)})
        r = self._model_fn(env) - self._tensors["target"]
        r = torch.broadcast_to(r, self._tensors["target"].shape)
        return r / math.sqrt(self.n) if self.loss_kind == "mse" else r

    def loss(self, params) -> torch.Tensor:
        r = self.residuals(params)
        return (r * r).sum()

    def metrics(self, params) -> dict[str, float]:
        r = self._residuals_np(params)
        rss = float(np.sum(r * r))
        return {"rss": rss, "rmse": math.sqrt(rss / self.n)}

    def solution(self, params) -> dict:
        return {name: float(v) for name, v in zip(self.parameters, self.values(params))}

    def values(self, params) -> np.ndarray:
        return params["b"].detach().to("cpu", torch.float64).numpy()

    # -- helpers ----------------------------------------------------------------------------
    def _residuals_np(self, params) -> np.ndarray:
        with torch.no_grad():
            b = params["b"].detach().to(torch.float64)
            r = self.residuals({"b": b}).cpu().numpy()
        return r * math.sqrt(self.n) if self.loss_kind == "mse" else r

    def _to(self, device, dtype) -> None:
        key = (str(device), dtype)
        if self._tensors.get("key") == key:
            return
        as_t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        self._tensors = {"key": key, "columns": {k: as_t(v) for k, v in self.columns.items()}, "target": as_t(self.target)}

    def predict(self, b: np.ndarray, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        env = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in columns.items()}
        env.update({name: torch.tensor(float(v), dtype=torch.float64) for name, v in zip(self.parameters, b)})
        with torch.no_grad():
            out = self._model_fn(env)
        n = len(next(iter(columns.values())))
        return np.broadcast_to(np.asarray(out.numpy() if isinstance(out, torch.Tensor) else out, np.float64), (n,))

    def figures(self, params):
        """fit.png: the data and the fitted model (against x, or fitted against observed for several
        predictors) above the residuals."""
        global _fit_figure
        if _fit_figure is None:
            from matplotlib.figure import Figure

            fig = Figure(figsize=(6, 5.5))
            fig.subplots_adjust(left=0.14, right=0.97, top=0.93, bottom=0.09, hspace=0.45)
            _fit_figure = fig, fig.add_subplot(3, 1, (1, 2)), fig.add_subplot(3, 1, 3)
        fig, ax, ax_r = _fit_figure
        ax.clear()
        ax_r.clear()
        b = self.values(params)
        r = self._residuals_np(params)
        fitted = self.target + r
        predictors = [n for n in self.model.names if n in self.columns and n not in self.response.names]
        label = self.response.text
        if len(predictors) == 1:
            name = predictors[0]
            x = self.columns[name]
            grid = np.linspace(x.min(), x.max(), 400)
            ax.plot(x, self.target, "o", ms=3, label=f"data ({self.n})")
            ax.plot(grid, self.predict(b, {name: grid}), "-", lw=1.5, label="fit")
            ax_r.plot(x, -r, "o", ms=3)
            ax_r.set_xlabel(name)
            ax.set_xlabel(name)
        else:
            ax.plot(self.target, fitted, "o", ms=3, label=f"data ({self.n})")
            lo, hi = float(np.min(self.target)), float(np.max(self.target))
            ax.plot([lo, hi], [lo, hi], "-", lw=1, label="fitted = observed")
            ax.set_xlabel(f"observed {label}")
            label = f"fitted {label}"
            ax_r.plot(np.arange(1, self.n + 1), -r, "o", ms=3)
            ax_r.set_xlabel("observation")
        ax_r.axhline(0.0, color="0.5", lw=0.8)
        ax.set_ylabel(label)
        ax_r.set_ylabel("data − fit")
        ax.set_title(f"{self.model.text[:70]}  (rss {float(np.sum(r * r)):.6g})", fontsize=9, y=1.0)
        ax.legend(fontsize=8)
        return {"fit": fig}


def check_start(parameters: Sequence[str], start: Optional[Mapping], formula_text: str) -> dict[str, float]:
    """Every parameter needs a finite starting value; a start for a name the model lacks is refused."""
    start = dict(start or {})
    missing = [p for p in parameters if p not in start]
    if missing:
        example = ", ".join(f"{p}: 1" for p in parameters)
        raise ValueError(f"problem.start has no starting value for {', '.join(missing)} (parameters of the model "
                         f"{formula_text!r}); give one for each, e.g. problem.start='{{{example}}}'.")
    extra = [k for k in start if k not in parameters]
    if extra:
        raise ValueError(f"problem.start names {', '.join(map(str, extra))}, which the model {formula_text!r} does not use "
                         f"as a parameter (its parameters: {', '.join(parameters)}).")
    out = {}
    for p in parameters:
        v = start[p]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"problem.start.{p} must be a finite number; got {v!r}.")
        out[p] = float(v)
    return out

"""Levenberg-Marquardt for problems that expose their residuals (`residuals(params) -> Tensor`).

The trust-region form of MINPACK's lmder (Moré, 1978, "The Levenberg-Marquardt algorithm:
implementation and theory"), with the subproblem solved through an SVD of the column-scaled
Jacobian instead of a pivoted QR (the same step; rank deficiency handled by the SVD):

- variables scaled by D = the largest column norms of the Jacobian seen so far, so the method
  does not depend on the parameters' units; the trust region bounds ||D p|| <= delta;
- the damping lambda is found for each delta by Moré's safeguarded Newton iteration on
  1/||D p(lambda)||, to within 10 % of delta (lambda = 0, the Gauss-Newton step, inside it);
- delta grows after good agreement between the actual and predicted reductions and shrinks
  after poor agreement by MINPACK's rule; a step is taken when the ratio is at least 1e-4.

One `step()` is one outer iteration: one Jacobian, then trial steps (one residual evaluation
each) until one is taken. Jacobians come from autograd: torch.func.jacfwd (n forward products)
when parameters are fewer than residuals, jacrev (m reverse products) otherwise. Arithmetic is
float64 whatever the parameters' dtype (`precision=param` keeps theirs). Once no step can reduce
the residual any more (the tests of MINPACK at tolerance zero: machine precision), later steps
spend nothing and return the same loss.

Cost accounting (`evaluations`): each residual evaluation counts one loss evaluation; a Jacobian
counts as the gradient evaluations it costs: n for forward mode, m for reverse mode (a gradient
of the loss is one reverse product).
"""
from __future__ import annotations

import math
from typing import Literal

import torch

EPS = torch.finfo(torch.float64).eps


class LevenbergMarquardt(torch.optim.Optimizer):
    elementwise = False  # couples every parameter: replicas run one after another

    def __init__(self, params, problem=None, factor: float = 1.0, ftol: float = 0.0, xtol: float = 0.0,
                 gtol: float = 0.0, max_trials: int = 30, jacobian: Literal["auto", "forward", "reverse"] = "auto",
                 precision: Literal["float64", "param"] = "float64", polish: bool = True, max_polish: int = 10):
        from runner.contract import Problem

        own = getattr(type(problem), "residuals", None)
        if not callable(getattr(problem, "residuals", None)) or own is Problem.residuals:
            raise ValueError(
                f"optim=lm (Levenberg-Marquardt) needs the problem's residuals: this problem "
                f"({type(problem).__name__}) has no residuals(params) method. Problems that have it: poly, nist, "
                "linsys, puzzle, curve; use a gradient method (lbfgs, adam, ...) for the others.")
        if not factor > 0 or max_trials < 1 or min(ftol, xtol, gtol) < 0:
            raise ValueError("optim.factor must be > 0, optim.max_trials >= 1 and optim.ftol, xtol, gtol >= 0.")
        super().__init__(params, {})
        self.problem, self.factor, self.ftol, self.xtol, self.gtol = problem, factor, ftol, xtol, gtol
        self.max_trials, self.jacobian_mode, self.precision = max_trials, jacobian, precision
        self.leaves = [p for group in self.param_groups for p in group["params"]]
        device, dtype = self.leaves[0].device, self.leaves[0].dtype
        # The problem's parameter names, in the order the engine passed the tensors.
        template = problem.initial_params(torch.Generator().manual_seed(0), device, dtype)
        if [tuple(v.shape) for v in template.values()] != [tuple(p.shape) for p in self.leaves]:
            raise ValueError("optim=lm could not match the optimised tensors to the problem's parameters "
                             "(initial_params returned other shapes).")
        self.names = list(template)
        self.shapes = [p.shape for p in self.leaves]
        self.work_dtype = torch.float64 if precision == "float64" else dtype
        self.evaluations = {"loss": 0, "gradient": 0}
        self.polish, self.max_polish = polish, max_polish
        self.converged, self.stop_reason, self.polishing = False, None, False
        self._polished, self._last_polish = 0, math.inf
        self._x = None  # the iterate in working precision
        self._r = None  # residuals at _x
        self._diag = None
        self._delta = None
        self._par = 0.0

    # -- residuals and Jacobian of a flat vector ----------------------------------------------
    def _params(self, x: torch.Tensor) -> dict:
        out, i = {}, 0
        for name, shape, leaf in zip(self.names, self.shapes, self.leaves):
            k = math.prod(shape)
            v = x[i : i + k].view(shape)
            out[name] = v if self.precision == "float64" else v.to(leaf.dtype)
            i += k
        return out

    def _f(self, x: torch.Tensor) -> torch.Tensor:
        return self.problem.residuals(self._params(x)).reshape(-1).to(self.work_dtype)

    def _residuals(self, x: torch.Tensor) -> torch.Tensor:
        self.evaluations["loss"] += 1
        with torch.no_grad():
            return self._f(x)

    def _jacobian(self, x: torch.Tensor, m: int) -> torch.Tensor:
        n = x.numel()
        forward = self.jacobian_mode == "forward" or (self.jacobian_mode == "auto" and n <= m)
        self.evaluations["gradient"] += n if forward else m
        try:
            return (torch.func.jacfwd if forward else torch.func.jacrev)(self._f)(x).detach()
        except (RuntimeError, NotImplementedError):  # an operation torch.func cannot transform (sparse)
            return torch.autograd.functional.jacobian(self._f, x, vectorize=False).detach()

    # -- one outer iteration ------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        x = self._sync()
        if self._r is None:
            self._r = self._residuals(x)
        r = self._r
        loss = (r @ r).to(self.leaves[0].dtype)  # the loss before this step, as the loop logs it
        if self.converged:
            return loss
        fnorm = float(torch.linalg.vector_norm(r))
        if not math.isfinite(fnorm):
            return loss  # the loop records the divergence
        if fnorm == 0.0:
            self.converged, self.stop_reason = True, "zero residual"
            return loss
        J = self._jacobian(x, r.numel())
        if self.polishing:
            return self._polish(x, r, J, loss)
        colnorms = torch.linalg.vector_norm(J, dim=0)
        if self._diag is None:
            self._diag = torch.where(colnorms > 0, colnorms, torch.ones_like(colnorms))
            xnorm = float(torch.linalg.vector_norm(self._diag * x))
            self._delta = self.factor * xnorm if xnorm > 0 else self.factor
        else:
            self._diag = torch.maximum(self._diag, colnorms)
        D = self._diag
        # Gradient test: the largest cosine between a column of J and the residual.
        g = J.T @ r
        safe = torch.where(colnorms > 0, colnorms, torch.ones_like(colnorms))
        gnorm = float(torch.max(torch.abs(g) / (safe * fnorm))) if g.numel() else 0.0
        if gnorm <= max(self.gtol, EPS):
            return self._stop(loss, "gradient orthogonal to the residual (gtol)")
        U, s, Vt = torch.linalg.svd(J / D, full_matrices=False)
        z = U.T @ r
        for trial in range(self.max_trials):
            u, self._par = _trust_region_step(s, z, self._delta, self._par)
            p = -(Vt.T @ u) / D  # the step in the parameters: D p = -V u
            pnorm = float(torch.linalg.vector_norm(u))
            if self._first_iteration():
                self._delta = min(self._delta, pnorm)
            x_new = x + p
            r_new = self._residuals(x_new)
            fnorm1 = float(torch.linalg.vector_norm(r_new))
            actred = 1.0 - (fnorm1 / fnorm) ** 2 if math.isfinite(fnorm1) and 0.1 * fnorm1 < fnorm else -1.0
            t1 = float(torch.linalg.vector_norm(s * (Vt @ (D * p)))) / fnorm  # ||J p|| / ||r||
            t2 = math.sqrt(self._par) * pnorm / fnorm
            prered = t1 * t1 + 2.0 * t2 * t2
            dirder = -(t1 * t1 + t2 * t2)
            ratio = actred / prered if prered != 0.0 else 0.0
            if ratio <= 0.25:  # poor agreement: shrink the region (MINPACK's rule)
                temp = 0.5 if actred >= 0 else 0.5 * dirder / (dirder + 0.5 * actred)
                if not (0.1 * fnorm1 < fnorm) or temp < 0.1 or not math.isfinite(temp):
                    temp = 0.1
                self._delta = temp * min(self._delta, pnorm / 0.1)
                self._par /= temp
            elif self._par == 0.0 or ratio >= 0.75:
                self._delta = pnorm / 0.5
                self._par *= 0.5
            taken = ratio >= 1e-4
            if taken:
                x, self._r, fnorm_taken = x_new, r_new, fnorm1
                self._write(x)
            xnorm = float(torch.linalg.vector_norm(D * x))
            if abs(actred) <= max(self.ftol, EPS) and prered <= max(self.ftol, EPS) and 0.5 * ratio <= 1.0:
                return self._stop(loss, "no further reduction of the residual (ftol)")
            if self._delta <= max(self.xtol, EPS) * xnorm:
                return self._stop(loss, "trust region at the precision of the parameters (xtol)")
            if taken:
                self._iterations = getattr(self, "_iterations", 0) + 1
                return loss
        return loss  # max_trials without a taken step: the next step recomputes the Jacobian

    def _polish(self, x, r, J, loss):
        """Newton steps on the gradient J'r once the trust region has closed. LM's tests judge
        steps by the sum of squares, and where the residuals are small beside the data (Lanczos3,
        ENSO) float64 rounds that sum more coarsely than the parameters' last digits change it:
        LM stops with the parameters right to about half the digits in flat directions. The
        stationarity equations J'r = 0 stay resolvable: Newton's method on them (the exact Hessian
        J'J + sum r_i H_i, by autograd) is taken while the curvature is positive and each step is
        under half the previous one, and stops at the first step that is not (rounding level)."""
        D = self._diag
        g = J.T @ r
        self.evaluations["gradient"] += x.numel() + 1  # n forward products through one gradient
        try:
            H = torch.func.jacfwd(torch.func.grad(self._half_rss))(x).detach()
        except (RuntimeError, NotImplementedError):  # torch.func cannot transform it: Gauss-Newton
            H = J.T @ J
        Hs = H / D[:, None] / D[None, :]
        Hs = 0.5 * (Hs + Hs.T)
        w, V = torch.linalg.eigh(Hs)
        if not bool(torch.isfinite(w).all()) or float(w.min()) <= 0.0:
            return self._stop(loss, self.stop_reason or "curvature not positive")
        u = -(V @ ((V.T @ (g / D)) / w))
        pnorm = float(torch.linalg.vector_norm(u))
        xnorm = float(torch.linalg.vector_norm(D * x))
        limit = 0.5 * self._last_polish if math.isfinite(self._last_polish) else 1e-4 * max(xnorm, 1.0)
        if not pnorm < limit or pnorm <= EPS * xnorm:
            return self._stop(loss, self.stop_reason or "Newton steps stopped shrinking")
        x_new = x + u / D
        r_new = self._residuals(x_new)
        rss, rss_new = float(r @ r), float(r_new @ r_new)
        if not rss_new <= rss * (1 + 1e-8):  # a wild step: rounding moves the sum far less
            return self._stop(loss, self.stop_reason or "Newton step increased the sum of squares")
        self._last_polish = pnorm
        self._r = r_new
        self._write(x_new)
        self._polished += 1
        if self._polished >= self.max_polish:
            return self._stop(loss, self.stop_reason or "Newton polish done")
        return loss

    def _half_rss(self, x):
        r = self._f(x)
        return 0.5 * (r @ r)

    def _first_iteration(self) -> bool:
        return getattr(self, "_iterations", 0) == 0

    def _stop(self, loss, reason: str):
        if self.polish and not self.polishing and not self.converged:
            self.polishing, self.stop_reason = True, reason
            return loss
        self.converged = True
        self.stop_reason = self.stop_reason or reason
        return loss

    def _sync(self) -> torch.Tensor:
        """The iterate in working precision; restarted if something else moved the parameters."""
        current = torch.cat([p.detach().reshape(-1) for p in self.leaves])
        if self._x is None or not torch.equal(self._x.to(current.dtype), current):
            self._x = current.to(self.work_dtype).clone()
            self._r, self.converged, self.polishing, self.stop_reason = None, False, False, None
            self._polished, self._last_polish = 0, math.inf
        return self._x

    def _write(self, x: torch.Tensor) -> None:
        self._x = x
        i = 0
        for leaf in self.leaves:
            k = leaf.numel()
            leaf.copy_(x[i : i + k].view(leaf.shape).to(leaf.dtype))
            i += k


def _trust_region_step(s: torch.Tensor, z: torch.Tensor, delta: float, par: float):
    """(u, lambda) with u = -(scaled step) = S z / (S^2 + lambda), ||u|| within 10 % of delta, or
    the Gauss-Newton step (lambda = 0) when it lies inside. Moré's safeguarded Newton iteration on
    1/||u(lambda)|| - 1/delta, bracketed by [lo, hi]."""
    tiny = s.max() * s.numel() * EPS if s.numel() else s.new_tensor(0.0)
    keep = s > tiny
    gn = torch.where(keep, z / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
    gn_norm = float(torch.linalg.vector_norm(gn))
    if gn_norm <= 1.1 * delta:
        return gn, 0.0
    sz = s * z
    hi = float(torch.linalg.vector_norm(sz)) / delta
    lo = 0.0
    if bool(keep.all()):  # full rank: a lower bound from the Gauss-Newton step (Moré)
        q2 = torch.sum(gn * gn / (s * s))  # d/dlambda of ||u||^2 at 0 is -2 sum(s^2 z^2 / s^6)
        lo = max(0.0, (gn_norm - delta) / delta * gn_norm ** 2 / float(q2) * 1.0) if float(q2) > 0 else 0.0
    lam = par if lo < par < hi else max(0.001 * hi, math.sqrt(lo * hi))
    if lam <= 0:
        lam = 0.001 * hi
    for _ in range(30):
        u = sz / (s * s + lam)
        q = float(torch.linalg.vector_norm(u))
        if abs(q - delta) <= 0.1 * delta or hi - lo <= EPS * hi:
            return u, lam
        if q > delta:
            lo = max(lo, lam)
        else:
            hi = min(hi, lam)
        dq = -float(torch.sum(u * u / (s * s + lam))) / q  # d||u||/dlambda
        step = (q - delta) / delta * q / (-dq) if dq != 0 else 0.0  # Newton on 1/||u||
        lam_new = lam + step
        if not (lo < lam_new < hi):
            lam_new = math.sqrt(lo * hi) if lo > 0 else 0.5 * (lo + hi) if hi > lo else lam
        lam = lam_new
    return sz / (s * s + lam), lam

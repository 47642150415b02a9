"""torch.optim's elementwise update rules with per-job hyperparameters as tensors.

A batch of sweep jobs shares one set of stacked parameters (leading job axis, as
`trainer.replicas` does). Jobs that differ in a numeric hyperparameter (lr, betas, eps,
weight_decay, momentum, alpha, ...) cannot share one torch optimiser, whose hyperparameters are
Python numbers per param group; here each hyperparameter is a vector with one entry per job,
broadcast along the job axis. The arithmetic is torch's single-tensor code, step by step (see
torch/optim/{adam,sgd,rmsprop}.py): the same result to round-off (fused kernels order a few
operations differently).

The hyperparameters come from each job's own torch optimiser, built by the job's plugin factory
on a one-element dummy tensor (`HyperSource`): torch validates them, applies its defaults, and
a job's schedule steps that dummy, so scheduled values are torch's too.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch


class HyperSource:
    """Each job's hyperparameters, read from its own optimiser (a dummy one) and schedule.

    `makers[j]` = (make_optimizer, make_scheduler or None, key); jobs with the same key share one
    dummy (the same config gives the same values at every step)."""

    def __init__(self, makers: list[tuple[Callable, Optional[Callable], str]], device, dtype):
        self.index: list[int] = []
        self.dummies: list = []
        self.schedulers: list = []
        seen: dict[str, int] = {}
        for make_opt, make_sched, key in makers:
            if key not in seen:
                seen[key] = len(self.dummies)
                opt = make_opt([torch.zeros(1, device=device, dtype=dtype, requires_grad=True)])
                self.dummies.append(opt)
                if make_sched is not None:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        self.schedulers.append(make_sched(opt))
            self.index.append(seen[key])
        self.device, self.dtype = device, dtype
        self._index_t = torch.tensor(self.index, device=device)
        self.cls = type(self.dummies[0])

    def group(self, j: int) -> dict:
        return self.dummies[self.index[j]].param_groups[0]

    def vector(self, key: str, part: Optional[int] = None) -> torch.Tensor:
        """One value per job: hyperparameter `key` (element `part` of a tuple such as betas)."""
        values = [g.param_groups[0][key] if part is None else g.param_groups[0][key][part] for g in self.dummies]
        return torch.tensor([float(v) for v in values], device=self.device, dtype=self.dtype)[self._index_t]

    def flag(self, key: str, default=False):
        """A setting every job shares (the grouping guarantees it: non-numeric values split batches)."""
        return self.dummies[0].param_groups[0].get(key, default)

    def step_schedules(self) -> bool:
        if not self.schedulers:
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": the dummy never steps
            for s in self.schedulers:
                s.step()
        return True


def _shape(v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (p.dim() - 1)))


class VectorOptimizer:
    """The base: params are stacked (job axis first); `refresh` re-reads the hyperparameters."""

    KEYS: tuple = ()

    def __init__(self, params: list[torch.Tensor], hypers: HyperSource):
        self.params, self.hypers = list(params), hypers
        self.state: dict = {id(p): {} for p in self.params}
        self.step_count = 0
        self.refresh()

    def refresh(self) -> None:
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.step_count += 1
        for p in self.params:
            if p.grad is not None:
                self._update(p, p.grad, self.state[id(p)])
        return loss

    def after_step(self) -> None:
        """Advance every job's schedule; new hyperparameters from then on."""
        if self.hypers.step_schedules():
            self.refresh()


class Adam(VectorOptimizer):
    """torch.optim.Adam and AdamW (decoupled weight decay), amsgrad, maximize."""

    def refresh(self) -> None:
        h = self.hypers
        self.lr, self.beta1, self.beta2 = h.vector("lr"), h.vector("betas", 0), h.vector("betas", 1)
        self.eps, self.wd = h.vector("eps"), h.vector("weight_decay")
        self.any_wd = bool((self.wd != 0).any())
        self.amsgrad, self.maximize = bool(h.flag("amsgrad")), bool(h.flag("maximize"))
        self.decoupled = bool(h.flag("decoupled_weight_decay", issubclass(h.cls, torch.optim.AdamW)))

    def _update(self, p, grad, state) -> None:
        if not state:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
            if self.amsgrad:
                state["max_exp_avg_sq"] = torch.zeros_like(p)
        grad = -grad if self.maximize else grad
        lr, b1, b2, eps, wd = (_shape(v, p) for v in (self.lr, self.beta1, self.beta2, self.eps, self.wd))
        if self.any_wd:
            if self.decoupled:
                p.mul_(1 - lr * wd)
            else:
                grad = grad + p * wd
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, (1 - b1).expand_as(p))
        exp_avg_sq.mul_(b2).add_(grad * grad * (1 - b2))
        step = self.step_count
        bias_correction1 = 1 - b1**step
        bias_correction2 = 1 - b2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2.sqrt()
        if self.amsgrad:
            torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            denom = (state["max_exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        p.sub_(step_size * (exp_avg / denom))


class SGD(VectorOptimizer):
    """torch.optim.SGD: momentum, dampening, nesterov, weight_decay, maximize."""

    def refresh(self) -> None:
        h = self.hypers
        self.lr, self.momentum, self.dampening, self.wd = h.vector("lr"), h.vector("momentum"), h.vector("dampening"), h.vector("weight_decay")
        self.any_wd, self.any_momentum = bool((self.wd != 0).any()), bool((self.momentum != 0).any())
        self.nesterov, self.maximize = bool(h.flag("nesterov")), bool(h.flag("maximize"))

    def _update(self, p, grad, state) -> None:
        grad = -grad if self.maximize else grad
        lr, momentum, dampening, wd = (_shape(v, p) for v in (self.lr, self.momentum, self.dampening, self.wd))
        if self.any_wd:
            grad = grad + p * wd
        if self.any_momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.detach().clone()
            else:
                buf.mul_(momentum).add_(grad * (1 - dampening))
            moved = grad + buf * momentum if self.nesterov else buf
            grad = torch.where(momentum != 0, moved, grad)  # a job without momentum: torch skips it
        p.sub_(grad * lr)


class RMSprop(VectorOptimizer):
    """torch.optim.RMSprop: alpha, eps, weight_decay, momentum, centered, maximize."""

    def refresh(self) -> None:
        h = self.hypers
        self.lr, self.alpha, self.eps = h.vector("lr"), h.vector("alpha"), h.vector("eps")
        self.wd, self.momentum = h.vector("weight_decay"), h.vector("momentum")
        self.any_wd, self.any_momentum = bool((self.wd != 0).any()), bool((self.momentum > 0).any())
        self.centered, self.maximize = bool(h.flag("centered")), bool(h.flag("maximize"))

    def _update(self, p, grad, state) -> None:
        if not state:
            state["square_avg"] = torch.zeros_like(p)
            if self.any_momentum:
                state["momentum_buffer"] = torch.zeros_like(p)
            if self.centered:
                state["grad_avg"] = torch.zeros_like(p)
        grad = -grad if self.maximize else grad
        lr, alpha, eps, wd, momentum = (_shape(v, p) for v in (self.lr, self.alpha, self.eps, self.wd, self.momentum))
        if self.any_wd:
            grad = grad + p * wd
        square_avg = state["square_avg"]
        square_avg.mul_(alpha).add_(grad * grad * (1 - alpha))
        if self.centered:
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(grad, (1 - alpha).expand_as(p))
            avg = (square_avg - grad_avg * grad_avg).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(eps)
        if self.any_momentum:
            buf = state["momentum_buffer"]
            buf.mul_(momentum).add_(grad / avg)
            p.sub_(torch.where(momentum > 0, buf, grad / avg) * lr)
        else:
            p.sub_((grad / avg) * lr)


# torch class -> its vectorised rule. AdamW is Adam with decoupled weight decay.
RULES: dict[type, type] = {torch.optim.Adam: Adam, torch.optim.AdamW: Adam, torch.optim.SGD: SGD, torch.optim.RMSprop: RMSprop}


def rule_for(cls: type) -> Optional[type]:
    """The vectorised rule for exactly this torch class (a subclass may change the update)."""
    return RULES.get(cls)

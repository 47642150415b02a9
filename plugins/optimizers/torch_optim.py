"""torch.optim's optimisers as plugins, by their lower-case names.

Each is the torch class itself behind a factory whose signature is the class's own, so every
keyword (betas, weight_decay, ...) is config. Where the class has a fused implementation (adam,
adamw, sgd, adagrad) and neither `fused` nor `foreach` is set, the fused one is used: the same
update in one kernel per step. Defaults are torch's, except where noted in
RUNNER_DEFAULTS: the adaptive family starts at lr=0.1, which converges on the built-in problems in
the default 1000 steps (torch's 1e-3 moves a coefficient by at most about 1 in that time), and
L-BFGS uses a strong-Wolfe line search, without which it is unstable on unscaled problems, and no
absolute stopping tolerances (see below).
"""
from __future__ import annotations

import inspect
import typing

import torch

RUNNER_DEFAULTS = {
    "adam": {"lr": 0.1},
    "adamw": {"lr": 0.1},
    "nadam": {"lr": 0.1},
    "radam": {"lr": 0.1},
    "adamax": {"lr": 0.1},
}
# Optimisers whose update treats every parameter element on its own (safe to batch replicas).
ELEMENTWISE = {"sgd", "adam", "adamw", "nadam", "radam", "adamax", "rmsprop", "adagrad", "adadelta", "rprop", "asgd"}


def with_defaults(cls: type[torch.optim.Optimizer], name: str, **defaults):
    """A factory `(params, **kwargs) -> cls(params, **kwargs)` whose signature shows `defaults`."""
    sig = inspect.signature(cls)
    hints = typing.get_type_hints(cls.__init__)
    parameters = [p.replace(default=defaults[p.name]) if p.name in defaults else p for p in sig.parameters.values()]

    fusable = "fused" in sig.parameters

    def factory(params, **kwargs):
        kwargs = {**defaults, **kwargs}
        params = list(params)
        if fusable and kwargs.get("fused") is None and kwargs.get("foreach") is None and not kwargs.get("differentiable"):
            try:  # one kernel per step instead of a dozen: a quarter of a small problem's step here
                return cls(params, **{**kwargs, "fused": True})
            except (RuntimeError, ValueError):  # a device or dtype the fused kernel does not take
                pass
        return cls(params, **kwargs)

    factory.__signature__ = sig.replace(parameters=parameters, return_annotation=cls)
    factory.__annotations__ = {k: v for k, v in hints.items() if k != "return"}
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"torch.optim.{cls.__name__}" + (f" (runner defaults: {defaults})" if defaults else "")
    factory.optimizer_class = cls
    factory.elementwise = name in ELEMENTWISE
    return factory


sgd = with_defaults(torch.optim.SGD, "sgd", **RUNNER_DEFAULTS.get("sgd", {}))
adam = with_defaults(torch.optim.Adam, "adam", **RUNNER_DEFAULTS["adam"])
adamw = with_defaults(torch.optim.AdamW, "adamw", **RUNNER_DEFAULTS["adamw"])
nadam = with_defaults(torch.optim.NAdam, "nadam", **RUNNER_DEFAULTS["nadam"])
radam = with_defaults(torch.optim.RAdam, "radam", **RUNNER_DEFAULTS["radam"])
adamax = with_defaults(torch.optim.Adamax, "adamax", **RUNNER_DEFAULTS["adamax"])
rmsprop = with_defaults(torch.optim.RMSprop, "rmsprop")
adagrad = with_defaults(torch.optim.Adagrad, "adagrad")
adadelta = with_defaults(torch.optim.Adadelta, "adadelta")
asgd = with_defaults(torch.optim.ASGD, "asgd")
rprop = with_defaults(torch.optim.Rprop, "rprop")
# lbfgs is plugins/optimizers/lbfgs.py: torch's LBFGS with a polish phase.

"""The engine's side of runner/contract.py: the check a plugin passes when it is loaded, and the
one adapter (`ProblemHooks`) through which the engine calls a problem's optional hooks. Plugin
authors read contract.py; nothing here changes what a plugin must do."""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Optional

from runner.contract import ATTRIBUTES, ENGINE_SUPPLIED, HOOKS, INJECTED, REQUIRED, Optimizer, Problem, Scheduler


def check(kind: str, obj: Any) -> None:
    """Raise ValueError saying how `obj` breaks the contract of a `kind` plugin."""
    if not callable(obj):
        raise ValueError(f"it is a {type(obj).__name__}, not a class or a callable")
    clash = sorted(_signature_names(obj) & (ENGINE_SUPPLIED - INJECTED[kind] - {"self"}))
    if clash:
        raise ValueError(f"its constructor takes {', '.join(clash)}: the engine supplies that name only to "
                         f"other kinds of plugin (see runner/contract.py INJECTED); rename the argument")
    if kind == "problem" and inspect.isclass(obj):
        check_problem_class(obj)
    _refuse_near_misses(kind, obj)


def check_problem_class(cls: type) -> None:
    for name in REQUIRED["problem"]:
        if not callable(getattr(cls, name, None)):
            raise ValueError(f"it has no {name}() method (required; see runner/contract.py Problem)")
    for name, arity in HOOKS["problem"].items():
        method = inspect.getattr_static(cls, name, None)
        if method is None or method is inspect.getattr_static(Problem, name, None):
            continue
        bound = isinstance(method, (staticmethod, classmethod))  # called without the instance: no self to count
        if not _accepts(getattr(cls, name), arity if bound else arity + 1):
            raise ValueError(f"its {name}() does not take {arity} argument(s) after self, as the contract says")


def _refuse_near_misses(kind: str, obj: Any) -> None:
    """A public name one typo away from a hook the plugin does not implement is a hook the engine
    would never call (`metric` without `metrics`). Beside the hook itself (`losses` next to `loss`)
    it is the plugin's own helper."""
    known = set(HOOKS[kind]) | set(ATTRIBUTES[kind])
    if not known:
        return
    contract_classes = (object, Problem, Optimizer, Scheduler)  # their defaults implement nothing
    own = {n for klass in getattr(obj, "__mro__", (obj,)) if klass not in contract_classes for n in vars(klass)} \
        if inspect.isclass(obj) else set(getattr(obj, "__dict__", {}))
    for name in sorted(n for n in own if not n.startswith("_") and n not in known):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        if close and close[0] not in own:
            raise ValueError(f"'{name}' is not part of the contract; did you mean '{close[0]}'? "
                             "(the hooks are listed in runner/contract.py)")


def _signature_names(obj: Any) -> set[str]:
    target = obj.__init__ if inspect.isclass(obj) and "__signature__" not in vars(obj) else obj
    try:
        return set(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return set()


def _accepts(function: Any, n: int) -> bool:
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return True  # a builtin or C function: nothing to check
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    return len(required) <= n <= len(positional)


def injected_arguments(kind: str, factory: Any, **available: Any) -> dict:
    """The engine-supplied keyword arguments `factory` asks for (`problem=`, `total_steps=`)."""
    asked = _signature_names(factory)
    return {k: v for k, v in available.items() if k in INJECTED[kind] and k in asked}


def is_elementwise(factory: Any) -> bool:
    """The optimiser's `elementwise` declaration (Optimizer.elementwise)."""
    return bool(getattr(factory, "elementwise", False))


def display_name(factory: Any) -> str:
    """A factory's name, or a runner.needs.Needs's."""
    return getattr(factory, "__name__", None) or getattr(factory, "name", "this optimiser")


class ProblemHooks:
    """The engine's one way to a problem plugin: required methods pass through, optional hooks
    fall back to the defaults of `Problem` when the plugin has none."""

    def __init__(self, plugin: Any, name: str = "problem"):
        self.plugin, self.name = plugin, name
        for required in REQUIRED["problem"]:
            if not callable(getattr(plugin, required, None)):
                from runner.errors import UserError

                raise UserError(f"The problem plugin '{name}' broke its contract: it has no {required}() method (runner/contract.py).")
        self.loss = plugin.loss
        self._own = {hook for hook in HOOKS["problem"] if self._provides(hook)}

    @classmethod
    def of(cls, problem: Any) -> "ProblemHooks":
        return problem if isinstance(problem, ProblemHooks) else cls(problem, type(problem).__name__)

    def _provides(self, hook: str) -> bool:
        method = getattr(self.plugin, hook, None)
        default = getattr(Problem, hook)
        return callable(method) and getattr(method, "__func__", None) is not default

    def initial_params(self, generator, device, dtype) -> dict:
        """The starting point, checked, each tensor a leaf that requires grad."""
        import torch

        params = self.plugin.initial_params(generator, device, dtype)
        if not isinstance(params, dict) or not params or not all(isinstance(v, torch.Tensor) and v.is_floating_point() for v in params.values()):
            from runner.errors import UserError

            raise UserError(f"The problem plugin '{self.name}' broke its contract: initial_params must return a non-empty dict of floating-point tensors.")
        return {key: value.detach().requires_grad_(True) for key, value in params.items()}

    def raw_initial_params(self, generator, device, dtype) -> dict:  # unchecked: replicas stack them
        return self.plugin.initial_params(generator, device, dtype)

    def metrics(self, params: dict) -> dict[str, float]:
        return {k: float(v) for k, v in self.plugin.metrics(params).items()} if "metrics" in self._own else {}

    def solution(self, params: dict) -> dict:
        return self.plugin.solution(params) if "solution" in self._own else {}

    def figures(self, params: dict) -> dict:
        return self.plugin.figures(params) if "figures" in self._own else {}

    def truth(self) -> Optional[dict]:
        return self.plugin.truth() if "truth" in self._own else None

    def optimum_loss(self) -> Optional[float]:
        return self.plugin.optimum_loss() if "optimum_loss" in self._own else None

    def target_loss(self) -> Optional[float]:
        return self.plugin.target_loss() if "target_loss" in self._own else None

    def compile_pays(self, device, dtype) -> bool:
        return bool(self.plugin.compile_pays(device, dtype)) if "compile_pays" in self._own else False

    def work_per_step(self, dtype) -> Optional[int]:
        return self.plugin.work_per_step(dtype) if "work_per_step" in self._own else None

    @property
    def preferred_dtype(self) -> Optional[str]:
        return getattr(self.plugin, "preferred_dtype", None)

    def batched_loss(self, params: dict):
        """The plugin's own batched loss, else vmap over its loss (a class may set `_force_vmap`
        to compare the two)."""
        if "batched_loss" in self._own and not type(self.plugin).__dict__.get("_force_vmap", False):
            return self.plugin.batched_loss(params)
        import torch

        return torch.func.vmap(self.plugin.loss)(params)

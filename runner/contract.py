"""The plugin contract: read this first to write a problem, an optimiser or a schedule.

A plugin is found through an entry point (groups `runner.problems`, `runner.optimizers`,
`runner.schedulers`); see examples/rosenbrock for a complete third-party package. Its
constructor's keyword arguments, with defaults and annotations, are its config. Inheriting from
the classes below is optional (duck typing works the same); they are the written contract and
give type checkers something to check against. A plugin is checked against this file when it is
loaded (`check`): a missing required method, a misspelled hook (`metric` for `metrics`), a hook
with the wrong number of arguments, or a constructor argument named like one the engine supplies
is refused with a message naming the plugin, its entry point and its distribution.

The engine calls a problem's optional hooks only through `ProblemHooks`, never by probing.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Optional

# Constructor arguments the engine supplies by name (never the config), per plugin kind.
INJECTED = {
    "problem": frozenset(),
    "optim": frozenset({"params", "problem", "total_steps"}),  # params: the tensors (first, positional); problem: the problem plugin; total_steps: trainer.steps
    "sched": frozenset({"optimizer", "total_steps"}),  # optimizer: first, positional; total_steps: trainer.steps
}
# Every injected name, and `self`: signature.py never offers these as config keys. A plugin of
# another kind that names one of them is refused by `check` instead of losing it silently.
ENGINE_SUPPLIED = frozenset({"self"}).union(*INJECTED.values())


class Problem:
    """An objective over a dict of tensors. Required: `initial_params` and `loss`."""

    # Optional: "float64" makes trainer.dtype=auto run in float64 (certified-accuracy fits).
    preferred_dtype: Optional[str] = None

    def initial_params(self, generator, device, dtype) -> dict:
        """Required. The starting point: a non-empty dict of floating-point tensors on `device`
        in `dtype`. `generator` is a CPU `torch.Generator` seeded from trainer.seed (one per
        replica): draw on the CPU with it, then move (`torch.randn(n, generator=generator,
        dtype=dtype).to(device)`), so a seed gives the same start on every device. Constants
        the loss uses must live on the params' device."""
        raise NotImplementedError

    def loss(self, params: dict):
        """Required. A scalar tensor, differentiable in `params`."""
        raise NotImplementedError

    # -- optional hooks: the defaults below are what the engine assumes when a plugin has none --
    def metrics(self, params: dict) -> dict:
        """Numbers logged as MLflow metrics and in result.json (`{"rmse": 0.1}`)."""
        return {}

    def solution(self, params: dict) -> dict:
        """The answer in the problem's own terms, JSON-able (result.json, the console)."""
        return {}

    def figures(self, params: dict) -> dict:
        """{name: matplotlib Figure}, saved as NAME.png beside the run."""
        return {}

    def truth(self) -> Optional[dict]:
        """Known true values, named as in solution() (reports show them beside it)."""
        return None

    def optimum_loss(self) -> Optional[float]:
        """The least loss there is, when known (logged as `loss_optimum`)."""
        return None

    def target_loss(self) -> Optional[float]:
        """A run at or below this loss solved the problem (`loss_target`; reports)."""
        return None

    def compile_pays(self, device, dtype) -> bool:
        """trainer.compile=auto compiles the loss only when this says it pays (large data)."""
        return False

    def work_per_step(self, dtype) -> Optional[int]:
        """About how many numbers one step (one replica) reads. trainer.device=auto keeps a
        problem on the CPU below runner.devices.AUTO_GPU_MIN_WORK (over all replicas): such a
        step is faster there than a GPU's kernel launches. None: unknown, auto takes the GPU."""
        return None

    def batched_loss(self, params: dict):
        """R losses for params with a leading replica dimension (trainer.replicas). Default:
        torch.func.vmap over `loss`; provide it when the problem batches itself faster."""
        import torch

        return torch.func.vmap(self.loss)(params)

    def residuals(self, params: dict):
        """For least-squares solvers (optim=lm): the residuals r, a tensor, with
        loss(params) == sum(r**2). A problem that does not define it has none: optim=lm refuses
        it, naming the method (this default is never called)."""
        raise NotImplementedError("this problem has no residuals(params) method")


class Optimizer:
    """An optimiser plugin: a `torch.optim.Optimizer` subclass, or a callable
    `(params, **config) -> torch.optim.Optimizer`. The loop calls `step(closure)` every step.
    A parameter named `problem` receives the problem plugin (optim=lstsq and optim=lm use it), one
    named `total_steps` receives trainer.steps (an optimiser with a built-in schedule: Ranger21).
    An optimiser that evaluates the problem itself rather than through the closure (optim=lm)
    keeps an `evaluations` dict ({"loss": n, "gradient": n}): the loop adds it to the closure
    calls it counts (runner/loop.py) and records the loss its step returns.

    What it needs from the loop it declares with the attributes below (runner/needs.py reads them,
    the loop honours them; absent means the default). Many optimisers at once come from a plugin
    source (runner/registry.py; plugins/optimizers/zoo.py declares pytorch-optimizer's)."""

    # True when each element's update uses only its own gradient and state (sgd, adam):
    # trainer.replicas then runs all replicas as one batched tensor. False (the default): the
    # replicas run one after another (lbfgs couples all parameters through its line search).
    elementwise: bool = False
    # Options that, set to a true or non-zero value, couple the elements (a global norm clip).
    elementwise_unless: tuple = ()
    # The closure's backward keeps its graph (create_graph=True): Hessian-vector products.
    create_graph: bool = False
    # train() before the first step, eval() before the final loss, metrics and solution
    # (schedule-free methods step at one point and return another).
    train_eval: bool = False
    # The closure runs once before each step(): SAM-style methods perturb from that gradient.
    grad_before_step: bool = False
    # "all": every parameter must have two or more dimensions; "any": at least one (Muon: the
    # rest take its fallback). Otherwise the optimiser is refused, naming the problem's shapes.
    needs_matrix: Optional[str] = None
    # A reason this runner cannot run it at all: selecting it is refused with that reason.
    refused: Optional[str] = None


class Scheduler:
    """A schedule plugin: a callable `(optimizer, **config)` returning an object with `step()`,
    called once after every optimiser step. A parameter named `total_steps` receives
    trainer.steps (sched=cosine needs no length of its own)."""


# Methods (name: positional arguments after self), required ones, and declared attributes, per kind.
HOOKS = {"problem": {"initial_params": 3, "loss": 1, "metrics": 1, "solution": 1, "figures": 1, "truth": 0,
                     "optimum_loss": 0, "target_loss": 0, "compile_pays": 2, "work_per_step": 1, "batched_loss": 1,
                     "residuals": 1}, "optim": {}, "sched": {}}
REQUIRED = {"problem": ("initial_params", "loss"), "optim": (), "sched": ()}
ATTRIBUTES = {"problem": ("preferred_dtype",), "optim": ("elementwise", "elementwise_unless", "create_graph", "train_eval",
                                                     "grad_before_step", "needs_matrix", "refused"), "sched": ()}


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

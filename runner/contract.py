"""The plugin contract: read this first to write a problem, an optimiser or a schedule.

A plugin is found through an entry point (groups `runner.problems`, `runner.optimizers`,
`runner.schedulers`); see examples/rosenbrock for a complete third-party package. Its
constructor's keyword arguments, with defaults and annotations, are its config. A default must be
the value the plugin uses, since `--cfg job` shows it: write `coefficients=(1.0, 2.0, 3.0)`, not
`None` that the constructor then replaces by a constant; `None` means "none", or a rule over other
arguments or the run that the docstring states (`degree=None`: the truth's degree). Inheriting from
the classes below is optional (duck typing works the same); they are the written contract and
give type checkers something to check against. A plugin is checked against this file when it is
loaded (`check`): a missing required method, a misspelled hook (`metric` for `metrics`), a hook
with the wrong number of arguments, or a constructor argument named like one the engine supplies
is refused with a message naming the plugin, its entry point and its distribution.

The engine calls a problem's optional hooks only through `ProblemHooks`, never by probing.
"""
from __future__ import annotations

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

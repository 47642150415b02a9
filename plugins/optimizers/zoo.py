"""pytorch-optimizer's whole registry as optimiser plugins: the `zoo` extra.

`pip install 'opt-runner[zoo]'` makes every name in `pytorch_optimizer.get_supported_optimizers()`
an optimiser plugin, `optim=zoo.NAME` (and plain `optim=NAME` where no other plugin has that
name: `lion`, `prodigy`; `adam`, `sgd`, `lbfgs`… stay torch's). This is a plugin source
(runner/registry.py), registered through an entry point exactly as a third-party package would.

No code per optimiser. Each plugin is the library's own class behind one generic factory whose
signature is the class's (so its keywords are config, typed and checked); what an optimiser asks
of the loop is declared in NEEDS below, the one table, and honoured by the engine
(runner/needs.py). An optimiser that upstream adds later works with no change here: it is taken
as not elementwise (its replicas run one after another), and train()/eval() modes are found
from the class itself.

This module imports only the standard library until its plugins are asked for: `--help` and the
registry's cheap listing never import torch.
"""
from __future__ import annotations

import enum
import importlib.util
import inspect
import typing
from typing import Any

INSTALL = "pip install 'opt-runner[zoo]'"

# Elementwise: every element's update uses only its own gradient, state and the step count, with
# no norm, mean or shape-dependent branch over a tensor; `trainer.replicas` batches them
# (tests/test_zoo.py checks each against replicas run one by one).
EW: dict[str, Any] = {"elementwise": True}

# What each optimiser needs from the loop (runner/needs.py), or why it is refused. Not listed:
# nothing special, replicas in sequence.
_NEEDS_MODEL = ("it is constructed from the model (an nn.Module: {what}), not from parameters; a problem "
                "here is a loss of named tensors with no module, so there is nothing to give it.")
NEEDS: dict[str, dict[str, Any]] = {
    # -- elementwise (replicas batched) ---------------------------------------------------------
    **{name: EW for name in (
        "sgd", "sgdw", "signsgd", "adam", "adamw", "nadam", "radam", "adamax", "rmsprop", "adabelief",
        "adabound", "adamod", "ademamix", "simplifiedademamix", "diffgrad", "lion", "tiger", "yogi",
        "madgrad", "qhadam", "qhm", "pid", "aggmo", "laprop", "padam", "grams", "adopt", "accsgd",
    )},
    "adan": {"elementwise": True, "elementwise_unless": ("max_grad_norm",)},  # a global norm clip couples
    # -- Hessian-based: the closure keeps the graph for Hessian-vector products --------------------
    "adahessian": {"create_graph": True},
    "sophiah": {"create_graph": True},
    # -- schedule-free and other two-point methods: train() to step, eval() for the result ---------
    "schedulefreeadamw": {"elementwise": True, "train_eval": True},
    "schedulefreeradam": {"elementwise": True, "train_eval": True},
    "schedulefreesgd": {"elementwise": True, "train_eval": True},
    "splus": {"train_eval": True},
    # -- matrix methods: parameter groups flagged use_muon (>= 2-D) and its AdamW fallback (< 2-D) --
    **{name: {"needs_matrix": "any", "param_groups": "use_muon"} for name in ("muon", "adamuon", "adago", "normuon", "muonclip")},
    "spectralsphere": {"needs_matrix": "all"},
    # -- a built-in schedule over the run: trainer.steps is its length --------------------------------
    "ranger21": {"total_steps": "num_iterations"},
    # -- SAM-style: perturbs from the gradient at the current point, which must exist at step() ------
    "bsam": {"grad_before_step": True},
    # -- refused ---------------------------------------------------------------------------------
    "lomo": {"refused": _NEEDS_MODEL.format(what="LOMO fuses the update into the backward pass through module hooks")},
    "adalomo": {"refused": _NEEDS_MODEL.format(what="AdaLOMO fuses the update into the backward pass through module hooks")},
    "adammini": {"refused": _NEEDS_MODEL.format(what="Adam-mini partitions the parameters by the module's named blocks")},
    "distributedmuon": {"refused": "it shards its work over a torch.distributed process group, which a run here does "
                                   "not start (use optim=zoo.muon, the same method on one process)."},
    "demo": {"refused": "DeMo (decoupled momentum) exchanges compressed momentum between data-parallel workers over "
                        "torch.distributed and needs the einops package; a run here is one process."},
}
# Keys a NEEDS entry may hold beyond runner/needs.py's attributes: handled by the factory below.
_FACTORY_KEYS = {"param_groups", "total_steps", "elementwise_unless"}


class ZooSource:
    """The plugin source (registry.py's contract): cheap to import and ask; imports the
    library only in plugins()."""

    description = "pytorch-optimizer's registry of Lion, Prodigy, Schedule-Free, SOAP, Muon, Sophia and more"
    distribution = "pytorch_optimizer"
    install = INSTALL

    def available(self) -> str | None:
        try:
            found = importlib.util.find_spec("pytorch_optimizer") is not None
        except (ImportError, ValueError):
            found = False
        return None if found else f"pytorch-optimizer is not installed: {INSTALL}"

    def plugins(self) -> dict[str, Any]:
        import pytorch_optimizer

        return {name: factory(name, pytorch_optimizer.load_optimizer(name)) for name in pytorch_optimizer.get_supported_optimizers()}


SOURCE = ZooSource()


def factory(name: str, cls: type) -> Any:
    """`(params, **kwargs) -> cls(params, **kwargs)` with cls's signature (less `**kwargs`, so unknown
    keys are refused) and the needs NEEDS declares for `name` as attributes."""
    declared = NEEDS.get(name, {})
    unknown = set(declared) - _FACTORY_KEYS - {"elementwise", "create_graph", "train_eval", "grad_before_step", "needs_matrix", "refused"}
    assert not unknown, f"NEEDS['{name}'] has unknown keys {unknown}"
    sig = inspect.signature(cls)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve: the raw ones
        hints = dict(getattr(cls.__init__, "__annotations__", {}))
    steps_arg = declared.get("total_steps")  # the constructor argument that takes trainer.steps
    parameters = []
    for i, p in enumerate(sig.parameters.values()):
        if p.kind is p.VAR_KEYWORD or p.name == steps_arg:
            continue
        if i == 0:  # whatever its name (Magma's is `optimizer`), the first argument receives the parameters
            p = p.replace(name="params")
        if isinstance(p.default, enum.Enum):  # IntEnum defaults (ScalableShampoo's graft_type): their value
            p = p.replace(default=p.default.value)
        parameters.append(p)
    if steps_arg:
        parameters.append(inspect.Parameter("total_steps", inspect.Parameter.KEYWORD_ONLY, annotation=int))
    groups = declared.get("param_groups")

    def make(params, **kwargs):
        params = list(params)
        if steps_arg:
            kwargs[steps_arg] = kwargs.pop("total_steps")
        if groups == "use_muon":  # matrices take the method, the rest its AdamW fallback
            split = ({"params": [p for p in params if p.ndim >= 2], "use_muon": True},
                     {"params": [p for p in params if p.ndim < 2], "use_muon": False})
            params = [g for g in split if g["params"]]
        return cls(params, **kwargs)

    make.__signature__ = sig.replace(parameters=parameters, return_annotation=cls)
    first = next(iter(sig.parameters))
    make.__annotations__ = {("params" if k == first else k): v for k, v in hints.items() if k not in ("return", steps_arg)}
    make.__name__ = make.__qualname__ = f"zoo.{name}"
    make.__doc__ = f"pytorch_optimizer.{cls.__name__}: " + ((cls.__doc__ or "").strip().splitlines() or [""])[0]
    make.optimizer_class = cls
    make.elementwise = bool(declared.get("elementwise", False))
    make.elementwise_unless = tuple(declared.get("elementwise_unless", ()))
    make.create_graph = bool(declared.get("create_graph", False))
    make.train_eval = bool(declared.get("train_eval", has_modes(cls)))
    make.grad_before_step = bool(declared.get("grad_before_step", False))
    make.needs_matrix = declared.get("needs_matrix")
    make.refused = declared.get("refused")
    return make


def has_modes(cls: type) -> bool:
    """train() and eval() of its own (schedule-free methods): torch.optim.Optimizer has neither."""
    return callable(getattr(cls, "train", None)) and callable(getattr(cls, "eval", None))

"""From a composed config to what a run needs: checked trainer settings, the plugins built, the
job ready to run, and the config as the plugins received it. Every input check happens here,
before a run is created: a UserError from here leaves nothing in the store."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from runner import needs as optim_needs
from runner import registry
from runner.errors import UserError
from runner.signature import coerce_arguments, with_defaults

PROGRESS_MODES = ("auto", "bar", "lines", "off")
DTYPE_NAMES = ("auto", "float32", "float64")  # runner/devices.py's DTYPES, named here without importing torch
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")  # what runner/devices.py's resolve_device reads
MAX_REPLICAS = 10_000  # trainer.replicas: R sets of parameters, optimiser states and results in memory
SEED_RANGE = (-(2**63), 2**64 - 1)  # torch.Generator.manual_seed's range


@dataclass
class Experiment:
    problem: Any  # adapter.ProblemHooks
    job: Any  # runner.job.Job
    trainer: dict  # trainer.* as checked
    device: Any
    plugins: dict[str, str]  # kind -> registered name ("problem", "optim", optional "sched")
    resolved: dict  # the config with the values the plugins received (10 -> 10.0 for a float)
    device_note: str = ""  # why trainer.device=auto chose the CPU on a GPU machine (a tag)

    @property
    def config_hash(self) -> str:
        """A stable hash of what determines the result: plugins and config, not tracking or display."""
        config = {k: v for k, v in self.resolved.items() if k != "tracking"}
        config["trainer"] = {k: v for k, v in config.get("trainer", {}).items() if k != "progress"}
        text = json.dumps({"plugins": self.plugins, "config": config}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def build(cfg: DictConfig, problem=None, seed_global: bool = True) -> Experiment:
    """`problem`: an adapter.ProblemHooks already built from this very `problem` config (the jobs of
    a batched sweep share one: runner/batched); else it is built here. `seed_global=False`: leave
    torch's global generator alone (a batched sweep's jobs after its first: their programs are
    made later, together; seeding costs milliseconds a call, torch queueing the other devices')."""
    import torch

    from runner.adapter import ProblemHooks, injected_arguments
    from runner.devices import auto_for_problem, resolve_device, resolve_dtype
    from runner.job import Job

    trainer = check_trainer(cfg.trainer)
    device = resolve_device(trainer["device"])
    resolve_dtype(trainer["dtype"])  # a bad name is refused before the problem reads its data
    problem_name, problem_factory = _plugin("problem", cfg.problem)
    problem_kwargs = coerce_arguments(problem_factory, cfg.problem, "problem")
    if problem is None:
        problem = ProblemHooks(_construct(problem_factory, "problem", problem_name, **problem_kwargs), problem_name)
    dtype = resolve_dtype(trainer["dtype"], problem)
    device, device_note = auto_for_problem(trainer["device"], device, problem, dtype, trainer["replicas"])
    optim_name, optim_factory = _plugin("optim", cfg.optim)
    optim_needs.refuse_if_declared(optim_needs.of(optim_factory, optim_name))
    optim_kwargs = coerce_arguments(optim_factory, cfg.optim, "optim")
    needs = optim_needs.of(optim_factory, optim_name, optim_kwargs)  # an option may turn elementwise off
    # lstsq asks for the problem; an optimiser with a built-in schedule (Ranger21) for the run's length
    optim_kwargs_all = {**optim_kwargs, **injected_arguments("optim", optim_factory, problem=problem.plugin, total_steps=trainer["steps"])}
    if seed_global:
        torch.manual_seed(trainer["seed"])  # for plugins that draw from the global generator

    def make_optimizer(leaves):
        return _construct(optim_factory, "optim", optim_name, leaves, **optim_kwargs_all)

    make_scheduler, sched_name, sched_kwargs = None, None, {}
    if cfg.get("sched") is not None:
        sched_name, sched_factory = _plugin("sched", cfg.sched)
        sched_kwargs = coerce_arguments(sched_factory, cfg.sched, "sched")
        sched_kwargs_all = {**sched_kwargs, **injected_arguments("sched", sched_factory, total_steps=trainer["steps"])}

        def make_scheduler(optimizer):
            return _construct(sched_factory, "sched", sched_name, optimizer, **sched_kwargs_all)

    seeds = list(range(trainer["seed"], trainer["seed"] + trainer["replicas"]))
    job = Job(problem, seeds, device, dtype, make_optimizer, make_scheduler, optim_factory,
              lambda generator: problem.initial_params(generator, device, dtype), trainer["compile"], needs, steps=trainer["steps"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["problem"] = _plain(with_defaults(problem_factory, problem_kwargs))
    resolved["optim"] = _plain(with_defaults(optim_factory, optim_kwargs))
    if sched_name is not None:
        resolved["sched"] = _plain(with_defaults(sched_factory, sched_kwargs))
    resolved["trainer"].update(device=str(device), dtype=str(dtype).removeprefix("torch."))  # cpu or cuda:N: one name a device
    plugins = {"problem": problem_name, "optim": optim_name, **({"sched": sched_name} if sched_name else {})}
    return Experiment(problem, job, trainer, device, plugins, resolved, device_note)


def check_trainer(t: DictConfig | dict) -> dict[str, Any]:
    t = OmegaConf.to_container(t, resolve=True) if isinstance(t, DictConfig) else dict(t)
    positive = {"steps": "the number of optimiser steps", "replicas": "the number of replicas", "log_every": "steps between logged loss points", "check_every": "steps between checks of tol and divergence"}
    for key, what in positive.items():
        if t[key] < 1:
            raise UserError(f"trainer.{key}={t[key]} is out of range: it is {what} and must be at least 1.")
    if t["replicas"] > MAX_REPLICAS:
        raise UserError(f"trainer.replicas={t['replicas']} is out of range: at most {MAX_REPLICAS} replicas run in one "
                        "run (each keeps its parameters, optimiser state and result); use a sweep over trainer.seed for more.")
    last_seed = t["seed"] + t["replicas"] - 1
    if not (SEED_RANGE[0] <= t["seed"] and last_seed <= SEED_RANGE[1]):
        raise UserError(f"trainer.seed={t['seed']} is out of range: seeds (seed to seed + replicas - 1) must lie in "
                        f"[{SEED_RANGE[0]}, {SEED_RANGE[1]}], the range of torch's generator.")
    if t["tol"] is not None and not (t["tol"] >= 0):
        raise UserError(f"trainer.tol={t['tol']} is out of range: it must be >= 0, or null to run every step.")
    from runner.compiling import MODES, normalise

    t["compile"] = normalise(t["compile"])
    if t["compile"] not in MODES:
        raise UserError(f"trainer.compile={t['compile']!r} is not allowed; allowed: {', '.join(MODES)} "
                        "(auto: compile the loss where the problem says it pays).")
    # the names alone, so that a sweep's bad value is refused before any job (is a device there: when a job builds)
    if t["dtype"] not in DTYPE_NAMES:
        raise UserError(f"trainer.dtype={t['dtype']!r} is not supported; allowed: {', '.join(DTYPE_NAMES)}.")
    if not DEVICE_NAME.fullmatch(str(t["device"])):
        raise UserError(f"trainer.device={t['device']!r} is not a device this runner knows; allowed: auto, cpu, cuda, cuda:N.")
    if t["progress"] not in PROGRESS_MODES:
        raise UserError(f"trainer.progress={t['progress']!r} is not allowed; allowed: {', '.join(PROGRESS_MODES)}.")
    return t


def _plugin(kind: str, node: Optional[DictConfig]):
    if node is None or "_name_" not in node:
        raise UserError(f"No {kind} selected: choose one with {kind}=NAME (available: {', '.join(registry.plugins(kind))}).")
    name = node["_name_"]
    if "_broken_" in node:  # configs.register could not load it: say why (registry's message names it)
        why = str(node["_broken_"])
        raise UserError(why if why.startswith(f"The {kind} plugin '{name}'") else f"The {kind} plugin '{name}' could not be loaded: {why}")
    plugin = registry.get(kind, name)
    if plugin not in _loaded:  # imported and checked against the contract once a process (a batched sweep builds a thousand jobs)
        _loaded[plugin] = plugin.load()
    return name, _loaded[plugin]


_loaded: dict = {}  # registry.Plugin -> its factory, loaded (a failed load is not kept: it raises again)


def _construct(factory, kind: str, name: str, *args, **kwargs):
    """Call a plugin's factory; its ValueError/TypeError is a bad-input message, not a crash."""
    try:
        return factory(*args, **kwargs)
    except MemoryError as exc:  # a size in the config (n_samples=1e11) that no machine holds
        raise UserError(f"{kind}={name} with these arguments needs more memory than this machine has "
                        f"({str(exc)[:200] or 'MemoryError'}); reduce the sizes in its arguments.") from None
    except (ValueError, TypeError) as exc:
        message = str(exc)
        raise UserError(f"{kind}={name} rejected its arguments: {message}" + ("" if message.endswith(".") else ".")) from None


def _plain(kwargs: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}

"""A group's jobs made ready to batch (runner/batched/launch.py runs them).

A group (runner/batched/plan.py) is jobs whose overrides differ only in batch-axis values. Hydra
composes its first job's config; every other job's config is derived from it by setting its
batch-axis values, exactly as Hydra sets a `key=value` override, because composing each job with
Hydra would be most of a large sweep's time. With hydra.launcher.verify one more job is composed
by Hydra and compared with its derived config: on a difference every job of the group is
composed by Hydra. Each job is then built by runner/compose.py as a job alone would be, sharing
the first job's problem, and kept where it runs the same program as the first (same_program).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from runner.batched import plan


@dataclass
class Prepared:
    position: int  # in the sweep's list of jobs
    num: int  # hydra.job.num
    overrides: list[str]
    cfg: DictConfig  # the task's config (no hydra node)
    experiment: Any  # runner.compose.Experiment


class JobConfigs:
    """The configs of a sweep's jobs: Hydra's composition (`compose`) or derived (`derive`)."""

    def __init__(self, hydra_context, config: DictConfig):
        self.hydra_context, self.config = hydra_context, config

    def compose(self, overrides: list[str], idx: int) -> DictConfig:
        """Job `idx`'s config (with its hydra node) as Hydra composes it for a job it launches."""
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        return sweep_config

    def derive(self, task_base: DictConfig, values: dict, overrides: list[str], idx: int) -> DictConfig:
        """The job's task config without composing: the group's, with its batch-axis values set
        exactly as Hydra sets a `key=value` override (OmegaConf.update, merge)."""
        cfg = copy.deepcopy(task_base)
        for key, value in values.items():
            OmegaConf.update(cfg, key, value, merge=True)
        return cfg

    def composed(self, task_base: DictConfig, values: dict, overrides: list[str], idx: int) -> DictConfig:
        """The job's task config as Hydra composes it (derive's signature, to replace it)."""
        return task_config(self.compose(overrides, idx))

    def derived_equals_hydra(self, g: plan.Group, overrides: list[list[str]], initial_job_idx: int, task_base: DictConfig) -> bool:
        """Compose one more job of the group with Hydra and compare it with the derived config."""
        position, values = g.jobs[-1], g.values[-1]
        derived = self.derive(task_base, values, overrides[position], initial_job_idx + position)
        composed = self.composed(task_base, values, overrides[position], initial_job_idx + position)
        return OmegaConf.to_container(derived, resolve=True) == OmegaConf.to_container(composed, resolve=True)


def others_sharing_program(g: plan.Group, overrides: list[list[str]], initial_job_idx: int, task_base: DictConfig, base_exp,
                    derive: Callable[..., DictConfig]) -> list[Prepared]:
    """The group's other jobs (all but its first), configured by `derive` and built, that run the
    same program as the first job (`base_exp`, built from `task_base`); the others are left out
    (the basic path runs them, and records a refused one as that job's failure)."""
    from runner import compose

    prepared = []
    problem_node = _plain(task_base.problem)
    for position, values in zip(g.jobs[1:], g.values[1:]):
        try:
            cfg = derive(task_base, values, overrides[position], initial_job_idx + position)
            if _plain(cfg.problem) != problem_node:  # an interpolation made it differ
                continue
            exp = compose.build(cfg, problem=base_exp.problem, seed_global=False)
        except Exception:  # refused input: the basic path records it as that job's failure
            continue
        if same_program(base_exp, exp):
            prepared.append(Prepared(position, initial_job_idx + position, overrides[position], cfg, exp))
    return prepared


def not_batchable(exp) -> str:
    """Why a job's program cannot be shared with others ('' when it can)."""
    from runner import replicas as rep

    job = exp.job
    if exp.trainer["replicas"] != 1:
        return "trainer.replicas > 1 (its replicas are already one batched program)"
    needs = job.needs
    if not needs.elementwise:
        return f"optim={exp.plugins['optim']} is not elementwise (its update couples parameters)"
    if needs.create_graph or needs.train_eval or needs.grad_before_step:
        return f"optim={exp.plugins['optim']} needs more of the loop than one batched step gives"
    if job.compile.compile:
        return "the loss is compiled (trainer.compile)"
    seed = exp.trainer["seed"]
    found = rep.plan(exp.problem, needs, [seed, seed + 1], exp.device, job.dtype)
    if found.mode != "batched":
        return found.reason
    return ""


def same_program(base, exp) -> bool:
    """Everything but the seed and the optimiser's and schedule's values is the base job's."""
    strip = lambda t: {k: v for k, v in t.items() if k != "seed"}  # noqa: E731
    rest = lambda e: {k: (_but_run_name(v) if k == "tracking" else v) for k, v in e.resolved.items() if k not in ("optim", "sched", "trainer")}  # noqa: E731
    return (exp.plugins == base.plugins and strip(exp.trainer) == strip(base.trainer) and exp.device == base.device
            and exp.job.dtype == base.job.dtype and exp.job.needs.elementwise and not exp.job.compile.compile
            and rest(exp) == rest(base))


def _but_run_name(tracking):
    """A job's tracking settings but its run name (`tracking.run_name=job${hydra:job.num}` names
    each job its own: each record uses its own, the program is the same)."""
    return {k: v for k, v in tracking.items() if k != "run_name"} if isinstance(tracking, dict) else tracking


def task_config(sweep_config: DictConfig) -> DictConfig:
    """A job's config without its hydra node: what the task is given."""
    cfg = copy.deepcopy(sweep_config)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _plain(node) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node

"""Config schemas and the config-store entries that make `problem=NAME` / `optim=NAME` work.

Every registered plugin gets a node in its group, built from its signature: the same path for the
built-ins in plugins/ and for any package installed beside the runner.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from runner import registry
from runner.signature import config_defaults

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    steps: int = 1000
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    dtype: str = "auto"  # float32, float64, or auto: float32 unless the problem asks for float64
    log_every: int = 10  # one loss point every N steps
    check_every: int = 10  # host sync for tol / divergence every N steps
    tol: Optional[float] = None  # stop once the loss is at or below this
    progress: str = "auto"  # auto (bar on a terminal, lines otherwise), bar, lines, off
    replicas: int = 1  # R independent replicas, seeds seed .. seed+R-1, batched where possible
    compile: Any = "auto"  # torch.compile the loss: auto (where the problem says it pays), true, false


@dataclass
class TrackingConfig:
    uri: Optional[str] = None  # null: MLFLOW_TRACKING_URI, else sqlite:///<launch dir>/mlflow.db
    experiment: str = "runner"
    run_name: Optional[str] = None  # null: built from the plugins and the overrides
    artifacts: bool = True  # plots, result.json and config as MLflow artifacts
    skip_finished: bool = False  # a job whose config already has a FINISHED run is not run again


@dataclass
class RunnerSchema:
    problem: Any = None
    optim: Any = None
    sched: Any = None  # optional learning-rate schedule
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def register(argv: Optional[list[str]] = None) -> None:
    """Store the schema and one node per plugin. Safe to call more than once. With `argv`, the
    plugin sources' plugins (whose libraries take a second to import) are stored only when the
    command line may select one."""
    cs = ConfigStore.instance()
    cs.store(name="runner_schema", node=RunnerSchema)
    for kind in registry.GROUPS:
        nodes = {}
        found = registry.all_plugins(kind) if argv is None or may_select_source(kind, argv) else registry.plugins(kind)
        for name, plugin in found.items():
            try:
                node = {"_name_": name, **config_defaults(plugin.load())}
            except Exception as exc:  # one broken third-party plugin must not break the others
                # one line, not a Python warning with its source line: it shows on every run
                print(f"Warning: skipping {kind} plugin '{name}': {exc}", file=sys.stderr)
                node = {"_name_": name, "_broken_": str(exc)}
            cs.store(group=kind, name=name, node=node)
            nodes[name] = node
        for name in registry.ambiguous(kind):  # `optim=adam` of two distributions: refused by name at composition
            cs.store(group=kind, name=name, node={"_name_": name, "_broken_": registry.ambiguity_message(kind, name)})
        if kind in registry.SOURCE_GROUPS and len(found) > len(registry.plugins(kind)):
            for plain, name in registry.aliases(kind).items():  # optim=lion: optim=zoo.lion's node, named as such
                cs.store(group=kind, name=plain, node=nodes[name])


def may_select_source(kind: str, argv: list[str]) -> bool:
    """Whether the command line may select a plugin source's plugin of `kind`: a value of `kind=`
    that is not an entry-point plugin (a source's name, a typo, a sweep expression), a preset or a
    sweeper's search space (either may name one). `optim=adam`, or no `optim=` at all, is not."""
    if kind not in registry.SOURCE_GROUPS:
        return False
    plain = set(registry.plugins(kind))
    for arg in argv:
        key, eq, value = arg.lstrip("+~").partition("=")
        if not eq or key.startswith(f"{kind}."):
            continue
        if key.split("@")[0] in ("experiment", "hparams_search") or key.startswith("hydra.sweeper"):
            return True
        if key.split("@")[0] == kind and not set(value.split(",")) <= plain:
            return True
    return False

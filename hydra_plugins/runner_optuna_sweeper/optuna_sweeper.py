"""Optuna search over Hydra overrides, trials run by whatever launcher the config chooses.

The search space uses Hydra's sweep grammar, as the official Optuna sweeper does, on the command
line or in `hydra.sweeper.params`:
    optim.lr=tag(log,interval(1e-4,1))   a float on a log scale
    trainer.steps=int(interval(100,1000)) an integer
    optim=choice(adam,nadam)             a category
Every trial is a job of the sweep (an MLflow child run); a trial that fails or returns a
non-finite value is told to Optuna as failed and the search goes on.
"""

# No `from __future__ import annotations` here: Hydra execs plugin modules without registering
# them in sys.modules, and dataclasses then cannot resolve string annotations.
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
SAMPLERS = ("tpe", "random", "cmaes", "qmc")


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.runner_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    direction: str = "minimize"  # the task returns the final loss
    n_trials: int = 20
    n_jobs: int = 1  # trials launched together; a parallel launcher runs them side by side
    sampler: str = "tpe"  # tpe, random, cmaes, qmc
    seed: Optional[int] = 0
    study_name: Optional[str] = None
    storage: Optional[str] = None  # e.g. sqlite:///optuna.db to keep the study
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="runner")


class OptunaSweeper(Sweeper):
    def __init__(self, direction: str, n_trials: int, n_jobs: int, sampler: str, seed: Optional[int],
                 study_name: Optional[str], storage: Optional[str], params: Optional[DictConfig]):
        if direction not in ("minimize", "maximize"):
            raise ValueError(f"hydra.sweeper.direction={direction!r}: allowed minimize, maximize")
        if sampler not in SAMPLERS:
            raise ValueError(f"hydra.sweeper.sampler={sampler!r}: allowed {', '.join(SAMPLERS)}")
        if n_trials < 1 or n_jobs < 1:
            raise ValueError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be at least 1")
        self.direction, self.n_trials, self.n_jobs = direction, n_trials, n_jobs
        self.sampler_name, self.seed = sampler, seed
        self.study_name, self.storage = study_name, storage
        self.params = dict(params or {})
        self.config: Optional[DictConfig] = None
        self.launcher = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: List[str]) -> Any:
        import optuna

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        fixed, space = [], {}
        for o in overrides:
            if o.is_sweep_override():
                space[o.get_key_element()] = distribution(o)
            else:
                fixed.append(o.input_line)
        if not space:
            raise ValueError(
                "hydra/sweeper=optuna needs a search space: hydra.sweeper.params or an override such as "
                "'optim.lr=tag(log,interval(1e-4,1))'"
            )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = optuna.create_study(
            direction=self.direction, sampler=make_sampler(self.sampler_name, self.seed),
            study_name=self.study_name, storage=self.storage, load_if_exists=self.storage is not None,
        )
        log.info("Optuna %s: %d trials, %d at a time, search space %s", optuna.__version__, self.n_trials, self.n_jobs, space)
        done, returns = 0, []
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            batch = [fixed + [f"{k}={_format(v)}" for k, v in t.params.items()] for t in trials]
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=done)
            for trial, result in zip(trials, results):
                value = _value(result)
                if value is None:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(trial, value)
            done += len(trials)
            returns.append(results)
        self._save_best(study, sweep_dir)
        return returns

    def _save_best(self, study, sweep_dir: Path) -> None:
        import optuna

        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            log.warning("No Optuna trial completed: every one failed (see the sweep summary).")
            return
        best = study.best_trial
        results = {"name": "optuna", "best_trial": best.number, "best_value": best.value, "best_params": best.params,
                   "trials": len(study.trials), "failed_trials": len(study.trials) - len(complete)}
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
        log.info("Best trial %d: value %s with %s", best.number, best.value, best.params)


def _value(result) -> Optional[float]:
    if result.status != JobStatus.COMPLETED:
        return None
    try:
        value = float(result.return_value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _format(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def make_sampler(name: str, seed: Optional[int]):
    import optuna

    return {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
    }[name]()


def distribution(override: Override):
    """Hydra's sweep grammar -> an Optuna distribution."""
    import optuna.distributions as d

    value = override.value()
    key = override.get_key_element()
    if isinstance(value, ChoiceSweep):
        return d.CategoricalDistribution([v for v in override.sweep_iterator(transformer=lambda x: x)])
    if isinstance(value, RangeSweep):
        return d.CategoricalDistribution(list(override.sweep_iterator(transformer=lambda x: x)))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return d.IntDistribution(int(value.start), int(value.end), log=log_scale)
        return d.FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"{key}: Optuna cannot search {override.input_line!r}; use choice(...), range(...) or interval(...)")

"""Where a job runs, read from Hydra once and then passed explicitly: its output folder, whether
it is one job of a sweep, and that sweep's parent run.

The parent run reaches a job across processes the way launchers allow: the launching process puts
it in the environment (`RUNNER_SWEEP_PARENT`, inherited by local workers) and in the sweep folder
(`mlflow_parent.json`, for workers elsewhere). Only `SweepParent` writes and reads them.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from runner.naming import short_value

PARENT_ENV = "RUNNER_SWEEP_PARENT"
PARENT_FILE = "mlflow_parent.json"
# Overrides that change how a run is shown or logged, not what it computes: not in its name.
_NOT_IN_NAME = {"trainer.progress", "trainer.log_every", "trainer.check_every"}


@dataclass(frozen=True)
class SweepParent:
    """The MLflow parent run of a sweep, as its jobs see it."""
    run_id: str
    uri: str
    experiment_id: str
    sweep_dir: str = ""
    name: str = ""

    def publish(self) -> None:
        """Make it known to the sweep's jobs, wherever the launcher starts them."""
        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.sweep_dir) / PARENT_FILE).write_text(json.dumps(asdict(self)))
        os.environ[PARENT_ENV] = json.dumps(asdict(self))

    def withdraw(self) -> None:
        os.environ.pop(PARENT_ENV, None)

    @classmethod
    def of_job(cls, hydra_config) -> Optional["SweepParent"]:
        if os.environ.get(PARENT_ENV):
            return cls(**json.loads(os.environ[PARENT_ENV]))
        path = Path(hydra_config.runtime.cwd) / str(hydra_config.sweep.dir) / PARENT_FILE  # an absolute sweep.dir wins
        return cls(**json.loads(path.read_text())) if path.exists() else None


@dataclass(frozen=True)
class JobContext:
    output_dir: Path
    multirun: bool = False
    job_num: int = 0
    overrides: tuple[str, ...] = ()
    sweep: Optional[SweepParent] = field(default=None)

    @classmethod
    def from_hydra(cls) -> "JobContext":
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return cls(Path(tempfile.mkdtemp(prefix="runner-")))
        hc = HydraConfig.get()
        out = Path(hc.runtime.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        multirun = str(hc.mode) == "RunMode.MULTIRUN"
        job_num = hc.job.num if multirun else 0  # unset (???) in a single run
        return cls(out, multirun, job_num, tuple(hc.overrides.task), SweepParent.of_job(hc) if multirun else None)

    def sweep_tags(self) -> dict[str, str]:
        """The tags that make a run a child of its sweep's parent run."""
        if self.sweep is None:
            return {}
        return {"mlflow.parentRunId": self.sweep.run_id, "sweep_job": str(self.job_num), "overrides": " ".join(self.overrides)}

    def run_name(self, problem: str, optim: str, sched: Optional[str] = None, device=None, used: Optional[dict] = None) -> str:
        """poly-adam-lr=0.1-seed=3: the plugins used, then the keys the command line set, each with
        the value the run used (`used`, the resolved config: `lr=1e-2` and `lr=0.01` read alike, an
        int given for a float reads as the float). trainer.device shows the device used (`cuda` and
        `auto` on a GPU both read `device=cuda:0`)."""
        parts = [problem, optim] + ([sched] if sched else [])
        for override in self.overrides:
            key, _, value = override.lstrip("+~").partition("=")
            if key in ("problem", "optim", "sched") or key in _NOT_IN_NAME or key.startswith(("tracking.", "hydra")):
                continue
            if key == "experiment":
                parts.insert(0, value)
            elif key != "hparams_search":  # the sweep's parent run carries the preset's name
                if key == "trainer.device" and device is not None:
                    value = str(device)
                elif used is not None:
                    value = _used_value(used, key, value)
                parts.append(f"{key.rsplit('.', 1)[-1]}={short_value(value)}")
        return "-".join(parts)


def _used_value(used: dict, key: str, fallback: str) -> str:
    """The value at dotted `key` of the resolved config, as text (lists without spaces)."""
    node: object = used
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return fallback
        node = node[part]
    return node if isinstance(node, str) else json.dumps(node, separators=(",", ":"))

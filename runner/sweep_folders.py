"""Each job of a sweep gets a folder of its own, inside the sweep's folder: checked for a batch of
jobs before any of them runs, whatever the launcher (called from the sweeper's batch check that
runner/batched/launch.py installs).

`hydra.sweep.subdir` may name jobs after their overrides (`${hydra.job.override_dirname}`), and
`hydra.job.config.override_dirname` (kv_sep, item_sep, exclude_keys) shapes that name: a
separator `/../`, a value `../../x` or an excluded `trainer.seed` makes a job's folder leave the
sweep folder or two jobs share one (each then overwrites the other's record.json, metrics.csv
and result.json). Such a sweep is refused before it runs, naming the jobs and the folder.
The project's default, `subdir: ${hydra.job.num}`, costs nothing here.
"""
from __future__ import annotations

import os
from typing import Sequence

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from runner.errors import UserError

NAME_MAX = 255  # bytes in one folder name: ext4, xfs, btrfs, tmpfs, APFS


def job_folder(composed: DictConfig, num: int, overrides: Sequence[str]) -> str:
    """The folder Hydra gives the job `num` with these overrides, from a composed sweep config of
    its group (its hydra.job.num, id and override_dirname set as Hydra sets them for that job;
    `${hydra:...}` resolved against it). Leaves `composed` set for that job."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    app = [o for o in OverridesParser.create().parse_overrides(list(overrides)) if not o.is_hydra_override()]
    named = composed.hydra.job.config.override_dirname
    with read_write(composed.hydra), open_dict(composed.hydra):
        composed.hydra.job.num = num
        composed.hydra.job.id = num
        composed.hydra.job.override_dirname = get_overrides_dirname(
            overrides=app, kv_sep=named.kv_sep, item_sep=named.item_sep, exclude_keys=named.exclude_keys)
    HydraConfig.instance().set_config(composed)  # `${hydra:job.override_dirname}` is read from here
    out = os.path.abspath(os.path.join(str(OmegaConf.select(composed, "hydra.sweep.dir")), str(OmegaConf.select(composed, "hydra.sweep.subdir"))))
    with read_write(composed.hydra), open_dict(composed.hydra):
        composed.hydra.runtime.output_dir = out  # as Hydra's run_job sets it: `${hydra:runtime.output_dir}`
    HydraConfig.instance().set_config(composed)
    return out


def named_by_number(config: DictConfig) -> bool:
    """The project's default: each job in sweep.dir/<its number>, with a dir that does not depend on the job."""
    raw = OmegaConf.to_container(config.hydra.sweep, resolve=False)
    shared = str(raw.get("dir")).replace("${hydra.runtime.cwd}", "").replace("${hydra:runtime.cwd}", "")  # the same for every job
    return raw.get("subdir") == "${hydra.job.num}" and "hydra" not in shared


def check_batch(sweeper, batch: Sequence[Sequence[str]]) -> None:
    """UserError when a job of `batch` would run outside the sweep folder or in another job's
    folder of this sweep (the sweeper remembers the folders of its earlier batches)."""
    from hydra.core.hydra_config import HydraConfig

    from runner.batched import plan

    config = sweeper.config
    first = getattr(sweeper, "_runner_jobs_seen", 0)
    sweeper._runner_jobs_seen = first + len(batch)
    if named_by_number(config):
        return
    claimed: dict[str, tuple[int, str]] = getattr(sweeper, "_runner_folders", {})
    sweeper._runner_folders = claimed
    loader = sweeper.hydra_context.config_loader if getattr(sweeper, "hydra_context", None) is not None else sweeper.config_loader
    instance = HydraConfig.instance()
    previous = instance.cfg
    try:
        for g in plan.group([list(o) for o in batch]):
            composed = loader.load_sweep_config(master_config=config, sweep_overrides=list(batch[g.jobs[0]]))
            sweep_dir = os.path.abspath(str(OmegaConf.select(composed, "hydra.sweep.dir")))
            for position in g.jobs:
                num, overrides = first + position, list(batch[position])
                folder = job_folder(composed, num, overrides)
                shown = " ".join(overrides)
                if os.path.commonpath([folder, sweep_dir]) != sweep_dir or folder == sweep_dir:
                    raise UserError(
                        f"Job #{num} ({shown}) would write to {folder!r}, {'the sweep folder itself' if folder == sweep_dir else 'outside the sweep folder'} "
                        f"{sweep_dir!r}: hydra.sweep.subdir ({_raw_subdir(config)}) with its override_dirname settings (kv_sep, item_sep, "
                        "exclude_keys) or a value with '/' or '..' makes that path. Each job needs a folder of its own inside the sweep's: "
                        "keep '/' and '..' out of the separators, or add ${hydra.job.num} to hydra.sweep.subdir. No job of this batch was run.")
                long = [part for part in folder.split(os.sep) if len(os.fsencode(part)) > NAME_MAX]
                if long:
                    raise UserError(
                        f"Job #{num} ({shown[:300]}) would write to a folder whose name {long[0][:60]!r}... is {len(os.fsencode(long[0]))} bytes, "
                        f"more than a file system takes ({NAME_MAX}): hydra.sweep.subdir ({_raw_subdir(config)}) names it after the job's overrides. "
                        "Exclude the long ones (hydra.job.config.override_dirname.exclude_keys) or use ${hydra.job.num}. No job of this batch was run.")
                if folder in claimed:
                    other, other_shown = claimed[folder]
                    raise UserError(
                        f"Jobs #{other} ({other_shown}) and #{num} ({shown}) would share the folder {folder!r}: hydra.sweep.subdir "
                        f"({_raw_subdir(config)}) names them alike (override_dirname.exclude_keys, or separators that make two names equal), "
                        "and each would overwrite the other's record there. Add ${hydra.job.num} to hydra.sweep.subdir, or exclude fewer keys. "
                        "No job of this batch was run.")
                claimed[folder] = (num, shown)
    finally:
        instance.cfg = previous


def _raw_subdir(config: DictConfig) -> str:
    return str(OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir"))


def check_grid(config: DictConfig) -> None:
    """check_batch over every job of a grid sweep (Hydra's basic sweeper), before the sweep's
    parent run opens: a refused sweep then leaves no parent run, store or sweep folder behind.
    Searches (Optuna) choose their jobs as they go, so their batches are checked one by one."""
    if named_by_number(config) or OmegaConf.select(config, "hydra.sweeper._target_") != "hydra._internal.core_plugins.basic_sweeper.BasicSweeper":
        return
    from types import SimpleNamespace

    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    params = OmegaConf.to_container(config.hydra.sweeper, resolve=False).get("params") or {}  # as typed: ${...} is the job's
    arguments = [f"{k}={v}" for k, v in params.items()] + OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    check_batch(SimpleNamespace(config=config, hydra_context=None, config_loader=loader), jobs)

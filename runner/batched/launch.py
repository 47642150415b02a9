"""The batched launcher's work (hydra_plugins/runner_batched_launcher is its Hydra face).

For each group of jobs (runner/batched/plan.py): Hydra composes the first job's config once; the
others' configs are derived from it and each job is built (runner/batched/prepare.py). Jobs that
can share a program run as one batch (runner/batched/engine.py), each with its own record
(runner/batched/record.py); every other job runs as Hydra's basic launcher runs it, in the same
sweep.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from runner.batched import plan
from runner.batched.prepare import JobConfigs, Prepared, not_batchable, others_sharing_program, task_config
from runner.sweep_folders import job_folder, named_by_number

log = logging.getLogger(__name__)
FIGURES = ("auto", "true", "false")
FIGURES_AUTO_MAX = 50  # figures=auto: each job's figures in batches of at most this many jobs (two PNGs a job
#                       cost more than the rest of its record together)


class BatchedSweep:
    def __init__(self, hydra_context, task_function, config: DictConfig, max_batch: int, verify: bool, figures: str = "auto"):
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        self.configs = JobConfigs(hydra_context, config)
        self.max_batch, self.verify = max(1, int(max_batch)), bool(verify)
        if figures not in FIGURES:
            from runner.errors import UserError

            raise UserError(f"hydra.launcher.figures={figures!r} is not allowed; allowed: {', '.join(FIGURES)}.")
        self.figures = figures
        self.batches = 0

    # -- Hydra's launcher entry ------------------------------------------------------------------
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        from hydra.core.utils import configure_log, setup_globals

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        overrides = [list(o) for o in job_overrides]
        returns: list = [None] * len(overrides)
        groups = plan.group(overrides)
        log.info(f"Launching {len(overrides)} jobs in {len(groups)} group(s) (batched launcher)")
        for g in groups:
            if len(g.jobs) > 1:
                try:
                    self._batch_group(g, overrides, initial_job_idx, returns)
                except Exception as exc:  # before any run of the batch existed: its jobs run one by one
                    log.warning(f"Batching failed ({type(exc).__name__}: {exc}); these jobs run one by one.", exc_info=True)
            for position in g.jobs:
                if returns[position] is None:
                    returns[position] = self._basic(position, overrides[position], initial_job_idx)
        return returns

    # -- one job the way Hydra's basic launcher runs it ------------------------------------------
    def _basic(self, position: int, overrides: list[str], initial_job_idx: int):
        from hydra.core.utils import configure_log, run_job

        idx = initial_job_idx + position
        log.info(f"\t#{idx} : {' '.join(overrides)}")
        sweep_config = self.configs.compose(overrides, idx)
        ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=sweep_config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    # -- a group: compose once, derive, build, batch ---------------------------------------------
    def _batch_group(self, g: plan.Group, overrides: list[list[str]], initial_job_idx: int, returns: list) -> None:
        from hydra.core.hydra_config import HydraConfig

        from runner import compose

        first = g.jobs[0]
        base = self.configs.compose(overrides[first], initial_job_idx + first)
        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(base)  # for ${hydra:...} in the jobs' configs
        try:
            task_base = task_config(base)
            # `${hydra:job.num}` and the like in a job's own config: resolved as that job's (its
            # hydra node set as Hydra sets it for the job), not as the group's first job's
            own_hydra = "${hydra:" in str(OmegaConf.to_container(task_base, resolve=False))
            first_cfg = _resolved_as_job(base, task_base, initial_job_idx + first, overrides[first]) if own_hydra else task_base
            try:
                from runner.trust import check_no_environment

                check_no_environment(first_cfg)
                base_exp = compose.build(first_cfg)
            except Exception as exc:  # a UserError or any other: the basic path reports it, job by job
                log.info(f"Jobs {', '.join(str(initial_job_idx + p) for p in g.jobs)} run one by one: {type(exc).__name__}: {str(exc)[:200]}")
                return
            why = not_batchable(base_exp)
            if why:
                log.info(f"Jobs {', '.join(str(initial_job_idx + p) for p in g.jobs)} run one by one: {why}")
                return
            derive = self.configs.derive
            if self.verify and not self.configs.derived_equals_hydra(g, overrides, initial_job_idx, task_base):
                log.warning("A derived job config differs from Hydra's composition; composing every job of this group with Hydra.")
                derive = self.configs.composed
            if own_hydra:
                derive = _each_as_its_job(base, derive)
            prepared = [Prepared(first, initial_job_idx + first, overrides[first], first_cfg, base_exp)]
            prepared += others_sharing_program(g, overrides, initial_job_idx, task_base, base_exp, derive)
            if len(prepared) < 2:
                return
            for start in range(0, len(prepared), self.max_batch):
                chunk = prepared[start : start + self.max_batch]
                if len(chunk) == 1:
                    continue  # the basic path runs it
                self._run_batch(base, chunk, returns)
        finally:
            HydraConfig.instance().cfg = previous

    # -- one batch -------------------------------------------------------------------------------
    def _run_batch(self, base: DictConfig, jobs: list[Prepared], returns: list) -> None:
        from runner import store, task
        from runner.batched.engine import Batch, Member
        from runner.batched.record import BatchRecord, BatchStream, close_runs, create_runs
        from runner.job_context import JobContext, SweepParent

        self.batches += 1
        first = jobs[0].experiment
        parent = SweepParent.of_job(base.hydra)
        uri = parent.uri if parent else task.store_uri(jobs[0].cfg, JobContext(Path(".")))
        client = store.connect(uri)
        experiment_id = task._open_experiment(client, uri, jobs[0].cfg.tracking.experiment)
        contexts = [JobContext(out, True, j.num, tuple(j.overrides), parent) for j, out in zip(jobs, self._output_dirs(base, jobs))]
        for j, ctx in zip(jobs, contexts):
            ctx.output_dir.mkdir(parents=True, exist_ok=True)
            _write_hydra_files(ctx.output_dir, j)

        names = [j.cfg.tracking.run_name or ctx.run_name(**j.experiment.plugins, device=j.experiment.device, used=j.experiment.resolved)
                 for j, ctx in zip(jobs, contexts)]  # as runner/task.py names a job alone
        todo = list(range(len(jobs)))
        if jobs[0].cfg.tracking.get("skip_finished"):
            todo = []
            for i, (j, ctx) in enumerate(zip(jobs, contexts)):
                done = client.finished_run(experiment_id, j.experiment.config_hash)
                if done is None:
                    todo.append(i)
                else:
                    returns[j.position] = _job_return(j, task._reuse(client, ctx, experiment_id, done, names[i], j.experiment))
            if len(todo) < 2:
                return  # what is left runs the basic way
        jobs, contexts, names = [jobs[i] for i in todo], [contexts[i] for i in todo], [names[i] for i in todo]

        members = [Member(j.experiment.job.seeds[0], j.experiment.job.make_optimizer, j.experiment.job.make_scheduler,
                          json.dumps([j.experiment.resolved.get("optim"), j.experiment.resolved.get("sched")], sort_keys=True, default=str))
                   for j in jobs]
        batch = Batch(first.problem, members, first.device, first.job.dtype)
        tag = f"{self.batches}: jobs {jobs[0].num}-{jobs[-1].num} ({len(jobs)} jobs; {batch.mode}: {batch.describe})"
        log.info(f"Batch {tag}")
        shared = BatchStream(client, uri=uri)
        figures = self.figures == "true" or (self.figures == "auto" and len(jobs) <= FIGURES_AUTO_MAX)
        records = [BatchRecord(client, j.cfg, j.experiment, ctx, experiment_id, uri, name, batch_tag=tag, shared=shared, figures=figures)
                   for j, ctx, name in zip(jobs, contexts, names)]
        handler = signal.getsignal(signal.SIGTERM)
        entered: list = []
        failure: Optional[BaseException] = None
        try:
            create_runs(client, experiment_id, records)
            for r in records:
                r.__enter__()
                entered.append(r)
            t = first.trainer
            results, finals = batch.run(steps=t["steps"], log_every=t["log_every"], check_every=t["check_every"], tol=t["tol"],
                                        on_points=lambda i, done, points, times, costs: records[i].on_points(done, points, times, costs))
            for r, loop, params in zip(records, results, finals):
                r.experiment.job.final_params = [params]
                r.experiment.job.best_params = [loop.best.params]
                r.finish(loop)
        except BaseException as exc:
            failure = exc
        try:
            interrupt = _close_all(records, entered, failure, client)
        finally:
            shared.close()
            problem = close_runs(client, entered)
            if problem is not None:
                print(f"Warning: the batch's runs could not be closed together ({type(problem).__name__}: {problem}); closed one by one.", file=sys.stderr)
            if handler is not None:
                signal.signal(signal.SIGTERM, handler)
        if interrupt is not None:
            raise interrupt
        for j, r in zip(jobs, records):
            value = r.loop.final_loss if r.loop is not None and r.status == "FINISHED" else math.nan
            returns[j.position] = _job_return(j, value)

    def _output_dirs(self, base: DictConfig, jobs: list[Prepared]) -> list[Path]:
        """Each job's hydra.sweep.dir/subdir as Hydra resolves it for the job. With this
        project's `subdir: ${hydra.job.num}` (and a dir that does not depend on the job) that
        is the job's number under the one sweep dir, without resolving the config job by job."""
        if named_by_number(base):
            top = str(OmegaConf.select(base, "hydra.sweep.dir"))
            return [Path(os.path.abspath(os.path.join(top, str(j.num)))) for j in jobs]
        return [Path(job_folder(base, j.num, j.overrides)) for j in jobs]


def _resolved_as_job(base: DictConfig, task_base: DictConfig, num: int, overrides: list[str]) -> DictConfig:
    """The task config with every interpolation resolved as job `num`'s (`${hydra:job.num}`,
    `${hydra:job.override_dirname}`, `${hydra:runtime.output_dir}`): its hydra node set first."""
    job_folder(base, num, overrides)
    cfg = copy.deepcopy(task_base)
    OmegaConf.resolve(cfg)
    return cfg


def _each_as_its_job(base: DictConfig, derive):
    """`derive`, with each job's config resolved as that job's (see _resolved_as_job)."""
    def derive_as_job(task_base: DictConfig, values: dict, overrides: list[str], idx: int) -> DictConfig:
        job_folder(base, idx, overrides)
        cfg = derive(task_base, values, overrides, idx)
        OmegaConf.resolve(cfg)
        return cfg

    return derive_as_job


def validate_once_per_group() -> None:
    """Hydra's sweepers compose every job's config before launching a batch of jobs, only to see
    that each can be composed (Sweeper.validate_batch_is_legal): for a thousand jobs that differ
    only in values that is most of the sweep's time. With this launcher one job per group is
    enough (runner/batched/plan.py): the others differ from it only in numeric values of keys it
    has, set the same way. Installed once, when this launcher is set up."""
    from hydra.plugins.sweeper import Sweeper

    original = Sweeper.validate_batch_is_legal
    if getattr(original, "once_per_group", False):
        return

    def validate(self, batch) -> None:
        from runner.errors import UserError
        from runner.sweep_folders import check_batch

        overrides = [list(o) for o in batch]
        original(self, [overrides[g.jobs[0]] for g in plan.group(overrides)])
        try:
            check_batch(self, overrides)  # each job a folder of its own inside the sweep's
        except UserError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)

    validate.once_per_group = True
    Sweeper.validate_batch_is_legal = validate


def _close_all(records: list, entered: list, failure: Optional[BaseException], client) -> Optional[BaseException]:
    """Close every job's record, in order: FINISHED, FAILED (its own reason, or the batch's
    exception) or KILLED (an interrupt, which is returned to be raised once all are closed)."""
    from runner.run_record import RunFailed

    interrupt = failure if isinstance(failure, KeyboardInterrupt) else None
    for r in records:
        if r not in entered:
            if getattr(r, "preset_id", None) is not None:  # created but never opened: closed all the same
                try:
                    client.log_batch(r.preset_id, tags=[("error", f"the batch stopped before this job started ({type(failure).__name__})")])
                    client.set_terminated(r.preset_id, "KILLED" if interrupt is not None else "FAILED")
                except Exception:
                    pass
            continue
        exc = interrupt if interrupt is not None else (failure if isinstance(failure, Exception) else None)
        try:
            r.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)
        except RunFailed:
            pass
        except KeyboardInterrupt as again:  # while closing: the rest are closed KILLED too
            interrupt = interrupt or again
            _killed_while_closing(r, again)
    if failure is not None and not isinstance(failure, (KeyboardInterrupt, Exception)):
        return failure  # SystemExit and the like go on
    return interrupt


def _killed_while_closing(record, exc: KeyboardInterrupt) -> None:
    """A record whose close an interrupt cut short (waiting on the store, as the batch's bulk
    requests do): closed again, KILLED, as a job alone interrupted while closing is (its final
    metrics and result.json kept); if that fails too, KILLED in its job folder and not synced
    (its points are in metrics.csv, for `sync`). A second interrupt leaves at once (runner/signals.py)."""
    from runner import signals

    if getattr(record, "_terminated", False):
        return  # its status was already queued: only the bulk requests are left (close_runs)
    try:
        record._failed_by(exc)
        record._close()
        return
    except BaseException:  # a second failure: what the folder says is below
        pass
    if getattr(record, "_terminated", False):
        return
    record.status, record.error = "KILLED", signals.describe(exc)
    try:
        record.folder.update(status="KILLED", error=record.error, synced=False)
    except Exception:
        pass
    record.shared.statuses.append((record.run_id, "KILLED"))
    record.shared.deferred.append((record.run_id, [], [], [("error", record.error)]))


def _write_hydra_files(out: Path, job: Prepared) -> None:
    """The job folder's `.hydra/overrides.yaml`, as Hydra writes it for a job it runs."""
    import yaml
    from omegaconf._utils import get_omega_conf_dumper

    try:
        folder = out / ".hydra"
        folder.mkdir(exist_ok=True)
        # OmegaConf.to_yaml(OmegaConf.create(overrides))'s text, without making a config of them first
        (folder / "overrides.yaml").write_text(yaml.dump(list(job.overrides), default_flow_style=False, allow_unicode=True, sort_keys=False,
                                                         Dumper=get_omega_conf_dumper()))
    except OSError:
        pass  # best-effort, like every job-folder file: the record says what could not be written


def _job_return(job: Prepared, value: float):
    from hydra.core.utils import JobReturn, JobStatus

    ret = JobReturn()
    ret.cfg, ret.overrides, ret.working_dir, ret.task_name = job.cfg, list(job.overrides), os.getcwd(), "runner"
    ret.status, ret.return_value = JobStatus.COMPLETED, value
    return ret

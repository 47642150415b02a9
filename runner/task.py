"""One experiment, the function Hydra calls for each job: build the plugins, open the run's
record, run the job, close the record.

Everything that can be wrong with the input is checked before a run is created (compose.py);
once a run exists it always ends FINISHED, FAILED (with an `error` tag) or KILLED, never RUNNING
(run_record.py).
"""
from __future__ import annotations

import math
import os
import sys
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from runner import signals
from runner.errors import UserError
from runner.job_context import JobContext
from runner.run_record import RunFailed

__all__ = ["hydra_task", "run", "RunFailed"]


def hydra_task(cfg: DictConfig) -> float:
    """Returns the final loss, for sweepers to minimise. In a sweep a failed job is recorded and
    returns NaN, so the other jobs still run (and an Optuna trial is marked failed); a single run
    exits non-zero instead."""
    ctx = JobContext.from_hydra()
    if ctx.sweep is not None:
        from runner import sweep_stop

        if sweep_stop.interrupted(ctx.sweep):  # a job queued behind an interrupt: not started
            print(f"[job {ctx.job_num}] not started: the sweep was interrupted.", file=sys.stderr)
            return math.nan
    try:
        return run(cfg, ctx)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        if not ctx.multirun:
            job_folder_cleanup(ctx)
            sys.exit(exc.exit_code)
        record_failed_start(cfg, ctx, str(exc))
    except RunFailed:
        if not ctx.multirun:
            sys.exit(1)
    except KeyboardInterrupt as exc:
        if ctx.multirun:
            raise  # the sweep stops; the entry point closes its parent run
        kind = "SIGTERM" if isinstance(exc, signals.Terminated) else "Ctrl-C"
        if getattr(exc, "run_recorded", False):
            print(f"Stopped: {kind}. The run is recorded KILLED with its history so far.", file=sys.stderr)
        else:
            print(f"Stopped: {kind} during start-up, before the run existed: nothing was recorded.", file=sys.stderr)
            job_folder_cleanup(ctx)
        sys.exit(signals.exit_code(exc))
    except Exception as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        from runner.record_io import write_local

        where = ctx.output_dir / "traceback.txt"
        where = where if write_local(where, traceback.format_exc()) else "nowhere: the job folder cannot be written"
        message = f"{type(exc).__name__}: {exc}"
        print(f"Error: the run failed with {message}\n(full traceback in {where})", file=sys.stderr)
        if not ctx.multirun:
            sys.exit(1)
        record_failed_start(cfg, ctx, message)
    return math.nan


def run(cfg: DictConfig, ctx: JobContext) -> float:
    from runner import compose, store
    from runner.run_record import RunRecord
    from runner.store.uri import check_reachable

    from runner.trust import check_no_environment

    check_no_environment(cfg)  # before anything is resolved into a record (runner/trust.py)
    _start_helper(cfg, ctx)  # MLflow imports in the helper while this process imports torch
    experiment = compose.build(cfg)
    uri = store_uri(cfg, ctx)
    check_reachable(uri)
    import matplotlib.figure  # noqa: F401  (for the figures: now, while the helper may still be importing MLflow)

    client = store.connect(uri)
    experiment_id = _open_experiment(client, uri, cfg.tracking.experiment)
    name = cfg.tracking.run_name or ctx.run_name(**experiment.plugins, device=experiment.device, used=experiment.resolved)
    if cfg.tracking.get("skip_finished"):
        done = client.finished_run(experiment_id, experiment.config_hash)
        if done is not None:
            return _reuse(client, ctx, experiment_id, done, name, experiment)
    record = RunRecord(client, cfg, experiment, ctx, experiment_id, uri, name)
    try:
        with record:
            t = experiment.trainer
            loop = experiment.job.run(steps=t["steps"], log_every=t["log_every"], check_every=t["check_every"], tol=t["tol"],
                                      on_points=record.on_points, device=experiment.device)
            record.finish(loop)
    except KeyboardInterrupt as exc:
        exc.run_recorded = getattr(record, "run_id", None) is not None  # the message says whether a run exists
        raise
    return record.final_loss


def store_uri(cfg: DictConfig, ctx: JobContext) -> str:
    """A sweep's jobs write to their parent's store; a single run to tracking.uri's."""
    from runner.store.uri import resolve_uri

    return ctx.sweep.uri if ctx.sweep else resolve_uri(cfg.tracking.uri)


def _start_helper(cfg: DictConfig, ctx: JobContext) -> None:
    """Start the MLflow helper of the store this job will use; a bad URI is reported later, in order."""
    from runner import store

    try:
        store.connect(store_uri(cfg, ctx))
    except UserError:
        pass


def _open_experiment(client, uri: str, name: str) -> str:
    from runner.store import StoreError

    try:
        return client.open_experiment(name)
    except StoreError as exc:
        raise UserError(f"The tracking store {uri} could not open experiment '{name}': {str(exc).splitlines()[0][:300]}") from None


def _reuse(client, ctx: JobContext, experiment_id: str, done, name: str, experiment) -> float:
    """tracking.skip_finished: report the recorded result instead of running again. In a sweep the
    job still appears under the new parent, as a FINISHED child that points at the original."""
    from runner.record_io import now_ms

    done_id, m = done
    final_loss = m.get("final_loss", math.nan)
    print(f"{name}: already FINISHED as run {done_id} (same config, hash {experiment.config_hash}); final loss {final_loss:.6g}. Not run again.")
    if ctx.sweep is not None:
        tags = {**experiment.plugins, "config_hash": experiment.config_hash, "reused_run_id": done_id, **ctx.sweep_tags()}
        run_id = client.create_run(experiment_id, name, tags)
        client.log_batch(run_id, metrics=[(k, m[k], now_ms(), 0) for k in ("final_loss", "steps", "loop_seconds") if k in m])
        client.set_terminated(run_id, "FINISHED")
    return final_loss


def job_folder_cleanup(ctx: JobContext) -> None:
    """A single run refused or stopped before its run existed: its folder holds only what Hydra
    wrote before the task (.hydra/, the log file), so it goes, with the folders above it that are left empty (outputs/DATE/)."""
    from hydra.core.hydra_config import HydraConfig

    from runner import job_folder

    if HydraConfig.initialized():
        hc = HydraConfig.get()
        job_folder.remove_if_only_hydra(ctx.output_dir, str(hc.job.name), Path(hc.runtime.cwd))


def record_failed_start(cfg: DictConfig, ctx: JobContext, error: str) -> None:
    """A sweep job that failed before its run existed still gets a FAILED child run."""
    if ctx.sweep is None:
        return
    try:
        from runner import store
        from runner.record_io import flatten

        client = store.connect(ctx.sweep.uri)
        names = {k: str(OmegaConf.select(cfg, f"{k}._name_", default="?")) for k in ("problem", "optim")}
        run_id = client.create_run(ctx.sweep.experiment_id, ctx.run_name(names["problem"], names["optim"]),
                                   {**names, "error": error[:5000], **ctx.sweep_tags()})
        params = list(flatten(OmegaConf.to_container(cfg, resolve=False)).items())
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i : i + 100])
        client.set_terminated(run_id, "FAILED")
    except Exception as exc:  # the tracking store itself is the problem: the console still says why
        print(f"(could not record the failed job in MLflow: {exc})", file=sys.stderr)

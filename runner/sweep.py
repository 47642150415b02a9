"""A sweep is one MLflow parent run; each job is its child (the standard mlflow.parentRunId tag).

`SweepCallback` is a Hydra callback (configured in conf/config.yaml): it opens the parent in the
launching process before any job starts, which also creates a fresh store's tables once, before
parallel workers could race to do it. `finish()` closes the parent with a leaderboard and an
overlay of every child's loss curve; the entry point calls it however the sweep ends, because
Hydra skips on_multirun_end when a sweep raises or is interrupted. The jobs learn their parent
through runner.job_context.SweepParent.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner.errors import UserError
from runner.job_context import SweepParent
from runner.sweep_stop import close_running_children
from runner.naming import sweep_name
from runner.sweep_summary import _attach_report, _plot_curves, _record_best, _render_table, _write_leaderboard, console_summary, leaderboard




class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Every value of the sweep was checked before Hydra started (runner/override_check.py):
        # Hydra's own check, a full composition of each job's config before any job runs, is
        # needed once per group of jobs that differ only in values (the batched launcher's rule).
        from runner.batched.launch import validate_once_per_group
        from runner.sweep_folders import check_grid

        validate_once_per_group()
        try:
            check_grid(config)  # each job a folder of its own, before anything is recorded
            start(config)
        except UserError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        finish()


@dataclass
class OpenSweep:
    parent: SweepParent
    heartbeat: Any  # a MetricStream that only beats: reap spares a live sweep


@dataclass
class Outcome:
    rows: list
    failed: list
    status: str  # FINISHED, FAILED or KILLED


class _Sweeps:
    """This process's sweep: Hydra creates the callback, the entry point closes what it opened.
    Private to this module (and runner.sweep_stop): others go through start(), finish() and outcome()."""
    open: Optional[OpenSweep] = None
    outcome: Optional[Outcome] = None


def start(config: DictConfig) -> SweepParent:
    from runner import store
    from runner.store.stream import MetricStream
    from runner.store.uri import check_reachable, resolve_uri
    from runner.trust import check_no_environment

    check_no_environment(config, "the sweep's config")
    uri = resolve_uri(config.tracking.uri)
    check_reachable(uri)
    if str(OmegaConf.select(config, "hydra.launcher._target_", default="")).endswith(("BasicLauncher", "BatchedLauncher")):
        from runner.store.helper import prestart

        prestart()  # the jobs run in this process: their MLflow helper imports while this one opens the parent
    client = store.connect(uri, in_process=True)
    experiment_id = client.open_experiment(config.tracking.experiment)
    overrides = [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task, resolve=False)]  # as typed: `${hydra:job.num}` has no job here
    choices = config.hydra.runtime.choices
    sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
    tags = {
        "sweep": "true",
        "mlflow.source.name": "runner",
        "sweep_dir": str(sweep_dir),
        "hydra_launcher": str(choices.get("hydra/launcher")),
        "hydra_sweeper": str(choices.get("hydra/sweeper")),
    }
    name = _parent_name(config, overrides)
    run_id = client.create_run(experiment_id, name, tags)
    params = [("sweep.overrides", " ".join(overrides)[:6000]), ("sweep.launcher", tags["hydra_launcher"]), ("sweep.sweeper", tags["hydra_sweeper"])]
    client.log_batch(run_id, params=params)
    parent = SweepParent(run_id, uri, experiment_id, str(sweep_dir), name)
    parent.publish()
    _Sweeps.open = OpenSweep(parent, MetricStream(client, run_id, record_dir=sweep_dir, uri=uri))  # beats until finish()
    store.connect(uri).watch(run_id)  # closed KILLED by the helper if this process ends abruptly
    return parent


def _parent_name(config: DictConfig, overrides: list[str]) -> str:
    """tracking.run_name, or one made of the sweep's overrides. A run name that names each job
    (`${hydra:job.num}`: no job exists yet) names the parent by the overrides too (before, it
    raised here, Hydra only warned, and the sweep ran with no parent run)."""
    try:
        given = config.tracking.run_name
    except Exception:
        given = None
    return str(given) if given else sweep_name(overrides)


def is_open() -> bool:
    return _Sweeps.open is not None


def outcome() -> Optional[Outcome]:
    """How the last sweep this process closed ended (None: no sweep, or still open)."""
    return _Sweeps.outcome


def finish(interrupted: bool = False) -> Optional[Outcome]:
    """Close the open sweep's parent run: leaderboard, curves, best job, status. Idempotent.

    Every MLflow call is best-effort on its own: whichever fails (the server went away, the
    store's disk is full), the summary is printed, the outcome is not FINISHED (so the exit
    status is non-zero), and closing the parent is still tried."""
    if _Sweeps.open is None:
        return None
    sweep, _Sweeps.open, _Sweeps.outcome = _Sweeps.open, None, None
    try:
        sweep.heartbeat.close(timeout=5)
    except Exception:
        pass
    sweep.parent.withdraw()
    from runner import store

    info = {"run_id": sweep.parent.run_id, "uri": sweep.parent.uri, "experiment_id": sweep.parent.experiment_id,
            "sweep_dir": sweep.parent.sweep_dir, "name": sweep.parent.name}
    client = store.connect(info["uri"], in_process=True)
    run_id = info["run_id"]
    problems: list[str] = []
    attempt = _attempter(problems)
    if interrupted:
        attempt("closing the jobs still running", close_running_children, client, info)
    rows = attempt(f"reading the jobs from {info['uri']}", leaderboard, client, info)
    out = Path(info["sweep_dir"])
    if rows is not None:
        _publish_summary(client, info, rows, out, attempt, problems)
    unsynced = _unsynced_jobs(out, run_id)
    if unsynced:
        problems.append(f"the records of {len(unsynced)} job(s) ({', '.join(unsynced[:5])}{', ...' if len(unsynced) > 5 else ''}) "
                        "did not all reach it (their history there is incomplete)")
    rows = rows or []
    failed = [r for r in rows if r["status"] != "FINISHED"]
    status = "KILLED" if interrupted else ("FAILED" if failed or not rows or problems else "FINISHED")
    print(console_summary(info, rows, interrupted, problems))
    error = "; ".join(([f"{len(failed)} of {len(rows)} jobs failed"] if failed else []) + problems)[:5000]
    if error:
        attempt("tagging the parent's error", client.set_tag, run_id, "error", error)
    closed = _close_parent(client, run_id, status, out, info["uri"])
    result = Outcome(rows, failed, status if closed else "FAILED")
    _Sweeps.outcome = result
    return result


def _unsynced_jobs(sweep_dir: Path, parent_run_id: str) -> list[str]:
    """This sweep's job folders whose record did not all reach the store (record.json `synced`:
    false): a store that failed mid-job and answered again by the end still shows such a run,
    incomplete, so the sweep must say so, whichever launcher or worker ran the job. The walk
    follows no symlink and reads regular files only (runner/record_scan.py): a reused sweep
    folder may hold links to `.` or a FIFO; a record that cannot be read is not this sweep's."""
    import json

    from runner.job_folder import FILE
    from runner.record_scan import read_record_text, record_folders

    found = []
    for folder in record_folders(sweep_dir):
        try:
            text = read_record_text(folder / FILE)
            if '"synced": false' not in text:  # most records: not parsed (a thousand jobs' folders are read here)
                continue
            data = json.loads(text)
            ours = data.get("tags", {}).get("mlflow.parentRunId") == parent_run_id
        except (OSError, ValueError, AttributeError):  # UnreadableRecord is a ValueError
            continue
        if ours and data.get("synced") is False and data.get("status") != "RUNNING":  # closed, not all in the store
            found.append(str(folder.relative_to(sweep_dir)))
    return found


def _attempter(problems: list[str]):
    """A best-effort caller: a call that raises adds its reason to `problems` and gives None."""
    def attempt(what: str, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:
            problems.append(f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
            return None

    return attempt


def _publish_summary(client, info: dict, rows: list[dict], out: Path, attempt, problems: list[str]) -> None:
    """The leaderboard, curves and best job in the sweep folder and on the parent run; the report if all went through."""
    run_id = info["run_id"]
    attempt("writing the leaderboard", _write_leaderboard, rows, out)
    attempt("drawing the loss curves", _plot_curves, client, rows, out / "loss_curves.png")
    attempt("drawing the leaderboard", _render_table, rows, out / "leaderboard.png")
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.png", "loss_curves.png"):
        if (out / name).exists():
            attempt(f"uploading {name}", client.log_artifact, run_id, str(out / name))
    attempt("recording the best job", _record_best, client, run_id, rows)
    if not problems:
        _attach_report(client, info, out / "report")


def _close_parent(client, run_id: str, status: str, out: Path, uri: str) -> bool:
    """The parent's status, tried three times; a warning on how to close it later if none went through."""
    closed, reason = False, ""
    for delay in (0, 1, 2):  # a store that stumbled may answer again
        time.sleep(delay)
        try:
            client.set_terminated(run_id, status)
            closed = True
            break
        except Exception as exc:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    if not closed:
        from runner.store.store_errors import sync_command

        print(f"Warning: the sweep's parent run {run_id} could not be closed ({reason}); it shows RUNNING until the "
              f"store answers again and `python -m runner reap` closes it. The jobs' own records are in {out}; "
              f"`{sync_command(uri, out)}` uploads those that did not reach the store.", file=sys.stderr)
    return closed

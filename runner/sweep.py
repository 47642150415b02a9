"""A sweep is one MLflow parent run; each job is its child (the standard mlflow.parentRunId tag).

`SweepCallback` is a Hydra callback (configured in conf/config.yaml): it opens the parent in the
launching process before any job starts, which also creates a fresh store's tables once, before
parallel workers could race to do it. `finish()` closes the parent with a leaderboard and an
overlay of every child's loss curve; the entry point calls it however the sweep ends, because
Hydra skips on_multirun_end when a sweep raises or is interrupted. The jobs learn their parent
through runner.job_context.SweepParent.
"""
from __future__ import annotations

import io
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner.errors import UserError
from runner.job_context import SweepParent


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
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
    Private to this module: others go through start(), finish() and outcome()."""
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
    if "BasicLauncher" in str(OmegaConf.select(config, "hydra.launcher._target_", default="")):
        from runner.store.helper import prestart

        prestart()  # the jobs run in this process: their MLflow helper imports while this one opens the parent
    client = store.connect(uri, in_process=True)
    experiment_id = client.open_experiment(config.tracking.experiment)
    overrides = [str(o) for o in config.hydra.overrides.task]
    choices = config.hydra.runtime.choices
    sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
    tags = {
        "sweep": "true",
        "mlflow.source.name": "runner",
        "sweep_dir": str(sweep_dir),
        "hydra_launcher": str(choices.get("hydra/launcher")),
        "hydra_sweeper": str(choices.get("hydra/sweeper")),
    }
    name = config.tracking.run_name or "sweep-" + "-".join(o.lstrip("+~") for o in overrides if not o.startswith("hydra"))[:200]
    run_id = client.create_run(experiment_id, name, tags)
    params = [("sweep.overrides", " ".join(overrides)[:6000]), ("sweep.launcher", tags["hydra_launcher"]), ("sweep.sweeper", tags["hydra_sweeper"])]
    client.log_batch(run_id, params=params)
    parent = SweepParent(run_id, uri, experiment_id, str(sweep_dir), name)
    parent.publish()
    _Sweeps.open = OpenSweep(parent, MetricStream(client, run_id))  # beats until finish()
    store.connect(uri).watch(run_id)  # closed KILLED by the helper if this process ends abruptly
    return parent


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

    def attempt(what: str, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:
            problems.append(f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
            return None

    if interrupted:
        attempt("closing the jobs still running", close_running_children, client, info)
    rows = attempt(f"reading the jobs from {info['uri']}", leaderboard, client, info)
    out = Path(info["sweep_dir"])
    if rows is not None:
        attempt("writing the leaderboard", _write_leaderboard, rows, out)
        attempt("drawing the loss curves", _plot_curves, client, rows, out / "loss_curves.png")
        attempt("drawing the leaderboard", _render_table, rows, out / "leaderboard.png")
        for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.png", "loss_curves.png"):
            if (out / name).exists():
                attempt(f"uploading {name}", client.log_artifact, run_id, str(out / name))
        attempt("recording the best job", _record_best, client, run_id, rows)
        if not problems:
            _attach_report(client, info, out / "report")
    rows = rows or []
    failed = [r for r in rows if r["status"] != "FINISHED"]
    status = "KILLED" if interrupted else ("FAILED" if failed or not rows or problems else "FINISHED")
    print(console_summary(info, rows, interrupted, problems))
    error = "; ".join(([f"{len(failed)} of {len(rows)} jobs failed"] if failed else []) + problems)[:5000]
    if error:
        attempt("tagging the parent's error", client.set_tag, run_id, "error", error)
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
        print(f"Warning: the sweep's parent run {run_id} could not be closed ({reason}); it shows RUNNING until the "
              f"store answers again and `python -m runner reap` closes it. The jobs' own records are in {out}; "
              f"`python -m runner sync --tracking-uri URI {out}` uploads those that did not reach the store.", file=sys.stderr)
    result = Outcome(rows, failed, status if closed else "FAILED")
    _Sweeps.outcome = result
    return result


STOP_FILE = "interrupted"  # in the sweep directory: jobs not yet started do not start


def stop_workers(timeout: float = 20.0) -> None:
    """An interrupted sweep stops its parallel workers before anything else: it marks the sweep
    interrupted (a queued job then does not start), sends SIGTERM to every process below this one
    (joblib's and submitit's workers, Ray's processes; not the MLflow helpers, which ignore it),
    which a running job answers by closing its run KILLED, and waits up to `timeout` seconds for
    the children runs to be closed or the workers to leave. Called from the launcher's signal
    handler, so that the launcher library (joblib kills its workers and their helpers at once)
    does not cut the jobs' own clean-up short; finish() closes whatever is left."""
    import signal

    global _stopping
    if _Sweeps.open is None or _stopping:
        return
    _stopping = True
    parent = _Sweeps.open.parent
    info = {"run_id": parent.run_id, "uri": parent.uri, "experiment_id": parent.experiment_id, "sweep_dir": parent.sweep_dir}
    try:
        (Path(info["sweep_dir"]) / STOP_FILE).write_text("interrupted\n")
    except OSError:
        pass
    _, workers = _descendants()
    if not workers:
        return  # the jobs run in this process: the interrupt reaches them directly
    from runner import store

    client = store.connect(info["uri"], in_process=True)
    began = time.monotonic()
    signalled = -math.inf
    while time.monotonic() < began + timeout:
        alive = [pid for pid in workers if _alive(pid)]
        if not alive:
            break
        if time.monotonic() - signalled >= 2:  # again every 2 s: a job still starting (submitit's
            for pid in alive:                  # bypasses SIGTERM then) gets it once its run is open
                _signal(pid, signal.SIGTERM)
            signalled = time.monotonic()
        if time.monotonic() - began >= 3:
            try:
                if not _running_children(client, info):
                    break  # every job closed its run; idle pool workers need not leave
            except Exception:  # the store is gone: wait for the workers alone
                pass
        time.sleep(0.3)


def kill_leftover_workers() -> None:
    """After an interrupted sweep is closed: any worker still alive (one that ignored SIGTERM)
    is killed, so that no job goes on training unseen; its MLflow helper closes its run KILLED."""
    import signal

    for pid in _descendants()[1]:
        _signal(pid, signal.SIGKILL)


_stopping = False


def interrupted(parent: Optional[SweepParent]) -> bool:
    """Whether the sweep of this job was interrupted before the job started (see stop_workers)."""
    return parent is not None and bool(parent.sweep_dir) and (Path(parent.sweep_dir) / STOP_FILE).exists()


def _running_children(client, info: dict) -> list:
    return client.search_runs([info["experiment_id"]], max_results=50000,
                              filter_string=f"tags.`mlflow.parentRunId` = '{info['run_id']}' and attributes.status = 'RUNNING'")


def close_running_children(client, info: dict, wait: float = 5.0) -> int:
    """Children of the parent still RUNNING once the workers are stopped: wait up to `wait`
    seconds for their own processes or helpers to close them, then close them KILLED here."""
    deadline = time.monotonic() + wait
    while True:
        running = _running_children(client, info)
        if not running or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for run in running:
        client.set_tag(run.info.run_id, "error", "interrupted: the sweep was stopped and its worker did not close the run")
        client.set_terminated(run.info.run_id, "KILLED")
    return len(running)


def _descendants() -> tuple[list[int], list[int]]:
    """(MLflow helpers, other processes) below this one, from /proc (Linux; elsewhere none)."""
    children: dict[int, list[int]] = {}
    commands: dict[int, bytes] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            pid = int(stat.parent.name)
            commands[pid] = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    helpers = [p for p in found if b"runner.store.helper" in commands.get(p, b"")]
    # Bookkeepers (loky's and multiprocessing's resource trackers) leave with this process by themselves.
    quiet = [p for p in found if b"resource_tracker" in commands.get(p, b"")]
    return helpers, [p for p in found if p not in helpers and p not in quiet]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"  # a zombie has left; its parent (perhaps this process) reaps it
    except (OSError, IndexError):
        return False


def _signal(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def _attach_report(client, info: dict, folder: Path) -> None:
    """The comparison report (runner/report/) of the sweep's children, as the parent's
    `report/` artifacts: the MLflow UI shows report.html without another command. A report that
    cannot be made is a warning on the parent, never a failed sweep."""
    from runner.report import write_report

    try:
        write_report(client, folder, experiment_id=info["experiment_id"], parent_run_id=info["run_id"],
                     source=f"sweep {info['name']} ({info['run_id']}) in {info['uri']}")
        client.log_artifacts(info["run_id"], str(folder), "report")
    except Exception as exc:
        client.set_tag(info["run_id"], "report_error", f"{type(exc).__name__}: {exc}"[:5000])
        print(f"Warning: the sweep's report could not be made ({type(exc).__name__}: {exc}); "
              f"make it later with: python -m runner report --parent {info['run_id']}", file=sys.stderr)


def leaderboard(client, info: dict) -> list[dict]:
    """The sweep's jobs, best first: the job ranking of runner/report/leaderboard.py."""
    from runner.report import collect
    from runner.report.leaderboard import job_ranking

    return job_ranking(collect.search(client, info["experiment_id"], collect.children_of(info["run_id"])))


def _record_best(client, run_id: str, rows: list[dict]) -> None:
    finished = [r for r in rows if r["status"] == "FINISHED" and math.isfinite(r["final_loss"])]
    metrics = [("jobs", float(len(rows)), 0, 0), ("jobs_failed", float(len(rows) - len(finished)), 0, 0)]
    tags, params = [], []
    if finished:
        best = finished[0]
        metrics.append(("best_final_loss", best["final_loss"], 0, 0))
        tags = [("best_run_id", best["run_id"]), ("best_overrides", best["overrides"][:5000])]
        for override in best["overrides"].split():
            key, _, value = override.lstrip("+~").partition("=")
            params.append((f"best.{key}", value[:6000]))
    client.log_batch(run_id, metrics=metrics, params=params[:100], tags=tags)


def _write_leaderboard(rows: list[dict], out: Path) -> None:
    from runner.report.leaderboard import write_job_ranking

    write_job_ranking(rows, out)


def _render_table(rows: list[dict], path: Path) -> None:
    from runner.report.sweep_figures import job_table

    job_table(rows, path)


def _plot_curves(client, rows: list[dict], path: Path) -> None:
    from runner.report import collect
    from runner.report.sweep_figures import job_curves

    job_curves(rows, {r["run_id"]: collect.loss_points(client, r["run_id"]) for r in rows}, path)


def console_summary(info: dict, rows: list[dict], interrupted: bool, problems: Optional[list[str]] = None) -> str:
    failed = [r for r in rows if r["status"] != "FINISHED"]
    head = "Sweep interrupted" if interrupted else "Sweep finished"
    out = io.StringIO()
    if problems:
        from runner.trust import redact_uri

        out.write(f"\n{head}, but the tracking store {info['uri']} did not take everything:\n")
        out.writelines(f"  - {p}\n" for p in problems)
        out.write(f"  The jobs' own records are in {info['sweep_dir']}; `python -m runner sync --tracking-uri {redact_uri(info['uri'])} "
                  f"{info['sweep_dir']}` uploads those that did not reach the store.\n")
    out.write(f"\n{head}: {len(rows)} jobs, {len(rows) - len(failed)} finished, {len(failed)} failed. Parent run {info['run_id']} ({info['name']})\n")
    out.write(f"  {'job':>3}  {'status':<9} {'final_loss':>11} {'steps':>6} {'loop s':>7}  overrides\n")
    for r in rows:
        steps = "" if r["steps"] is None else r["steps"]
        out.write(f"  {r['job']:>3}  {r['status']:<9} {r['final_loss']:>11.4g} {steps:>6} {r['loop_seconds']:>7.3f}  {r['overrides']}\n")
    if failed:
        out.write("Failed jobs:\n")
        for r in failed:
            out.write(f"  #{r['job']} {r['overrides']}: {r['error'] or r['status']}\n")
    out.write(f"Leaderboard, curves and report ({Path(info['sweep_dir']) / 'report' / 'report.html'}): {info['sweep_dir']} and the parent run's artifacts.")
    return out.getvalue()

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
import sys
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
    return parent


def outcome() -> Optional[Outcome]:
    """How the last sweep this process closed ended (None: no sweep, or still open)."""
    return _Sweeps.outcome


def finish(interrupted: bool = False) -> Optional[Outcome]:
    """Close the open sweep's parent run: leaderboard, curves, best job, status. Idempotent."""
    if _Sweeps.open is None:
        return None
    sweep, _Sweeps.open, _Sweeps.outcome = _Sweeps.open, None, None
    sweep.heartbeat.close(timeout=5)
    sweep.parent.withdraw()
    from runner import store

    info = {"run_id": sweep.parent.run_id, "uri": sweep.parent.uri, "experiment_id": sweep.parent.experiment_id,
            "sweep_dir": sweep.parent.sweep_dir, "name": sweep.parent.name}
    client = store.connect(info["uri"], in_process=True)
    run_id = info["run_id"]
    result = Outcome([], [], "KILLED" if interrupted else "FAILED")
    try:
        rows = leaderboard(client, info)
        failed = [r for r in rows if r["status"] != "FINISHED"]
        out = Path(info["sweep_dir"])
        _write_leaderboard(rows, out)
        _plot_curves(client, rows, out / "loss_curves.png")
        _render_table(rows, out / "leaderboard.png")
        for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.png", "loss_curves.png"):
            if (out / name).exists():
                client.log_artifact(run_id, str(out / name))
        _record_best(client, run_id, rows)
        _attach_report(client, info, out / "report")
        print(console_summary(info, rows, interrupted))
        status = "KILLED" if interrupted else ("FAILED" if failed or not rows else "FINISHED")
        if failed:
            client.set_tag(run_id, "error", f"{len(failed)} of {len(rows)} jobs failed")
        result = Outcome(rows, failed, status)
    except Exception as exc:  # the parent is closed even when the summary cannot be made
        client.set_tag(run_id, "error", f"sweep summary failed: {type(exc).__name__}: {exc}"[:5000])
    finally:
        _Sweeps.outcome = result
        client.set_terminated(run_id, result.status)
    return result


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


def console_summary(info: dict, rows: list[dict], interrupted: bool) -> str:
    failed = [r for r in rows if r["status"] != "FINISHED"]
    head = "Sweep interrupted" if interrupted else "Sweep finished"
    out = io.StringIO()
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

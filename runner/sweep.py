"""A sweep is one MLflow parent run; each job is its child (the standard mlflow.parentRunId tag).

`SweepCallback` is a Hydra callback (configured in conf/config.yaml): it opens the parent in the
launching process before any job starts, which also creates a fresh store's tables once, before
parallel workers could race to do it. `finish()` closes the parent with a leaderboard and an
overlay of every child's loss curve; the entry point calls it however the sweep ends, because
Hydra skips on_multirun_end when a sweep raises or is interrupted. The jobs learn their parent
through runner.job_context.SweepParent.
"""
from __future__ import annotations

import csv
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
    """The comparison report (runner/report.py) of the sweep's children, as the parent's
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
    from runner.store.uri import unclip

    runs = client.search_runs(
        [info["experiment_id"]], filter_string=f"tags.`mlflow.parentRunId` = '{info['run_id']}'", max_results=50000
    )
    rows = []
    for r in runs:
        m = r.data.metrics
        rows.append({
            "job": int(r.data.tags.get("sweep_job", -1)),
            "run_id": r.info.run_id,
            "name": r.info.run_name,
            "overrides": r.data.tags.get("overrides", ""),
            "status": r.info.status,
            "final_loss": unclip(m.get("final_loss", math.nan)),
            "steps": int(m["steps"]) if "steps" in m else None,
            "loop_seconds": m.get("loop_seconds", math.nan),
            "error": r.data.tags.get("error", ""),
        })
    rank = lambda r: (r["status"] != "FINISHED", r["final_loss"] if math.isfinite(r["final_loss"]) else math.inf, r["job"])  # noqa: E731
    return sorted(rows, key=rank)


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


COLUMNS = ["job", "overrides", "status", "final_loss", "steps", "loop_seconds", "error", "run_id"]


def _write_leaderboard(rows: list[dict], out: Path) -> None:
    with open(out / "leaderboard.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS[:-1]) + " |", "|" + "---|" * (len(COLUMNS) - 1)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[c]) for c in COLUMNS[:-1]) + " |")
    (out / "leaderboard.md").write_text("\n".join(lines) + "\n")


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v).replace("|", "/")


def _render_table(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = COLUMNS[:-2]
    cells = [[_cell(r[c])[:60] for c in cols] for r in rows] or [["" for _ in cols]]
    fig, ax = plt.subplots(figsize=(11, 0.6 + 0.3 * (len(cells) + 1)))
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=cols, loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(cols))))
    for i, r in enumerate(rows, start=1):
        if r["status"] != "FINISHED":
            for j in range(len(cols)):
                table[i, j].set_facecolor("#f8d7da")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_curves(client, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    positive = True
    for r in rows:
        history = client.get_metric_history(r["run_id"], "loss")
        if not history:
            continue
        steps, values = zip(*sorted((p.step, p.value) for p in history))
        positive = positive and min(values) > 0
        style = "-" if r["status"] == "FINISHED" else ":"
        ax.plot(steps, values, style, lw=1.2, label=(r["overrides"] or r["name"])[:50])
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss of every job (dotted: failed)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines and len(rows) <= 20:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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

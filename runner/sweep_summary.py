"""A closing sweep's summary: the leaderboard, curves, best job and report on the parent run, and the console summary."""
from __future__ import annotations

import io
import math
import re
import sys
from pathlib import Path
from typing import Optional

_PARAM_KEY = re.compile(r"[\w./ :-]{1,240}")  # what MLflow accepts in a param's name (best.KEY)


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

    return job_ranking(collect.children(client, info["experiment_id"], info["run_id"]))


def _record_best(client, run_id: str, rows: list[dict]) -> None:
    """Job counts and the best job. Losses of different problems do not compare: with several
    problem instances, `best_by_problem` names each one's best job instead of one best job."""
    from runner.report.leaderboard import best_per_problem

    best = best_per_problem(rows)
    finished = [r for r in rows if r["status"] == "FINISHED" and math.isfinite(r["final_loss"])]
    metrics = [("jobs", float(len(rows)), 0, 0), ("jobs_failed", float(len(rows) - len(finished)), 0, 0)]
    tags, params = [], []
    if len(best) == 1:
        (only,) = best.values()
        metrics.append(("best_final_loss", only["final_loss"], 0, 0))
        tags = [("best_run_id", only["run_id"]), ("best_overrides", only["overrides"][:5000])]
        from runner.report.leaderboard import override_list

        for override in override_list(only["overrides"]):
            key, _, value = override.lstrip("+~").partition("=")
            if _PARAM_KEY.fullmatch(key):  # `group@package=...` cannot be a param name; best_overrides has it
                params.append((f"best.{key}", value[:6000]))
    elif best:
        text = "\n".join(f"{problem}: {r['run_id']} (final loss {r['final_loss']:.6g}; {r['overrides']})" for problem, r in best.items())
        tags = [("best_by_problem", text[:5000])]
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

    job_curves(rows, collect.loss_curves(client, [r["run_id"] for r in rows]), path)


def console_summary(info: dict, rows: list[dict], interrupted: bool, problems: Optional[list[str]] = None) -> str:
    failed = [r for r in rows if r["status"] != "FINISHED"]
    head = "Sweep interrupted" if interrupted else "Sweep finished"
    out = io.StringIO()
    if problems:
        from runner.store.store_errors import sync_command

        out.write(f"\n{head}, but the tracking store {info['uri']} did not take everything:\n")
        out.writelines(f"  - {p}\n" for p in problems)
        out.write(f"  The jobs' own records are in {info['sweep_dir']}; `{sync_command(info['uri'], info['sweep_dir'])}` uploads those that did not reach the store.\n")
    out.write(f"\n{head}: {len(rows)} jobs, {len(rows) - len(failed)} finished, {len(failed)} failed. Parent run {info['run_id']} ({info['name']})\n")
    out.write(job_lines(rows))
    if failed:
        out.write("Failed jobs:\n")
        for r in failed:
            out.write(f"  #{r['job']} {r['overrides']}: {r['error'] or r['status']}\n")
    out.write(f"Leaderboard, curves and report ({Path(info['sweep_dir']) / 'report' / 'report.html'}): {info['sweep_dir']} and the parent run's artifacts.")
    return out.getvalue()


def job_lines(rows: list[dict]) -> str:
    """The console's job ranking: the overrides every job shares once, then each problem instance
    with its jobs ranked (a heading per problem only when there are several)."""
    from runner.report.leaderboard import split_overrides

    shared, varying = split_overrides(rows)
    several = len({r["problem"] for r in rows}) > 1
    out = io.StringIO()
    if shared:
        out.write(f"  same in every job: {' '.join(shared)}\n")
    head = f"  {'rank':>4}  {'job':>3}  {'status':<9} {'final_loss':>11} {'steps':>6} {'loop s':>7}  overrides\n"
    for i, (r, other) in enumerate(zip(rows, varying)):
        if i == 0 or (several and r["problem"] != rows[i - 1]["problem"]):
            if several:
                out.write(f"  problem {r['problem']}\n")
            out.write(head)
        steps = "" if r["steps"] is None else r["steps"]
        out.write(f"  {r['rank']:>4}  {r['job']:>3}  {r['status']:<9} {r['final_loss']:>11.4g} {steps:>6} {r['loop_seconds']:>7.3f}  {other}\n")
    return out.getvalue()

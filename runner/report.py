"""`python -m runner report`: a comparison report of optimisers, computed from what MLflow holds.

It reads runs (an experiment, or one sweep's children) through the MLflow client only, so it works
on runs logged days ago, on another machine, through a tracking server, and writes into one folder:
`report.html` (self-contained: figures embedded), the figures as PNG, and `leaderboard.csv`.

Terms. A *problem* is a problem plugin with its arguments (`nist dataset=Wampler1`); a *solver* is
an optimiser with its schedule and the settings that differ between the runs compared
(`adam lr=0.01`); an *instance* is a problem from one starting point (`trainer.seed`). A run
*solved* its instance when it ended within the problem's target (its cost: the first step it was
within it): the `loss_target` the problem
logged (least-squares problems: within 1e-7 of the way from zero to the optimum), or, for a problem
that does not declare one, Moré and Wild's test f0 - f >= (1 - tau) (f0 - fL) with fL the least
loss any run reached on it. Failed and killed runs never solved anything.
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from runner.errors import UserError
from runner.naming import short_value

DEFAULT_TAU = 1e-7
# Settings that never tell two solvers apart: the start (instances), display and record keeping.
_NOT_SOLVER = ("trainer.seed", "trainer.progress", "trainer.log_every", "trainer.check_every")


@dataclass
class RunData:
    run_id: str
    name: str
    status: str
    start_time: int
    problem: str  # the plugin names, then labels with the arguments that differ
    optim: str
    params: dict
    metrics: dict
    seed: int
    replicas: int
    error: str
    sched: str = ""  # the schedule plugin, if any
    started_at: Optional[float] = None  # loop_started_at: the origin of the loss points' times
    history: list = field(default_factory=list)  # [(step, loss, seconds since the loop began)]
    bands: dict = field(default_factory=dict)  # loss_q10 / loss_q90 of a replicas run: {step: value}
    problem_label: str = ""
    solver_label: str = ""
    target: Optional[float] = None
    steps_to_target: float = math.inf  # optimiser steps until the loss was at or below the target
    seconds_to_target: float = math.inf

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"

    @property
    def final_loss(self) -> float:
        from runner.tracking import unclip

        return unclip(self.metrics.get("final_loss", math.nan))

    @property
    def solved(self) -> bool:
        return math.isfinite(self.steps_to_target)


# -- reading MLflow ---------------------------------------------------------------------------------
def collect(client, experiment_id: str, parent_run_id: Optional[str] = None) -> tuple[list[RunData], list[str]]:
    """The runs to compare, with their loss histories; and notes on what was left out."""
    notes = []
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}'" if parent_run_id else ""
    found = client.search_runs([experiment_id], filter_string=query, max_results=50000, order_by=["attributes.start_time ASC"])
    runs: list[RunData] = []
    running = reused = 0
    for r in found:
        tags = r.data.tags
        if tags.get("sweep") == "true":
            continue  # a sweep's parent: its children are the runs
        if r.info.status in ("RUNNING", "SCHEDULED"):
            running += 1
            continue
        source = r
        if tags.get("reused_run_id"):  # tracking.skip_finished: the original holds the record
            if not parent_run_id:
                reused += 1
                continue
            source = client.get_run(tags["reused_run_id"])
        p = source.data.params
        runs.append(RunData(
            run_id=source.info.run_id, name=r.info.run_name or source.info.run_name, status=source.info.status,
            start_time=source.info.start_time or 0, problem=tags.get("problem", "?"), optim=tags.get("optim", "?"),
            params=dict(p), metrics=dict(source.data.metrics), seed=_int(p.get("trainer.seed"), 0),
            replicas=_int(p.get("trainer.replicas"), 1), error=source.data.tags.get("error", ""), sched=tags.get("sched", ""),
            started_at=float(source.data.tags["loop_started_at"]) if "loop_started_at" in source.data.tags else None,
        ))
    if running:
        notes.append(f"{running} run(s) still RUNNING were left out (see `python -m runner reap` for dead ones).")
    if reused:
        notes.append(f"{reused} reused run(s) (tracking.skip_finished) were counted once, as their originals.")
    for run in runs:
        _load_history(client, run)
    return runs, notes


def _int(value, default: int) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def _load_history(client, run: RunData) -> None:
    points = sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run.run_id, "loss"))
    origin = run.started_at if run.started_at is not None else (points[0][2] / 1000 if points else 0.0)
    run.history = [(s, v, max(ts / 1000 - origin, 0.0)) for s, v, ts in points]
    if run.replicas > 1:
        for key in ("loss_q10", "loss_q90"):
            run.bands[key] = {m.step: m.value for m in client.get_metric_history(run.run_id, key)}


# -- labels and the solved test -----------------------------------------------------------------------
def label(runs: list[RunData]) -> None:
    """Problem and solver labels: plugin names plus the arguments that differ between the runs."""
    by_problem = defaultdict(list)
    by_solver = defaultdict(list)
    for r in runs:
        by_problem[r.problem].append(r)
        by_solver[(r.optim, r.sched)].append(r)
    for name, group in by_problem.items():
        keys = _varying(group, lambda k: k.startswith("problem."))
        for r in group:
            r.problem_label = _compose(name, r, keys)
    # Trainer settings that differ between runs of the same problem (steps, dtype, replicas...);
    # not those that differ only between problems (dtype=auto gives nist float64, poly float32).
    trainer_keys = sorted({k for group in by_problem.values()
                           for k in _varying(group, lambda k: k.startswith("trainer.") and k not in _NOT_SOLVER)})
    for (optim, sched), group in by_solver.items():
        keys = _varying(group, lambda k: k.startswith(("optim.", "sched.")))
        for r in group:
            r.solver_label = _compose(optim + (f"+{sched}" if sched else ""), r, keys + trainer_keys)


def _varying(group: list[RunData], wanted) -> list[str]:
    keys = sorted({k for r in group for k in r.params if wanted(k)})
    return [k for k in keys if len({r.params.get(k) for r in group}) > 1]


def _compose(name: str, run: RunData, keys: list[str]) -> str:
    """adam lr=0.01 steps=2000: the last part of each differing key, as run names do."""
    return " ".join([name, *(f"{k.rsplit('.', 1)[-1]}={short_value(run.params.get(k, ''))[:40]}" for k in keys)])


def judge(runs: list[RunData], tau: float = DEFAULT_TAU) -> dict[str, str]:
    """Set each run's target and when it first reached it; returns each problem's criterion."""
    criteria = {}
    by_problem = defaultdict(list)
    for r in runs:
        by_problem[r.problem_label].append(r)
    for problem, group in by_problem.items():
        declared = [r.metrics["loss_target"] for r in group if "loss_target" in r.metrics]
        if declared:
            target = statistics.median(declared)
            criteria[problem] = f"the problem's target: loss <= {target:.6g}"
            for r in group:
                r.target = r.metrics.get("loss_target", target)
        else:
            seen = [v for r in group for _, v, _ in r.history if math.isfinite(v)]
            best = min(seen, default=math.nan)
            criteria[problem] = f"Moré-Wild: f0 - f >= (1 - {tau:g})(f0 - fL), fL = {best:.6g}, the least loss seen"
            for r in group:
                f0 = r.history[0][1] if r.history else math.nan
                r.target = best + tau * (f0 - best) if math.isfinite(f0) and math.isfinite(best) else None
        for r in group:
            r.steps_to_target = r.seconds_to_target = math.inf
            if not r.finished or r.target is None or not r.final_loss <= r.target:
                continue  # failures, and runs that end above the target (got there, then left), never solved
            for step, value, seconds in r.history:
                if value <= r.target:
                    r.steps_to_target, r.seconds_to_target = step + 1, seconds  # the loss at step s is seen in step s + 1
                    break
    return criteria


# -- tables -------------------------------------------------------------------------------------------
LEADERBOARD_COLUMNS = ["problem", "solver", "runs", "finished", "failures", "solved", "success_rate",
                       "median_final_loss", "median_steps_to_target", "median_seconds_to_target", "target_loss", "best_run_id"]


def leaderboard(runs: list[RunData]) -> list[dict]:
    groups = defaultdict(list)
    for r in runs:
        groups[(r.problem_label, r.solver_label)].append(r)
    rows = []
    for (problem, solver), group in groups.items():
        finished = [r for r in group if r.finished]
        solved = [r for r in group if r.solved]
        finals = [r.final_loss for r in finished if math.isfinite(r.final_loss)]
        best = min(finished, key=lambda r: r.final_loss if math.isfinite(r.final_loss) else math.inf, default=None)
        targets = [r.target for r in group if r.target is not None]
        rows.append({
            "problem": problem, "solver": solver, "runs": len(group), "finished": len(finished),
            "failures": len(group) - len(finished), "solved": len(solved),
            "success_rate": len(solved) / len(group),
            "median_final_loss": statistics.median(finals) if finals else math.nan,
            "median_steps_to_target": statistics.median(r.steps_to_target for r in solved) if solved else math.nan,
            "median_seconds_to_target": statistics.median(r.seconds_to_target for r in solved) if solved else math.nan,
            "target_loss": statistics.median(targets) if targets else math.nan,
            "best_run_id": best.run_id if best else "",
        })
    rank = lambda row: (row["problem"], -row["success_rate"], _nan_last(row["median_steps_to_target"]), _nan_last(row["median_final_loss"]))  # noqa: E731
    return sorted(rows, key=rank)


def _nan_last(v: float) -> float:
    return v if math.isfinite(v) else math.inf


def cost_tables(runs: list[RunData]) -> tuple[list[str], list[tuple], dict[str, np.ndarray], list[str]]:
    """(solvers, instances, {"steps": t, "seconds": t}, notes) for the profiles. An instance is a
    problem from one start; only instances every solver ran are compared (the latest run counts)."""
    solvers = sorted({r.solver_label for r in runs})
    latest: dict = {}
    for r in sorted(runs, key=lambda r: r.start_time):
        latest[(r.problem_label, r.seed, r.replicas, r.solver_label)] = r
    instances = sorted({k[:3] for k in latest})
    complete = [i for i in instances if all((*i, s) in latest for s in solvers)]
    notes = []
    if len(complete) < len(instances):
        notes.append(f"{len(instances) - len(complete)} of {len(instances)} instances were left out of the profiles: "
                     "not every solver ran them.")
    tables = {}
    for measure in ("steps", "seconds"):
        t = np.full((len(complete), len(solvers)), np.inf)
        for i, inst in enumerate(complete):
            for j, s in enumerate(solvers):
                r = latest[(*inst, s)]
                t[i, j] = r.steps_to_target if measure == "steps" else r.seconds_to_target
        tables[measure] = t
    return solvers, complete, tables, notes


def flatten_values(value, prefix: str = "") -> dict[str, float]:
    """{"coefficients": [1, 2]} -> {"coefficients[0]": 1.0, "coefficients[1]": 2.0}; numbers only."""
    out = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten_values(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out.update(flatten_values(v, f"{prefix}[{i}]"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)
    return out


def lre(estimate: float, truth: float) -> float:
    """Digits that agree: -log10 of the relative error (absolute where the truth is 0), 0 to 15."""
    error = abs(estimate - truth)
    if error == 0:
        return 15.0
    if not math.isfinite(error):
        return 0.0
    return max(0.0, min(15.0, -math.log10(error / abs(truth) if truth else error)))


def solutions(client, runs: list[RunData], rows: list[dict]) -> dict[str, dict]:
    """Per problem with a known truth: {"truth": {name: value}, solver: {name: value}} from the
    result.json of each solver's best finished run."""
    out: dict[str, dict] = {}
    by_id = {r.run_id: r for r in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            run = by_id.get(row["best_run_id"])
            if run is None:
                continue
            try:
                path = client.download_artifacts(run.run_id, "result.json", tmp)
                result = json.loads(Path(path).read_text())
            except Exception:  # artifacts off, or the store lost them: nothing to compare
                continue
            truth = flatten_values(result.get("truth") or {})
            if not truth:
                continue
            solution = flatten_values(result.get("solution") or {})
            entry = out.setdefault(row["problem"], {"truth": truth, "solvers": {}})
            entry["solvers"][row["solver"]] = {k: solution.get(k, math.nan) for k in truth}
    return out


# -- the report ---------------------------------------------------------------------------------------
@dataclass
class Report:
    folder: Path
    rows: list[dict]
    figures: list[Path]
    runs: int


def write_report(client, out: Path, *, experiment_id: str, parent_run_id: Optional[str] = None,
                 source: str = "", tau: float = DEFAULT_TAU) -> Report:
    from runner import report_figures as figs

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # result.json downloads are tiny
    runs, notes = collect(client, experiment_id, parent_run_id)
    if not runs:
        raise UserError("There are no finished, failed or killed runs to compare"
                        + (f" under the parent run {parent_run_id}." if parent_run_id else f" in experiment {experiment_id}."))
    out.mkdir(parents=True, exist_ok=True)
    label(runs)
    criteria = judge(runs, tau)
    rows = leaderboard(runs)
    _write_csv(rows, out / "leaderboard.csv")
    solvers, instances, tables, profile_notes = cost_tables(runs)
    notes += profile_notes
    figures = []
    colours = figs.style(sorted({r.solver_label for r in runs}))
    problems = sorted({r.problem_label for r in runs})
    for problem in problems:
        group = [r for r in runs if r.problem_label == problem]
        path = out / f"convergence_{_safe(problem)}.png"
        figs.convergence(group, problem, path, colours)
        figures.append(path)
    if instances:
        path = out / "profiles.png"
        figs.profiles_figure(solvers, tables, len({i[0] for i in instances}), len(instances), path, colours)
        figures.append(path)
    truths = solutions(client, runs, rows)
    page = _html(runs, rows, criteria, truths, figures, notes, source, tau)
    (out / "report.html").write_text(page, encoding="utf-8")
    return Report(out, rows, figures, len(runs))


def _write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, LEADERBOARD_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _fmt(v, digits: int = 4) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _html(runs, rows, criteria, truths, figures, notes, source, tau) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Optimiser comparison</title><style>{_CSS}</style></head><body>",
             "<h1>Optimiser comparison</h1>",
             f"<p class='meta'>{e(source)} · {len(runs)} runs · made {time.strftime('%Y-%m-%d %H:%M')} by <code>python -m runner report</code></p>"]
    if notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append("<h2>Leaderboard</h2><p>Per problem, each solver over its seeds: runs that solved the problem "
                 "(ended within its target), the median final loss of the finished runs, and the median steps and seconds "
                 "to the target over the runs that reached it. Failed and killed runs count as not solved.</p>")
    for problem in sorted({r["problem"] for r in rows}):
        parts.append(f"<h3>{e(problem)}</h3><p class='crit'>Solved: {e(criteria.get(problem, ''))}</p>")
        parts.append("<table><tr><th>solver</th><th>runs</th><th>solved</th><th>success</th><th>failures</th>"
                     "<th>median final loss</th><th>median steps to target</th><th>median seconds to target</th></tr>")
        for row in (r for r in rows if r["problem"] == problem):
            cls = " class='bad'" if row["failures"] else ""
            parts.append(f"<tr{cls}><td>{e(row['solver'])}</td><td>{row['runs']}</td><td>{row['solved']}</td>"
                         f"<td>{row['success_rate']:.0%}</td><td>{row['failures']}</td><td>{_fmt(row['median_final_loss'])}</td>"
                         f"<td>{_fmt(row['median_steps_to_target'])}</td><td>{_fmt(row['median_seconds_to_target'], 3)}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Convergence</h2><p>Median over seeds (line) and the 10–90 % band (shaded), against optimiser "
                 "steps and against wall-clock seconds of the loop. Where the problem knows its optimum the plot shows the "
                 "excess loss above it; the dashed line is the target. A failed run drops out where it failed.</p>")
    for path in figures:
        if path.name.startswith("convergence"):
            parts.append(_img(path))
    profiles = [p for p in figures if p.name == "profiles.png"]
    if profiles:
        parts.append("<h2>Performance and data profiles</h2><p>Performance profile (Dolan and Moré, 2002): the share of "
                     "instances a solver solved within a factor τ of the best solver's cost. Data profile (Moré and Wild, 2009): "
                     "the share solved within a budget of steps or seconds. An instance is a problem from one seed; a run "
                     "that failed or never reached the target counts as never solving it.</p>")
        parts.append(_img(profiles[0]))
    if truths:
        parts.append("<h2>Solutions against the truth</h2><p>Each solver's best run (least final loss) beside the known "
                     "truth or certified value; in brackets the digits that agree (LRE, up to 15).</p>")
        for problem, entry in sorted(truths.items()):
            solvers = list(entry["solvers"])
            parts.append(f"<h3>{e(problem)}</h3><table><tr><th>value</th><th>truth</th>" + "".join(f"<th>{e(s)}</th>" for s in solvers) + "</tr>")
            for name, truth in entry["truth"].items():
                cells = "".join(f"<td>{entry['solvers'][s][name]:.15g} ({lre(entry['solvers'][s][name], truth):.1f})</td>" for s in solvers)
                parts.append(f"<tr><td>{e(name)}</td><td>{truth:.15g}</td>{cells}</tr>")
            parts.append("</table>")
    failed = [r for r in runs if not r.finished]
    if failed:
        parts.append("<h2>Failed and killed runs</h2><table><tr><th>run</th><th>status</th><th>reason</th></tr>")
        for r in failed:
            parts.append(f"<tr><td>{e(r.name)}</td><td>{e(r.status)}</td><td>{e(r.error)}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<figure><img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'></figure>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}tr.bad td{background:#fdf0f0}.meta,.crit{color:#555;font-size:13px}
img{max-width:100%}figure{margin:0 0 1.5em}.notes{color:#8a5a00}"""


# -- command line -------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runner report",
        description="Write a comparison report (report.html, PNG figures, leaderboard.csv) from the runs MLflow holds.",
        epilog="tracking.uri=URI and tracking.experiment=NAME are accepted as for runs.")
    parser.add_argument("overrides", nargs="*", help="tracking.uri=URI, tracking.experiment=NAME")
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: runner)")
    parser.add_argument("--parent", default=None, metavar="RUN_ID", help="only the children of this sweep's parent run")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default: reports/NAME here)")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here")
    parser.add_argument("--tau", type=float, default=DEFAULT_TAU,
                        help=f"Moré-Wild tolerance for problems that declare no target (default {DEFAULT_TAU:g})")
    args = parser.parse_args(argv)
    try:
        uri, experiment = args.tracking_uri, args.experiment
        for o in args.overrides:
            key, sep, value = o.partition("=")
            if key == "tracking.uri" and sep:
                uri = value
            elif key == "tracking.experiment" and sep:
                experiment = value
            else:
                raise UserError(f"'{o}' is not understood here: `report` takes tracking.uri=URI, tracking.experiment=NAME "
                                "and the options in `python -m runner report --help`.")
        if not (0 < args.tau < 1):
            raise UserError(f"--tau={args.tau} is out of range: it is a relative tolerance, 0 < tau < 1.")
        report = _run(uri, experiment, args.parent, args.out, args.tau)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(f"Report of {report.runs} runs: {report.folder / 'report.html'}")
    for row in report.rows:
        print(f"  {row['problem'][:30]:<30} {row['solver'][:34]:<34} solved {row['solved']}/{row['runs']}  "
              f"median final loss {row['median_final_loss']:.4g}")
    return 0


def _run(uri, experiment, parent, out, tau) -> Report:
    from runner.tracking import check_reachable, client_for, resolve_uri

    uri = resolve_uri(uri)
    check_reachable(uri)
    client = client_for(uri)
    if parent:
        try:
            run = client.get_run(parent)
        except Exception:
            raise UserError(f"--parent {parent}: no such run in {uri}. Give the run id of a sweep's parent run "
                            "(the sweep's summary prints it; the MLflow UI shows it).") from None
        experiment_id, name = run.info.experiment_id, run.info.run_name or parent
        source = f"sweep {name} ({parent}) in {uri}"
    else:
        experiment = experiment or "runner"
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = ", ".join(e.name for e in client.search_experiments()) or "none"
            raise UserError(f"--experiment {experiment}: no such experiment in {uri} (there are: {names}).")
        experiment_id, name = exp.experiment_id, experiment
        source = f"experiment {experiment} in {uri}"
    folder = Path(out) if out else Path("reports") / _safe(name)
    return write_report(client, folder, experiment_id=experiment_id, parent_run_id=parent, source=source, tau=tau)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)[:100] or "report"

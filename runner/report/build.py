"""The report made in one pass: collect (MLflow) -> analyse -> render, into one folder.

`report.html` (self-contained: figures embedded), the figures as PNG, and `leaderboard.csv`.
Used by `python -m runner report` and by a sweep, which attaches it to its parent run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from runner.errors import UserError
from runner.report import analyse, collect, figures, leaderboard, page
from runner.report.analyse import DEFAULT_COSTS


@dataclass
class Report:
    folder: Path
    rows: list[dict]  # the leaderboard
    figures: list[Path]
    runs: int


def write_report(client, out: Path, *, experiment_id: str, parent_run_id: Optional[str] = None,
                 source: str = "", tau: float = analyse.DEFAULT_TAU, costs=DEFAULT_COSTS) -> Report:
    """`costs`: the cost axes of the profiles and convergence plots (evals, steps, seconds)."""
    runs, notes = collect.comparable_runs(client, experiment_id, parent_run_id)
    if not runs:
        raise UserError("There are no finished, failed or killed runs to compare"
                        + (f" under the parent run {parent_run_id}." if parent_run_id else f" in experiment {experiment_id}."))
    out.mkdir(parents=True, exist_ok=True)
    shared, _ = leaderboard.split_overrides([{"overrides": r.tags.get("overrides", "")} for r in runs])
    if shared:  # the labels below show only what differs
        notes.insert(0, "Same in every run: " + " ".join(shared))
    analyse.label(runs)
    criteria = analyse.judge(runs, tau)
    rows = leaderboard.leaderboard(runs)
    leaderboard.write_leaderboard(rows, out / "leaderboard.csv")
    solvers, instances, tables, profile_notes = analyse.cost_tables(runs, costs)
    notes += profile_notes
    drawn = _draw_figures(runs, solvers, instances, tables, out, costs)
    results = collect.results(client, [row["best_run_id"] for row in rows if row["best_run_id"]])
    truths = analyse.solutions(rows, results)
    (out / "report.html").write_text(page.report_html(runs, rows, criteria, truths, drawn, notes, source, costs), encoding="utf-8")
    return Report(out, rows, drawn, len(runs))


def _draw_figures(runs, solvers, instances, tables, out: Path, costs=DEFAULT_COSTS) -> list[Path]:
    """A convergence figure per problem, then the profiles when there are instances to compare."""
    drawn = []
    colours = figures.style(sorted({r.solver_label for r in runs}))
    for problem in sorted({r.problem_label for r in runs}):
        path = out / f"convergence_{safe_name(problem)}.png"
        figures.convergence([r for r in runs if r.problem_label == problem], problem, path, colours, costs)
        drawn.append(path)
    if instances:
        path = out / "profiles.png"
        figures.profiles_figure(solvers, tables, len({i[0] for i in instances}), len(instances), path, colours, costs)
        drawn.append(path)
    return drawn


def safe_name(name: str) -> str:
    """A label as a file name: letters, digits and -_.= kept, the rest _, at most 100 characters."""
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)[:100] or "report"

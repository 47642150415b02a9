"""The digits each optimiser got on NIST StRD (`python -m runner accuracy`), as a Markdown table.

One row per dataset (per dataset and NIST start for the nonlinear sets), one column per optimiser
setting (optim, schedule, basis, steps), each cell the min LRE of the setting's latest run and,
where the run recorded them, its evaluations in brackets; a failed run shows as failed. For the
nonlinear instances, scipy.optimize.least_squares (runner/anchor.py) can be run on the same
problems and shown beside ours, and the table ends with each column's minimum and median digits
over the nonlinear instances and how many are below 7.
"""
from __future__ import annotations

import math
import statistics

from runner.report.collect import RunData

ORDER = ("Norris", "Pontius", "NoInt1", "NoInt2", "Filip", "Longley", "Wampler1", "Wampler2", "Wampler3", "Wampler4", "Wampler5")
# The nonlinear sets, in NIST's order of difficulty (lower, average, higher).
NONLINEAR_ORDER = ("Misra1a", "Chwirut2", "Chwirut1", "Lanczos3", "Gauss1", "Gauss2", "DanWood", "Misra1b", "Kirby2",
                   "Hahn1", "Nelson", "MGH17", "Lanczos1", "Lanczos2", "Gauss3", "Misra1c", "Misra1d", "Roszman1", "ENSO",
                   "MGH09", "Thurber", "BoxBOD", "Rat42", "MGH10", "Eckerle4", "Rat43", "Bennett5")
NIST_RUNS = "tags.problem = 'nist' and attributes.status != 'RUNNING'"  # the runs the table reads (finished and failed)
FEW_DIGITS = 7.0  # the bar the nonlinear targets set


def setting(run: RunData) -> str:
    """`lbfgs + cosine (monomial, unscaled), 100 steps`: the basis only where it is not the default."""
    p = run.params
    label = run.optim + (f" + {run.sched}" if run.sched else "")
    if p.get("problem.basis", "chebyshev") != "chebyshev" or p.get("problem.scale", "true") != "true":
        label += f" ({p.get('problem.basis')}{'' if p.get('problem.scale') == 'true' else ', unscaled'})"
    # the configured budget: a run that diverged early stays in its setting's column
    steps = int(float(p.get("trainer.steps", run.metrics.get("steps", 0))))
    return f"{label}, {steps} steps"


def instance(run: RunData) -> tuple[tuple, dict | None]:
    """(row key, how to build the problem again): nonlinear rows are (dataset or path, start)."""
    p, m = run.params, run.metrics
    dataset = p.get("problem.dataset", "?")
    path = p.get("problem.path")
    path = None if path in (None, "None", "null", "") else path
    nonlinear = "lre_rss" in m or dataset in NONLINEAR_ORDER and path is None
    if not nonlinear:
        return (path or dataset, None), None
    start = int(float(p.get("problem.start", 1)))
    return (path or dataset, start), {"dataset": dataset, "start": start, **({"path": path} if path else {})}


def accuracy_table(runs: list[RunData], anchors: dict | None = None) -> str:
    """`runs` oldest first: the latest run of a setting wins its cell. `anchors`: {column: {row:
    (digits, evaluations, failed)}}, extra columns (scipy) for the nonlinear rows."""
    cells: dict[tuple, tuple] = {}
    columns: list[str] = []
    for run in runs:
        if run.status not in ("FINISHED", "FAILED"):
            continue
        row, _ = instance(run)
        column = setting(run)
        if column not in columns:
            columns.append(column)
        failed = run.status == "FAILED"
        cells[(row, column)] = (math.nan if failed else run.metrics.get("min_lre", math.nan), run.metrics.get("evals"), failed)
    for column, values in (anchors or {}).items():
        columns.append(column)
        cells.update({(row, column): v for row, v in values.items()})
    order = ORDER + NONLINEAR_ORDER
    rows = sorted({r for r, _ in cells}, key=lambda r: (order.index(r[0]) if r[0] in order else len(order), r[0], r[1] or 0))
    lines = ["| dataset | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for r in rows:
        name = r[0] if r[1] is None else f"{r[0]} / start {r[1]}"
        lines.append(f"| {name} | " + " | ".join(_cell(cells.get((r, c))) for c in columns) + " |")
    nonlinear = [r for r in rows if r[1] is not None]
    if nonlinear:
        below = f"below {FEW_DIGITS:g}"
        for label in ("min", "median", below):
            out = []
            for c in columns:
                values = [0.0 if math.isnan(cells[(r, c)][0]) else cells[(r, c)][0] for r in nonlinear if (r, c) in cells]
                if not values:
                    out.append("")
                elif label == below:
                    out.append(f"{sum(v < FEW_DIGITS for v in values)} of {len(values)}")
                else:
                    out.append(f"{(min if label == 'min' else statistics.median)(values):.1f}")
            lines.append(f"| **{label}** (nonlinear, {len(nonlinear)} instances) | " + " | ".join(out) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return ""
    digits, evals, failed = value
    return ("failed" if failed else f"{digits:.1f}") + (f" ({int(evals)})" if evals is not None and not math.isnan(evals) else "")


def scipy_columns(runs: list[RunData]) -> dict:
    """scipy.optimize.least_squares (lm and trf) on every nonlinear instance the runs fitted, each
    problem built again by the same plugin, through its entry point."""
    from runner import registry
    from runner.anchor import METHODS, scipy_least_squares

    todo = {}
    for run in runs:
        row, kwargs = instance(run)
        if kwargs is not None:
            todo[row] = kwargs
    if not todo:
        return {}
    factory = registry.get("problem", "nist").load()
    out = {}
    for method in METHODS:
        column = out.setdefault(f"scipy least_squares {method}, 2-point Jacobian", {})
        for row, kwargs in todo.items():
            try:
                result = scipy_least_squares(factory(**kwargs), method)
            except (ValueError, TypeError):
                column[row] = (math.nan, None, True)
                continue
            column[row] = (result["metrics"].get("min_lre", math.nan), result["evals"], result["status"] < 0)
    return out

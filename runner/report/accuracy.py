"""The digits each optimiser got on NIST StRD (`python -m runner accuracy`), as a Markdown table.

One row per dataset, one column per optimiser setting (optim, schedule, basis, steps), each cell
the min LRE of the setting's latest finished run.
"""
from __future__ import annotations

import math

from runner.report.collect import RunData

ORDER = ("Norris", "Pontius", "NoInt1", "NoInt2", "Filip", "Longley", "Wampler1", "Wampler2", "Wampler3", "Wampler4", "Wampler5")
NIST_FINISHED = "tags.problem = 'nist' and attributes.status = 'FINISHED'"  # the runs the table reads


def setting(run: RunData) -> str:
    """`lbfgs + cosine (monomial, unscaled), 100 steps`: the basis only where it is not the default."""
    p = run.params
    label = run.optim + (f" + {run.sched}" if run.sched else "")
    if p.get("problem.basis", "chebyshev") != "chebyshev" or p.get("problem.scale", "true") != "true":
        label += f" ({p.get('problem.basis')}{'' if p.get('problem.scale') == 'true' else ', unscaled'})"
    steps = int(float(run.metrics.get("steps", 0)))
    return f"{label}, {steps} steps"


def accuracy_table(runs: list[RunData]) -> str:
    """`runs` oldest first: the latest run of a setting wins its cell."""
    cells: dict[tuple[str, str], float] = {}
    columns: list[str] = []
    for run in runs:
        dataset = run.params.get("problem.dataset", "?")
        column = setting(run)
        if column not in columns:
            columns.append(column)
        cells[(dataset, column)] = run.metrics.get("min_lre", math.nan)
    datasets = [d for d in ORDER if any(k[0] == d for k in cells)] + sorted({k[0] for k in cells} - set(ORDER))
    lines = ["| dataset | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for d in datasets:
        lines.append(f"| {d} | " + " | ".join(f"{cells[(d, c)]:.1f}" if (d, c) in cells else "" for c in columns) + " |")
    return "\n".join(lines)

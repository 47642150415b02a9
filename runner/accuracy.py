"""`python -m runner accuracy`: the digits each optimiser got on NIST StRD, read back from MLflow.

A Markdown table, one row per dataset, one column per optimiser setting (optim, schedule, basis),
each cell the min LRE of the latest finished run. It reads only what MLflow holds.
"""
from __future__ import annotations

import argparse
import sys

from runner.errors import UserError

ORDER = ("Norris", "Pontius", "NoInt1", "NoInt2", "Filip", "Longley", "Wampler1", "Wampler2", "Wampler3", "Wampler4", "Wampler5")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="runner", help="MLflow experiment (default: runner)")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    try:
        table = accuracy_table(args.tracking_uri, args.experiment)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(table)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(table + "\n")
    return 0


def setting(run) -> str:
    p, t = run.data.params, run.data.tags
    label = t.get("optim", "?") + (f" + {t['sched']}" if t.get("sched") else "")
    if p.get("problem.basis", "chebyshev") != "chebyshev" or p.get("problem.scale", "true") != "true":
        label += f" ({p.get('problem.basis')}{'' if p.get('problem.scale') == 'true' else ', unscaled'})"
    steps = int(float(run.data.metrics.get("steps", 0)))
    return f"{label}, {steps} steps"


def accuracy_table(uri: str | None, experiment: str) -> str:
    from runner.tracking import check_reachable, client_for, resolve_uri

    uri = resolve_uri(uri)
    check_reachable(uri)
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise UserError(f"No experiment '{experiment}' in {uri}. Run the NIST sweep first (see the README).")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.problem = 'nist' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"], max_results=50000)
    if not runs:
        raise UserError(f"Experiment '{experiment}' holds no finished problem=nist run.")
    cells: dict[tuple[str, str], float] = {}
    columns: list[str] = []
    for run in runs:  # oldest first: the latest run of a setting wins
        dataset = run.data.params.get("problem.dataset", "?")
        col = setting(run)
        if col not in columns:
            columns.append(col)
        cells[(dataset, col)] = run.data.metrics.get("min_lre", float("nan"))
    datasets = [d for d in ORDER if any(k[0] == d for k in cells)] + sorted({k[0] for k in cells} - set(ORDER))
    lines = ["| dataset | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for d in datasets:
        lines.append(f"| {d} | " + " | ".join(f"{cells[(d, c)]:.1f}" if (d, c) in cells else "" for c in columns) + " |")
    return "\n".join(lines)

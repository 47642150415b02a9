"""`python -m runner report` and `python -m runner accuracy`: arguments in, files and a summary out.

A UserError (bad argument, unknown experiment or run, no runs) is one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from runner.errors import UserError
from runner.report import accuracy, collect
from runner.report.analyse import COSTS, DEFAULT_COSTS, DEFAULT_TAU


def report_main(argv: list[str]) -> int:
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
    parser.add_argument("--cost", default=",".join(DEFAULT_COSTS), metavar="AXES",
                        help="cost axes of the profiles and convergence plots, comma-separated from evals, steps, "
                             f"seconds (default {','.join(DEFAULT_COSTS)}: evaluations as in Moré and Wild, and time)")
    args = parser.parse_args(argv)
    try:
        uri, experiment = _tracking_overrides(args.overrides, args.tracking_uri, args.experiment)
        if not (0 < args.tau < 1):
            raise UserError(f"--tau={args.tau} is out of range: it is a relative tolerance, 0 < tau < 1.")
        costs = parse_costs(args.cost)
        report = _report(uri, experiment, args.parent, args.out, args.tau, costs)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(f"Report of {report.runs} runs: {report.folder / 'report.html'}")
    problems = fit_column([row["problem"] for row in report.rows], 40)
    solvers = fit_column([row["solver"] for row in report.rows], 44)
    for row in report.rows:
        print(f"  {problems[row['problem']]} {solvers[row['solver']]} solved {row['solved']}/{row['runs']}  "
              f"median final loss {row['median_final_loss']:.4g}")
    return 0


def fit_column(labels: list[str], width: int) -> dict[str, str]:
    """Each label padded to one column of at most `width` characters. A longer label keeps its
    start and its end (the settings that differ come last); labels that would still look the
    same are numbered, so two rows never read alike."""
    distinct = list(dict.fromkeys(labels))
    width = min(width, max((len(x) for x in distinct), default=0))
    shown = {x: x if len(x) <= width else x[:width // 2 - 1] + "…" + x[-(width - width // 2):] for x in distinct}
    seen: dict[str, int] = {}
    for x in distinct:
        seen[shown[x]] = seen.get(shown[x], 0) + 1
    count: dict[str, int] = {}
    for x in distinct:
        if seen[shown[x]] > 1:
            count[shown[x]] = count.get(shown[x], 0) + 1
            tag = f" #{count[shown[x]]}"
            shown[x] = shown[x][:width - len(tag)] + tag
    return {x: f"{text:<{width}}" for x, text in shown.items()}


def _tracking_overrides(overrides: list[str], uri: Optional[str], experiment: Optional[str]):
    """(uri, experiment) with tracking.uri=… and tracking.experiment=… applied, as a run takes them."""
    for o in overrides:
        key, sep, value = o.partition("=")
        if key == "tracking.uri" and sep:
            uri = value
        elif key == "tracking.experiment" and sep:
            experiment = value
        else:
            raise UserError(f"'{o}' is not understood here: `report` takes tracking.uri=URI, tracking.experiment=NAME "
                            "and the options in `python -m runner report --help`.")
    return uri, experiment


def parse_costs(text: str) -> tuple[str, ...]:
    costs = tuple(c.strip() for c in text.split(",") if c.strip())
    bad = [c for c in costs if c not in COSTS]
    if bad or not costs or len(set(costs)) != len(costs):
        raise UserError(f"--cost {text}: give one or more of {', '.join(COSTS)}, comma-separated, each once "
                        "(evals: loss and gradient evaluations, steps: optimiser steps, seconds: loop time).")
    return costs


def _report(uri, experiment, parent, out, tau, costs=DEFAULT_COSTS):
    from runner.report.build import safe_name, write_report

    client, uri = collect.open_store(uri)
    if parent:
        experiment_id, name = collect.sweep_parent(client, uri, parent)
        source = f"sweep {name} ({parent}) in {uri}"
    else:
        experiment = experiment or "runner"
        experiment_id, name = collect.experiment_id(client, experiment), experiment
        if experiment_id is None:
            names = ", ".join(collect.experiment_names(client)) or "none"
            raise UserError(f"--experiment {experiment}: no such experiment in {uri} (there are: {names}).")
        source = f"experiment {experiment} in {uri}"
    folder = Path(out) if out else Path("reports") / safe_name(name)
    return write_report(client, folder, experiment_id=experiment_id, parent_run_id=parent, source=source, tau=tau, costs=costs)


def accuracy_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner accuracy",
                                     description="`python -m runner accuracy`: the digits each optimiser got on NIST StRD, read back from MLflow.")
    parser.add_argument("--experiment", default="runner", help="MLflow experiment (default: runner)")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument("--no-scipy", dest="scipy", action="store_false",
                        help="leave out scipy.optimize.least_squares (lm, trf) on the nonlinear instances")
    args = parser.parse_args(argv)
    try:
        table = _accuracy(args.tracking_uri, args.experiment, args.scipy)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(table)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(table + "\n")
    return 0


def _accuracy(uri: Optional[str], experiment: str, scipy: bool = True) -> str:
    client, uri = collect.open_store(uri)
    experiment_id = collect.experiment_id(client, experiment)
    if experiment_id is None:
        raise UserError(f"No experiment '{experiment}' in {uri}. Run the NIST sweep first (see the README).")
    runs = collect.search(client, experiment_id, accuracy.NIST_RUNS)
    if not any(r.finished for r in runs):
        raise UserError(f"Experiment '{experiment}' holds no finished problem=nist run.")
    return accuracy.accuracy_table(runs, accuracy.scipy_columns(runs) if scipy else None)

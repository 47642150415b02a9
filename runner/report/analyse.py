"""Analyse: the comparison rules, on the tables collect made; no MLflow, no drawing.

Terms. A *problem* is a problem plugin with its arguments (`nist dataset=Wampler1`); a *solver* is
an optimiser with its schedule and the settings that differ between the runs compared
(`adam lr=0.01`); an *instance* is a problem from one starting point (`trainer.seed`). A run
*solved* its instance when it ended within the problem's target (its cost: the first step it was
within it): the `loss_target` the problem logged (least-squares problems: within 1e-7 of the way
from zero to the optimum), or, for a problem that does not declare one, Moré and Wild's test
f0 - f >= (1 - tau) (f0 - fL) with fL the least loss any run reached on it. Failed and killed runs
never solved anything.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict

import numpy as np

from runner.naming import short_value
from runner.report.collect import RunData

DEFAULT_TAU = 1e-7
# Settings that never tell two solvers apart: the start (instances), display and record keeping.
NOT_SOLVER = ("trainer.seed", "trainer.progress", "trainer.log_every", "trainer.check_every")


# -- labels -------------------------------------------------------------------------------------------
def label(runs: list[RunData]) -> None:
    """Problem and solver labels: plugin names plus the arguments that differ between the runs.
    Runs with different settings never share a label (shortened values that coincide are numbered)."""
    by_problem = _group(runs, lambda r: r.problem)
    by_solver = _group(runs, lambda r: (r.optim, r.sched))
    for name, group in by_problem.items():
        keys = _varying(group, lambda k: k.startswith("problem."))
        _set_unique(group, keys, lambda r: _compose(name, r, keys), "problem_label")
    # Trainer settings that differ between runs of the same problem (steps, dtype, replicas...);
    # not those that differ only between problems (dtype=auto gives nist float64, poly float32).
    trainer_keys = sorted({k for group in by_problem.values()
                           for k in _varying(group, lambda k: k.startswith("trainer.") and k not in NOT_SOLVER)})
    for (optim, sched), group in by_solver.items():
        keys = _varying(group, lambda k: k.startswith(("optim.", "sched.")))
        _set_unique(group, keys + trainer_keys, lambda r: _compose(optim + (f"+{sched}" if sched else ""), r, keys + trainer_keys),
                    "solver_label")


def _set_unique(group: list[RunData], keys: list[str], compose, attribute: str) -> None:
    """Set each run's label; where shortened values make the labels of different settings equal,
    number them (`#1`, `#2`, in the order the runs came) so that they stay apart."""
    settings: dict[str, list[tuple]] = defaultdict(list)
    for r in group:
        text, values = compose(r), tuple(r.params.get(k) for k in keys)
        if values not in settings[text]:
            settings[text].append(values)
        setattr(r, attribute, (text, values))
    for r in group:
        text, values = getattr(r, attribute)
        clash = len(settings[text]) > 1
        setattr(r, attribute, f"{text} #{settings[text].index(values) + 1}" if clash else text)


def _group(runs: list[RunData], key) -> dict:
    groups = defaultdict(list)
    for r in runs:
        groups[key(r)].append(r)
    return groups


def _varying(group: list[RunData], wanted) -> list[str]:
    keys = sorted({k for r in group for k in r.params if wanted(k)})
    return [k for k in keys if len({r.params.get(k) for r in group}) > 1]


def _compose(name: str, run: RunData, keys: list[str]) -> str:
    """adam lr=0.01 steps=2000: the last part of each differing key, as run names do; a long value
    keeps its start and its end (where file names and the last digits differ)."""
    return " ".join([name, *(f"{k.rsplit('.', 1)[-1]}={_shorten(short_value(run.params.get(k, '')))}" for k in keys)])


def _shorten(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:12] + "…" + value[-(limit - 13):]


# -- the solved test ----------------------------------------------------------------------------------
def judge(runs: list[RunData], tau: float = DEFAULT_TAU) -> dict[str, str]:
    """Set each run's target and when it first reached it; returns each problem's criterion."""
    criteria = {}
    for problem, group in _group(runs, lambda r: r.problem_label).items():
        declared = [r.metrics["loss_target"] for r in group if "loss_target" in r.metrics]
        criteria[problem] = _declared_targets(group, declared) if declared else _more_wild_targets(group, tau)
        for r in group:
            r.steps_to_target, r.seconds_to_target, r.evals_to_target = _first_within_target(r)
    return criteria


def _declared_targets(group: list[RunData], declared: list[float]) -> str:
    target = statistics.median(declared)
    for r in group:
        r.target = r.metrics.get("loss_target", target)
    return f"the problem's target: loss <= {target:.6g}"


def _more_wild_targets(group: list[RunData], tau: float) -> str:
    seen = [v for r in group for _, v, _ in r.history if math.isfinite(v)]
    best = min(seen, default=math.nan)
    for r in group:
        f0 = r.history[0][1] if r.history else math.nan
        r.target = best + tau * (f0 - best) if math.isfinite(f0) and math.isfinite(best) else None
    return f"Moré-Wild: f0 - f >= (1 - {tau:g})(f0 - fL), fL = {best:.6g}, the least loss seen"


def _first_within_target(r: RunData) -> tuple[float, float, float]:
    """(steps, seconds, evaluations) until the loss was first within the target; inf for a run that
    never solved: a failure, or a run that ended above the target (got there, then left). The
    evaluations are those the run recorded by the end of that step (nan where it recorded none)."""
    if not r.finished or r.target is None or not r.final_loss <= r.target:
        return math.inf, math.inf, math.inf
    for step, value, seconds in r.history:
        if value <= r.target:
            return step + 1, seconds, r.evals.get(step, math.nan)  # the loss at step s is seen in step s + 1
    return math.inf, math.inf, math.inf


# -- costs for the profiles ---------------------------------------------------------------------------
COSTS = ("evals", "steps", "seconds")  # the cost axes (python -m runner report --cost)
DEFAULT_COSTS = ("evals", "seconds")  # profiles by evaluations (Moré and Wild) and by time


def cost_tables(runs: list[RunData], measures=COSTS) -> tuple[list[str], list[tuple], dict[str, np.ndarray], list[str]]:
    """(solvers, instances, {measure: t}, notes) for the profiles. An instance is a problem from one
    start; only instances every solver ran are compared (the latest run counts). A run that solved
    its instance without recording evaluations (runs from before they were counted) has no
    evaluation cost: its instance's row of the "evals" table is left out (the notes say so)."""
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
    for measure in measures:
        t = np.full((len(complete), len(solvers)), np.inf)
        for i, inst in enumerate(complete):
            for j, s in enumerate(solvers):
                t[i, j] = getattr(latest[(*inst, s)], f"{measure}_to_target")
        unknown = np.isnan(t).any(axis=1)
        if unknown.any():
            notes.append(f"{int(unknown.sum())} of {len(complete)} instances were left out of the profiles by {measure}: "
                         "a run solved them without recording its evaluations.")
            t = t[~unknown]
        tables[measure] = t
    return solvers, complete, tables, notes


# -- solutions against the truth ----------------------------------------------------------------------
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


def solutions(rows: list[dict], results: dict[str, dict]) -> dict[str, dict]:
    """Per problem with a known truth: {"truth": {name: value}, "solvers": {solver: {name: value}}},
    from the result.json (`results`, by run id) of each leaderboard row's best run."""
    out: dict[str, dict] = {}
    for row in rows:
        result = results.get(row["best_run_id"])
        truth = flatten_values((result or {}).get("truth") or {})
        if not truth:
            continue
        solution = flatten_values(result.get("solution") or {})
        entry = out.setdefault(row["problem"], {"truth": truth, "solvers": {}})
        entry["solvers"][row["solver"]] = {k: solution.get(k, math.nan) for k in truth}
    return out

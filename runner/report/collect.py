"""Collect: what MLflow holds, read into plain tables (`RunData`), and nothing else.

Every read of the report, the accuracy table and the sweep's summary goes through here, through
the store's in-process client (runner.store.connect(..., in_process=True): MLflow's reads and
entities), so they work on runs logged days ago, on another machine or through a tracking
server. The later stages (analyse, render) never touch MLflow.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from runner.errors import UserError


@dataclass
class RunData:
    """One run as the report sees it; the fields from `problem_label` on are set by analyse."""

    run_id: str
    name: str
    status: str
    start_time: int
    problem: str  # the plugin names, then labels with the arguments that differ
    optim: str
    params: dict
    metrics: dict  # final_loss already read back as inf where MLflow clipped it
    seed: int
    replicas: int
    error: str
    sched: str = ""  # the schedule plugin, if any
    started_at: Optional[float] = None  # loop_started_at: the origin of the loss points' times
    tags: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # [(step, loss, seconds since the loop began)]
    evals: dict = field(default_factory=dict)  # {step: evaluations spent by the end of that step} (runner/loop.py)
    bands: dict = field(default_factory=dict)  # loss_q10 / loss_q90 of a replicas run: {step: value}
    problem_label: str = ""
    solver_label: str = ""
    target: Optional[float] = None
    steps_to_target: float = math.inf  # optimiser steps until the loss was at or below the target
    seconds_to_target: float = math.inf
    evals_to_target: float = math.inf  # evaluations (loss + gradient) until then; nan: the run did not count them

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"

    @property
    def final_loss(self) -> float:
        return self.metrics.get("final_loss", math.nan)

    @property
    def solved(self) -> bool:
        return math.isfinite(self.steps_to_target)


# -- finding the store and the runs -------------------------------------------------------------------
def open_store(uri: Optional[str]):
    """(client, uri): tracking.uri resolved as runs resolve it, a server checked before any read."""
    from runner import store
    from runner.store.uri import check_reachable, resolve_uri

    uri = resolve_uri(uri)
    check_reachable(uri)
    return store.connect(uri, in_process=True), uri


def experiment_id(client, name: str) -> Optional[str]:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else None


def experiment_names(client) -> list[str]:
    return [e.name for e in client.search_experiments()]


def sweep_parent(client, uri: str, run_id: str):
    """(experiment id, run name) of the run `run_id`; a clear error when the store has no such run."""
    run = client.find_run(run_id)
    if run is None:
        raise UserError(f"--parent {run_id}: no such run in {uri}. Give the run id of a sweep's parent run "
                        "(the sweep's summary prints it; the MLflow UI shows it).")
    return run.info.experiment_id, run.info.run_name or run_id


def children_of(parent_run_id: str) -> str:
    """The search filter for the jobs of a sweep (MLflow's own parent tag)."""
    return f"tags.`mlflow.parentRunId` = '{parent_run_id}'"


def search(client, experiment_id: str, query: str = "") -> list[RunData]:
    """Every run matching `query`, oldest first, without loss histories."""
    found = client.search_runs([experiment_id], filter_string=query, max_results=50000, order_by=["attributes.start_time ASC"])
    return [_run_data(r) for r in found]


def children(client, experiment_id: str, parent_run_id: str) -> list[RunData]:
    """The jobs of a sweep, oldest first, without loss histories: read in bulk where the client
    can (a thousand children of a batched sweep), else through search."""
    if hasattr(client, "runs_of_parent"):
        return [_run_data(r) for r in client.runs_of_parent(experiment_id, parent_run_id)]
    return search(client, experiment_id, children_of(parent_run_id))


def _run_data(run) -> RunData:
    from runner.store.uri import unclip

    tags, params, metrics = run.data.tags, run.data.params, dict(run.data.metrics)
    if "final_loss" in metrics:
        metrics["final_loss"] = unclip(metrics["final_loss"])
    return RunData(
        run_id=run.info.run_id, name=run.info.run_name, status=run.info.status, start_time=run.info.start_time or 0,
        problem=tags.get("problem", "?"), optim=tags.get("optim", "?"), params=dict(params), metrics=metrics,
        seed=_int(params.get("trainer.seed"), 0), replicas=_int(params.get("trainer.replicas"), 1),
        error=tags.get("error", ""), sched=tags.get("sched", ""),
        started_at=_float(tags.get("loop_started_at")), tags=dict(tags),
    )


def _float(value) -> Optional[float]:
    """A number from a tag; None where it is missing or not a number (then time runs from the first point)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value, default: int) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


# -- what the report compares -------------------------------------------------------------------------
def comparable_runs(client, experiment_id: str, parent_run_id: Optional[str] = None) -> tuple[list[RunData], list[str]]:
    """The runs to compare, with their loss histories; and notes on what was left out."""
    runs, running, reused = [], 0, 0
    for run in (children(client, experiment_id, parent_run_id) if parent_run_id else search(client, experiment_id)):
        if run.tags.get("sweep") == "true":
            continue  # a sweep's parent: its children are the runs
        if run.status in ("RUNNING", "SCHEDULED"):
            running += 1
            continue
        original = run.tags.get("reused_run_id")  # tracking.skip_finished: the original holds the record
        if original:
            if not parent_run_id:
                reused += 1  # the original is in the experiment too: count it once
                continue
            run = _as_reused(run, _run_data(client.get_run(original)))
        runs.append(run)
    notes = []
    if running:
        notes.append(f"{running} run(s) still RUNNING were left out (see `python -m runner reap` for dead ones).")
    if reused:
        notes.append(f"{reused} reused run(s) (tracking.skip_finished) were counted once, as their originals.")
    _load_histories(client, runs)
    return runs, notes


def _as_reused(reusing: RunData, original: RunData) -> RunData:
    """The original's record under the reusing job's name and plugin labels."""
    original.name = reusing.name or original.name
    original.problem, original.optim, original.sched = reusing.problem, reusing.optim, reusing.sched
    return original


HISTORY_KEYS = ("loss", "evals", "loss_q10", "loss_q90")  # a run's loss, its cost axis, a replicas run's band


def _histories(client, run_ids: list[str], keys=HISTORY_KEYS) -> dict[str, dict[str, list]]:
    """{run_id: {key: [(step, value, timestamp_ms)]}}: in bulk where the client can, else run by run."""
    if hasattr(client, "metric_histories"):
        return client.metric_histories(list(run_ids), list(keys))
    return {run_id: {key: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)] for key in keys}
            for run_id in run_ids}


def _load_histories(client, runs: list[RunData]) -> None:
    found = _histories(client, [r.run_id for r in runs])
    for run in runs:
        _set_history(run, found.get(run.run_id, {}))


def _load_history(client, run: RunData) -> None:
    _set_history(run, _histories(client, [run.run_id])[run.run_id])


def _set_history(run: RunData, metrics: dict[str, list]) -> None:
    points = sorted(metrics.get("loss", ()))
    origin = run.started_at if run.started_at is not None else (points[0][2] / 1000 if points else 0.0)
    from runner.store.uri import unclip

    run.history = [(s, unclip(v), max(ts / 1000 - origin, 0.0)) for s, v, ts in points]  # inf, as final_loss
    run.evals = {s: v for s, v, _ in metrics.get("evals", ())}  # none before they were counted
    if run.replicas > 1:
        for key in ("loss_q10", "loss_q90"):
            run.bands[key] = {s: v for s, v, _ in metrics.get(key, ())}


def loss_points(client, run_id: str) -> list[tuple[int, float]]:
    """A run's loss history as (step, loss), in step order."""
    return sorted((p.step, p.value) for p in client.get_metric_history(run_id, "loss"))


def loss_curves(client, run_ids: list[str]) -> dict[str, list[tuple[int, float]]]:
    """{run_id: its loss history as (step, loss), in step order}, read in bulk where the client can."""
    return {run_id: [(s, v) for s, v, _ in sorted(found.get("loss", ()))] for run_id, found in _histories(client, run_ids, ("loss",)).items()}


def results(client, run_ids: list[str]) -> dict[str, dict]:
    """{run id: its result.json}, for the runs whose result.json can be read."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the files are tiny: no bar per file
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run_id in run_ids:
            try:
                path = client.download_artifacts(run_id, "result.json", tmp)
                out[run_id] = json.loads(Path(path).read_text())
            except Exception:  # artifacts off, or the store lost them: nothing to compare
                continue
    return out

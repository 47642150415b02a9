"""The interface every part of the runner uses to talk to the tracking store.

Values cross as plain Python values: metrics as (key, value, timestamp_ms, step), params and
tags as (key, value). Two implementations: `HelperClient` (helper.py, a job's calls carried out by
a helper process) and `LocalClient` (local.py, MLflow in this process, which also offers reads).
"""
from __future__ import annotations

from typing import Iterable, Optional, Protocol

Metric = tuple  # (key, value, timestamp_ms, step)
Pair = tuple  # (key, value)


class StoreError(Exception):
    """The tracking store (or the helper that talks to it) refused or failed a call."""


class TrackingClient(Protocol):
    def open_experiment(self, name: str) -> str:
        """The id of experiment `name`, created if missing (UserError when it was deleted)."""

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        """A new RUNNING run; its id."""

    def log_batch(self, run_id: str, metrics: Iterable[Metric] = (), params: Iterable[Pair] = (),
                  tags: Iterable[Pair] = (), wait: bool = True) -> None:
        """`wait=False`: return at once; a failure is raised by a later call (helper only)."""

    def set_tag(self, run_id: str, key: str, value: str) -> None: ...

    def create_runs(self, experiment_id: str, runs: list[tuple[str, dict[str, str]]]) -> list[str]:
        """Many runs at once, [(name, tags)] -> ids in order: a batch of sweep jobs (runner/batched)."""

    def set_terminated_runs(self, statuses: list[tuple[str, str]]) -> None:
        """Many runs closed at once: [(run_id, status)], each as set_terminated."""

    def log_batches(self, batches: list[tuple], wait: bool = True) -> None:
        """Many runs' log_batch at once: [(run_id, metrics, params, tags)]."""

    def log_artifact(self, run_id: str, path: str, wait: bool = True) -> None: ...

    def log_artifacts_bulk(self, items: list[tuple[str, list[str]]]) -> None:
        """Many runs' files at once: [(run_id, [paths])], each as log_artifact (runner/batched)."""

    def set_terminated(self, run_id: str, status: str) -> None:
        """FINISHED, FAILED or KILLED; answered after every request sent before it."""

    def finished_run(self, experiment_id: str, config_hash: str) -> Optional[tuple[str, dict[str, float]]]:
        """The newest FINISHED run with this config hash: (run id, its metrics), or None."""

    def draw_loss_curve(self, points: list, path: str, title: str) -> None:
        """loss_curve.png; the helper draws it while the job draws the problem's figures."""

    def wait(self) -> None:
        """Return when every request sent without waiting is done; raise the first failure."""

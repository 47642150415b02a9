"""`LocalClient`: the TrackingClient interface over MLflow's MlflowClient, in this process.

Used by the helper process (which serves a job's requests with it), a sweep's launching process,
sync, reap and report. MlflowClient, never the fluent API: no global "active run" to leak between
jobs that share a worker process (joblib reuses workers). The read methods (search_runs, get_run,
get_metric_history, ...) return MLflow's own entities.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Optional

from runner.errors import UserError
from runner.store.uri import store_lock

for _noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking._tracking_service.client"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


class LocalClient:
    """One store, MLflow in process. Created cheaply: MLflow's client is made on first use."""

    def __init__(self, uri: str):
        self.uri = uri
        self._mlflow = None
        self._experiments: dict[str, str] = {}  # name -> id: the jobs of a sweep look it up once

    @property
    def mlflow(self):
        if self._mlflow is None:
            from mlflow.tracking import MlflowClient

            self._mlflow = MlflowClient(tracking_uri=self.uri)
        return self._mlflow

    # -- writes (the TrackingClient interface) ----------------------------------------------------
    def open_experiment(self, name: str) -> str:
        """Created if missing, under the store lock: parallel first use of SQLite corrupts it."""
        if name not in self._experiments:
            self._experiments[name] = self._open_experiment(name)
        return self._experiments[name]

    def _open_experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        with store_lock(self.uri):
            try:
                exp = self.mlflow.get_experiment_by_name(name)
                if exp is None:
                    return self.mlflow.create_experiment(name)
                if exp.lifecycle_stage == "deleted":
                    raise UserError(
                        f"MLflow experiment '{name}' was deleted; restore it (mlflow experiments restore "
                        f"--experiment-id {exp.experiment_id}) or choose another tracking.experiment."
                    )
                return exp.experiment_id
            except MlflowException as exc:
                raise UserError(f"The tracking store {self.uri} refused to open experiment '{name}': {exc.message}") from None

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        return self.mlflow.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id

    def log_batch(self, run_id: str, metrics: Iterable[tuple] = (), params: Iterable[tuple] = (),
                  tags: Iterable[tuple] = (), wait: bool = True) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self.mlflow.log_batch(run_id, metrics=[Metric(k, v, t, s) for k, v, t, s in metrics],
                              params=[Param(k, v) for k, v in params], tags=[RunTag(k, v) for k, v in tags])

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.mlflow.set_tag(run_id, key, value)

    def create_runs(self, experiment_id: str, runs: list) -> list[str]:
        """[(name, tags) or (name, tags, params)] -> run ids, in order. On a SQL store in one
        transaction (the rows MLflow's create_run and log_batch's params write, about 10 ms a run
        otherwise); elsewhere run by run."""
        bulk = self._sql_bulk()
        if bulk is not None:
            return bulk.create_runs(experiment_id, runs)
        ids = [self.create_run(experiment_id, name, tags) for name, tags, *_ in runs]
        for run_id, (_, _, *params) in zip(ids, runs):
            for i in range(0, len(params[0]) if params else 0, 100):
                self.log_batch(run_id, params=params[0][i : i + 100])
        return ids

    def _sql_bulk(self):
        """The bulk calls (sql_bulk.py) over MLflow's SQL store behind this client, which write
        many runs' rows in one transaction; None for any other store (file, HTTP) or an MLflow
        without it, where the callers go run by run."""
        try:
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        except ImportError:
            return None
        sql = getattr(getattr(self.mlflow, "_tracking_client", None), "store", None)
        if not isinstance(sql, SqlAlchemyStore):
            return None
        from runner.store.sql_bulk import SqlBulk

        return SqlBulk(sql)

    def set_terminated_runs(self, statuses: list) -> None:
        """[(run_id, status)]: each run closed, as set_terminated does (end time now); on a SQL
        store in one transaction, elsewhere run by run."""
        bulk = self._sql_bulk()
        if bulk is None:
            for run_id, status in statuses:
                self.set_terminated(run_id, status)
            return
        bulk.set_terminated(statuses)

    def log_batches(self, batches: list, wait: bool = True) -> None:
        """[(run_id, metrics, params, tags)]: what each run's log_batch would record. On a SQL
        store the metric points of all runs go in one transaction, and so do the tags of runs
        without params; elsewhere, or when that cannot be used, run by run through MLflow's log_batch."""
        points = [(run_id, metrics) for run_id, metrics, _, _ in batches if metrics]
        tagged = [(run_id, tags) for run_id, _, params, tags in batches if tags and not params]
        bulk = self._sql_bulk() if points or tagged else None
        if points and not (bulk is not None and bulk.log_metrics(points)):
            for run_id, metrics in points:
                self.log_batch(run_id, metrics)
        if tagged and bulk is not None:
            bulk.set_tags(tagged)
        else:
            tagged = []
        for run_id, _, params, tags in batches:
            if params or (tags and not tagged):
                self.log_batch(run_id, params=params, tags=tags)

    def log_artifact(self, run_id: str, path: str, wait: bool = True) -> None:
        self.mlflow.log_artifact(run_id, path)

    def log_artifacts_bulk(self, items: list, wait: bool = True) -> None:
        """[(run_id, [file paths])]: each file logged as log_artifact logs it, for many runs in one
        request. Where a run's artifact store is a local folder (MLflow's default next to a
        SQLite store) the files are copied straight into it, as MLflow's local repository does
        (a temporary file, then an atomic rename); any other store, file by file through MLflow."""
        bulk = self._sql_bulk()
        run_ids = [run_id for run_id, _ in items]
        local = bulk.local_artifact_dirs(run_ids) if bulk is not None and run_ids else {}
        for run_id, paths in items:
            folder = local.get(run_id)
            for path in paths:
                if folder is None:
                    self.mlflow.log_artifact(run_id, path)
                else:
                    _copy_into(path, folder)

    def log_artifacts(self, run_id: str, folder: str, artifact_path: Optional[str] = None) -> None:
        self.mlflow.log_artifacts(run_id, folder, artifact_path)

    def set_terminated(self, run_id: str, status: str) -> None:
        self.mlflow.set_terminated(run_id, status)

    def finished_run(self, experiment_id: str, config_hash: str) -> Optional[tuple[str, dict[str, float]]]:
        runs = self.mlflow.search_runs([experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                                       filter_string=f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'")
        return (runs[0].info.run_id, dict(runs[0].data.metrics)) if runs else None

    def draw_loss_curve(self, points: list, path: str, title: str) -> None:
        from runner.figures import save_loss_curve

        save_loss_curve(points, Path(path), title)

    def wait(self) -> None:
        """Every call here is done when it returns."""

    # -- reads: MLflow's entities, for sweeps, sync, reap and reports -----------------------------
    def runs_of_parent(self, experiment_id: str, parent_run_id: str) -> list:
        """The active runs of an experiment whose parent is `parent_run_id`, oldest first, as
        search_runs returns them (info, params, tags, latest metrics); on a SQL store read in a
        few plain queries for all of them, rather than MLflow's search (a thousand children of a sweep)."""
        bulk = self._sql_bulk()
        if bulk is None:
            return self.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'", order_by=["attributes.start_time ASC"])
        return bulk.runs_of_parent(experiment_id, parent_run_id)

    def metric_histories(self, run_ids: list, keys: list) -> dict:
        """{run_id: {key: [(step, value, timestamp_ms)]}} for each key of `keys`: get_metric_history
        of many runs, on a SQL store in one plain query per 500 runs."""
        bulk = self._sql_bulk()
        if bulk is None:
            return {run_id: {key: [(m.step, m.value, m.timestamp) for m in self.get_metric_history(run_id, key)] for key in keys}
                    for run_id in run_ids}
        return bulk.metric_histories(run_ids, keys)

    def find_run(self, run_id: str):
        """The run, or None when the store does not hold it."""
        from mlflow.exceptions import MlflowException

        try:
            return self.mlflow.get_run(run_id)
        except MlflowException:
            return None

    def get_run(self, run_id: str):
        return self.mlflow.get_run(run_id)

    def search_runs(self, experiment_ids: list[str], filter_string: str = "", max_results: int = 50000, **kwargs: Any):
        return self.mlflow.search_runs(experiment_ids, filter_string=filter_string, max_results=max_results, **kwargs)

    def get_metric_history(self, run_id: str, key: str):
        return self.mlflow.get_metric_history(run_id, key)

    def get_experiment_by_name(self, name: str):
        return self.mlflow.get_experiment_by_name(name)

    def search_experiments(self, **kwargs: Any):
        return self.mlflow.search_experiments(**kwargs)

    def list_artifacts(self, run_id: str, path: Optional[str] = None):
        return self.mlflow.list_artifacts(run_id, path)

    def download_artifacts(self, run_id: str, path: str, dst_path: Optional[str] = None):
        return self.mlflow.download_artifacts(run_id, path, dst_path)


def _copy_into(path: str, folder: str) -> None:
    """One file into an artifact folder as MLflow's local artifact repository writes it."""
    import os
    import shutil
    import tempfile

    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".artifact.uploading.")  # MLflow's own prefix for a file on its way
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            shutil.copyfileobj(src, out)
        shutil.copystat(path, tmp)
        os.replace(tmp, os.path.join(folder, os.path.basename(path)))
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


_clients: dict[str, LocalClient] = {}  # private: one per store and process (a client costs ~0.1 s)


def local_client(uri: str) -> LocalClient:
    """The in-process client for `uri`: jobs of a sweep that share a worker reuse it."""
    if uri not in _clients:
        _clients[uri] = LocalClient(uri)
    return _clients[uri]

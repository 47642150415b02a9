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
        ids = self._bulk_create_runs(experiment_id, runs)
        if ids is None:
            ids = [self.create_run(experiment_id, name, tags) for name, tags, *_ in runs]
            for run_id, (_, _, *params) in zip(ids, runs):
                for i in range(0, len(params[0]) if params else 0, 100):
                    self.log_batch(run_id, params=params[0][i : i + 100])
        return ids

    def _sql_store(self):
        """MLflow's SQL store behind this client, where the bulk calls below can write their rows
        in one transaction; None for any other store (file, HTTP) or an MLflow without it."""
        try:
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        except ImportError:
            return None
        sql = getattr(getattr(self.mlflow, "_tracking_client", None), "store", None)
        return sql if isinstance(sql, SqlAlchemyStore) else None

    def set_terminated_runs(self, statuses: list) -> None:
        """[(run_id, status)]: each run closed, as set_terminated does (end time now); on a SQL
        store in one transaction, elsewhere run by run."""
        try:
            from mlflow.entities import LifecycleStage
            from mlflow.store.tracking.dbmodels.models import SqlRun
            from mlflow.utils.time import get_current_time_millis
        except ImportError:
            pass
        sql = self._sql_store()
        if sql is None:
            for run_id, status in statuses:
                self.set_terminated(run_id, status)
            return
        wanted = dict(statuses)
        with sql.ManagedSessionMaker(read_only=False) as session:
            ids = list(wanted)
            for i in range(0, len(ids), 500):
                runs = session.query(SqlRun).filter(SqlRun.run_uuid.in_(ids[i : i + 500])).all()
                for run in runs:
                    if run.lifecycle_stage != LifecycleStage.ACTIVE:
                        continue  # deleted meanwhile: MLflow would refuse it too
                    run.status, run.end_time = wanted[run.run_uuid], get_current_time_millis()
                session.add_all(runs)
            session.commit()

    def _bulk_create_runs(self, experiment_id: str, runs: list) -> Optional[list[str]]:
        try:
            import uuid

            from mlflow.entities import LifecycleStage, RunStatus, SourceType
            from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
            from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
            from mlflow.utils.time import get_current_time_millis
            from mlflow.utils.uri import append_to_uri_path
        except ImportError:
            return None
        sql = self._sql_store()
        if sql is None:
            return None
        experiment = sql.get_experiment(experiment_id)
        sql._check_experiment_is_active(experiment)
        from mlflow.store.tracking.dbmodels.models import SqlParam

        import sqlalchemy

        ids, runs_rows, tag_rows, param_rows = [], [], [], []
        now = get_current_time_millis()
        for name, tags, *params in runs:  # the rows MLflow's create_run and log_batch write, as plain inserts
            run_id = uuid.uuid4().hex
            ids.append(run_id)
            tags = {**tags, MLFLOW_RUN_NAME: name}
            runs_rows.append(dict(name=name, artifact_uri=append_to_uri_path(experiment.artifact_location, run_id, SqlAlchemyStore.ARTIFACTS_FOLDER_NAME),
                                  run_uuid=run_id, experiment_id=int(experiment_id), source_type=SourceType.to_string(SourceType.UNKNOWN),
                                  source_name="", entry_point_name="", user_id=tags.get(MLFLOW_USER, "unknown"),
                                  status=RunStatus.to_string(RunStatus.RUNNING), start_time=now, end_time=None,
                                  deleted_time=None, source_version="", lifecycle_stage=LifecycleStage.ACTIVE))
            tag_rows += [{"run_uuid": run_id, "key": k, "value": str(v)} for k, v in tags.items()]
            param_rows += [{"run_uuid": run_id, "key": k, "value": str(v)} for k, v in dict(params[0] if params else []).items()]
        with sql.ManagedSessionMaker(read_only=False) as session:
            session.execute(sqlalchemy.insert(SqlRun.__table__), runs_rows)
            if tag_rows:
                session.execute(sqlalchemy.insert(SqlTag.__table__), tag_rows)
            if param_rows:
                session.execute(sqlalchemy.insert(SqlParam.__table__), param_rows)
            session.commit()
        return ids

    def log_batches(self, batches: list, wait: bool = True) -> None:
        """[(run_id, metrics, params, tags)]: what each run's log_batch would record. On a SQL
        store the metric points of all runs go in one transaction (_bulk_metrics); elsewhere, or
        when that cannot be used, run by run through MLflow's log_batch."""
        points = [(run_id, metrics) for run_id, metrics, _, _ in batches if metrics]
        if points and not self._bulk_metrics(points):
            for run_id, metrics in points:
                self.log_batch(run_id, metrics)
        tagged = [(run_id, tags) for run_id, _, params, tags in batches if tags and not params]
        if not (tagged and self._bulk_tags(tagged)):
            tagged = []
        for run_id, _, params, tags in batches:
            if params or (tags and not tagged):
                self.log_batch(run_id, params=params, tags=tags)

    def _bulk_tags(self, tagged: list) -> bool:
        """Tags of many runs in one SQL transaction (set_tag's rows: a key's old value replaced);
        False where it does not apply."""
        try:
            import sqlalchemy
            from mlflow.store.tracking.dbmodels.models import SqlTag
        except ImportError:
            return False
        sql = self._sql_store()
        if sql is None:
            return False
        latest = {(run_id, k): str(v) for run_id, tags in tagged for k, v in tags}
        by_key: dict[str, list[str]] = {}
        for run_id, key in latest:
            by_key.setdefault(key, []).append(run_id)
        table = SqlTag.__table__
        with sql.ManagedSessionMaker(read_only=False) as session:
            for key, run_ids in by_key.items():  # a key's old values, 500 runs a statement
                for i in range(0, len(run_ids), 500):
                    session.execute(sqlalchemy.delete(table).where(table.c.key == key, table.c.run_uuid.in_(run_ids[i : i + 500])))
            session.execute(sqlalchemy.insert(table), [{"run_uuid": r, "key": k, "value": v} for (r, k), v in latest.items()])
            session.commit()
        return True

    def _bulk_metrics(self, points: list) -> bool:
        """Metric points of many runs in one SQL transaction: the rows MLflow's SQL store writes
        for log_batch (`metrics`, and `latest_metrics` where a point is newer), without its
        per-point ORM work (about 70 µs a point here). False, with nothing written, where it does
        not apply: not a SQL store, a run that is not active, a point already recorded."""
        try:
            import sqlalchemy
            from mlflow.entities import LifecycleStage
            from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun
        except ImportError:
            return False
        sql = self._sql_store()
        if sql is None:
            return False
        rows, latest = [], {}  # rows as (run_uuid, key, value, timestamp, step, is_nan), METRIC_COLUMNS
        for run_id, metrics in points:
            seen = set()
            for key, value, timestamp, step in metrics:
                is_nan, value = sql.sanitize_metric_value(float(value))
                row = (run_id, key, value, int(timestamp), int(step), is_nan)
                if row in seen:
                    continue
                seen.add(row)
                rows.append(row)
                newest = latest.get((run_id, key))
                if newest is None or (row[4], row[3], value) > (newest[4], newest[3], newest[2]):
                    latest[(run_id, key)] = row
        run_ids = sorted({run_id for run_id, _ in points})
        try:
            with sql.ManagedSessionMaker(read_only=False) as session:
                for i in range(0, len(run_ids), 500):
                    chunk = run_ids[i : i + 500]
                    active = session.query(SqlRun.run_uuid).filter(SqlRun.run_uuid.in_(chunk), SqlRun.lifecycle_stage == LifecycleStage.ACTIVE).count()
                    if active != len(chunk):
                        return False  # MLflow's own log_batch says which run and why
                _insert_rows(session, SqlMetric.__table__, rows)
                table = SqlLatestMetric.__table__
                newer = []  # plain statements: a thousand runs' latest values are tens of thousands of rows
                for i in range(0, len(run_ids), 500):
                    found = session.execute(sqlalchemy.select(table.c.run_uuid, table.c.key, table.c.step, table.c.timestamp, table.c.value)
                                            .where(table.c.run_uuid.in_(run_ids[i : i + 500])))
                    for run_id, key, step, timestamp, value in found:
                        new = latest.pop((run_id, key), None)
                        if new is not None and (new[4], new[3], new[2]) > (step, timestamp, value):
                            newer.append({"b_run": run_id, "b_key": key, "value": new[2], "step": new[4], "timestamp": new[3], "is_nan": new[5]})
                if newer:
                    session.execute(sqlalchemy.update(table).where(table.c.run_uuid == sqlalchemy.bindparam("b_run"), table.c.key == sqlalchemy.bindparam("b_key"))
                                    .values(value=sqlalchemy.bindparam("value"), step=sqlalchemy.bindparam("step"),
                                            timestamp=sqlalchemy.bindparam("timestamp"), is_nan=sqlalchemy.bindparam("is_nan")),
                                    newer)
                if latest:
                    _insert_rows(session, table, list(latest.values()))
                session.commit()
        except Exception as exc:  # a point already in the store: MLflow's log_batch skips it
            if isinstance(exc, sqlalchemy.exc.IntegrityError) or isinstance(exc.__cause__, sqlalchemy.exc.IntegrityError):
                return False
            raise
        return True

    def log_artifact(self, run_id: str, path: str, wait: bool = True) -> None:
        self.mlflow.log_artifact(run_id, path)

    def log_artifacts_bulk(self, items: list, wait: bool = True) -> None:
        """[(run_id, [file paths])]: each file logged as log_artifact logs it, for many runs in one
        request. Where a run's artifact store is a local folder (MLflow's default next to a
        SQLite store) the files are copied straight into it, as MLflow's local repository does
        (a temporary file, then an atomic rename); any other store, file by file through MLflow."""
        local = self._local_artifact_dirs([run_id for run_id, _ in items])
        for run_id, paths in items:
            folder = local.get(run_id)
            for path in paths:
                if folder is None:
                    self.mlflow.log_artifact(run_id, path)
                else:
                    _copy_into(path, folder)

    def _local_artifact_dirs(self, run_ids: list) -> dict:
        """{run_id: its artifact folder} for the runs of a SQL store whose artifact URI is a
        local path; the others are left out (they go through MLflow)."""
        sql = self._sql_store()
        if sql is None or not run_ids:
            return {}
        from urllib.parse import urlparse

        from mlflow.store.tracking.dbmodels.models import SqlRun
        from mlflow.utils.file_utils import local_file_uri_to_path

        out = {}
        with sql.ManagedSessionMaker() as session:
            for i in range(0, len(run_ids), 500):
                for run_id, uri in session.query(SqlRun.run_uuid, SqlRun.artifact_uri).filter(SqlRun.run_uuid.in_(run_ids[i : i + 500])):
                    scheme = urlparse(uri or "").scheme
                    if uri and scheme == "file":
                        out[run_id] = local_file_uri_to_path(uri)
                    elif uri and scheme == "" and Path(uri).is_absolute():
                        out[run_id] = uri
        return out

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
        sql = self._sql_store()
        if sql is None:
            return self.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'", order_by=["attributes.start_time ASC"])
        import sqlalchemy
        from mlflow.entities import LifecycleStage, Metric, Param, Run, RunData, RunInfo, RunTag
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag

        run, tag, param, latest = (m.__table__.c for m in (SqlRun, SqlTag, SqlParam, SqlLatestMetric))
        with sql.ManagedSessionMaker() as session:
            runs = session.execute(
                sqlalchemy.select(run.run_uuid, run.name, run.experiment_id, run.user_id, run.status, run.start_time, run.end_time,
                                  run.lifecycle_stage, run.artifact_uri)
                .join(SqlTag.__table__, tag.run_uuid == run.run_uuid)
                .where(tag.key == "mlflow.parentRunId", tag.value == parent_run_id, run.experiment_id == int(experiment_id),
                       run.lifecycle_stage == LifecycleStage.ACTIVE)
                .order_by(run.start_time, run.run_uuid)).all()
            ids = [r[0] for r in runs]
            tags, params, metrics = ({i: [] for i in ids} for _ in range(3))
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                for run_id, key, value in session.execute(sqlalchemy.select(tag.run_uuid, tag.key, tag.value).where(tag.run_uuid.in_(chunk))):
                    tags[run_id].append(RunTag(key, value))
                for run_id, key, value in session.execute(sqlalchemy.select(param.run_uuid, param.key, param.value).where(param.run_uuid.in_(chunk))):
                    params[run_id].append(Param(key, value))
                found = session.execute(sqlalchemy.select(latest.run_uuid, latest.key, latest.value, latest.timestamp, latest.step, latest.is_nan)
                                        .where(latest.run_uuid.in_(chunk)))
                for run_id, key, value, timestamp, step, is_nan in found:
                    metrics[run_id].append(Metric(key, float("nan") if is_nan else value, timestamp, step))
        out = []
        for run_id, name, exp_id, user_id, status, start_time, end_time, stage, artifact_uri in runs:
            info = RunInfo(run_id=run_id, run_name=name, experiment_id=str(exp_id), user_id=user_id, status=status,
                           start_time=start_time, end_time=end_time, lifecycle_stage=stage, artifact_uri=artifact_uri)
            out.append(Run(run_info=info, run_data=RunData(metrics=metrics[run_id], params=params[run_id], tags=tags[run_id])))
        return out

    def metric_histories(self, run_ids: list, keys: list) -> dict:
        """{run_id: {key: [(step, value, timestamp_ms)]}} for each key of `keys`: get_metric_history
        of many runs, on a SQL store in one plain query per 500 runs."""
        sql = self._sql_store()
        if sql is None:
            return {run_id: {key: [(m.step, m.value, m.timestamp) for m in self.get_metric_history(run_id, key)] for key in keys}
                    for run_id in run_ids}
        import sqlalchemy
        from mlflow.store.tracking.dbmodels.models import SqlMetric

        metric = SqlMetric.__table__.c
        out: dict = {run_id: {key: [] for key in keys} for run_id in run_ids}
        with sql.ManagedSessionMaker() as session:
            for i in range(0, len(run_ids), 500):
                found = session.execute(sqlalchemy.select(metric.run_uuid, metric.key, metric.step, metric.value, metric.timestamp, metric.is_nan)
                                        .where(metric.run_uuid.in_(run_ids[i : i + 500]), metric.key.in_(list(keys))))
                for run_id, key, step, value, timestamp, is_nan in found:
                    out[run_id][key].append((step, float("nan") if is_nan else value, timestamp))
        return out

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


METRIC_COLUMNS = ("run_uuid", "key", "value", "timestamp", "step", "is_nan")  # of `metrics` and `latest_metrics`


def _insert_rows(session, table, rows: list) -> None:
    """Metric rows (tuples in METRIC_COLUMNS' order) into `table`; on SQLite straight through its
    driver's executemany (SQLAlchemy's per-row parameter processing costs more than SQLite's insert)."""
    if not rows:
        return
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(METRIC_COLUMNS)}) VALUES ({', '.join('?' * len(METRIC_COLUMNS))})", rows)
        return
    import sqlalchemy

    session.execute(sqlalchemy.insert(table), [dict(zip(METRIC_COLUMNS, r)) for r in rows])


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

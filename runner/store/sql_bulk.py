"""`SqlBulk`: the reads and writes of many runs at once, as plain SQL on MLflow's SQL store.

Why it exists: MLflow's client writes and reads run by run, with ORM work per row (about 10 ms to
create a run, 70 µs a metric point); a batched sweep of a thousand jobs would spend most of its
time there. These calls write exactly the rows MLflow's own calls write (create_run, log_batch,
set_tag, set_terminated) and read what its reads give (search_runs, get_metric_history), only
for many runs in one transaction or a few queries. tests/test_batched_bulk.py checks that they
record and read the same as MLflow's calls.

Only LocalClient (local.py) uses it, where its store is MLflow's SQL store (LocalClient._sql_bulk);
everywhere else LocalClient goes through MLflow run by run. Imported only then: it imports
MLflow's SQL modules, which a job that never writes in bulk need not load.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlparse

import sqlalchemy
from mlflow.entities import LifecycleStage, Metric, Param, Run, RunData, RunInfo, RunStatus, RunTag, SourceType
from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.file_utils import local_file_uri_to_path
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
from mlflow.utils.time import get_current_time_millis
from mlflow.utils.uri import append_to_uri_path


class SqlBulk:
    """The bulk calls over one MLflow SQL store (`sql`, MLflow's SqlAlchemyStore)."""

    def __init__(self, sql: SqlAlchemyStore):
        self.sql = sql

    # -- writes -----------------------------------------------------------------------------------
    def create_runs(self, experiment_id: str, runs: list) -> list[str]:
        """[(name, tags) or (name, tags, params)] -> run ids, in order: the rows MLflow's
        create_run and log_batch's params write, as plain inserts in one transaction."""
        experiment = self.sql.get_experiment(experiment_id)
        self.sql._check_experiment_is_active(experiment)
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
        with self.sql.ManagedSessionMaker(read_only=False) as session:
            session.execute(sqlalchemy.insert(SqlRun.__table__), runs_rows)
            if tag_rows:
                session.execute(sqlalchemy.insert(SqlTag.__table__), tag_rows)
            if param_rows:
                session.execute(sqlalchemy.insert(SqlParam.__table__), param_rows)
            session.commit()
        return ids

    def set_terminated(self, statuses: list) -> None:
        """[(run_id, status)]: each run closed, as set_terminated does (end time now), in one transaction."""
        wanted = dict(statuses)
        with self.sql.ManagedSessionMaker(read_only=False) as session:
            ids = list(wanted)
            for i in range(0, len(ids), 500):
                runs = session.query(SqlRun).filter(SqlRun.run_uuid.in_(ids[i : i + 500])).all()
                for run in runs:
                    if run.lifecycle_stage != LifecycleStage.ACTIVE:
                        continue  # deleted meanwhile: MLflow would refuse it too
                    run.status, run.end_time = wanted[run.run_uuid], get_current_time_millis()
                session.add_all(runs)
            session.commit()

    def set_tags(self, tagged: list) -> None:
        """[(run_id, [(key, value)])]: tags of many runs in one transaction (set_tag's rows: a
        key's old value replaced)."""
        latest = {(run_id, k): str(v) for run_id, tags in tagged for k, v in tags}
        by_key: dict[str, list[str]] = {}
        for run_id, key in latest:
            by_key.setdefault(key, []).append(run_id)
        table = SqlTag.__table__
        with self.sql.ManagedSessionMaker(read_only=False) as session:
            for key, run_ids in by_key.items():  # a key's old values, 500 runs a statement
                for i in range(0, len(run_ids), 500):
                    session.execute(sqlalchemy.delete(table).where(table.c.key == key, table.c.run_uuid.in_(run_ids[i : i + 500])))
            session.execute(sqlalchemy.insert(table), [{"run_uuid": r, "key": k, "value": v} for (r, k), v in latest.items()])
            session.commit()

    def log_metrics(self, points: list) -> bool:
        """[(run_id, [(key, value, timestamp, step)])]: metric points of many runs in one
        transaction: the rows MLflow's SQL store writes for log_batch (`metrics`, and
        `latest_metrics` where a point is newer), without its per-point ORM work (about 70 µs a
        point here). False, with nothing written, where it does not apply: a run that is not
        active, a point already recorded."""
        rows, latest = [], {}  # rows as (run_uuid, key, value, timestamp, step, is_nan), METRIC_COLUMNS
        for run_id, metrics in points:
            seen = set()
            for key, value, timestamp, step in metrics:
                is_nan, value = self.sql.sanitize_metric_value(float(value))
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
            with self.sql.ManagedSessionMaker(read_only=False) as session:
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

    # -- reads ------------------------------------------------------------------------------------
    def local_artifact_dirs(self, run_ids: list) -> dict:
        """{run_id: its artifact folder} for the runs whose artifact URI is a local path; the
        others are left out (they go through MLflow)."""
        out = {}
        with self.sql.ManagedSessionMaker() as session:
            for i in range(0, len(run_ids), 500):
                for run_id, uri in session.query(SqlRun.run_uuid, SqlRun.artifact_uri).filter(SqlRun.run_uuid.in_(run_ids[i : i + 500])):
                    scheme = urlparse(uri or "").scheme
                    if uri and scheme == "file":
                        out[run_id] = local_file_uri_to_path(uri)
                    elif uri and scheme == "" and Path(uri).is_absolute():
                        out[run_id] = uri
        return out

    def runs_of_parent(self, experiment_id: str, parent_run_id: str) -> list:
        """The active runs of an experiment whose parent is `parent_run_id`, oldest first, as
        search_runs returns them (info, params, tags, latest metrics), read in a few plain queries
        for all of them rather than MLflow's search (a thousand children of a sweep)."""
        run, tag, param, latest = (m.__table__.c for m in (SqlRun, SqlTag, SqlParam, SqlLatestMetric))
        with self.sql.ManagedSessionMaker() as session:
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
        of many runs, in one plain query per 500 runs."""
        metric = SqlMetric.__table__.c
        out: dict = {run_id: {key: [] for key in keys} for run_id in run_ids}
        with self.sql.ManagedSessionMaker() as session:
            for i in range(0, len(run_ids), 500):
                found = session.execute(sqlalchemy.select(metric.run_uuid, metric.key, metric.step, metric.value, metric.timestamp, metric.is_nan)
                                        .where(metric.run_uuid.in_(run_ids[i : i + 500]), metric.key.in_(list(keys))))
                for run_id, key, step, value, timestamp, is_nan in found:
                    out[run_id][key].append((step, float("nan") if is_nan else value, timestamp))
        return out


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
    session.execute(sqlalchemy.insert(table), [dict(zip(METRIC_COLUMNS, r)) for r in rows])

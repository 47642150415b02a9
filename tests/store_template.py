"""A fresh SQLite store's tables, copied from a template instead of created by MLflow's migrations
(about 1.5 s of CPU per store; nearly every test starts from an empty directory). Only for the
processes the test harness owns (the test process and its warm MLflow helper, tests/inprocess.py):
a real `python -m runner` started by a test creates its tables itself.

The template is MLflow's own `_initialize_tables` run once on an empty file (per MLflow version,
shared by the test workers); the copy is SQLite's backup of it into the new store, so the schema
and its alembic revision are exactly MLflow's. MLflow then adds the Default experiment itself, as
for any new store."""
from __future__ import annotations

import fcntl
import os
import sqlite3
import tempfile
from pathlib import Path


def _template(initialize) -> str:
    import mlflow
    import sqlalchemy

    path = Path(tempfile.gettempdir()) / f"runner-tests-mlflow-{mlflow.__version__}-tables.db"
    if path.exists():
        return str(path)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            scratch = f"{path}.{os.getpid()}.tmp"
            if os.path.exists(scratch):
                os.remove(scratch)
            engine = sqlalchemy.create_engine(f"sqlite:///{scratch}")
            try:
                initialize(engine)
            finally:
                engine.dispose()
            os.replace(scratch, path)
    return str(path)


def install() -> None:
    import mlflow.store.db.utils as db_utils

    if getattr(db_utils._initialize_tables, "_from_template", False):
        return
    initialize = db_utils._initialize_tables

    def initialize_tables(engine):
        database = engine.url.database
        if engine.url.get_backend_name() != "sqlite" or not database or database == ":memory:":
            return initialize(engine)
        source = sqlite3.connect(_template(initialize))
        raw = engine.raw_connection()
        try:
            source.backup(raw.driver_connection)
        finally:
            raw.close()
            source.close()

    initialize_tables._from_template = True
    db_utils._initialize_tables = initialize_tables


def forget_engines() -> None:
    """MLflow keeps one SQLAlchemy engine per database URI for the life of a process; a new
    process would open the file again (a test may have replaced or removed it)."""
    import sys

    module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    if module is None:
        return
    engines = module.SqlAlchemyStore._engine_map
    for engine in list(engines.values()):
        try:
            engine.dispose()
        except Exception:
            pass
    engines.clear()

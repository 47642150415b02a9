"""MLflow's own console output for a store error, kept off the user's terminal.

On a SQL store, MLflow logs every database error (a full disk, a locked SQLite file) with its
full traceback to stderr before raising it. The error reaches our code as an exception all the
same, and the runner turns it into one paragraph (the stream's warning, the run's summary), so
the traceback is only noise, printed by whichever process talks to the store (a job's helper, a
sweep's launching process, sync, reap). It is dropped here; its text is in the exception.
No MLflow import: the logger is named, and MLflow's logger of that name is this one.
"""
from __future__ import annotations

import logging

NOISY = "mlflow.store.db.utils"  # ManagedSessionMaker: `_logger.exception("SQLAlchemy database error ...")`


def _not_a_database_traceback(record: logging.LogRecord) -> bool:
    return not (record.exc_info and record.levelno >= logging.ERROR)


def keep_off_the_console() -> None:
    """Idempotent; cheap (no MLflow import)."""
    logger = logging.getLogger(NOISY)
    if _not_a_database_traceback not in logger.filters:
        logger.addFilter(_not_a_database_traceback)

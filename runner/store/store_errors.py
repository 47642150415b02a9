"""What the user is told when the tracking store fails: one paragraph of ours, never MLflow's
traceback; a short reason; a `sync` command that runs as printed.

On a SQL store, MLflow logs every database error (a full disk, a locked SQLite file) with its
full traceback to stderr before raising it. The error reaches our code as an exception all the
same, and the runner turns it into one paragraph (the stream's warning, the run's summary), so
the traceback is only noise, printed by whichever process talks to the store (a job's helper, a
sweep's launching process, sync, reap). It is dropped here; its text is in the exception.
No MLflow import: the logger is named, and MLflow's logger of that name is this one.
"""
from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Optional

NOISY = "mlflow.store.db.utils"  # ManagedSessionMaker: `_logger.exception("SQLAlchemy database error ...")`


def _not_a_database_traceback(record: logging.LogRecord) -> bool:
    return not (record.exc_info and record.levelno >= logging.ERROR)


def keep_off_the_console() -> None:
    """Idempotent; cheap (no MLflow import)."""
    logger = logging.getLogger(NOISY)
    if _not_a_database_traceback not in logger.filters:
        logger.addFilter(_not_a_database_traceback)


def reason(exc: BaseException) -> str:
    """The line of a store error that says what happened ("(sqlite3.OperationalError) database or
    disk is full"), not SQLAlchemy's preamble ("(raised as a result of Query-invoked autoflush ...")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("(raised as a result of", "[SQL:", "[parameters:", "(Background on"))]
    return ((useful or lines or [type(exc).__name__])[0])[:200]


def sync_command(uri: Optional[str], folder) -> str:
    """`python -m runner sync` for the records under `folder` into store `uri`, quoted for the
    shell: it runs as printed."""
    from runner.trust import redact_uri

    parts = ["python", "-m", "runner", "sync"]
    if uri:
        parts += ["--tracking-uri", redact_uri(uri)]
    return " ".join(shlex.quote(p) for p in [*parts, str(Path(folder))])

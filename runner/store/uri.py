"""Where the tracking store is and whether it answers: no MLflow import here (the job process
uses these before its helper is up, and the helper uses them too)."""
from __future__ import annotations

import contextlib
import math
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from runner.errors import UserError


def is_busy(exc: BaseException) -> bool:
    """SQLite's "database is locked": another process holds a transaction, the store is alive."""
    return "database is locked" in str(exc)


def unclip(value: float) -> float:
    """MLflow stores inf as the largest float; read it back as what it was."""
    return math.copysign(math.inf, value) if math.isfinite(value) and abs(value) >= 1.7e308 else value


def call_with_retry(fn, *args, attempts: int = 6, **kwargs):
    """SQLite answers "database is locked" while another process holds a transaction (a reader,
    a parallel writer): that is a wait, not a dead store. Retry it with backoff (about 6 s in
    all); any other error is raised at once."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_busy(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.1 * 2**attempt)


def fail_fast_over_http() -> None:
    """MLflow retries a dead server for minutes by default; a run must notice within seconds.
    Users' own settings win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def resolve_uri(uri: Optional[str]) -> str:
    """tracking.uri, else MLFLOW_TRACKING_URI, else sqlite:///<launch dir>/mlflow.db (absolute)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:":
            uri = "sqlite:///" + str(Path(path).expanduser().resolve())
    elif "://" not in uri and not uri.startswith("databricks"):
        raise UserError(
            f"tracking.uri={uri!r} is not a tracking URI; use sqlite:///PATH.db (the default is "
            f"sqlite:///mlflow.db in the launch directory) or http://HOST:PORT of an `mlflow server`."
        )
    return uri


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return  # reachable, behind authentication: MLflow's own credentials handle it
        raise UserError(f"The tracking server at {uri} answered {exc.code} on {url}; is it an MLflow server?") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"The tracking server at tracking.uri={uri} cannot be reached ({reason}). Start it "
            f"(mlflow server --host 127.0.0.1 --port PORT), fix tracking.uri, or leave tracking.uri "
            f"unset to record into sqlite:///mlflow.db in this directory. Nothing was run."
        ) from None


@contextlib.contextmanager
def store_lock(uri: str):
    """Serialise first use of a SQLite store across processes: parallel table creation corrupts it."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = uri[len("sqlite:///"):] + ".lock"
    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

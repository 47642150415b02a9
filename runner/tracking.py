"""The MLflow record of one run: store access, run lifecycle, and a metric writer that never blocks.

Uses MlflowClient, never the fluent API: no global "active run" to leak between jobs that share a
worker process (joblib reuses workers).
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Optional

from runner.errors import UserError

log = logging.getLogger(__name__)
for noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking._tracking_service.client"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


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


_clients: dict[str, Any] = {}


def client_for(uri: str):
    """One MlflowClient per store and process: jobs of a sweep that share a worker reuse it
    (creating one costs about 0.1 s on SQLite)."""
    if uri not in _clients:
        from mlflow.tracking import MlflowClient

        _clients[uri] = MlflowClient(tracking_uri=uri)
    return _clients[uri]


_experiments: dict[tuple[str, str], str] = {}


def open_experiment(uri: str, name: str):
    """An MlflowClient on `uri` and the id of experiment `name` (created if missing). The id is
    remembered for the process: the jobs of a sweep that share a worker look it up once."""
    if (uri, name) in _experiments:
        return client_for(uri), _experiments[(uri, name)]
    client, experiment_id = _open_experiment(uri, name)
    _experiments[(uri, name)] = experiment_id
    return client, experiment_id


def _open_experiment(uri: str, name: str):
    from mlflow.exceptions import MlflowException

    with store_lock(uri):
        client = client_for(uri)
        try:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                return client, client.create_experiment(name)
            if exp.lifecycle_stage == "deleted":
                raise UserError(
                    f"MLflow experiment '{name}' was deleted; restore it (mlflow experiments restore "
                    f"--experiment-id {exp.experiment_id}) or choose another tracking.experiment."
                )
            return client, exp.experiment_id
        except MlflowException as exc:
            raise UserError(f"The tracking store {uri} refused to open experiment '{name}': {exc.message}") from None


def flatten(cfg: dict, prefix: str = "") -> dict[str, str]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": "0.1"}; keys starting with '_' are internal."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        if str(key).startswith("_"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text[:MAX_PARAM_CHARS]
    return out


class MetricWriter:
    """Sends metric points to MLflow from a background thread, in batches (log_batch), and beats a
    heartbeat tag (`runner.heartbeat`, epoch seconds) so that `python -m runner reap` can tell a
    live run from one whose process died. Every point also goes to `history_file` first.

    `client`: a runner.recorder.Recorder (metrics as plain tuples), or for a heartbeat alone any
    object with MlflowClient's set_tag."""

    HEARTBEAT_TAG = "runner.heartbeat"  # read by runner/reap.py

    def __init__(self, client, run_id: str, history_file: Optional[Path] = None, interval: float = 1.0,
                 heartbeat: float = 10.0):
        self.client, self.run_id, self.interval, self.heartbeat = client, run_id, interval, heartbeat
        # A deque, not a queue.Queue: appending takes no lock and wakes no thread. The writer
        # sleeps `interval` between batches instead of waking for every put, so it takes the GIL
        # from the loop about once a second (a put every few hundred microseconds otherwise).
        self.pending: collections.deque = collections.deque()
        self._closing = threading.Event()
        self.error: Optional[BaseException] = None
        self.history_file = history_file
        self._next_beat = time.time() + heartbeat  # until then reap goes by the run's start time
        self._backlog: list = []  # rows the store has not taken yet (SQLite busy)
        self.thread = threading.Thread(target=self._work, name="mlflow-metrics", daemon=True)
        self.thread.start()

    def put(self, key: str, points: Iterable[tuple[int, float]], times: Optional[Iterable[float]] = None) -> None:
        """`times`: epoch seconds of each point (when its step ended); default now."""
        points = list(points)
        if not points:
            return
        stamps = [round(t * 1000) for t in times] if times is not None else [int(time.time() * 1000)] * len(points)
        self.pending.append([(key, float(v), ts, int(s)) for (s, v), ts in zip(points, stamps)])

    def close(self, timeout: float = 60.0) -> None:
        """Send what is pending and stop: the writer wakes at once."""
        self._closing.set()
        self.thread.join(timeout)
        if self.thread.is_alive() and self.error is None:  # still waiting on the store: say so, sync can finish it
            self.error = TimeoutError(f"the metric writer did not finish within {timeout:.0f} s")

    def _work(self) -> None:
        while True:
            self._beat()
            closing = self._closing.wait(min(self.interval, max(self._next_beat - time.time(), 0.01)))
            rows = []
            while self.pending:
                rows.extend(self.pending.popleft())
            if rows or self._backlog:
                self._write(rows, final=closing)
            if closing:
                return

    def _beat(self) -> None:
        now = time.time()
        if self.error is None and now >= self._next_beat:
            self._next_beat = now + self.heartbeat
            try:
                self.client.set_tag(self.run_id, self.HEARTBEAT_TAG, f"{now:.0f}")
            except Exception as exc:
                if not is_busy(exc):  # busy: beat again next time
                    self._failed(exc)

    def _write(self, rows, final: bool = False) -> None:
        """Append to the local history, then send everything not yet in the store. A SQLite lock
        that outlasts call_with_retry's wait is contention, not a dead store: the rows wait for
        the next interval (and up to half a minute more at the end) instead of giving the store up."""
        if self.history_file is not None and rows:
            with open(self.history_file, "a") as fh:
                fh.writelines(f"{k},{s},{v!r},{t}\n" for k, v, t, s in rows)
        if self.error is not None:
            return  # the store already failed: keep the local record only
        self._backlog.extend(rows)
        deadline = time.monotonic() + (30.0 if final else 0.0)
        while self._backlog:
            chunk = self._backlog[:1000]  # MLflow's limit per request
            try:
                self.client.log_batch(self.run_id, metrics=chunk)  # the helper retries a busy store first
            except Exception as exc:  # the loop goes on; the local record keeps the points
                if is_busy(exc) and time.monotonic() < deadline:
                    continue
                if is_busy(exc) and not final:
                    log.info("The SQLite store is busy; %d metric points wait for the next write.", len(self._backlog))
                    return
                self._failed(exc)
                return
            del self._backlog[:1000]

    def _failed(self, exc: BaseException) -> None:
        self.error = exc
        where = self.history_file.parent if self.history_file else "the job's output directory"
        log.warning("The tracking store stopped answering (%s). Training goes on; the full record is kept in %s "
                    "and `python -m runner sync %s` uploads it later.", str(exc).splitlines()[0][:200], where, where)

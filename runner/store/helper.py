"""`HelperClient`: a job's MLflow calls, carried out by a helper process; the job's own process
never imports MLflow.

Why a process and not a thread: MLflow's SQLAlchemy store spends about 100 µs of Python per metric
point (ORM rows, latest-metric updates). In a thread that time is taken from the training loop under
the GIL; in a helper it runs on another core. Importing MLflow with its SQL store (about 2 s) also
happens there, while the job imports torch.

The protocol is requests and their answers over a socket pair, in order: the job sees the same
calls, answers and errors as with a LocalClient of its own (the helper serves with one) (an error comes back as `StoreError`
with MLflow's message; a busy SQLite store is retried by the helper first). A call made with
`wait=False` returns at once: its answer is read with the next call's, and a failure is raised
there (the record is then incomplete, whichever call notices). Values cross as plain tuples; the
helper makes MLflow's entities. One helper per store and job process,
started at launch (`prestart`, so that its imports overlap Hydra's and torch's) or on first
use, and reused by the jobs of a sweep that share the process. The helper lives in a session of
its own and ignores SIGINT and SIGTERM (the job decides what a signal means and closes its run
through the helper); it leaves when the job's process closes the socket or dies.
"""
from __future__ import annotations

import atexit
import logging
import os
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterable, Optional

from runner.errors import UserError
from runner.store.client import StoreError

log = logging.getLogger(__name__)


class HelperClient:
    """The TrackingClient of one store, served by a helper process (see the module's doc)."""

    def __init__(self):
        self.owner = os.getpid()  # a forked child must not share the socket: it starts its own
        here, there = socket.socketpair()
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "runner.store.helper", str(there.fileno())],
            pass_fds=(there.fileno(),), stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        there.close()
        self._conn = Connection(here.detach())
        self._lock = threading.Lock()  # the metric writer's thread and the job's thread share it
        self._unanswered: list[str] = []  # requests sent without waiting, answers still to be read
        self._failure: Optional[BaseException] = None  # the first of them that failed

    def bind(self, uri: str) -> None:
        """Say which store to use. No answer is awaited: the helper may still be importing MLflow."""
        try:
            self._conn.send(("bind", (uri,)))
        except OSError:
            pass  # the next call reports the helper gone

    def _call(self, name: str, *args: Any, wait: bool = True) -> Any:
        with self._lock:
            stage = "send"
            try:
                self._conn.send((name, args))
                stage = "earlier answers"
                if not wait:
                    self._unanswered.append(name)
                    return None
                self._read_unanswered()
                stage = "answer"
                ok, value = self._conn.recv()
            except (OSError, EOFError) as exc:
                self._unanswered.clear()
                if self._cut:
                    raise StoreError("the connection to the MLflow helper was closed: an interrupt cut a request in the middle") from None
                raise StoreError(f"the MLflow helper process stopped ({type(exc).__name__}: {exc})") from None
            except BaseException:  # Ctrl-C or SIGTERM (KeyboardInterrupt) in the middle of the exchange
                self._interrupted(stage, name)
                raise
            failure, self._failure = self._failure, None
        if not ok:
            raise _error(value)
        if failure is not None:
            raise failure
        return value

    _cut = False  # the connection was closed after an interrupt cut a request

    def _interrupted(self, stage: str, name: str) -> None:
        """Keep the connection's requests and answers paired after an interrupt: a request whose
        answer was being awaited is read back before the next one's; a request cut while it was
        being written (a large one, to a helper that reads slowly) leaves the stream unreadable, so
        the connection is closed: later calls fail as with a helper gone (the record is kept for
        `sync`), and the helper closes the runs it had open KILLED as it leaves (before, both sides
        waited on each other for good)."""
        if stage == "answer":
            self._unanswered.append(name)
        elif stage == "send":
            self._unanswered.clear()
            self._cut = True
            try:
                self._conn.close()
            except OSError:
                pass

    def _read_unanswered(self) -> None:
        while self._unanswered:
            name = self._unanswered[0]
            ok, value = self._conn.recv()
            self._unanswered.pop(0)  # after its answer: an interrupt while waiting leaves it to be read next time
            if ok:
                continue
            if name in _BACKGROUND:  # a figure: the record is complete without it
                log.warning("The MLflow helper could not %s (%s: %s).", _BACKGROUND[name], *value)
            elif self._failure is None:
                self._failure = _error(value)

    def wait(self) -> None:
        """Return when every request sent without waiting is done; raise the first failure."""
        self._call("ping")

    def draw_loss_curve(self, points: list[tuple[int, float]], path: str, title: str) -> None:
        """loss_curve.png, drawn by the helper while the job draws the problem's own figures."""
        self._call("draw_loss_curve", points, path, title, wait=False)

    def open_experiment(self, name: str) -> str:
        return self._call("open_experiment", name)

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        return self._call("create_run", experiment_id, run_name, tags)

    def log_batch(self, run_id: str, metrics: Iterable[tuple] = (), params: Iterable[tuple] = (),
                  tags: Iterable[tuple] = (), wait: bool = True) -> None:
        self._call("log_batch", run_id, list(metrics), list(params), list(tags), wait=wait)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._call("set_tag", run_id, key, value)

    def create_runs(self, experiment_id: str, runs: list[tuple[str, dict[str, str]]]) -> list[str]:
        """Many runs in one request: [(name, tags)] -> their ids, in order (a batch of sweep jobs)."""
        return self._call("create_runs", experiment_id, runs)

    def set_terminated_runs(self, statuses: list[tuple[str, str]]) -> None:
        """Many runs closed in one request: [(run_id, status)]."""
        self._call("set_terminated_runs", statuses)

    def log_batches(self, batches: list[tuple], wait: bool = True) -> None:
        """Many runs' log_batch in one request: [(run_id, metrics, params, tags)]."""
        self._call("log_batches", [(r, list(m), list(p), list(t)) for r, m, p, t in batches], wait=wait)

    def log_artifact(self, run_id: str, path: str, wait: bool = True) -> None:
        self._call("log_artifact", run_id, path, wait=wait)

    def log_artifacts_bulk(self, items: list[tuple[str, list[str]]], wait: bool = True) -> None:
        """Many runs' files in one request: [(run_id, [paths])], each as log_artifact (a batch of sweep jobs)."""
        self._call("log_artifacts_bulk", [(r, [str(p) for p in paths]) for r, paths in items], wait=wait)

    @property
    def unanswered(self) -> int:
        """Requests sent without waiting whose answers are still to be read."""
        return len(self._unanswered)

    def set_terminated(self, run_id: str, status: str) -> None:
        self._call("set_terminated", run_id, status)

    def watch(self, run_id: str) -> None:
        """Close this run KILLED if this process ends without closing it (a sweep's parent, made
        by the launcher in process): the helper outlives a second Ctrl-C's exit."""
        self._call("watch", run_id, wait=False)

    def finished_run(self, experiment_id: str, config_hash: str) -> Optional[tuple[str, dict[str, float]]]:
        """The newest FINISHED run with this config hash: (run id, its metrics), or None."""
        return self._call("finished_run", experiment_id, config_hash)

    def close(self, timeout: float = 10) -> None:
        self._conn.close()  # the helper reads end-of-file and leaves
        self._process.wait(timeout)


_BACKGROUND = {"draw_loss_curve": "draw the loss curve"}  # requests whose failure is only a warning


def _error(answer: tuple[str, str]) -> Exception:
    kind, message = answer
    return (UserError if kind == "UserError" else StoreError)(message)


# Private to this module: one helper per store and process, and one started before the store is known.
_helpers: dict[str, HelperClient] = {}
_spare: Optional[HelperClient] = None


@atexit.register
def _close_all() -> None:
    """At exit, let each helper go and wait for it: every request was answered by then, and a
    helper nobody waits for stays a zombie where the container's first process does not reap."""
    for helper in [*_helpers.values(), _spare]:
        if helper is not None and helper.owner == os.getpid():
            try:
                helper.close(timeout=5)
            except Exception:  # a helper that does not leave in time is left to its own end-of-file
                pass


def prestart() -> None:
    """Start a helper now, before the store is known: MLflow's import runs alongside Hydra's
    composition and torch's import instead of after them."""
    global _spare
    if _spare is None or _spare.owner != os.getpid():
        _spare = HelperClient()


def helper_for(uri: str) -> HelperClient:
    """The helper for `uri` in this process: the prestarted one, else a new one."""
    global _spare
    if uri not in _helpers or _helpers[uri].owner != os.getpid():
        helper = _spare if _spare is not None and _spare.owner == os.getpid() else HelperClient()
        _spare = None
        helper.bind(uri)
        _helpers[uri] = helper
    return _helpers[uri]


# -- the helper's side ----------------------------------------------------------------------------
SERVED = ("open_experiment", "create_run", "create_runs", "log_batch", "log_batches", "set_terminated_runs", "set_tag", "log_artifact", "log_artifacts_bulk", "set_terminated",
          "finished_run", "draw_loss_curve", "wait")


def _commands(uri: str) -> dict:
    from runner.store.local import LocalClient

    client = LocalClient(uri)  # MLflow's own client is made on the first request
    opened: set[str] = set()  # runs created (or watched) here and not yet closed: see close_abandoned

    def create_run(experiment_id, run_name, tags):
        run_id = client.create_run(experiment_id, run_name, tags)
        opened.add(run_id)
        return run_id

    def create_runs(experiment_id, runs):
        ids = client.create_runs(experiment_id, runs)
        opened.update(ids)
        return ids

    def set_terminated(run_id, status):
        client.set_terminated(run_id, status)
        opened.discard(run_id)

    def set_terminated_runs(statuses):
        client.set_terminated_runs(statuses)
        opened.difference_update(run_id for run_id, _ in statuses)

    def close_abandoned():
        """The job's process ended (a second Ctrl-C's immediate exit, SIGKILL, a crash) with runs
        it had not closed: close them KILLED, so that no run stays RUNNING because its process
        could not say goodbye. A run closed meanwhile by someone else is left as it is."""
        for run_id in list(opened):
            try:
                if client.get_run(run_id).info.status == "RUNNING":
                    client.set_tag(run_id, "error", "the job's process ended without closing its run (killed or interrupted twice)")
                    client.set_terminated(run_id, "KILLED")
            except Exception as exc:  # the store is gone too: reap closes it once it is back
                print(f"runner: could not close run {run_id} left open by its process: {exc}", file=sys.stderr)
            opened.discard(run_id)

    return ({name: getattr(client, name) for name in SERVED}
            | {"ping": lambda: None, "create_run": create_run, "create_runs": create_runs, "set_terminated": set_terminated, "set_terminated_runs": set_terminated_runs,
               "watch": opened.add, "_close_abandoned": close_abandoned})


def serve(fd: int) -> None:
    """Import MLflow, then answer requests until the job's process closes its end."""
    from runner import signals

    # A scheduler's SIGTERM (SLURM's scancel, a pod's stop) reaches every process of the job at
    # once; the job handles it by closing its run KILLED through this helper, which must outlive
    # it. The helper leaves when the job's end of the socket closes, however the job ends.
    signals.ignore_interrupts()
    conn = Connection(fd)
    from runner.store.uri import call_with_retry, fail_fast_over_http

    fail_fast_over_http()
    import mlflow.entities  # noqa: F401  (now, while the job imports torch)
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (the default store; it opens on first use)

    commands: dict = {}

    def leave() -> None:
        """The job's process is gone or done: close what it left open, then exit."""
        if "_close_abandoned" in commands:
            commands["_close_abandoned"]()
        sys.stderr.flush()
        os._exit(0)  # no teardown of MLflow's modules: the job may be waiting for this exit

    while True:
        try:
            name, args = conn.recv()
        except (EOFError, OSError):  # every answer was sent
            leave()
        if name == "bind":  # no answer: see HelperClient.bind
            commands = _commands(*args)
            continue
        try:
            answer = (True, call_with_retry(commands[name], *args))  # a busy SQLite store: wait for it
        except Exception as exc:  # the job decides what an error means; the helper carries on
            answer = (False, (type(exc).__name__, str(exc)))
        try:
            conn.send(answer)
        except OSError:  # killed while this request ran (a SIGKILL mid-log_batch): same goodbye
            leave()


if __name__ == "__main__":
    serve(int(sys.argv[1]))

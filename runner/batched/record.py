"""The records of a batch's jobs: each job its own RunRecord (runner/run_record.py: the same
params, tags, result.json, final metrics, figures, status and job folder as a job run alone),
with three things shared by the batch so that a thousand jobs do not cost a thousand of each:

- the runs are created in one request to the MLflow helper (`create_runs`);
- one writer thread sends every job's metric points in bulk (`log_batches`), beats every
  run's heartbeat together, and appends each job's points to its own metrics.csv;
- the runs are closed together (`close_runs`): every job's final metrics and end tags, its
  result.json and config.yaml artifacts (`log_artifacts_bulk`) and its status, a request each
  for the whole batch, no request a job.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
from pathlib import Path
from typing import Optional

from runner.record_io import StoreLink
from runner.run_record import RunRecord
from runner.store.heartbeat import HEARTBEAT_TAG, Heartbeat
from runner.store.store_errors import reason, sync_command

log = logging.getLogger(__name__)
BULK_POINTS = 20_000  # metric points per bulk request: MLflow splits each run's into its 1000-point batches


class BatchRecord(RunRecord):
    """A job's RunRecord whose run was created with its batch's and whose points go through the
    batch's shared writer."""

    def __init__(self, *args, batch_tag: str, shared: "BatchStream", figures: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_tag, self.shared, self.figures = batch_tag, shared, figures
        self.preset_id: Optional[str] = None

    def on_points(self, done: int, points, times, costs) -> None:
        """As RunRecord.on_points, the rows made later by the shared writer (StreamView.put_points)."""
        self.history.extend(points)
        self.stream.put_points(points, times, costs)
        self.progress.update(done, points[-1][1] if points else None)

    def _create_run(self, tags: dict) -> str:
        return self.preset_id if self.preset_id is not None else super()._create_run(tags)

    def _open_stream(self, history_file):
        return self.shared.view(self.run_id, history_file)

    def _store_link(self) -> StoreLink:
        return DeferredClose(self.client, self.run_id, self.shared, params_sent=self.preset_id is not None)

    def _send_artifacts(self) -> list:
        if self.figures:
            return super()._send_artifacts()
        out, send = self.ctx.output_dir, self.cfg.tracking.artifacts  # result.json and config.yaml, no figures
        artifacts = [p for p in (out / "result.json", out / "config.yaml") if p.exists()] if send else []
        if artifacts and self.link.failed is None:  # sent with every job's, in one request (close_runs)
            self.shared.artifacts.append((self.run_id, [str(p) for p in artifacts]))
        return artifacts

    def run_tags(self) -> dict[str, str]:
        if getattr(self, "_tags", None) is None:  # asked by create_runs, then by __enter__: made once
            self._tags = {**super().run_tags(), "batch": self.batch_tag}
            if not self.figures:
                self._tags["figures_note"] = "not drawn: a large batch (hydra.launcher.figures=true draws each job's)"
        return dict(self._tags)


def create_runs(client, experiment_id: str, records: list[BatchRecord]) -> None:
    """Every record's run with its tags and params, in one request; each record then opens with
    its own (and does not send its params again: DeferredClose)."""
    from runner.record_io import flatten
    from runner.trust import redact_uri

    runs = []
    for r in records:
        params = flatten(r.experiment.resolved)
        if "tracking.uri" in params:  # as RunRecord records it
            params["tracking.uri"] = redact_uri(params["tracking.uri"])
        runs.append((r.name, r.run_tags(), list(params.items())))
    ids = client.create_runs(experiment_id, runs)
    for record, run_id in zip(records, ids):
        record.preset_id = run_id


class DeferredClose(StoreLink):
    """A batch job's store link: what the record sends without waiting through log_batch (final
    metrics, end tags) and its status go with the whole batch's, in bulk, once every job's record
    is complete (close_runs), the statuses last; its params went with its run (create_runs).
    Artifacts and figures go as for a job alone."""

    def __init__(self, client, run_id: str, shared: "BatchStream", params_sent: bool):
        super().__init__(client, run_id)
        self.shared, self.params_sent = shared, params_sent

    def call(self, fn, *args, **kwargs) -> bool:
        if getattr(fn, "__name__", "") == "log_batch" and kwargs.get("wait") is False and self.failed is None:
            metrics, params, tags = (list(kwargs.get(k, ())) for k in ("metrics", "params", "tags"))
            if params and not metrics and not tags and self.params_sent:
                return True  # recorded with the run
            self.shared.deferred.append((self.run_id, metrics, params, tags))
            return True
        return super().call(fn, *args, **kwargs)

    def close(self, status: str) -> bool:
        self.shared.statuses.append((self.run_id, status))
        # No request of its own: the status goes with the batch's (close_runs). Answers to the
        # requests sent without waiting (a job's figures) are read once many are due, so they
        # never fill the socket and stall the helper (seen with ~250 jobs: the helper blocked
        # sending, the batch sending).
        if getattr(self.client, "unanswered", 0) > 100:
            try:
                self.client.wait()
            except Exception as exc:
                self.failed = self.failed or exc
        return self.failed is None


def close_runs(client, records: list) -> Optional[BaseException]:
    """Set the status of every run of the batch whose record is closed; on failure each run is
    tried alone, and a record whose status could not be set says so in its job folder (`synced`:
    false, for `python -m runner sync`)."""
    if not records:
        return None
    shared = records[0].shared
    deferred, shared.deferred = shared.deferred, []
    artifacts, shared.artifacts = shared.artifacts, []
    done, shared.statuses = shared.statuses, []
    failure = None
    try:
        if deferred:
            client.log_batches(deferred)
        if artifacts:
            client.log_artifacts_bulk(artifacts)
    except BaseException as exc:  # the store is gone, or Ctrl-C/SIGTERM cut the bulk requests: each job folder keeps its record for sync
        for r in records:
            r.folder.update(synced=False)
        if not isinstance(exc, Exception):
            _close_statuses(client, records, done)  # tried all the same: no run left RUNNING
            raise
        failure = exc
    if not done:
        return failure
    return _close_statuses(client, records, done) or failure


def _close_statuses(client, records: list, done: list) -> Optional[BaseException]:
    """The statuses in one request; on failure each run alone, and a record whose status could
    not be set says so in its job folder (`synced`: false)."""
    if not done:
        return None
    failure = None
    try:
        client.set_terminated_runs(done)
        return None
    except BaseException as exc:
        failure = exc
    by_id = {r.run_id: r for r in records if getattr(r, "run_id", None)}
    for run_id, status in done:
        try:
            client.set_terminated(run_id, status)
        except BaseException:
            record = by_id.get(run_id)
            if record is not None:
                record.folder.update(synced=False)
    if not isinstance(failure, Exception):
        raise failure
    return failure


class StreamView:
    """One run's side of the shared writer, with MetricStream's interface (put, close, error)."""

    def __init__(self, shared: "BatchStream", run_id: str, history_file: Optional[Path]):
        self.shared, self.run_id, self.history_file = shared, run_id, history_file
        self.local_error: Optional[OSError] = None
        self.closed = False

    @property
    def error(self) -> Optional[BaseException]:
        return self.shared.error

    def put(self, key: str, points, times=None) -> None:
        points = list(points)
        if not points:
            return
        stamps = [round(t * 1000) for t in times] if times is not None else [int(time.time() * 1000)] * len(points)
        self.shared.pending.append((self, [(key, float(v), ts, int(s)) for (s, v), ts in zip(points, stamps)]))

    def put_points(self, points, times, costs) -> None:
        """The loop's logged points and their costs (RunRecord.on_points: `loss`, then
        `loss_evals`, `grad_evals` and `evals` on the same steps), kept as they come: the rows
        are made by the writer (rows_of) rather than on the loop's thread, a thousand jobs a chunk."""
        if points:
            self.shared.pending.append((self, (list(points), list(times), list(costs) if costs else None)))

    def close(self, timeout: float = 60.0) -> None:
        """Everything put so far is sent (with every other job's: one bulk request) before the
        record goes on to its final metrics and status."""
        self.closed = True
        self.shared.flush()


def rows_of(points, times, costs) -> list[tuple]:
    """The metric rows RunRecord.on_points puts for these points: (key, value, timestamp_ms, step)."""
    stamps = [round(t * 1000) for t in times]
    rows = [("loss", float(v), ts, int(s)) for (s, v), ts in zip(points, stamps)]
    if costs:
        steps = [int(s) for s, _ in points]
        rows += [("loss_evals", float(c[0]), ts, s) for s, c, ts in zip(steps, costs, stamps)]
        rows += [("grad_evals", float(c[1]), ts, s) for s, c, ts in zip(steps, costs, stamps)]
        rows += [("evals", float(c[0] + c[1]), ts, s) for s, c, ts in zip(steps, costs, stamps)]
    return rows


class BatchStream:
    def __init__(self, client, interval: float = 1.0, heartbeat: Optional[float] = None, uri: Optional[str] = None):
        self.client, self.interval, self.uri = client, interval, uri
        self.pending: collections.deque = collections.deque()
        self.views: list[StreamView] = []
        self.statuses: list[tuple[str, str]] = []  # (run_id, status) of closed records: close_runs sets them
        self.deferred: list[tuple] = []  # log_batch requests of the records, sent in bulk by close_runs
        self.artifacts: list[tuple[str, list[str]]] = []  # (run_id, files) of the records, sent in bulk by close_runs
        self.error: Optional[BaseException] = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._heart = Heartbeat(self._send_beat, self._say_down, self._say_up, every=heartbeat)  # never gives up
        self._said_down = False
        self.thread = threading.Thread(target=self._work, name="mlflow-batch-metrics", daemon=True)
        self.thread.start()

    def view(self, run_id: str, history_file: Optional[Path]) -> StreamView:
        v = StreamView(self, run_id, history_file)
        self.views.append(v)
        return v

    def close(self, timeout: float = 60.0) -> None:
        self._closing.set()
        self.thread.join(timeout)
        self.flush()

    def _work(self) -> None:
        while not self._closing.wait(min(self.interval, self._heart.wait_for())):
            self.flush()
            self._heart.beat()

    def _send_beat(self, now: str) -> None:
        alive = [(v.run_id, [], [], [(HEARTBEAT_TAG, now)]) for v in self.views if not v.closed]
        if alive:
            with self._lock:
                self.client.log_batches(alive)

    def flush(self) -> None:
        """Send what is pending: each job's rows to its metrics.csv, then all of them to the store
        in bulk. From the writer thread, or from a closing record (the lock orders them)."""
        with self._lock:
            per_view: dict[StreamView, list] = {}
            while self.pending:
                view, rows = self.pending.popleft()
                per_view.setdefault(view, []).extend(rows if isinstance(rows, list) else rows_of(*rows))
            if not per_view:
                return
            for view, rows in per_view.items():
                if view.history_file is not None and view.local_error is None:
                    try:
                        with open(view.history_file, "a") as fh:
                            fh.writelines(f"{k},{s},{v!r},{t}\n" for k, v, t, s in rows)
                    except OSError as exc:
                        view.local_error = exc
            if self.error is not None:
                return  # the store is gone: the job folders keep the points for `sync`
            batch, count = [], 0
            try:
                for view, rows in per_view.items():
                    batch.append((view.run_id, rows, [], []))
                    count += len(rows)
                    if count >= BULK_POINTS:
                        self.client.log_batches(batch)
                        batch, count = [], 0
                if batch:
                    self.client.log_batches(batch)
            except Exception as exc:
                self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._heart.mark_down(exc)

    def _say_down(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        folder = self._folder()
        if self._said_down:
            log.warning("The tracking store stopped answering again (%s); the heartbeat is tried every %g s.", reason(exc), self._heart.every)
        else:
            log.warning("The tracking store stopped answering (%s). The batch goes on; each job's full record is kept "
                        "in its folder%s and `%s` uploads it later.", reason(exc), f" under {folder}" if folder else "",
                        sync_command(self.uri, folder or "."))
        self._said_down = True

    def _say_up(self) -> None:
        folder = self._folder()
        log.warning("The tracking store answers again: the batch's heartbeat goes on (each job's record since the failure "
                    "is in its folder%s, for sync).", f" under {folder}" if folder else "")

    def _folder(self) -> str:
        """The folder that holds every job folder of the batch (the sweep's), for the sync command."""
        folders = [str(v.history_file.parent) for v in self.views if v.history_file is not None]
        try:
            return os.path.commonpath(folders) if folders else ""
        except ValueError:
            return ""

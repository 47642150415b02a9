"""A run's metric stream: points handed over by the loop go to the store from a background
thread, in batches, and to the job folder's metrics.csv first; a heartbeat tag says the run lives."""
from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path
from typing import Iterable, Optional

from runner.store.heartbeat import HEARTBEAT_TAG, Heartbeat
from runner.store.store_errors import reason, sync_command
from runner.store.uri import is_busy

log = logging.getLogger(__name__)
__all__ = ["HEARTBEAT_TAG", "MetricStream"]


class MetricStream:
    """Sends metric points to MLflow from a background thread, in batches (log_batch), and beats a
    heartbeat tag (`runner.heartbeat`, epoch seconds) so that `python -m runner reap` can tell a
    live run from one whose process died. Every point also goes to `history_file` first.

    `client`: a TrackingClient (runner/store/client.py) of store `uri`; `record_dir`: where the
    record is kept for `sync` (default: history_file's folder), named by the warning when the
    store stops answering. The heartbeat goes on after a failure (runner/store/heartbeat.py);
    the metric points after it stay in the local record only, for `sync`."""

    def __init__(self, client, run_id: str, history_file: Optional[Path] = None, interval: float = 1.0,
                 heartbeat: Optional[float] = None, *, record_dir: Optional[Path] = None, uri: Optional[str] = None):
        self.client, self.run_id, self.interval = client, run_id, interval
        self.record_dir = record_dir if record_dir is not None else (history_file.parent if history_file is not None else None)
        self.uri = uri
        # A deque, not a queue.Queue: appending takes no lock and wakes no thread. The writer
        # sleeps `interval` between batches instead of waking for every put, so it takes the GIL
        # from the loop about once a second (a put every few hundred microseconds otherwise).
        self.pending: collections.deque = collections.deque()
        self._closing = threading.Event()
        self.error: Optional[BaseException] = None
        self.local_error: Optional[OSError] = None  # writing history_file failed (a full disk)
        self.history_file = history_file
        self._heart = Heartbeat(lambda now: self.client.set_tag(self.run_id, HEARTBEAT_TAG, now), self._say_down,
                                self._say_up, every=heartbeat)
        self._said_down = False  # the full warning is given once; later outages get a line each
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
            closing = self._closing.wait(min(self.interval, self._heart.wait_for()))
            rows = []
            while self.pending:
                rows.extend(self.pending.popleft())
            if rows or self._backlog:
                self._write(rows, final=closing)
            if closing:
                return

    def _beat(self) -> None:
        if not self._closing.is_set():  # closing: the record's own last calls say whether the store answers
            self._heart.beat()

    def _write(self, rows, final: bool = False) -> None:
        """Append to the local history, then send everything not yet in the store. A SQLite lock
        that outlasts call_with_retry's wait is contention, not a dead store: the rows wait for
        the next interval (and up to half a minute more at the end) instead of giving the store up."""
        if self.history_file is not None and rows and self.local_error is None:
            try:  # best-effort: a full disk under the job folder must not stop the points reaching the store
                with open(self.history_file, "a") as fh:
                    fh.writelines(f"{k},{s},{v!r},{t}\n" for k, v, t, s in rows)
            except OSError as exc:
                self.local_error = exc
                log.warning("The job folder cannot be written (%s); the metric points go to the tracking store only.", exc)
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
        """A metric write failed: the points go on to the local record only (for `sync`)."""
        if self.error is None:
            self.error = exc
        self._heart.mark_down(exc)

    def _say_down(self, exc: BaseException) -> None:
        """The store stopped answering (a write or a beat): from now on the local record only, as
        a failed write; the heartbeat is tried again every interval."""
        if self.error is None:
            self.error = exc
        if self._said_down:
            log.warning("The tracking store stopped answering again (%s); the heartbeat is tried every %g s.", reason(exc), self._heart.every)
        elif self.history_file is None and self.record_dir is not None:  # a sweep's parent: it only beats
            log.warning("The tracking store stopped answering (%s). The sweep goes on; the jobs' records are kept under %s "
                        "and `%s` uploads them later.", reason(exc), self.record_dir, sync_command(self.uri, self.record_dir))
        elif self.record_dir is not None:
            log.warning("The tracking store stopped answering (%s). Training goes on; the full record is kept in %s "
                        "and `%s` uploads it later.", reason(exc), self.record_dir, sync_command(self.uri, self.record_dir))
        else:
            log.warning("The tracking store stopped answering (%s). Training goes on; the heartbeat is tried every %g s.",
                        reason(exc), self._heart.every)
        self._said_down = True

    def _say_up(self) -> None:
        kept = ("" if self.record_dir is None else f"; the jobs' records are under {self.record_dir}, for sync" if self.history_file is None
                else f"; the record since the failure is in {self.record_dir}, for sync")
        log.warning("The tracking store answers again: run %s's heartbeat goes on%s.", self.run_id, kept)

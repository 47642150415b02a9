"""A live run's heartbeat: the `runner.heartbeat` tag (epoch seconds), beaten from a writer
thread so that `python -m runner reap` can tell a live run from one whose process died.

A heartbeat never gives up: a store that fails once (a server restart, a burst of SQLite
"database is locked", a full disk freed later) is tried again at the next interval, or a run
still alive would look dead and reap would close it KILLED. The cost stays bounded: one attempt
an interval, on the writer's thread (never the training loop's), one warning when the store
stops answering and one line when it answers again.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Optional

from runner.store.uri import is_busy

log = logging.getLogger(__name__)
HEARTBEAT_TAG = "runner.heartbeat"  # epoch seconds, every INTERVAL; read by runner/reap.py and runner/sync.py
INTERVAL_ENV = "RUNNER_HEARTBEAT_SECONDS"  # the interval, for tests and very slow stores (default 10 s)


def interval() -> float:
    """Seconds between beats: $RUNNER_HEARTBEAT_SECONDS when it is a positive number, else 10."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, ""))
    except ValueError:
        return 10.0
    return value if 0 < value < 1e6 else 10.0


class Heartbeat:
    """Beats `send(epoch_seconds_text)` every `every` seconds when `beat()` is called.

    `on_down(exc)` is called when the store stops answering (it says so to the user), `on_up()`
    when it answers again: once a change, at most one change an interval. A busy SQLite store is
    contention, not a dead store: it is tried again next time without a word."""

    def __init__(self, send: Callable[[str], None], on_down: Callable[[BaseException], None],
                 on_up: Callable[[], None], every: Optional[float] = None):
        self.send, self.on_down, self.on_up = send, on_down, on_up
        self.every = interval() if every is None else every
        self.next = time.time() + self.every  # until then reap goes by the run's start time
        self.down = False

    def wait_for(self) -> float:
        """Seconds until the next beat is due (at least 10 ms)."""
        return max(self.next - time.time(), 0.01)

    def mark_down(self, exc: BaseException) -> None:
        """The store failed elsewhere (a metric write): said as a failed beat would be, once."""
        if not self.down:
            self.down = True
            self.on_down(exc)

    def beat(self) -> None:
        now = time.time()
        if now < self.next:
            return
        self.next = now + self.every  # a failed beat is tried again one interval later, never sooner
        try:
            self.send(f"{now:.0f}")
        except Exception as exc:
            if not is_busy(exc):
                self.mark_down(exc)
            return
        if self.down:
            self.down = False
            self.on_up()


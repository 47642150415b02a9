"""The one road to MLflow. Everything that reads or writes the tracking store goes through a
`TrackingClient` (client.py) made by `connect`, which is the one place that chooses how:

- a job talks to a helper process (helper.py): the job's own process never imports MLflow, and
  MLflow's per-point Python cost runs on another core;
- a sweep's launching process and the subcommands (sync, reap, report) use MLflow in process
  (local.py): they are MLflow's own users, with nothing to overlap.

uri.py resolves and checks store addresses without importing MLflow; stream.py sends a run's
metric points from a background thread.
"""
from __future__ import annotations

from runner.store.client import StoreError, TrackingClient
from runner.store.store_errors import keep_off_the_console

keep_off_the_console()  # MLflow's traceback for a store error: we say it in one paragraph (store_errors.py)
__all__ = ["StoreError", "TrackingClient", "connect"]


def connect(uri: str, *, in_process: bool = False) -> TrackingClient:
    """The client for store `uri`: through this process's helper, or MLflow in process."""
    if in_process:
        from runner.store.local import local_client

        return local_client(uri)
    from runner.store.helper import helper_for

    return helper_for(uri)

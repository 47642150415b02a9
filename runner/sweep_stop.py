"""Interrupt handling of a sweep's parallel launcher workers: the stop mark, SIGTERM then SIGKILL, closing children left RUNNING."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Optional

from runner.job_context import SweepParent


STOP_FILE = "interrupted"  # in the sweep directory: jobs not yet started do not start


def stop_workers(timeout: float = 20.0) -> None:
    """An interrupted sweep stops its parallel workers before anything else: it marks the sweep
    interrupted (a queued job then does not start), sends SIGTERM to every process below this one
    (joblib's and submitit's workers, Ray's processes; not the MLflow helpers, which ignore it),
    which a running job answers by closing its run KILLED, and waits up to `timeout` seconds for
    the children runs to be closed or the workers to leave. Called from the launcher's signal
    handler, so that the launcher library (joblib kills its workers and their helpers at once)
    does not cut the jobs' own clean-up short; finish() closes whatever is left."""
    import signal

    from runner.sweep import _Sweeps

    global _stopping
    if _Sweeps.open is None or _stopping:
        return
    _stopping = True
    parent = _Sweeps.open.parent
    info = {"run_id": parent.run_id, "uri": parent.uri, "experiment_id": parent.experiment_id, "sweep_dir": parent.sweep_dir}
    try:
        (Path(info["sweep_dir"]) / STOP_FILE).write_text("interrupted\n")
    except OSError:
        pass
    _, workers = _descendants()
    if not workers:
        return  # the jobs run in this process: the interrupt reaches them directly
    from runner import store

    client = store.connect(info["uri"], in_process=True)
    began = time.monotonic()
    signalled = -math.inf
    while time.monotonic() < began + timeout:
        alive = [pid for pid in workers if _alive(pid)]
        if not alive:
            break
        if time.monotonic() - signalled >= 2:  # again every 2 s: a job still starting (submitit's
            for pid in alive:                  # bypasses SIGTERM then) gets it once its run is open
                _signal(pid, signal.SIGTERM)
            signalled = time.monotonic()
        if time.monotonic() - began >= 3:
            try:
                if not _running_children(client, info):
                    break  # every job closed its run; idle pool workers need not leave
            except Exception:  # the store is gone: wait for the workers alone
                pass
        time.sleep(0.3)


def kill_leftover_workers() -> None:
    """After an interrupted sweep is closed: any worker still alive (one that ignored SIGTERM)
    is killed, so that no job goes on training unseen; its MLflow helper closes its run KILLED."""
    import signal

    for pid in _descendants()[1]:
        _signal(pid, signal.SIGKILL)


_stopping = False


def interrupted(parent: Optional[SweepParent]) -> bool:
    """Whether the sweep of this job was interrupted before the job started (see stop_workers)."""
    return parent is not None and bool(parent.sweep_dir) and (Path(parent.sweep_dir) / STOP_FILE).exists()


def _running_children(client, info: dict) -> list:
    return client.search_runs([info["experiment_id"]], max_results=50000,
                              filter_string=f"tags.`mlflow.parentRunId` = '{info['run_id']}' and attributes.status = 'RUNNING'")


def close_running_children(client, info: dict, wait: float = 5.0) -> int:
    """Children of the parent still RUNNING once the workers are stopped: wait up to `wait`
    seconds for their own processes or helpers to close them, then close them KILLED here."""
    deadline = time.monotonic() + wait
    while True:
        running = _running_children(client, info)
        if not running or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for run in running:
        client.set_tag(run.info.run_id, "error", "interrupted: the sweep was stopped and its worker did not close the run")
        client.set_terminated(run.info.run_id, "KILLED")
    return len(running)


def _descendants() -> tuple[list[int], list[int]]:
    """(MLflow helpers, other processes) below this one, from /proc (Linux; elsewhere none)."""
    children: dict[int, list[int]] = {}
    commands: dict[int, bytes] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            pid = int(stat.parent.name)
            commands[pid] = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    helpers = [p for p in found if b"runner.store.helper" in commands.get(p, b"")]
    # Bookkeepers (loky's and multiprocessing's resource trackers) leave with this process by themselves.
    quiet = [p for p in found if b"resource_tracker" in commands.get(p, b"")]
    return helpers, [p for p in found if p not in helpers and p not in quiet]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"  # a zombie has left; its parent (perhaps this process) reaps it
    except (OSError, IndexError):
        return False


def _signal(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass

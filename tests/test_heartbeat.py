"""A live run's heartbeat outlasts a store that fails for a while (a server restart, a burst of
"database is locked", a full disk freed later): `reap` must never close a run that is alive.
The writers (a job's MetricStream, a sweep parent's, a batch's shared BatchStream) are driven
here with a store that fails for a window, then answers again; the CLI test fills a real disk."""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.store.heartbeat import HEARTBEAT_TAG
from test_faults_lifecycle import tmpfs  # noqa: F401  (a small filesystem whose disk fills up)

BEAT = 0.05  # seconds between beats in the unit tests


class FlakyStore:
    """A TrackingClient that refuses every call while `down` is set, as a store on a full disk does."""

    def __init__(self):
        self.down = False
        self.beats: list[float] = []  # when a heartbeat went through
        self.points: list[tuple] = []  # metric rows the store took

    def _check(self):
        if self.down:
            raise RuntimeError("(sqlite3.OperationalError) database or disk is full")

    def set_tag(self, run_id, key, value):
        self._check()
        assert key == HEARTBEAT_TAG
        self.beats.append(time.time())

    def log_batch(self, run_id, metrics=(), params=(), tags=(), wait=True):
        self._check()
        self.points.extend(metrics)

    def log_batches(self, batches, wait=True):
        self._check()
        for _, metrics, _, tags in batches:
            self.points.extend(metrics)
            self.beats.extend(time.time() for k, _ in tags if k == HEARTBEAT_TAG)


def wait_until(condition, timeout=5.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def outage(store: FlakyStore, seconds: float = 4 * BEAT) -> float:
    """The store fails for a while once a beat went through; the moment it answers again."""
    wait_until(lambda: store.beats)
    store.down = True
    time.sleep(seconds)
    store.down = False
    return time.time()


def store_messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "tracking store" in r.getMessage()]


def test_a_jobs_heartbeat_goes_on_after_the_store_failed_and_its_points_stay_local(tmp_path, caplog):
    from runner.store.stream import MetricStream

    store = FlakyStore()
    folder = tmp_path / "job folder's"  # a space and a quote: the printed command must still run
    folder.mkdir()
    history = folder / "metrics.csv"
    stream = MetricStream(store, "run1", history, interval=BEAT, heartbeat=BEAT, uri="sqlite:////tmp/a b/mlflow.db")
    with caplog.at_level(logging.INFO):
        stream.put("loss", [(0, 1.0)])
        back = outage(store)
        stream.put("loss", [(1, 0.5)])
        wait_until(lambda: store.beats[-1] > back)  # it beats again: reap sees a live run
        stream.close()
    assert stream.error is not None  # the store failed: the points after it are for sync, as before
    assert [row[3] for row in store.points] == [0]
    assert [line.split(",")[1] for line in history.read_text().splitlines()] == ["0", "1"]  # the local record is whole
    messages = store_messages(caplog)
    assert len(messages) == 2 and "stopped answering" in messages[0] and "answers again" in messages[1], messages
    command = messages[0].split("`")[1]
    assert shlex.split(command) == ["python", "-m", "runner", "sync", "--tracking-uri", "sqlite:////tmp/a b/mlflow.db", str(folder)]


def test_each_outage_is_said_once_and_its_end_once(tmp_path, caplog):
    """A store that fails twice: the full warning once, then a line a change, never a line a beat."""
    from runner.store.stream import MetricStream

    store = FlakyStore()
    stream = MetricStream(store, "run1", tmp_path / "metrics.csv", interval=BEAT, heartbeat=BEAT)
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            back = outage(store, seconds=6 * BEAT)  # several failed beats each
            wait_until(lambda: store.beats[-1] > back)
        stream.close()
    messages = store_messages(caplog)
    assert [m.split(" (")[0].split(":")[0] for m in messages] == [
        "The tracking store stopped answering", "The tracking store answers again",
        "The tracking store stopped answering again", "The tracking store answers again"], messages


def test_the_reason_shown_is_the_databases_not_sqlalchemys_preamble():
    from runner.store.store_errors import reason

    exc = RuntimeError("(raised as a result of Query-invoked autoflush; consider using a session.no_autoflush block)\n"
                       "(sqlite3.OperationalError) database or disk is full\n[SQL: INSERT INTO metrics ...]")
    assert reason(exc) == "(sqlite3.OperationalError) database or disk is full"
    assert reason(ValueError()) == "ValueError"


def test_a_busy_store_is_no_failure_for_the_heartbeat(tmp_path, caplog):
    from runner.store.stream import MetricStream

    class Busy(FlakyStore):
        def _check(self):
            if self.down:
                raise RuntimeError("(sqlite3.OperationalError) database is locked")

    store = Busy()
    stream = MetricStream(store, "run1", tmp_path / "metrics.csv", interval=BEAT, heartbeat=BEAT)
    with caplog.at_level(logging.INFO):
        back = outage(store)
        wait_until(lambda: store.beats[-1] > back)
        stream.put("loss", [(0, 1.0)])
        stream.close()
    assert stream.error is None and [row[3] for row in store.points] == [0]
    assert not [m for m in store_messages(caplog) if "stopped" in m or "again" in m]


def test_a_sweep_parents_warning_names_the_sweep_folder_in_a_runnable_command(tmp_path, caplog):
    """The sweep parent's stream only beats: its warning used to paste "the job's output directory" into the command."""
    from runner.store.stream import MetricStream

    store = FlakyStore()
    sweep_dir = tmp_path / "multirun" / "2026-12-01" / "16 00 00"
    stream = MetricStream(store, "parent", record_dir=sweep_dir, uri="sqlite:///x.db", interval=BEAT, heartbeat=BEAT)
    with caplog.at_level(logging.INFO):
        back = outage(store)
        wait_until(lambda: store.beats[-1] > back)
        stream.close()
    messages = store_messages(caplog)
    assert len(messages) == 2 and "output directory" not in messages[0], messages
    assert shlex.split(messages[0].split("`")[1])[-1] == str(sweep_dir)


def test_a_batchs_shared_writer_beats_again_after_the_store_failed(tmp_path, caplog):
    from runner.batched.record import BatchStream

    store = FlakyStore()
    shared = BatchStream(store, interval=BEAT, heartbeat=BEAT, uri="sqlite:///x.db")
    views = [shared.view(f"run{i}", (tmp_path / "sweep dir" / str(i) / "metrics.csv")) for i in range(2)]
    for v in views:
        v.history_file.parent.mkdir(parents=True)
    with caplog.at_level(logging.INFO):
        views[0].put("loss", [(0, 1.0)])
        back = outage(store)
        views[0].put("loss", [(1, 0.5)])
        wait_until(lambda: store.beats[-1] > back)
        shared.close()
    assert shared.error is not None and [row[3] for row in store.points] == [0]
    assert [line.split(",")[1] for line in views[0].history_file.read_text().splitlines()] == ["0", "1"]
    messages = store_messages(caplog)
    assert len(messages) == 2 and "stopped answering" in messages[0] and "answers again" in messages[1], messages
    assert shlex.split(messages[0].split("`")[1])[-1] == str(tmp_path / "sweep dir")


def test_the_heartbeat_interval_knob(monkeypatch):
    from runner.store import heartbeat

    monkeypatch.setenv(heartbeat.INTERVAL_ENV, "0.5")
    assert heartbeat.interval() == 0.5
    for bad in ("", "x", "-1", "0", "nan", "inf"):
        monkeypatch.setenv(heartbeat.INTERVAL_ENV, bad)
        assert heartbeat.interval() == 10.0


def parent_beat(db: Path) -> float:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("runner")
    (parent,) = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweep") == "true"]
    return float(parent.data.tags.get(HEARTBEAT_TAG, 0))


@pytest.mark.slow
def test_a_live_sweep_whose_store_disk_filled_then_freed_beats_again_and_reap_spares_it(tmp_path, tmpfs):
    """Through the CLI: a sweep whose SQLite disk fills for a few beats, then has room again. The
    parent's heartbeat resumes, `reap` leaves the live sweep alone, no MLflow traceback reaches the
    user, and the printed sync command runs as written (a folder with a space in its name)."""
    from conftest import run_cli
    from test_batched import fill_up
    from test_faults import wait_for_points

    work = tmp_path / "my work"
    disk = tmpfs(work / "store", "16m")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RUNNER_HEARTBEAT_SECONDS": "0.5"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "-m", "trainer.seed=0,1", f"tracking.uri=sqlite:///{disk / 'mlflow.db'}",
                             "trainer.steps=100000000", "trainer.log_every=1000", "trainer.progress=off"],
                            cwd=work, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for_points(disk, n_runs=1, points=2, proc=proc)
        fill_up(disk / "filler")
        time.sleep(2.5)  # several beats fail
        (disk / "filler").unlink()
        freed = time.time()
        deadline = freed + 30
        while parent_beat(disk / "mlflow.db") < freed - 1 and time.time() < deadline:
            time.sleep(0.25)
        assert parent_beat(disk / "mlflow.db") >= freed - 1, "the sweep parent never beat again"
        reap = run_cli(work, "reap", "--tracking-uri", f"sqlite:///{disk / 'mlflow.db'}", "--stale-after", "5")
        assert "0 stale run(s)" in reap.stdout, reap.stdout + reap.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    text = out + err
    assert "Traceback" not in text, text[-4000:]
    assert "stopped answering" in text and "answers again" in text, text[-4000:]
    commands = [line.split("`")[1] for line in text.splitlines() if "`python -m runner sync" in line]
    assert commands, text[-4000:]
    for command in commands:
        assert "URI" not in shlex.split(command) and "output directory" not in command, command
        synced = run_cli(work, *shlex.split(command)[3:])  # `python -m runner` + the rest, as printed
        assert synced.returncode == 0, synced.stdout + synced.stderr

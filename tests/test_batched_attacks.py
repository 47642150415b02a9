"""Hostile cases against the batched launcher's paths and the commands that complete its record:
non-regular files where a job's record.json should be (the end-of-sweep scan, `sync`), hostile
folder names made from overrides, and interrupts during a batch's bulk close."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import all_runs, run_cli, run_process

REPO = Path(__file__).resolve().parent.parent


def hostile_record_folders(root: Path) -> dict[str, Path]:
    """Folders whose record.json is not a regular file (or loops): what each is, by name."""
    made = {}
    for name in ("fifo", "dir", "dangling", "loop", "elsewhere"):
        (root / name).mkdir(parents=True)
        made[name] = root / name
    os.mkfifo(root / "fifo" / "record.json")  # opened the plain way, this blocks forever
    (root / "dir" / "record.json").mkdir()
    os.symlink("/nonexistent/record.json", root / "dangling" / "record.json")
    os.symlink("record.json", root / "loop" / "record.json")
    (root / "real.json").write_text(json.dumps({"status": "FINISHED", "synced": False}))
    os.symlink(root / "real.json", root / "elsewhere" / "record.json")  # another file's data: not this folder's record
    return made


def test_sync_names_every_record_that_is_not_a_regular_file_and_never_blocks(workdir):
    """A FIFO, a directory, a dangling symlink, a symlink loop or a symlink to another file where a
    job's record.json should be: each named with what it is, one line each, no traceback, exit 1
    (a record it could not read), and the count of records synced is not negative."""
    made = hostile_record_folders(workdir / "multirun")
    proc = run_process(workdir, "sync", str(workdir / "multirun"), timeout=60)  # a real process: a FIFO open must not hang the test
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out and "-1 record" not in out, out
    for name, what in (("fifo", "a FIFO"), ("dir", "a directory"), ("dangling", "a symlink"), ("loop", "a symlink"), ("elsewhere", "a symlink")):
        lines = [line for line in proc.stderr.splitlines() if str(made[name]) in line]
        assert len(lines) == 1 and what in lines[0], (name, proc.stderr)
    assert "0 record(s) synced, 0 skipped, 5 failed." in proc.stdout, proc.stdout
    assert not (workdir / "mlflow.db").exists()  # nothing read: nothing uploaded, not even a store made


def test_sync_of_a_folder_that_does_not_exist_is_an_error_not_nothing_to_sync(workdir):
    proc = run_process(workdir, "sync", str(workdir / "no-such-sweep"), timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no-such-sweep" in proc.stderr and "Traceback" not in proc.stderr and "Nothing to sync" not in proc.stdout


def test_sync_accepts_the_record_file_itself_and_refuses_a_fifo_named_so(workdir):
    """`sync DIR/record.json` means that job's folder; a FIFO given as the path is refused, not opened."""
    made = hostile_record_folders(workdir / "multirun")
    proc = run_process(workdir, "sync", str(made["fifo"] / "record.json"), timeout=60)
    assert proc.returncode == 1 and "a FIFO" in proc.stderr and "Traceback" not in proc.stderr, proc.stdout + proc.stderr


def test_the_end_of_sweep_scan_follows_no_symlink_and_opens_no_fifo(tmp_path):
    """runner/sweep.py's scan for this sweep's unsynced records, over a sweep folder holding two
    symlink loops (a walk that follows them visits 2^40 paths), a link to / and a FIFO, a
    directory and a dangling link named record.json: it ends at once and finds the one unsynced
    record of this sweep (and not another sweep's)."""
    sweep = tmp_path / "sw"
    hostile_record_folders(sweep)
    for name, target in (("a", "."), ("b", "."), ("root", "/")):
        os.symlink(target, sweep / name)
    for job, parent in (("0", "P"), ("1", "other")):
        (sweep / job).mkdir()
        (sweep / job / "record.json").write_text(json.dumps({"status": "FINISHED", "synced": False, "tags": {"mlflow.parentRunId": parent}}))
    code = f"from pathlib import Path; from runner.sweep import _unsynced_jobs; print(_unsynced_jobs(Path({str(sweep)!r}), 'P'))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['0']"


def folders_and_names(cwd: Path, sweep_dir: str) -> tuple[list[str], dict[str, str]]:
    """Each job folder of the sweep (relative to it) holding a record, and each child run's name by its folder."""
    root = cwd / sweep_dir
    folders = sorted(str(p.parent.relative_to(root)) for p in root.rglob("record.json"))
    runs = [r for r in all_runs(cwd, sweep_dir) if r.data.tags.get("sweep") != "true"]
    return folders, {str(Path(r.data.tags["output_dir"]).relative_to(root)): r.info.run_name for r in runs}


@pytest.mark.slow
def test_hydra_resolver_interpolations_name_each_batched_job_as_the_basic_launcher_does(workdir):
    """`${hydra:job.override_dirname}` (the resolver form) in hydra.sweep.subdir and
    `${hydra:job.num}` / `${hydra:runtime.output_dir}` in a job's own config: each batched job
    resolves them as its own (before: every job of a batch got its first job's folder and name)."""
    common = ("-m", "optim.lr=0.01,0.02", "trainer.seed=0,1", "trainer.steps=3",
              "hydra.sweep.subdir=${hydra:job.override_dirname}", "hydra.job.config.override_dirname.exclude_keys=[tracking.experiment,tracking.run_name]",
              "tracking.run_name=job${hydra:job.num}@${hydra:runtime.output_dir}")
    seen = {}
    for launcher in ("basic", "batched"):
        proc = run_cli(workdir, *common, f"hydra/launcher={launcher}", f"hydra.sweep.dir=sw-{launcher}", f"tracking.experiment=sw-{launcher}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        seen[launcher] = folders_and_names(workdir, f"sw-{launcher}")
    folders, names = seen["batched"]
    assert len(folders) == 4 and folders == seen["basic"][0], seen
    assert any("batch" in r.data.tags for r in all_runs(workdir, "sw-batched"))  # it did batch
    strip = lambda n: n.replace("sw-basic", "SW").replace("sw-batched", "SW")  # noqa: E731
    assert {k: strip(v) for k, v in names.items()} == {k: strip(v) for k, v in seen["basic"][1].items()}, seen
    assert len(set(names.values())) == 4
    for launcher in ("basic", "batched"):  # the sweep's parent exists (a run name naming each job once stopped it opening)
        parents = [r for r in all_runs(workdir, f"sw-{launcher}") if r.data.tags.get("sweep") == "true"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize("hostile, said", [
    (("hydra.job.config.override_dirname.item_sep=/../../",), "outside the sweep folder"),  # before: every job in ../trainer.steps=3, beside the sweep
    (("hydra.job.config.override_dirname.exclude_keys=[trainer.seed]",), "would share the folder"),  # before: seeds overwrote each other's record
    (("tracking.run_name='" + "é" * 200 + "'",), "more than a file system takes"),  # before: exit 1, Hydra's OSError (and a traceback from batched)
], ids=["dotdot-separator", "excluded-seed", "long-unicode-value"])
def test_job_folders_that_leave_the_sweep_or_are_shared_are_refused_alike_by_both_launchers(workdir, hostile, said):
    """hydra.sweep.subdir=${hydra.job.override_dirname} with hostile override_dirname settings:
    both launchers refuse the sweep with the same one-paragraph error (exit 2) before anything is
    recorded: no sweep folder, no store, no parent run."""
    errors = {}
    for launcher in ("basic", "batched"):
        before = set(os.listdir(workdir))
        proc = run_cli(workdir, "-m", f"hydra/launcher={launcher}", "optim.lr=0.01,0.02", "trainer.seed=0,1", "trainer.steps=3",
                       "hydra.sweep.subdir=${hydra.job.override_dirname}", f"hydra.sweep.dir=sw-{launcher}", *hostile)
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr and said in proc.stderr, proc.stderr[-3000:]
        # refused up front, as any bad sweep is: no folder, no store, no parent run, no report pointer
        assert set(os.listdir(workdir)) == before, set(os.listdir(workdir)) - before
        assert "report" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
        errors[launcher] = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors["batched"]) == 1 and errors["batched"] == [e.replace("sw-basic", "sw-batched") for e in errors["basic"]], errors


def helpers_of(pid: int) -> list[int]:
    """The MLflow helper processes the runner process `pid` started (runner/store/helper.py)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and "runner.store.helper" in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def first_closed(sweep: Path) -> bool:
    """A job folder's record.json says its record is closed (RunRecord._send_end wrote its status)."""
    for path in sweep.glob("*/record.json"):
        try:
            if json.loads(path.read_text()).get("status") != "RUNNING":
                return True
        except (OSError, ValueError):
            pass
    return False


@pytest.mark.slow
@pytest.mark.parametrize("window, sig, code", [
    ("closing-records", signal.SIGINT, 130),  # held as the first result.json appears: the first record's close waits on the store
    ("bulk-requests", signal.SIGINT, 130),  # held once a record is closed: the others close without the store, then close_runs waits
    ("bulk-requests", signal.SIGTERM, 143),
], ids=["ctrl-c-closing-records", "ctrl-c-bulk-requests", "sigterm-bulk-requests"])
def test_an_interrupt_during_the_batchs_bulk_close_leaves_nothing_running_and_sync_completes_it(workdir, window, sig, code):
    """The batch's loop has ended and its records are being closed (each record, then close_runs:
    final metrics, result.json/config.yaml, statuses, a request each for the whole batch) when
    Ctrl-C reaches the process group or SIGTERM the sweep. The MLflow helper is held (SIGSTOP) at
    that point, so the requests wait on it and the signal lands there every time. Afterwards no
    run is RUNNING, the exit status is 130/143, no raw traceback, and `sync` completes each job:
    its final metrics and result.json in the store, each loss point once. (Before: the records
    said synced although the bulk requests never went; the record cut short said RUNNING.)"""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    jobs = 15
    proc = subprocess.Popen([sys.executable, "-m", "runner", "-m", "hydra/launcher=batched", f"trainer.seed=range(0,{jobs})", "optim.lr=0.01,0.02",
                             "trainer.steps=2000", "trainer.progress=off", "hydra.launcher.figures=false", "hydra.sweep.dir=sw"],
                            cwd=workdir, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stopped = []
    try:
        deadline = time.time() + 240
        reached = (lambda: first_closed(workdir / "sw")) if window == "bulk-requests" else (lambda: list((workdir / "sw").glob("*/result.json")))
        while not reached():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.002)
        stopped = helpers_of(proc.pid)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        assert stopped
        time.sleep(1.5)  # every record closed; the bulk close waits on the held helper
        os.killpg(proc.pid, signal.SIGINT) if sig == signal.SIGINT else proc.send_signal(sig)
        time.sleep(0.5)
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=180)
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, out[-2000:] + err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    runs = all_runs(workdir)
    assert len(runs) == 2 * jobs + 1 and not [r for r in runs if r.info.status == "RUNNING"], [(r.info.run_name, r.info.status) for r in runs]
    synced = run_cli(workdir, "sync", str(workdir / "sw"), process=True)
    assert synced.returncode == 0, synced.stdout[-2000:] + synced.stderr[-2000:]
    from conftest import store

    client = store(workdir)
    for run in all_runs(workdir):
        if run.data.tags.get("sweep") == "true":
            assert run.info.status == "KILLED"
            continue
        assert run.info.status in ("FINISHED", "KILLED"), (run.info.run_name, run.info.status)
        assert "final_loss" in run.data.metrics and "result.json" in {a.path for a in client.list_artifacts(run.info.run_id)}, run.info.run_name
        for key in run.data.metrics:  # each point once, though sync was told every job of the batch is incomplete
            points = client.get_metric_history(run.info.run_id, key)
            assert len(points) == len({p.step for p in points}), (run.info.run_name, key, [(p.step, p.value, p.timestamp) for p in points])


@pytest.mark.slow
def test_a_reused_sweep_folder_with_fifos_and_stale_files_where_a_job_writes_does_not_hang_or_mix_records(workdir):
    """A sweep folder used again (hydra.sweep.dir fixed) whose job folders hold a FIFO where the
    record writes record.json.tmp, result.json, config.yaml or metrics.csv (opened the plain way
    for writing, a FIFO blocks until a reader comes: before, the sweep hung there for good), and
    an old metrics.csv (before, the new job's points were appended to it: sync would upload both
    jobs' points as one). Each job starts its record's files afresh."""
    sweep = workdir / "sw"
    for job, name in enumerate(("record.json.tmp", "result.json", "config.yaml", "metrics.csv")):
        (sweep / str(job)).mkdir(parents=True)
        os.mkfifo(sweep / str(job) / name)
    (sweep / "4").mkdir()
    (sweep / "4" / "metrics.csv").write_text("loss,999,123.0,1\n")
    proc = run_process(workdir, "-m", "hydra/launcher=batched", "trainer.seed=0,1,2,3,4", "trainer.steps=20", "hydra.sweep.dir=sw", timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "could not be written" not in proc.stderr, proc.stderr[-3000:]
    for job in range(5):
        folder = sweep / str(job)
        record = json.loads((folder / "record.json").read_text())
        assert record["status"] == "FINISHED" and record["synced"] is True
        for name in ("result.json", "config.yaml", "metrics.csv"):
            assert (folder / name).is_file() and not (folder / name).is_symlink(), (job, name)
        steps = [int(line.split(",")[1]) for line in (folder / "metrics.csv").read_text().splitlines() if line.startswith("loss,")]
        assert steps and steps == sorted(set(steps)) and 999 not in steps and steps[-1] == 20, (job, steps)


def test_an_unreadable_record_is_named_by_sync_and_skipped_by_the_sweeps_scan(tmp_path, monkeypatch, capsys):
    """A record.json the user may not read (EACCES: simulated, the tests may run as root, who
    reads anything): sync says so for that folder and exits 1; the end-of-sweep scan skips it."""
    import runner.record_scan as scan
    from runner import sweep, sync

    folder = tmp_path / "multirun" / "0"
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps({"status": "FINISHED", "synced": False, "tags": {"mlflow.parentRunId": "P"}}))
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if str(path).endswith("record.json"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(scan.os, "open", refuse)
    assert sweep._unsynced_jobs(tmp_path / "multirun", "P") == []
    assert sync.main([str(tmp_path / "multirun")]) == 1
    err = capsys.readouterr().err
    assert f"could not sync {folder}: its record.json cannot be read (Permission denied)" in err, err


class _Interrupting:
    """A helper connection whose send or recv is cut by Ctrl-C once (the signal lands there)."""

    def __init__(self, cut: str):
        self.cut, self.sent, self.answers, self.closed = cut, [], [], False

    def send(self, message):
        if self.closed:
            raise OSError("handle is closed")
        if self.cut == "send":
            self.cut = None
            raise KeyboardInterrupt  # part of a large request may be on its way: the stream is lost
        self.sent.append(message)
        self.answers.append((True, f"answer to {message[0]}"))

    def recv(self):
        if self.cut == "recv":
            self.cut = None
            raise KeyboardInterrupt
        return self.answers.pop(0)

    def close(self):
        self.closed = True


def helper_with(conn):
    import threading

    from runner.store.helper import HelperClient

    client = HelperClient.__new__(HelperClient)
    client._conn, client._lock, client._unanswered, client._failure = conn, threading.Lock(), [], None
    return client


def test_a_request_cut_by_ctrl_c_while_it_is_written_closes_the_helper_connection_instead_of_hanging():
    """A KeyboardInterrupt in the middle of sending a request to the MLflow helper (seen: a
    batch's points, a large message, to a helper that read slowly) left half a message in the
    socket; the helper then waited for its rest and the job for an answer, both for good. Now the
    connection is closed: later calls fail at once as with a helper gone (the job folders keep
    the record for sync)."""
    from runner.store.client import StoreError

    client = helper_with(_Interrupting("send"))
    with pytest.raises(KeyboardInterrupt):
        client.log_batches([("run", [("loss", 1.0, 0, 0)], [], [])])
    assert client._conn.closed
    with pytest.raises(StoreError, match="interrupt cut a request"):
        client.set_terminated_runs([("run", "KILLED")])


def test_an_answer_awaited_when_ctrl_c_lands_is_read_before_the_next_one():
    """Interrupted while waiting for its answer, a request's answer is still read back first:
    the next call gets its own answer, not the previous one's."""
    client = helper_with(_Interrupting("recv"))
    with pytest.raises(KeyboardInterrupt):
        client.open_experiment("first")
    assert client.open_experiment("second") == "answer to open_experiment" and client._conn.sent[-1] == ("open_experiment", ("second",))
    assert not client._conn.answers and not client._unanswered


def test_the_projects_own_sweep_folders_skip_the_folder_check():
    """conf/config.yaml's sweep.dir starts with ${hydra.runtime.cwd} (the same for every job) and
    its subdir is ${hydra.job.num}: no job can leave the sweep folder or share one, so the check,
    which composes each job's config, must not run (it doubled a 30-job sweep's time when it did)."""
    from omegaconf import OmegaConf

    from runner.app import CONF_DIR
    from runner.sweep_folders import named_by_number

    project = OmegaConf.load(CONF_DIR / "config.yaml")
    assert named_by_number(project)
    for changed in ({"subdir": "${hydra.job.override_dirname}"}, {"dir": "out/${hydra.job.override_dirname}"}):
        assert not named_by_number(OmegaConf.merge(project, {"hydra": {"sweep": changed}}))

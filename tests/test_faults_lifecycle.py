"""Faults in a run's life, injected for real: a full disk under the job folder or under the store
(a small tmpfs, mounted where the test may: root in the sandbox; skipped elsewhere), a read-only
store, parallel sweeps interrupted by SIGINT to the process group or SIGTERM to the launcher, a
tracking server that dies mid-sweep, and a second Ctrl-C. After each: no run RUNNING, every
computed point in the store or in the job folder for `sync`, a non-zero exit where anything failed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import all_runs, run_cli, store
from test_faults import LONG, free_port, mlflow_server, start, stop, wait_for_points


@pytest.fixture
def tmpfs():
    """mount(path, size): a tmpfs of `size` at path; unmounted at the end. Skips where mounting is
    not allowed (not root, no CAP_SYS_ADMIN): there is no honest way to fill a real disk then."""
    mounted = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()[:200]})")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def steps_in_store(workdir: Path, run_id: str, uri: str | None = None) -> list[int]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri) if uri else store(workdir)
    return sorted(p.step for p in client.get_metric_history(run_id, "loss"))


@pytest.mark.slow
def test_full_disk_under_the_job_folder_loses_no_point(workdir, tmpfs):
    tmpfs(workdir / "outputs", "512k")  # metrics.csv of 30,001 points is about 1.3 MB
    proc = run_cli(workdir, "trainer.steps=30000", "trainer.log_every=1", "trainer.progress=off", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "could not be written" in proc.stderr and "tracking store only" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (run,) = all_runs(workdir)
    assert run.info.status == "FINISHED" and "local_record_error" in run.data.tags
    assert steps_in_store(workdir, run.info.run_id) == list(range(30001))  # every point, though the disk was full


@pytest.mark.slow
def test_full_disk_under_the_store_keeps_every_point_for_sync(workdir, tmpfs):
    full = tmpfs(workdir / "store", "1500k")
    uri = f"sqlite:///{full / 'mlflow.db'}"
    proc = run_cli(workdir, f"tracking.uri={uri}", "trainer.steps=30000", "trainer.log_every=1", "trainer.progress=off", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]  # training completed; the warning says how to upload
    assert "python -m runner sync" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]  # our paragraph, not MLflow's traceback
    (record,) = list((workdir / "outputs").rglob("record.json"))
    assert json.loads(record.read_text())["synced"] is False
    other = f"sqlite:///{workdir / 'other.db'}"
    synced = run_cli(workdir, "sync", "--tracking-uri", other, timeout=300)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=other)
    (run,) = client.search_runs([client.get_experiment_by_name("runner").experiment_id])
    assert run.info.status == "FINISHED" and steps_in_store(workdir, run.info.run_id, other) == list(range(30001))


@pytest.mark.slow
def test_read_only_store_is_one_clear_paragraph(workdir):
    """A store on a read-only filesystem (a bind mount; permissions do not bind root)."""
    assert run_cli(workdir, "trainer.steps=3").returncode == 0  # a store with its tables and a run
    ro = workdir / "ro"
    ro.mkdir()
    os.replace(workdir / "mlflow.db", ro / "mlflow.db")
    bind = subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here ({bind.stderr.strip()[:200]})")
    try:
        proc = run_cli(workdir, f"tracking.uri=sqlite:///{ro / 'mlflow.db'}", "trainer.steps=3")
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Read-only" in proc.stderr and "Traceback" not in proc.stderr and proc.stderr.count("\n") <= 3, proc.stderr
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


def launchers():
    out = []
    for name, module in (("joblib", "hydra_plugins.hydra_joblib_launcher"), ("submitit_local", "hydra_plugins.hydra_submitit_launcher")):
        try:
            __import__(module)
            out.append(name)
        except ImportError:
            pass
    return out


def sweep(workdir: Path, launcher: str) -> subprocess.Popen:
    """A parallel sweep of four long jobs in a session of its own (a terminal's process group)."""
    extra = {"joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "submitit_local": ["hydra/launcher=submitit_local"]}[launcher]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, "-m", "runner", "-m", *extra, "trainer.seed=0,1,2,3", *LONG], cwd=workdir, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def no_process_left(workdir: Path) -> list[str]:
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(workdir) in text:
            left.append(f"{cmdline.parent.name}: {text[:150]}")
    return left


@pytest.mark.slow
@pytest.mark.parametrize("launcher", launchers())
@pytest.mark.parametrize("how", ["SIGINT to the process group", "SIGTERM to the launcher"])
def test_interrupted_parallel_sweep_leaves_no_child_running(workdir, launcher, how):
    proc = sweep(workdir, launcher)
    try:
        wait_for_points(workdir, n_runs=2, proc=proc, timeout=300)
        if how.startswith("SIGINT"):
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == (130 if how.startswith("SIGINT") else 143), err[-3000:]
    assert "Sweep interrupted" in out, out[-2000:] + err[-2000:]
    runs = all_runs(workdir)
    assert runs and all(r.info.status == "KILLED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    for r in runs:
        if not r.data.tags.get("sweep"):  # each child kept its history: in the store or for sync
            kept = len(store(workdir).get_metric_history(r.info.run_id, "loss"))
            local = Path(r.data.tags["output_dir"]) / "metrics.csv"
            assert kept >= 1 or (local.exists() and local.read_text().strip()), r.info.run_name
    time.sleep(2)
    assert not no_process_left(workdir), no_process_left(workdir)


@pytest.mark.slow
def test_second_ctrl_c_still_closes_the_run_killed(workdir):
    """The first Ctrl-C lands in a long computation outside the loop (the exact reference of a
    hostile but allowed problem is now bounded; a long final evaluation stands in for any), the
    second leaves at once: the MLflow helper closes the run KILLED."""
    proc = start(workdir, *LONG)
    wait_for_points(workdir, proc=proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    deadline = time.time() + 30
    while time.time() < deadline and all_runs(workdir)[0].info.status == "RUNNING":
        time.sleep(0.5)
    (run,) = all_runs(workdir)
    assert run.info.status == "KILLED", run.info.status


@pytest.mark.slow
def test_sigkill_of_the_job_alone_is_closed_by_its_helper(workdir):
    proc = start(workdir, *LONG)
    wait_for_points(workdir, proc=proc)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while time.time() < deadline and all_runs(workdir)[0].info.status == "RUNNING":
        time.sleep(0.5)
    (run,) = all_runs(workdir)
    assert run.info.status == "KILLED" and "without closing" in run.data.tags["error"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One local `mlflow server` on 127.0.0.1 for the module (it takes about 20 s to start)."""
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    info = {"uri": f"http://127.0.0.1:{port}", "folder": folder, "port": port, "proc": mlflow_server(folder, port)}
    yield info
    stop(info["proc"])  # the one running now: a test may have stopped and restarted it


@pytest.mark.slow
def test_server_lost_mid_sweep_exits_nonzero_with_a_summary(workdir, server):
    from mlflow.tracking import MlflowClient

    uri = server["uri"]
    proc = start(workdir, "-m", "trainer.seed=0,1", f"tracking.uri={uri}", "trainer.steps=100000", "trainer.log_every=100",
                 "trainer.progress=off", "tracking.experiment=lost")
    client = MlflowClient(tracking_uri=uri)
    deadline = time.time() + 240
    while time.time() < deadline:
        exp = client.get_experiment_by_name("lost")
        runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'") if exp else []
        if any(not r.data.tags.get("sweep") and client.get_metric_history(r.info.run_id, "loss") for r in runs):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    stop(server["proc"])  # the server dies mid-sweep
    try:
        out, err = proc.communicate(timeout=400)
    finally:
        server["proc"] = mlflow_server(server["folder"], server["port"])  # back, for the checks and other tests
    assert proc.returncode != 0, (out[-2000:], err[-2000:])
    assert "Sweep finished" in out and "did not take everything" in out and "python -m runner sync" in out, out[-3000:]
    assert "Traceback" not in err, err[-3000:]
    records = list((workdir / "multirun").rglob("record.json"))
    assert records  # the job that was running kept its full record (a job started later is refused: no server)
    assert all(sum(line.startswith("loss,") for line in open(r.parent / "metrics.csv")) == 1001 for r in records)
    synced = run_cli(workdir, "sync", "--tracking-uri", uri, str(workdir / "multirun"), timeout=300)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    reaped = run_cli(workdir, "reap", "--tracking-uri", uri, "--experiment", "lost", "--stale-after", "0")
    assert reaped.returncode == 0
    runs = client.search_runs([client.get_experiment_by_name("lost").experiment_id])
    assert runs and all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]

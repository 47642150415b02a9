"""The MLflow helper process (runner/store/helper.py): what it records, how its errors come back, when
it leaves, and that the job's own process never imports MLflow."""
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import all_runs, run_cli, store

from runner.errors import UserError
from runner.store.helper import HelperClient as Recorder
from runner.store import StoreError


@pytest.fixture
def recorder(tmp_path):
    rec = Recorder()
    rec.bind(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield rec
    rec.close()


@pytest.mark.slow
def test_calls_reach_the_store_as_a_client_of_its_own_would_leave_them(recorder, tmp_path):
    exp = recorder.open_experiment("runner")
    assert recorder.open_experiment("runner") == exp  # found, not created twice
    run_id = recorder.create_run(exp, "r1", {"problem": "poly"})
    recorder.log_batch(run_id, metrics=[("loss", 1.0 / (s + 1), 1000 + s, s) for s in range(1500)],  # > MLflow's 1000 per request
                       params=[("optim.lr", "0.1")], tags=[("note", "x")])
    recorder.set_tag(run_id, "other", "y")
    (tmp_path / "a.txt").write_text("hello")
    recorder.log_artifact(run_id, str(tmp_path / "a.txt"))
    recorder.set_terminated(run_id, "FINISHED")
    (run,) = all_runs(tmp_path)
    assert run.info.run_id == run_id and run.info.run_name == "r1" and run.info.status == "FINISHED"
    assert run.data.params == {"optim.lr": "0.1"}
    assert {k: run.data.tags[k] for k in ("problem", "note", "other")} == {"problem": "poly", "note": "x", "other": "y"}
    history = store(tmp_path).get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value, m.timestamp) for m in history) == [(s, 1.0 / (s + 1), 1000 + s) for s in range(1500)]
    assert [f.path for f in store(tmp_path).list_artifacts(run_id)] == ["a.txt"]
    assert recorder.finished_run(exp, "nohash") is None


@pytest.mark.slow
def test_errors_come_back_with_mlflows_message_and_the_helper_carries_on(recorder, tmp_path):
    exp = recorder.open_experiment("runner")
    with pytest.raises(StoreError, match="0123456789abcdef"):
        recorder.log_batch("0123456789abcdef", metrics=[("loss", 1.0, 0, 0)])
    client = store(tmp_path)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(UserError, match="was deleted"):
        recorder.open_experiment("gone")
    assert recorder.create_run(exp, "after", {})  # still answering


@pytest.mark.slow
def test_a_figure_that_cannot_be_drawn_is_a_warning_not_a_store_failure(recorder, tmp_path, caplog):
    exp = recorder.open_experiment("runner")
    recorder.draw_loss_curve([(0, 1.0), (10, 0.5)], str(tmp_path / "ok.png"), "fine")
    recorder.draw_loss_curve([(0, 1.0)], str(tmp_path / "no" / "such" / "dir.png"), "broken")
    with caplog.at_level(logging.WARNING, logger="runner.store.helper"):
        run_id = recorder.create_run(exp, "r", {})  # reads the two answers first
    assert run_id and (tmp_path / "ok.png").stat().st_size > 1000
    assert any("loss curve" in r.message and "dir.png" in r.message for r in caplog.records)


@pytest.mark.slow
def test_a_call_sent_without_waiting_reports_its_failure_with_the_next_call(recorder):
    exp = recorder.open_experiment("runner")
    run_id = recorder.create_run(exp, "r", {})
    recorder.log_batch(run_id, params=[("a", "1")], wait=False)
    recorder.log_batch("0123456789abcdef", metrics=[("loss", 1.0, 0, 0)], wait=False)  # no such run
    recorder.log_batch(run_id, params=[("b", "2")], wait=False)
    with pytest.raises(StoreError, match="0123456789abcdef"):
        recorder.wait()
    recorder.wait()  # reported once
    recorder.set_terminated(run_id, "FINISHED")


@pytest.mark.slow
def test_a_figure_that_raises_leaves_a_finished_record_and_says_why(recorder, tmp_path, caplog):
    from types import SimpleNamespace

    from runner.adapter import ProblemHooks
    from runner.figures import draw_run_figures
    from runner.record_io import StoreLink

    class Broken:
        def initial_params(self, generator, device, dtype): ...
        def loss(self, params): ...

        def figures(self, params):
            raise RuntimeError("no figure today")

    exp = recorder.open_experiment("runner")
    run_id = recorder.create_run(exp, "r", {})
    store = StoreLink(recorder, run_id)
    job = SimpleNamespace(replicas=1, final_params=[{}])
    with caplog.at_level(logging.WARNING, logger="runner"):
        drawn = draw_run_figures(store, ProblemHooks.of(Broken()), job, [(0, 2.0), (10, 1.0)], "r", tmp_path, in_sweep=False)
    assert drawn == [tmp_path / "loss_curve.png"] and store.failed is None
    assert "no figure today" in (tmp_path / "figures_traceback.txt").read_text()
    assert any("could not be drawn" in r.message for r in caplog.records)
    assert store_tags(tmp_path, run_id)["figures_error"] == "RuntimeError: no figure today"


def store_tags(tmp_path, run_id):
    return store(tmp_path).get_run(run_id).data.tags


@pytest.mark.slow
def test_the_helper_leaves_when_its_job_closes_or_dies(tmp_path):
    rec = Recorder()
    rec.bind(f"sqlite:///{tmp_path / 'mlflow.db'}")
    rec.open_experiment("runner")
    rec.close()  # waits for the helper's exit
    assert rec._process.returncode == 0
    # A job process killed outright: its helper reads end-of-file and leaves.
    job = subprocess.Popen([sys.executable, "-c", "from runner.store.helper import HelperClient as Recorder; import sys, time\n"
                            "r = Recorder(); print(r._process.pid, flush=True); time.sleep(600)"],
                           stdout=subprocess.PIPE, text=True)
    helper = int(job.stdout.readline())
    assert _alive(helper)
    job.kill()
    job.wait()
    deadline = time.time() + 30
    while _alive(helper) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(helper)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has left; only its parent's wait is missing


@pytest.mark.slow
def test_the_job_process_never_imports_mlflow(tmp_path):
    """`-X importtime` lists every module the job's own process imports (the helper is started
    without it): torch and hydra, never mlflow."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", "trainer.steps=20", "trainer.progress=off"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "torch" in imported and "hydra" in imported
    assert not [m for m in imported if m.split(".")[0] == "mlflow"]
    (run,) = all_runs(tmp_path)  # and the run is recorded in full all the same
    assert run.info.status == "FINISHED" and len(store(tmp_path).get_metric_history(run.info.run_id, "loss")) == 3
    assert {f.path for f in store(tmp_path).list_artifacts(run.info.run_id)} >= {"loss_curve.png", "fit.png", "result.json"}


@pytest.mark.slow
def test_ctrl_c_in_the_terminal_reaches_the_job_not_its_helper(tmp_path):
    """The helper has a session of its own: a terminal's SIGINT goes to the job's process group only."""
    # The job handles Ctrl-C as a terminal's process does, whatever this test process inherited
    # (a pytest-xdist worker may ignore SIGINT, and an ignored signal stays ignored in a child).
    job = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                            "from runner.store.helper import HelperClient as Recorder\n"
                            "r = Recorder(); print(r._process.pid, flush=True); time.sleep(600)"],
                           stdout=subprocess.PIPE, text=True, start_new_session=True)
    helper = int(job.stdout.readline())
    try:
        assert os.getsid(helper) == helper and os.getpgid(helper) != os.getpgid(job.pid)  # a session of its own
        os.killpg(job.pid, signal.SIGINT)
        job.wait(30)
    finally:
        job.kill()
    assert job.returncode != 0


@pytest.mark.slow
def test_a_forked_process_gets_a_helper_of_its_own(tmp_path):
    from runner.store import helper as module

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = module.helper_for(uri)
    parent.open_experiment("runner")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new helper, and the parent's still answers the parent
        try:
            child = module.helper_for(uri)
            os.write(write, b"1" if child is not parent and child.create_run(child.open_experiment("runner"), "from-child", {}) else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert parent.create_run(parent.open_experiment("runner"), "from-parent", {})
    assert sorted(r.info.run_name for r in all_runs(tmp_path)) == ["from-child", "from-parent"]

"""Sweeps through the real entry point: parent and child runs, failure isolation, each launcher,
Optuna, and a tracking server. Each sweep holds a job that fails on purpose (SGD at its default
learning rate diverges on the poly problem)."""
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import all_runs, run_cli, store, need

STEPS = 200  # loss points per finished child: 0, 10, ..., 190 and the final loss at 200
POINTS = STEPS // 10 + 1


# A job that fails on purpose: sgd at its default lr diverges on poly's loss in y's units (the
# scaled default is made so that it does not).
LOSS_SSE = "problem.loss=sse"


def split(runs):
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


def check_sweep(cwd, proc, n_jobs, client=None, failed_overrides=("optim=sgd",)):
    """What every launcher must leave behind."""
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a job failed on purpose
    client = client or store(cwd)
    exp = client.get_experiment_by_name("runner")
    parent, children = split(client.search_runs([exp.experiment_id], max_results=1000))
    assert len(children) == n_jobs
    assert parent.info.status == "FAILED" and parent.data.metrics["jobs"] == n_jobs
    for child in children:
        failing = "problem=poly" in child.data.tags["overrides"] and any(f in child.data.tags["overrides"] for f in failed_overrides)
        history = client.get_metric_history(child.info.run_id, "loss")
        if failing:
            assert child.info.status == "FAILED" and "diverged" in child.data.tags["error"]
        else:
            assert child.info.status == "FINISHED", child.data.tags.get("error")
            assert [p.step for p in history] == list(range(0, STEPS, 10)) + [STEPS]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.csv", "leaderboard.png", "loss_curves.png"} <= artifacts
    assert "Failed jobs:" in proc.stdout and "diverged" in proc.stdout
    return parent, children


@pytest.mark.slow
def test_basic_sweep_groups_children_under_a_parent(workdir):
    proc = run_cli(workdir, "-m", "problem=poly,puzzle", "optim=adam,sgd,lbfgs", f"trainer.steps={STEPS}", LOSS_SSE)
    parent, children = check_sweep(workdir, proc, 6)
    assert parent.data.params["sweep.overrides"] == f"problem=poly,puzzle optim=adam,sgd,lbfgs trainer.steps={STEPS} {LOSS_SSE}"
    assert parent.data.tags["hydra_launcher"] == "basic"
    # The leaderboard lists every job, best first within each problem (losses of different
    # problems do not compare), and the parent names each problem's best job.
    board = store(workdir).download_artifacts(parent.info.run_id, "leaderboard.csv", str(workdir))
    rows = list(csv.DictReader(open(board)))
    assert len(rows) == 6 and [r["problem"] for r in rows] == ["poly"] * 3 + ["puzzle"] * 3
    for problem in ("poly", "puzzle"):
        ranked = [r for r in rows if r["problem"] == problem]
        assert [r["rank"] for r in ranked] == ["1", "2", "3"]
        finished = [r for r in ranked if r["status"] == "FINISHED"]
        assert ranked[:len(finished)] == finished and [float(r["final_loss"]) for r in finished] == sorted(float(r["final_loss"]) for r in finished)
        best = min((c for c in children if c.info.status == "FINISHED" and c.data.tags["problem"] == problem),
                   key=lambda c: c.data.metrics["final_loss"])
        assert f"{problem}: {best.info.run_id}" in parent.data.tags["best_by_problem"]
    assert "best_run_id" not in parent.data.tags
    # Hydra's conventions: job outputs under hydra.sweep.dir, one folder per job.
    sweep_dir = parent.data.tags["sweep_dir"]
    assert sorted(os.listdir(sweep_dir))[:6] == ["0", "1", "2", "3", "4", "5"]


@pytest.mark.slow
def test_bad_input_in_one_job_refuses_the_whole_sweep(workdir):
    """The README's rule: a value a plugin refuses, anywhere in a sweep, refuses the sweep before
    any job runs (tests/test_config_checks.py has every other kind of bad value)."""
    proc = run_cli(workdir, "-m", "optim.lr=0.1,-1", f"trainer.steps={STEPS}")
    assert proc.returncode == 2, proc.stderr
    assert "optim.lr=-1" in proc.stderr and "learning rate" in proc.stderr and "Traceback" not in proc.stderr
    assert all_runs(workdir) == [] and not (workdir / "multirun").exists()


@pytest.mark.slow
def test_joblib_two_workers_fresh_store(workdir):
    need("hydra_plugins.hydra_joblib_launcher")
    proc = run_cli(workdir, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                   "problem=poly,puzzle", "optim=adam,sgd,lbfgs,nadam", f"trainer.steps={STEPS}", LOSS_SSE)
    parent, _ = check_sweep(workdir, proc, 8)
    assert parent.data.tags["hydra_launcher"] == "joblib"
    assert "database is locked" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_submitit_local(workdir):
    need("hydra_plugins.hydra_submitit_launcher")
    proc = run_cli(workdir, "-m", "hydra/launcher=submitit_local", "problem=poly,puzzle", "optim=adam,sgd", f"trainer.steps={STEPS}", LOSS_SSE)
    parent, _ = check_sweep(workdir, proc, 4)
    assert parent.data.tags["hydra_launcher"] == "submitit_local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_cluster_on_loopback(workdir):
    need("hydra_plugins.hydra_ray_launcher")
    ray = shutil.which("ray", path=os.path.dirname(sys.executable))
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cluster_dir = workdir / "cluster"  # workers start here, not in the launch directory
    cluster_dir.mkdir()
    subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                    "--include-dashboard=false", "--disable-usage-stats"], cwd=cluster_dir, env=env, check=True,
                   capture_output=True, timeout=180)
    try:
        proc = run_cli(workdir, "-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address=127.0.0.1:{port}",
                       "problem=poly,puzzle", "optim=adam,sgd", f"trainer.steps={STEPS}", LOSS_SSE, env={"RAY_AUTH_MODE": "disabled"})
        parent, _ = check_sweep(workdir, proc, 4)
        assert parent.data.tags["hydra_launcher"] == "ray_cluster"
        assert not (cluster_dir / "mlflow.db").exists()
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.mark.slow
def test_optuna_search_records_trials_and_best(workdir):
    need("optuna")
    # SGD's learning rate over 7 decades: the large ones diverge, and the search goes on.
    proc = run_cli(workdir, "hparams_search=poly_adam_lr", "optim=sgd", "hydra.sweeper.n_trials=8", LOSS_SSE,
                   "hydra.sweeper.sampler=random", "hydra.sweeper.params={optim.lr: 'tag(log, interval(1e-8, 0.1))'}")
    parent, children = split(all_runs(workdir))
    assert len(children) == 8 and parent.data.tags["hydra_sweeper"] == "optuna"
    statuses = {c.info.status for c in children}
    assert statuses == {"FINISHED", "FAILED"}, statuses
    assert proc.returncode == 1
    best = min((c for c in children if c.info.status == "FINISHED"), key=lambda c: c.data.metrics["final_loss"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.params["best.optim.lr"] == best.data.params["optim.lr"]
    lrs = sorted(float(c.data.params["optim.lr"]) for c in children)
    assert lrs[0] < 1e-5 < lrs[-1] and len(set(lrs)) == 8  # sampled on a log scale
    results = (workdir / parent.data.tags["sweep_dir"] / "optimization_results.yaml").read_text()
    assert "best_params" in results and "failed_trials" in results


@pytest.mark.slow
def test_parallel_sweep_against_a_tracking_server(workdir):
    need("hydra_plugins.hydra_joblib_launcher")
    from mlflow.tracking import MlflowClient

    port = free_port()
    mlflow_bin = shutil.which("mlflow", path=os.path.dirname(sys.executable))
    server = subprocess.Popen(
        [mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}", "--artifacts-destination", str(workdir / "server-artifacts")],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(uri + "/health", timeout=2).read()
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "mlflow server did not start"
                time.sleep(0.5)
        proc = run_cli(workdir, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"tracking.uri={uri}",
                       "problem=poly,puzzle", "optim=adam,sgd", f"trainer.steps={STEPS}", LOSS_SSE)
        check_sweep(workdir, proc, 4, client=MlflowClient(tracking_uri=uri))
        assert not (workdir / "mlflow.db").exists()  # everything went to the server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.slow
def test_a_sweep_over_list_values_exits_0_with_the_best_values_whole(workdir):
    """List values hold commas, brackets, quotes and spaces: the parent records the best job's
    values whole (`best.*` params), and the console shows each job's overrides whole."""
    proc = run_cli(workdir, "-m", "problem=puzzle", 'problem.equations=["x + y = 3", "x - y = 1"]',
                   "optim.betas=[0.9,0.99],[0.5,0.9]", "trainer.steps=5")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    parent, children = split(all_runs(workdir))
    assert parent.info.status == "FINISHED" and len(children) == 2
    best = min(children, key=lambda c: c.data.metrics["final_loss"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    params = parent.data.params
    assert json.loads(params["best.problem.equations"]) == ["x + y = 3", "x - y = 1"], params
    assert json.loads(params["best.optim.betas"]) == json.loads(best.data.params["optim.betas"])
    assert sorted(k for k in params if k.startswith("best.")) == ["best.optim.betas", "best.problem", "best.problem.equations", "best.trainer.steps"]
    assert 'problem.equations=["x + y = 3","x - y = 1"]' in proc.stdout  # once, shared by every job

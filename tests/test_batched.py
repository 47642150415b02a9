"""The batched launcher (hydra/launcher=batched) through the real entry point: a batched job's
record equals the basic launcher's for the same overrides; jobs that cannot batch run the basic
way in the same sweep; one diverging job fails alone."""
import json
import math
import os
import signal
from pathlib import Path

import pytest
import yaml
from conftest import all_runs, need, run_cli, store
from test_examples import installed  # noqa: F401  (the example plugins, pip-installed once)
from test_faults_lifecycle import tmpfs  # noqa: F401  (a small filesystem: a store whose disk fills up)

STEPS = 30


def children_by_overrides(cwd, experiment):
    runs = all_runs(cwd, experiment)
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    assert len(parents) == 1
    strip = lambda o: " ".join(x for x in o.split() if not x.startswith("tracking.experiment="))  # noqa: E731
    return parents[0], {strip(r.data.tags["overrides"]): r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}


def history(cwd, run, key="loss"):
    return [(p.step, p.value) for p in store(cwd).get_metric_history(run.info.run_id, key)]


def close(a, b, rel=1e-9):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))


def same_record(cwd, basic, batched):
    """The batched job's record against the basic one's: status, history, solution, params."""
    assert batched.info.status == basic.info.status, (basic.data.tags.get("error"), batched.data.tags.get("error"))
    hb, hc = history(cwd, basic), history(cwd, batched)
    assert [s for s, _ in hb] == [s for s, _ in hc]
    assert all(close(a, b) for (_, a), (_, b) in zip(hb, hc)), (hb, hc)
    for key in ("evals", "loss_evals", "grad_evals"):
        assert history(cwd, basic, key) == history(cwd, batched, key)
    assert {k: v for k, v in batched.data.params.items() if k != "tracking.experiment"} == \
        {k: v for k, v in basic.data.params.items() if k != "tracking.experiment"}
    assert batched.data.tags["config_hash"] == basic.data.tags["config_hash"]
    assert batched.info.run_name == basic.info.run_name
    # The derived config (no Hydra compose of its own) is Hydra's, as the job folder keeps it.
    import yaml

    configs = [yaml.safe_load((Path(r.data.tags["output_dir"]) / "config.yaml").read_text()) for r in (basic, batched)]
    for c in configs:
        c["tracking"].pop("experiment")
    assert configs[0] == configs[1]
    rb = json.loads((Path(basic.data.tags["output_dir"]) / "result.json").read_text())
    rc = json.loads((Path(batched.data.tags["output_dir"]) / "result.json").read_text())
    assert rb["steps"] == rc["steps"] and close(rb["final_loss"], rc["final_loss"])
    for name, value in rb["solution"].items():
        values = value if isinstance(value, list) else [value]
        other = rc["solution"][name] if isinstance(value, list) else [rc["solution"][name]]
        assert all(close(x, y, 1e-8) for x, y in zip(values, other)), (name, value, rc["solution"][name])
    assert set(batched.data.metrics) == set(basic.data.metrics)
    # The best point seen, at the same check points as a job alone: its loss, step, solution, metrics.
    assert rb["best"]["step"] == rc["best"]["step"] and close(rb["best"]["loss"], rc["best"]["loss"]), (rb["best"], rc["best"])
    assert rb["final"]["step"] == rc["final"]["step"] and close(rb["final"]["loss"], rc["final"]["loss"])
    for block in ("best", "final"):
        for name, value in rb[block]["solution"].items():
            values = value if isinstance(value, list) else [value]
            other = rc[block]["solution"][name] if isinstance(value, list) else [rc[block]["solution"][name]]
            assert all(close(x, y, 1e-8) for x, y in zip(values, other)), (block, name, value, rc[block]["solution"][name])
    for key in (k for k in basic.data.metrics if k.startswith("best_")):  # absolute too: a distance near 0 magnifies round-off
        a, b = basic.data.metrics[key], batched.data.metrics[key]
        assert math.isclose(a, b, rel_tol=1e-8, abs_tol=1e-8) or (math.isnan(a) and math.isnan(b)), (key, a, b)
    artifacts = lambda r: {a.path for a in store(cwd).list_artifacts(r.info.run_id)}  # noqa: E731
    assert artifacts(batched) == artifacts(basic)


@pytest.mark.slow
@pytest.mark.parametrize("sweep", [
    # adam, adamw, rmsprop: torch's rules with per-job tensors; nadam: each job's own optimiser
    ("problem=poly", "optim=adam,adamw,rmsprop,nadam", "optim.lr=0.01,0.05", "trainer.seed=0,1"),
    ("problem=puzzle", "optim=sgd", "optim.lr=0.01,0.02", "optim.momentum=0,0.9", "optim.weight_decay=0,0.1"),
    # gd (per-job lr) whose step size grows 4x at step 24 (test_best's overshoot): the best point is an earlier check point
    ("problem=poly", "optim=gd", "optim.lr=0.7,0.65", "sched=multistep", "sched.milestones=[24]", "sched.gamma=4", "trainer.seed=0,1,2,3"),
], ids=["poly-adaptive", "puzzle-sgd", "poly-gd-overshoot"])
def test_a_batched_job_records_what_the_basic_launcher_records(workdir, sweep):
    common = ("-m", *sweep, f"trainer.steps={STEPS}", "trainer.dtype=float64", "trainer.check_every=7")
    basic = run_cli(workdir, *common, "tracking.experiment=basic")
    assert basic.returncode == 0, basic.stderr[-3000:]
    batched = run_cli(workdir, *common, "hydra/launcher=batched", "tracking.experiment=batched")
    assert batched.returncode == 0, batched.stderr[-3000:]
    _, basic_runs = children_by_overrides(workdir, "basic")
    parent, batched_runs = children_by_overrides(workdir, "batched")
    assert parent.data.tags["hydra_launcher"] == "batched"
    assert set(basic_runs) == set(batched_runs) and len(batched_runs) >= 8
    for overrides, run in batched_runs.items():
        assert "batch" in run.data.tags, overrides  # every job ran in a batch
        same_record(workdir, basic_runs[overrides], run)
    if "sched=multistep" in sweep:  # the case is there for best points before the end: some job has one
        assert any(r.data.metrics["best_step"] < r.data.metrics["steps"] for r in batched_runs.values())


@pytest.mark.slow
def test_a_mixed_sweep_batches_what_it_can_and_one_diverging_job_fails_alone(workdir):
    """sgd jobs share a batch, one of them diverging (on the sse loss: poly's default, the scaled
    one, is stable at that step size); lbfgs (not elementwise) runs the basic way."""
    proc = run_cli(workdir, "-m", "hydra/launcher=batched", "problem.loss=sse", "optim=sgd,lbfgs", "optim.lr=0.001,1e-6,1e-7",
                   "trainer.steps=40", "trainer.seed=3")
    assert proc.returncode == 1, proc.stderr[-3000:]  # a job failed
    parent, runs = children_by_overrides(workdir, "runner")
    assert len(runs) == 6 and parent.info.status == "FAILED"
    sgd = {o: r for o, r in runs.items() if "optim=sgd" in o}
    lbfgs = {o: r for o, r in runs.items() if "optim=lbfgs" in o}
    assert all("batch" in r.data.tags for r in sgd.values()) and len({r.data.tags["batch"] for r in sgd.values()}) == 1
    assert not any("batch" in r.data.tags for r in lbfgs.values())
    diverged = runs["problem.loss=sse optim=sgd optim.lr=0.001 trainer.steps=40 trainer.seed=3"]
    assert diverged.info.status == "FAILED" and diverged.data.tags["error"].startswith("diverged: the loss became")
    steps = [s for s, _ in history(workdir, diverged)]
    assert steps and steps[-1] < 40  # its history up to the divergence
    for overrides, run in runs.items():
        if run is not diverged:
            assert run.info.status == "FINISHED", (overrides, run.data.tags.get("error"))
            assert [s for s, _ in history(workdir, run)] == list(range(0, 40, 10)) + [40]
            assert (Path(run.data.tags["output_dir"]) / "result.json").exists()
    assert "diverged" in proc.stdout and "Failed jobs:" in proc.stdout


@pytest.mark.slow
def test_sigterm_mid_batch_leaves_every_job_killed_with_its_history(workdir):
    from test_faults import start, wait_for_points

    proc = start(workdir, "-m", "hydra/launcher=batched", "optim.lr=0.01,0.02", "trainer.seed=0,1", "trainer.steps=100000000")
    try:
        wait_for_points(workdir, n_runs=4, points=3, proc=proc, timeout=300)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-3000:]
    assert "Sweep interrupted" in out, out[-2000:] + err[-2000:]
    parent, runs = children_by_overrides(workdir, "runner")
    assert parent.info.status == "KILLED" and len(runs) == 4
    for overrides, run in runs.items():
        assert run.info.status == "KILLED", (overrides, run.info.status)
        assert run.data.tags["error"] == "terminated (SIGTERM)" and "batch" in run.data.tags
        assert len(history(workdir, run)) >= 3  # its history so far
        record = json.loads((Path(run.data.tags["output_dir"]) / "record.json").read_text())
        assert record["status"] == "KILLED"


@pytest.mark.slow
def test_skip_finished_works_across_launchers(workdir):
    """Jobs finished by the basic launcher are not rerun by the batched one, and the other way round."""
    common = ("trainer.steps=20", "tracking.skip_finished=true")
    assert run_cli(workdir, "-m", "trainer.seed=0,1", *common).returncode == 0
    proc = run_cli(workdir, "-m", "hydra/launcher=batched", "trainer.seed=0,1,2,3", *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("already FINISHED") == 2
    runs = all_runs(workdir)
    parents = sorted((r for r in runs if r.data.tags.get("sweep") == "true"), key=lambda r: r.info.start_time)
    second = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[1].info.run_id]
    assert sorted("reused_run_id" in r.data.tags for r in second) == [False, False, True, True]
    assert all("batch" in r.data.tags for r in second if "reused_run_id" not in r.data.tags)
    proc = run_cli(workdir, "-m", "trainer.seed=0,1,2,3", *common)  # basic: all four already finished
    assert proc.returncode == 0 and proc.stdout.count("already FINISHED") == 4, proc.stdout[-2000:]


@pytest.mark.slow
def test_job_folders_named_by_overrides_are_the_basic_launchers(workdir):
    """`hydra.sweep.subdir=${hydra.job.override_dirname}`: each batched job gets the folder Hydra
    names for it, as with the basic launcher (not every job of a batch in its first job's)."""
    folders = {}
    for launcher in ("batched", "basic"):
        proc = run_cli(workdir, "-m", f"hydra/launcher={launcher}", "optim.lr=0.01,0.1", "trainer.seed=0,1", "trainer.steps=5",
                       "hydra.sweep.subdir=${hydra.job.override_dirname}", f"hydra.sweep.dir=sweep-{launcher}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        folders[launcher] = sorted(p.parent.name for p in (workdir / f"sweep-{launcher}").glob("*/record.json"))
    assert len(folders["batched"]) == 4 and folders["batched"] == folders["basic"], folders
    batched = [r for r in all_runs(workdir) if "batch" in r.data.tags]
    assert len({r.data.tags["output_dir"] for r in batched}) == 4


@pytest.mark.slow
def test_a_third_party_elementwise_optimiser_is_batched(workdir, installed):
    """examples/rosenbrock's SignSGD declares itself elementwise: its jobs share a batch (each job
    its own SignSGD on its slice), with the basic launcher's results."""
    common = ("-m", "problem=rosenbrock", "optim=signsgd", "optim.lr=0.001,0.002", "trainer.seed=0,1", "trainer.steps=25", "trainer.dtype=float64")
    assert run_cli(workdir, *common, "tracking.experiment=basic", env=installed).returncode == 0
    proc = run_cli(workdir, *common, "hydra/launcher=batched", "tracking.experiment=batched", env=installed)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, basic_runs = children_by_overrides(workdir, "basic")
    _, batched_runs = children_by_overrides(workdir, "batched")
    assert set(basic_runs) == set(batched_runs) and len(batched_runs) == 4
    for overrides, run in batched_runs.items():
        assert "per-job" in run.data.tags["batch"]
        same_record(workdir, basic_runs[overrides], run)


def optuna_children(cwd):
    """The sweep's parent and its children by job number (= Optuna's trial number)."""
    runs = all_runs(cwd)
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "true"]
    return parent, {int(r.data.tags["sweep_job"]): r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}


@pytest.mark.slow
def test_optuna_trials_asked_together_run_as_one_batch_and_tell_their_own_values(workdir):
    """n_jobs=4 trials asked at once: the adam ones share a batch, an lbfgs one (not elementwise)
    or one alone in its ask runs the basic way; each trial is its own FINISHED child whose final
    loss is the value Optuna holds for it (read back from the study's storage)."""
    optuna = need("optuna")
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    proc = run_cli(workdir, "-m", "hydra/sweeper=optuna", "hydra/launcher=batched", "hydra.sweeper.n_jobs=4", "hydra.sweeper.n_trials=8",
                   "hydra.sweeper.sampler=random", "hydra.sweeper.seed=3", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=s",
                   "optim.lr=tag(log,interval(1e-4,0.5))", "optim=choice(adam,lbfgs)", "trainer.steps=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = optuna_children(workdir)
    trials = {t.number: t for t in optuna.load_study(study_name="s", storage=storage).trials}
    assert sorted(children) == sorted(trials) == list(range(8))
    asks = [[n for n in range(start, start + 4)] for start in (0, 4)]
    batched = 0
    for ask in asks:
        adam = [n for n in ask if trials[n].params["optim"] == "adam"]
        for n in ask:
            run, trial = children[n], trials[n]
            assert run.info.status == "FINISHED" and trial.state == optuna.trial.TrialState.COMPLETE, (n, run.data.tags.get("error"))
            assert run.data.tags["optim"] == trial.params["optim"] and float(run.data.params["optim.lr"]) == trial.params["optim.lr"]
            assert trial.value == run.data.metrics["final_loss"], (n, trial.value, run.data.metrics["final_loss"])
            # batched exactly when it is adam and not alone in its ask; every batched one names its ask's batch
            assert ("batch" in run.data.tags) == (n in adam and len(adam) > 1), (n, trial.params, run.data.tags.get("batch"))
            if "batch" in run.data.tags:
                assert run.data.tags["batch"] == children[adam[0]].data.tags["batch"] and f"({len(adam)} jobs;" in run.data.tags["batch"]
                batched += 1
    assert batched >= 2 and any(t.params["optim"] == "lbfgs" for t in trials.values())  # both paths taken with this seed
    assert proc.stdout.count("Batch ") + proc.stderr.count("Batch ") >= 1
    best = min(children.values(), key=lambda r: r.data.metrics["final_loss"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    results = yaml.safe_load((Path(parent.data.tags["sweep_dir"]) / "optimization_results.yaml").read_text())
    assert results["best_value"] == best.data.metrics["final_loss"] and results["best_trial"] == int(best.data.tags["sweep_job"])


@pytest.mark.slow
def test_an_optuna_preset_runs_through_the_batched_launcher(workdir):
    """hparams_search=puzzle_nadam asks 2 trials at a time: the pair is one batch (nadam: each
    job's own optimiser on its slice), and the parent's best is the best child."""
    need("optuna")
    proc = run_cli(workdir, "hparams_search=puzzle_nadam", "hydra/launcher=batched", "hydra.sweeper.n_trials=2", "trainer.steps=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, children = optuna_children(workdir)
    assert sorted(children) == [0, 1] and all(r.info.status == "FINISHED" for r in children.values())
    batches = {r.data.tags.get("batch") for r in children.values()}
    assert len(batches) == 1 and "(2 jobs; per-job" in batches.pop()
    best = min(children.values(), key=lambda r: r.data.metrics["final_loss"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert float(parent.data.params["best.optim.lr"]) == float(best.data.params["optim.lr"])


def fill_up(path: Path) -> None:
    """Take every byte left on path's filesystem."""
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 16))
        except OSError:
            pass


@pytest.mark.slow
def test_a_batched_sweep_whose_store_fills_up_mid_run_keeps_each_record_and_sync_uploads_each_once(workdir, tmpfs):
    """The store's disk is full for a few seconds while a batch runs, then has room again: the
    batch goes on, each job's folder keeps its full record, the sweep says that the store did not
    take everything (exit 1; its runs there look closed but lack points), and `sync` completes
    each job's own run, each point once."""
    import time

    from test_faults import start, wait_for_points

    disk = tmpfs(workdir / "store", "16m")
    uri = f"sqlite:///{disk / 'mlflow.db'}"
    proc = start(workdir, "-m", "hydra/launcher=batched", "trainer.seed=0,1,2", f"tracking.uri={uri}", "trainer.steps=30000",
                 "trainer.log_every=300", "trainer.progress=off")
    try:
        wait_for_points(disk, n_runs=3, points=2, proc=proc)
        fill_up(disk / "filler")
        time.sleep(3)  # a few of the batch's writes (one a second) fail
        (disk / "filler").unlink()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, out[-2000:] + err[-3000:]
    assert "did not take everything" in out and "python -m runner sync" in out, out[-3000:]
    steps = list(range(0, 30000, 300)) + [30000]
    client = store(disk)
    records = sorted((workdir / "multirun").rglob("record.json"))
    assert len(records) == 3
    for path in records:
        record = json.loads(path.read_text())
        assert record["synced"] is False and record["status"] == "FINISHED"
        lines = (path.parent / "metrics.csv").read_text().splitlines()
        assert [int(line.split(",")[1]) for line in lines if line.startswith("loss,")] == steps
        kept = len(client.get_metric_history(record["run_id"], "loss"))
        assert 1 <= kept < len(steps), kept  # the store was lost mid-run
    synced = run_cli(workdir, "sync", "--tracking-uri", uri, str(workdir / "multirun"))
    assert synced.returncode == 0 and "3 record(s) synced" in synced.stdout, synced.stdout + synced.stderr
    again = run_cli(workdir, "sync", "--tracking-uri", uri, str(workdir / "multirun"))
    assert "Nothing to sync" in again.stdout, again.stdout + again.stderr
    children = [r for r in all_runs(disk) if r.data.tags.get("sweep") != "true"]
    assert sorted(r.info.run_id for r in children) == sorted(json.loads(p.read_text())["run_id"] for p in records)  # no new run
    for run in children:
        assert run.info.status == "FINISHED" and "batch" in run.data.tags
        assert [p.step for p in sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda p: p.step)] == steps
        result = json.loads((Path(run.data.tags["output_dir"]) / "result.json").read_text())
        assert run.data.metrics["final_loss"] == result["final_loss"]


def helpers_of(pid: int) -> list[int]:
    """The MLflow helper processes (runner/store/helper.py) started by process `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"runner.store.helper" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize("killed", ["the sweep's process", "the sweep and its MLflow helper"])
def test_sigkill_mid_batch_leaves_no_batch_run_running_for_good(workdir, killed):
    """SIGKILL of the sweep alone (the OOM killer): its MLflow helper closes every run of the batch
    KILLED. Of both (power loss): the runs stay RUNNING with their history so far until
    `python -m runner reap` closes them KILLED, as for a job alone."""
    from test_faults import start, wait_for_points

    proc = start(workdir, "-m", "hydra/launcher=batched", "trainer.seed=0,1", "trainer.steps=100000000", "trainer.progress=off")
    try:
        wait_for_points(workdir, n_runs=2, points=2, proc=proc)
        if killed.endswith("helper"):
            helpers = helpers_of(proc.pid)
            assert helpers
            for helper in helpers:
                os.kill(helper, signal.SIGKILL)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    children = lambda: [r for r in all_runs(workdir) if r.data.tags.get("sweep") != "true"]  # noqa: E731
    kept = {r.info.run_id: len(history(workdir, r)) for r in children()}
    assert len(kept) == 2 and min(kept.values()) >= 2, kept
    if killed.endswith("helper"):
        assert all(r.info.status == "RUNNING" for r in all_runs(workdir))  # nobody could close them
        assert "0 stale run(s)" in run_cli(workdir, "reap", "--stale-after", "3600").stdout  # recent: not touched
        reaped = run_cli(workdir, "reap", "--stale-after", "0")
        assert reaped.returncode == 0 and all(run_id in reaped.stdout for run_id in kept), reaped.stdout
        reason = "heartbeat"
    else:
        import time

        deadline = time.time() + 60
        while time.time() < deadline and any(r.info.status == "RUNNING" for r in children()):
            time.sleep(0.5)
        reason = "without closing"
    for run in children():
        assert run.info.status == "KILLED" and reason in run.data.tags["error"] and "batch" in run.data.tags, (run.info.status, run.data.tags.get("error"))
        assert len(history(workdir, run)) == kept[run.info.run_id]  # its history so far, untouched
        assert (Path(run.data.tags["output_dir"]) / "metrics.csv").read_text().count("loss,") >= kept[run.info.run_id]
    assert not [r.info.run_name for r in all_runs(workdir) if r.info.status == "RUNNING"]  # the sweep's parent too

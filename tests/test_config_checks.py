"""No silent mistakes in the config: a key that is not part of the schema, a plugin name that is not
registered, a value of the wrong type, anywhere in a run or a sweep, is refused before anything is
run, made or recorded; a run is named from the values it used; `--cfg job` shows the defaults used."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, all_runs, run_cli


def _nothing_left(workdir):
    assert all_runs(workdir) == []
    for folder in ("outputs", "multirun"):
        assert not (workdir / folder).exists(), f"{folder} left behind: {list((workdir / folder).rglob('*'))}"


REFUSED = [
    # (overrides, the key named, the nearest valid key suggested)
    (["+lr=0.01", "trainer.steps=10"], "'lr'", "did you mean optim.lr?"),
    (["+trainer.step=500"], "'trainer.step'", "did you mean trainer.steps?"),
    (["trainer.step=500"], "'trainer.step'", "did you mean trainer.steps?"),
    (["++trainer.stepz=5"], "'trainer.stepz'", "did you mean trainer.steps?"),
    (["+seed=3"], "'seed'", "did you mean trainer.seed?"),
    (["+problem.n_sample=5"], "'problem.n_sample'", "did you mean problem.n_samples?"),
    (["optim=sgd", "optim.betas=[0.8,0.9]"], "'optim.betas'", "sgd has no argument 'betas'"),
    (["tracking.experimnt=x"], "'tracking.experimnt'", "did you mean tracking.experiment?"),
]


@pytest.mark.slow  # one process per case (the quick subset keeps one of each kind below)
@pytest.mark.parametrize("overrides, key, hint", REFUSED, ids=[" ".join(c[0]) for c in REFUSED])
def test_a_key_outside_the_schema_is_refused_with_or_without_plus(workdir, overrides, key, hint):
    proc = run_cli(workdir, *overrides)
    message = proc.stderr + proc.stdout
    assert proc.returncode == 2, message
    assert key in message and hint in message.lower(), message
    assert "Traceback" not in message and "To append" not in message and "+x" not in message
    assert len(proc.stderr.strip().splitlines()) == 1, message  # one paragraph
    _nothing_left(workdir)


def test_hydra_keys_are_left_to_hydra(workdir):
    proc = run_cli(workdir, "trainer.steps=5", "hydra.run.dir=here", "hydra.job.name=x")
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "here" / "result.json").exists()


@pytest.mark.slow  # one process per case (the quick subset keeps one of each kind below)
def test_a_run_is_named_from_the_values_used(workdir):
    for lr in ("1e-2", "0.01"):
        assert run_cli(workdir, f"optim.lr={lr}", "trainer.steps=5", "trainer.tol=1").returncode == 0
    names = {r.info.run_name for r in all_runs(workdir)}
    # 1e-2 and 0.01 are the same value; tol=1 is converted to the float it is
    assert names == {"poly-adam-lr=0.01-steps=5-tol=1.0"}, names


def test_a_run_named_after_the_plugin_used(workdir):
    proc = run_cli(workdir, "experiment=tutorial_puzzle", "optim=adam", "trainer.steps=5")
    assert proc.returncode == 0, proc.stderr
    [run] = all_runs(workdir)
    assert run.info.run_name.split("-")[:3] == ["tutorial_puzzle", "puzzle", "adam"], run.info.run_name


SWEEPS_REFUSED = [
    (["optim=adam,adma"], ["'adma'", "closest first: adamax, adam"]),
    (["problem=poly,polly"], ["'polly'", "closest first: poly"]),
    (["sched=cosine,cosin"], ["'cosin'", "cosine"]),
    (["experiment=tutorial_poly,tutorial_pol"], ["'tutorial_pol'", "tutorial_poly"]),
    (["trainer.steps=10,ten"], ["trainer.steps", "'ten'", "integer"]),
    (["trainer.steps=10,0"], ["trainer.steps=0", "at least 1"]),
    (["optim=adam,sgd", "optim.lr=-1"], ["optim.lr=-1", "Invalid learning rate"]),  # a fixed value every job would fail on
    (["optim=adam,sgd", "problem.n_samples=0"], ["problem.n_samples=0", "at least 1"]),
    (["trainer.dtype=float32,float46"], ["trainer.dtype='float46'", "float64"]),
    (["trainer.device=cpu,cpuu"], ["trainer.device='cpuu'", "cuda:N"]),
    (["optim.lr=0.1,fast"], ["optim.lr", "'fast'", "number"]),
    (["trainer.step=5,10"], ["'trainer.step'", "Did you mean trainer.steps?"]),
    (["optim=adam,sgd", "optim.momentum=0.9"], ["optim.momentum", "sgd but not of adam"]),
    (["hparams_search=poly_adam_lr", "hydra.sweeper.params.optim.lrr=interval(0.1,1)"], ["'optim.lrr'", "Did you mean optim.lr?"]),
]


@pytest.mark.slow  # one process per case (the quick subset keeps one of each kind below)
@pytest.mark.parametrize("overrides, fragments", SWEEPS_REFUSED, ids=[" ".join(c[0]) for c in SWEEPS_REFUSED])
def test_a_bad_value_anywhere_in_a_sweep_refuses_the_whole_sweep(workdir, overrides, fragments):
    proc = run_cli(workdir, "-m", "trainer.steps=5", *overrides) if not overrides[0].startswith("trainer.steps") \
        else run_cli(workdir, "-m", *overrides)
    message = proc.stderr + proc.stdout
    assert proc.returncode == 2, message
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in message and "[job" not in message
    _nothing_left(workdir)  # no job ran, no parent run was opened


@pytest.mark.slow  # one process per case (the quick subset keeps one of each kind below)
def test_a_good_sweep_still_runs(workdir):
    proc = run_cli(workdir, "-m", "optim=adam,sgd", "trainer.steps=5", "optim.lr=0.01")
    assert proc.returncode == 0, proc.stderr
    assert len(all_runs(workdir)) == 3  # the parent and two jobs


def test_a_deleted_plugin_argument_is_recorded_with_the_default_used(workdir):
    # `~optim.lr` leaves the plugin's own default (adam: 0.1) to the run: its name and params say so
    proc = run_cli(workdir, "~optim.lr", "trainer.steps=5")
    assert proc.returncode == 0, proc.stderr
    [run] = all_runs(workdir)
    assert run.data.params.get("optim.lr") == "0.1", run.data.params
    assert run.info.run_name == "poly-adam-lr=0.1-steps=5", run.info.run_name



@pytest.mark.slow  # a sweep of two jobs
def test_no_schedule_is_sched_null_alone_and_in_a_sweep(workdir):
    # the list of valid sched names offers `null (no schedule)`: Hydra's group override took None
    # for a config name and raised (a traceback, and a sweep's empty parent run)
    proc = run_cli(workdir, "sched=null", "trainer.steps=5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli(workdir, "-m", "sched=null,cosine", "trainer.steps=5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = all_runs(workdir)
    assert sorted(r.data.tags.get("sched", "-") for r in runs if r.data.tags.get("problem")) == ["-", "-", "cosine"], runs

def test_cfg_job_shows_the_defaults_the_run_uses(workdir):
    proc = run_cli(workdir, "--cfg", "job", "--package", "problem")
    assert proc.returncode == 0, proc.stderr
    assert "coefficients: null" not in proc.stdout, proc.stdout
    assert "- 1" in proc.stdout and "- 3" in proc.stdout, proc.stdout


def test_refused_input_leaves_no_run_folder(workdir):
    # refused when the job is built, after Hydra made the run folder
    proc = run_cli(workdir, "problem.n_samples=0")
    assert proc.returncode == 2, proc.stderr
    _nothing_left(workdir)
    assert run_cli(workdir, "trainer.steps=5").returncode == 0
    assert len(list((workdir / "outputs").glob("*/*"))) == 1  # a run that ran keeps its folder


@pytest.mark.slow
def test_ctrl_c_before_the_run_exists_says_nothing_was_recorded(workdir):
    """SIGINT while the problem is being built (a large sample): no run exists yet."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "problem.n_samples=30000000", "problem.degree=12", "trainer.steps=5"],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list(workdir.glob("outputs/*/*/.hydra")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # Hydra made the run folder: the task has started
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    runs = all_runs(workdir)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    if runs:  # the machine was fast enough to create it: then it is KILLED and said so
        assert "recorded KILLED" in err and [r.info.status for r in runs] == ["KILLED"]
    else:
        assert "recorded KILLED" not in err and "nothing was recorded" in err, err


def test_refused_input_in_a_users_own_run_folder_removes_nothing_of_theirs(workdir):
    (workdir / "keep.txt").write_text("mine\n")
    proc = run_cli(workdir, "hydra.run.dir=.", "problem.n_samples=0")
    assert proc.returncode == 2, proc.stderr
    assert (workdir / "keep.txt").read_text() == "mine\n"


@pytest.mark.slow
def test_ctrl_c_while_importing_says_nothing_was_recorded(workdir):
    """SIGINT a moment after start, while torch and the plugins are imported: before Hydra."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "runner", "trainer.steps=5"], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "nothing was recorded" in err, err
    assert all_runs(workdir) == [] and not (workdir / "outputs").exists()


def test_a_typo_is_refused_with_the_nearest_key(workdir):
    """The quick subset's case of the slow parametrised ones above."""
    proc = run_cli(workdir, "-m", "trainer.step=5,10")
    assert proc.returncode == 2 and "Did you mean trainer.steps?" in proc.stderr, proc.stderr
    _nothing_left(workdir)


def test_a_sweep_over_lists_of_quoted_strings_is_checked_value_by_value():
    """Each value of `k=["a b"],["c"]` is a list of plain strings, tried on the problem as typed."""
    from runner.errors import UserError
    from runner.override_check import check

    check(["-m", "problem=puzzle", 'problem.equations=["x + y = 3", "x - y = 1"],["x = 2"]'])
    with pytest.raises(UserError, match="problem.equations"):
        check(["-m", "problem=puzzle", 'problem.equations=["x + y = 3"],["x = = 2"]'])

"""Each kind of bad input: a clear message naming what is wrong, non-zero exit, no traceback,
and nothing left RUNNING in MLflow."""
import pytest
from conftest import all_runs, run_cli

CASES = [
    (["problem=nope"], ["problem=nope", "poly", "puzzle"]),
    (["optim=nope"], ["optim=nope", "adam", "lbfgs"]),
    (["+problem.foo=1"], ["problem.foo", "arguments", "n_samples"]),
    (["problem.foo=1"], ["problem.foo"]),
    (["trainer.foo=1"], ["trainer.foo"]),
    (["problem.n_samples=abc"], ["problem.n_samples", "integer"]),
    (["trainer.steps=abc"], ["trainer.steps", "Integer"]),
    (["optim.lr=-0.1"], ["optim=adam", "learning rate", "-0.1"]),
    (["trainer.steps=0"], ["trainer.steps=0", "at least 1"]),
    (["problem.data=/no/such.csv"], ["problem.data", "cannot be read", "x' and 'y'"]),
    (["problem=puzzle", "problem.equations=['A*B = 3']"], ["A*B = 3", "not linear"]),
    (["problem=puzzle", "problem.equations=['A + = 9', 'B = 1']"], ["A + = 9", "malformed"]),
    (["trainer.device=cuda:7"], ["trainer.device=cuda:7", "not available"]),
    (["trainer.device=tpu"], ["trainer.device", "allowed: auto, cpu, cuda, cuda:N"]),
    (["trainer.dtype=float16"], ["trainer.dtype", "float32, float64"]),
    (["tracking.uri=http://127.0.0.1:9"], ["cannot be reached", "127.0.0.1:9"]),
    (["+problem._target_=os.system"], ["problem._target_", "not allowed"]),
]


@pytest.mark.parametrize("overrides, fragments", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_refused_clearly(workdir, overrides, fragments):
    proc = run_cli(workdir, *overrides)
    assert proc.returncode != 0
    message = proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in message
    assert all(r.info.status != "RUNNING" for r in all_runs(workdir))


def test_bad_data_file_content(workdir):
    (workdir / "d.csv").write_text("x,y\n1,2\n3,oops\n")
    proc = run_cli(workdir, f"problem.data={workdir / 'd.csv'}")
    assert proc.returncode == 2 and "row 3" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_bad_input_loses_nothing_already_recorded(workdir):
    assert run_cli(workdir, "trainer.steps=20").returncode == 0
    assert run_cli(workdir, "optim.lr=-1").returncode != 0
    runs = all_runs(workdir)
    assert [r.info.status for r in runs] == ["FINISHED"]

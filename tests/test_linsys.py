"""linsys: A x = b from files, dense and sparse, full rank or not; lstsq as an optimiser."""
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import torch
from conftest import all_runs, run_cli

from runner_plugins.optimizers.lstsq import LstSq
from runner_plugins.problems.linsys import Linsys
from runner.loop import optimise


def fit(problem, make=lambda p, pr: torch.optim.LBFGS(p, line_search_fn="strong_wolfe", tolerance_grad=0, tolerance_change=0), steps=50):
    params = problem.initial_params(torch.Generator().manual_seed(0), torch.device("cpu"), torch.float64)
    params["c"].requires_grad_(True)
    optimise(lambda: problem.loss(params), make([params["c"]], problem), steps=steps)
    return params


@pytest.fixture
def files(tmp_path):
    g = np.random.default_rng(0)
    A = g.normal(size=(40, 6)) * np.array([1, 10, 100, 1e3, 1e-2, 1])  # badly scaled unknowns
    x = np.arange(1.0, 7.0)
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "b.npy", A @ x)
    np.savetxt(tmp_path / "A.csv", A, delimiter=",")
    np.savetxt(tmp_path / "b.csv", A @ x, delimiter=",")
    S = sp.random(300, 20, density=0.05, random_state=1, format="csr") + sp.eye(300, 20)
    scipy.io.mmwrite(str(tmp_path / "S.mtx"), S)
    np.save(tmp_path / "bs.npy", S @ np.arange(20.0))
    return tmp_path, x


@pytest.mark.parametrize("a, b", [("A.npy", "b.npy"), ("A.csv", "b.csv")])
def test_dense_overdetermined(files, a, b):
    folder, x = files
    problem = Linsys(A=str(folder / a), b=str(folder / b))
    params = fit(problem)
    np.testing.assert_allclose(problem.reported(params), x, rtol=1e-9)
    assert problem.metrics(params)["rank"] == 6


def test_sparse_stays_sparse(files):
    folder, _ = files
    problem = Linsys(A=str(folder / "S.mtx"), b=str(folder / "bs.npy"))
    params = fit(problem, steps=100)
    assert problem._tensors["Phi"].layout == torch.sparse_csr
    np.testing.assert_allclose(problem.reported(params), np.arange(20.0), atol=1e-8)


def test_rank_deficient_reports_rank_and_minimum_norm(tmp_path):
    A = np.array([[1, 1, 0, 0], [0, 0, 1, -1], [1, 0, 1, 0], [0, 1, 0, -1.0]])  # the tutorial's puzzle
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "b.npy", np.array([9, 1, 8, 2.0]))
    problem = Linsys(A=str(tmp_path / "A.npy"), b=str(tmp_path / "b.npy"))
    params = fit(problem)
    m, sol = problem.metrics(params), problem.solution(params)
    assert m["rank"] == 3 and sol["rank"] == 3 and m["max_residual"] < 1e-9
    np.testing.assert_allclose(sol["min_norm_x"], np.linalg.pinv(A) @ [9, 1, 8, 2], atol=1e-12)


def test_underdetermined_and_lstsq(files):
    folder, x = files
    A = np.load(folder / "A.npy")[:3]
    np.save(folder / "U.npy", A)
    np.save(folder / "u.npy", A @ x)
    problem = Linsys(A=str(folder / "U.npy"), b=str(folder / "u.npy"))
    params = fit(problem, make=lambda p, pr: LstSq(p, problem=pr), steps=1)
    assert problem.metrics(params)["rank"] == 3 and problem.metrics(params)["max_residual"] < 1e-9


def test_bad_files_are_refused(tmp_path, files):
    folder, _ = files
    (tmp_path / "bad.csv").write_text("1,2\n3,x\n")
    np.save(tmp_path / "obj.npy", np.array(["a", "b"]))
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    for a, b, fragment in [
        (tmp_path / "nope.npy", folder / "b.npy", "no such file"),
        (tmp_path / "bad.csv", folder / "b.npy", "could not be read as a matrix"),
        (tmp_path / "obj.npy", folder / "b.npy", "expected real numbers"),
        (tmp_path / "nan.npy", folder / "b.npy", "non-finite"),
        (folder / "A.npy", folder / "bs.npy", "one entry per row of A"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            Linsys(A=str(a), b=str(b))


def test_linsys_from_the_command_line(workdir, files):
    folder, _ = files
    proc = run_cli(workdir, "problem=linsys", f"problem.A={folder / 'S.mtx'}", f"problem.b={folder / 'bs.npy'}", "optim=lstsq", "trainer.steps=1")
    assert proc.returncode == 0, proc.stderr
    (run,) = all_runs(workdir)
    assert run.data.metrics["max_residual"] < 1e-4
    proc = run_cli(workdir, "problem=linsys")
    assert proc.returncode == 2 and "'problem.A' is required" in proc.stderr

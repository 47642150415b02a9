"""Nonlinear fits: NIST's 27 nonlinear StRD sets (reader, certified values), Levenberg-Marquardt
against the certified values and against scipy, problem=curve against problem=nist on the same
data, and the refusals."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import all_runs, run_cli

from runner_plugins.optimizers.lm import LevenbergMarquardt
from runner_plugins.problems.curve import Curve
from runner_plugins.problems.nist import NLS_DATA, NONLINEAR, Nist, NistNonlinear
from runner_plugins.problems.strd_nls import read_strd_nls
from runner.anchor import scipy_least_squares

CPU = torch.device("cpu")


def fit_lm(problem, steps=1000, **kwargs):
    params = {k: v.requires_grad_(True) for k, v in problem.initial_params(torch.Generator(), CPU, torch.float64).items()}
    opt = LevenbergMarquardt(list(params.values()), problem=problem, **kwargs)
    for _ in range(steps):
        opt.step()
        if opt.converged:
            break
    return params, opt


def test_every_shipped_file_reads_and_its_certified_values_give_the_certified_rss():
    assert sorted(p.stem for p in NLS_DATA.glob("*.dat")) == sorted(NONLINEAR)
    for name in NONLINEAR:
        problem = Nist(dataset=name)
        d = problem.data
        n_obs = int(re.search(r"Number of Observations:\s+(\d+)", (NLS_DATA / f"{name}.dat").read_text()).group(1))
        assert len(problem.target) == n_obs and len(d.parameters) == len(d.starts[0]) == len(d.starts[1])
        cert = {"b": torch.tensor([d.certified[p] for p in d.parameters], dtype=torch.float64)}
        rss = float(problem.loss(cert))
        if name != "Lanczos1":  # certified RSS 1.4e-25: below float64's rounding of the data
            assert rss == pytest.approx(d.certified_rss, rel=1e-9), name
    nelson = read_strd_nls(NLS_DATA / "Nelson.dat")
    assert nelson.response == "log[y]" and sorted(nelson.columns) == ["x1", "x2", "y"]
    assert read_strd_nls(NLS_DATA / "MGH09.dat").starts[0] == {"b1": 25.0, "b2": 39.0, "b3": 41.5, "b4": 39.0}


def write(tmp_path, text, name="bad.dat"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_reader_refuses_broken_files_naming_file_and_line(tmp_path):
    good = (NLS_DATA / "MGH09.dat").read_text().split("\n")
    cases = {
        "range": [*good[:4], good[4].replace("41 to 44", "41 to 9999"), *good[5:]],
        "param": [*good[:41], "  b2 =   thirty nine", *good[42:]],
        "model": [l.replace("b1*(x**2+x*b2)", "b1*(x**2+x*b2).real") for l in good],
        "data": [*good[:62], "  1.0  2.0  3.0", *good[63:]],
        "unknown": [l.replace("x*b3+b4", "x*b3+b9") for l in good],
    }
    expected = {"range": "line 5", "param": "line 42", "model": "line 34", "data": "line 63", "unknown": "b9"}
    for key, lines in cases.items():
        path = write(tmp_path, "\n".join(lines), f"{key}.dat")
        with pytest.raises(ValueError) as info:
            Nist(path=str(path))
        assert str(path) in str(info.value) and expected[key] in str(info.value), (key, str(info.value))
    with pytest.raises(ValueError, match="not a regular file"):
        NistNonlinear(tmp_path)
    with pytest.raises(ValueError, match="not a NIST StRD"):
        read_bad = write(tmp_path, "Nonlinear Least Squares Regression\nnothing else\n")
        Nist(path=str(read_bad))


# LM from both starts on a spread of NIST's difficulties (all 54 instances: python -m runner accuracy).
SUBSET = [("Misra1a", 1), ("BoxBOD", 1), ("MGH09", 1), ("Lanczos3", 2), ("ENSO", 1), ("Thurber", 2),
          ("Nelson", 1), ("Rat43", 1), ("MGH10", 2)]


@pytest.mark.parametrize("name, start", SUBSET)
def test_lm_reaches_the_certified_values(name, start):
    problem = Nist(dataset=name, start=start)
    params, opt = fit_lm(problem)
    metrics = problem.metrics(params)
    assert opt.converged and metrics["min_lre"] >= 9.0, (metrics, opt.stop_reason)
    assert metrics["lre_rss"] >= 9.0 and float(problem.loss(params)) <= problem.target_loss()  # solved, as reports judge


def test_solved_means_the_certified_rss_not_just_far_below_the_start():
    problem = Nist(dataset="Bennett5", start=1)
    assert problem.target_loss() == pytest.approx(problem.data.certified_rss * (1 + 1e-7), rel=1e-12)
    lanczos1 = Nist(dataset="Lanczos1")  # certified RSS 1.4e-25: the float64 rounding floor decides
    assert 1.4e-25 < lanczos1.target_loss() < 1e-24


@pytest.mark.parametrize("name, start", [("BoxBOD", 1), ("ENSO", 1), ("Lanczos3", 2), ("MGH09", 2)])
def test_lm_beats_scipy_least_squares_on_the_same_instance(name, start):
    problem = Nist(dataset=name, start=start)
    ours = problem.metrics(fit_lm(problem)[0])["min_lre"]
    theirs = [scipy_least_squares(Nist(dataset=name, start=start), m) for m in ("lm", "trf")]
    best = max(r["metrics"]["min_lre"] for r in theirs)
    assert ours >= best + 1.0, (ours, [(r["method"], r["metrics"]["min_lre"]) for r in theirs])
    if (name, start) == ("BoxBOD", 1):  # scipy's MINPACK lm gets no digit here (NIST's README)
        assert theirs[0]["metrics"]["min_lre"] < 1


def test_lm_on_the_linear_problems_matches_the_direct_solve():
    problem = Nist(dataset="Wampler1")
    params, opt = fit_lm(problem, steps=50)
    assert problem.metrics(params)["min_lre"] >= 9
    from runner_plugins.problems.puzzle import Puzzle

    puzzle = Puzzle()  # rank 3 for 4 unknowns: the SVD step copes
    params, _ = fit_lm(puzzle, steps=50)
    assert float(puzzle.loss(params)) < 1e-20


def test_lm_refuses_a_problem_without_residuals():
    class NoResiduals:
        def initial_params(self, generator, device, dtype):
            return {"x": torch.zeros(2, dtype=dtype)}

        def loss(self, params):
            return (params["x"] - 1).square().sum()

    with pytest.raises(ValueError, match=r"optim=lm \(Levenberg-Marquardt\) needs the problem's residuals.*NoResiduals"):
        LevenbergMarquardt([torch.zeros(2, requires_grad=True)], problem=NoResiduals())
    from runner.contract import Problem

    class Written(Problem):  # the contract's class declares residuals only to document it
        initial_params, loss = NoResiduals.initial_params, NoResiduals.loss

    with pytest.raises(ValueError, match="has no residuals"):
        LevenbergMarquardt([torch.zeros(2, requires_grad=True)], problem=Written())
    from runner.adapter import check

    for plugin in (Curve, Nist, NistNonlinear, LevenbergMarquardt):  # the new plugins keep the contract
        check("optim" if plugin is LevenbergMarquardt else "problem", plugin)


def test_lm_counts_its_evaluations():
    problem = Nist(dataset="Misra1a", start=2)
    params, opt = fit_lm(problem)
    n = len(problem.parameters)
    jacobians = opt.evaluations["gradient"]
    # forward mode (2 parameters < 14 residuals): n per Jacobian; the Newton polish n + 1 per step
    assert jacobians % 1 == 0 and jacobians >= n * 3
    assert opt.evaluations["loss"] >= 3
    before = dict(opt.evaluations)
    opt.step()  # converged: a step spends nothing
    assert opt.evaluations == before


def test_curve_on_nist_data_as_csv_gets_nist_digits(tmp_path):
    d = read_strd_nls(NLS_DATA / "Nelson.dat")
    csv = tmp_path / "nelson.csv"
    csv.write_text("x1,x2,y\n" + "\n".join(f"{float(a)!r},{float(b)!r},{float(c)!r}" for a, b, c in zip(d.columns["x1"], d.columns["x2"], d.columns["y"])))
    curve = Curve(model="b1 - b2*x1 * exp(-b3*x2)", data=str(csv), response="ln(y)", start=d.starts[0])
    nist = Nist(dataset="Nelson", start=1)
    pc, _ = fit_lm(curve)
    pn, _ = fit_lm(nist)
    assert nist.metrics(pn)["min_lre"] >= 9
    assert torch.equal(pc["b"], pn["b"])  # the same data, model and start: the same fit, to the bit
    assert curve.solution(pc) == {k: v for k, v in nist.solution(pn).items() if k in d.parameters}


def test_curve_refusals(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("x,y\n1,2\n2,3\n3,5\n")
    with pytest.raises(ValueError, match="no starting value for b2"):
        Curve(model="b1*exp(b2*x)", data=str(csv), start={"b1": 1})
    with pytest.raises(ValueError, match="names no parameter"):
        Curve(model="2*x", data=str(csv))
    with pytest.raises(ValueError, match="'b1\\*open\\(x\\)'"):
        Curve(model="b1*open(x)", data=str(csv), start={"b1": 1})
    with pytest.raises(ValueError, match="does not use"):
        Curve(model="b1*x", data=str(csv), start={"b1": 1, "c": 2})
    with pytest.raises(ValueError, match="not finite"):
        Curve(model="b1*x", data=str(csv), response="log(y - 3)", start={"b1": 1})
    with pytest.raises(ValueError, match="row 3"):
        (tmp_path / "e.csv").write_text("x,y\n1,2\n2,abc\n")
        Curve(model="b1*x", data=str(tmp_path / "e.csv"), start={"b1": 1})


def test_cli_curve_and_nist_nonlinear_with_lm(tmp_path):
    d = read_strd_nls(NLS_DATA / "Misra1a.dat")
    csv = tmp_path / "misra.csv"
    csv.write_text("x,y\n" + "\n".join(f"{float(a)!r},{float(b)!r}" for a, b in zip(d.columns["x"], d.columns["y"])))
    r = run_cli(tmp_path, "problem=curve", "problem.model='b1*(1-exp[-b2*x])'", f"problem.data={csv}",
                "problem.start={b1: 500, b2: 1e-4}", "optim=lm", "trainer.steps=60")
    assert r.returncode == 0, r.stderr
    r2 = run_cli(tmp_path, "problem=nist", "problem.dataset=Misra1a", "problem.start=1", "optim=lm", "trainer.steps=60")
    assert r2.returncode == 0, r2.stderr
    runs = {run.data.tags["problem"]: run for run in all_runs(tmp_path)}
    curve, nist = runs["curve"], runs["nist"]
    assert curve.info.status == nist.info.status == "FINISHED"
    assert nist.data.metrics["min_lre"] >= 9 and nist.data.metrics["loss_optimum"] == pytest.approx(1.2455138894e-01)
    assert curve.data.metrics["rss"] == pytest.approx(nist.data.metrics["rss"], rel=1e-12)
    out = Path(curve.data.tags["output_dir"])
    result = json.loads((out / "result.json").read_text())
    assert set(result["solution"]) == {"b1", "b2"} and result["solution"]["b1"] == pytest.approx(2.3894212918e02, rel=1e-9)
    assert (out / "fit.png").stat().st_size > 1000
    nist_result = json.loads((Path(nist.data.tags["output_dir"]) / "result.json").read_text())
    assert nist_result["solution"]["certified"]["b2"] == 5.5015643181e-04


def test_cli_refuses_lm_without_residuals_and_bad_formulas(tmp_path):
    r = run_cli(tmp_path, "problem=curve", "problem.model='b1*__import__(x)'", f"problem.data={tmp_path / 'none.csv'}",
                "optim=lm")
    assert r.returncode == 2 and "b1*__import__(x)" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_cli_records_evaluations_beside_steps_and_seconds(tmp_path):
    r = run_cli(tmp_path, "problem=nist", "problem.dataset=Misra1a", "problem.start=2", "optim=lm", "trainer.steps=20",
                "trainer.log_every=1")
    assert r.returncode == 0, r.stderr
    (run,) = all_runs(tmp_path)
    from conftest import store

    history = {k: [(m.step, m.value) for m in store(tmp_path).get_metric_history(run.info.run_id, k)]
               for k in ("loss", "evals", "loss_evals", "grad_evals")}
    steps = [s for s, _ in history["loss"]]
    assert [s for s, _ in history["evals"]] == steps and steps[0] == 0 and history["evals"][0][1] == 4  # r, J (2), a trial
    le, ge = dict(history["loss_evals"]), dict(history["grad_evals"])
    assert all(dict(history["evals"])[s] == le[s] + ge[s] for s in steps)
    assert all(a <= b for (_, a), (_, b) in zip(history["evals"], history["evals"][1:]))
    assert run.data.metrics["evals"] == history["evals"][-1][1] == run.data.metrics["loss_evals"] + run.data.metrics["grad_evals"]
    # python -m runner accuracy: our digits and evaluations, and scipy's on the same instance
    table = run_cli(tmp_path, "accuracy")
    assert table.returncode == 0, table.stderr
    header, _, row, *summary = table.stdout.strip().splitlines()
    assert header == "| dataset | lm, 20 steps | scipy least_squares lm, 2-point Jacobian | scipy least_squares trf, 2-point Jacobian |"
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "Misra1a / start 2" and cells[1] == f"{run.data.metrics['min_lre']:.1f} ({int(run.data.metrics['evals'])})"
    ours, scipy_lm, scipy_trf = (float(c.split()[0]) for c in cells[1:])
    assert ours >= 10 and 5 < scipy_lm < ours and 5 < scipy_trf < ours  # scipy: 7.3 and 7.2 digits here
    assert re.search(r"\(\d+\)", cells[2]) and summary[2].startswith("| **below 7** (nonlinear, 1 instances) | 0 of 1 |")

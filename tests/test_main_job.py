"""The real entry point, `python -m runner ...`, and what it leaves in MLflow."""
import json

import pytest
from conftest import all_runs, run_cli, store


def only_run(cwd):
    runs = all_runs(cwd)
    assert len(runs) == 1
    return runs[0]


def result_json(cwd, run):
    path = store(cwd).download_artifacts(run.info.run_id, "result.json", str(cwd))
    return json.loads(open(path).read())


def test_poly_adam_recovers_the_tutorial_coefficients_and_records_everything(workdir):
    proc = run_cli(workdir, "problem=poly", "optim=adam")
    assert proc.returncode == 0, proc.stderr
    run = only_run(workdir)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "poly-adam"
    assert run.data.tags["problem"] == "poly" and run.data.tags["optim"] == "adam"
    params = run.data.params
    assert params["optim.lr"] == "0.1" and params["trainer.steps"] == "1000" and params["problem.n_samples"] == "20"
    assert params["trainer.dtype"] == "float32" and "problem._name_" not in params
    m = run.data.metrics
    assert m["coef_error"] < 1e-2 and m["steps"] == 1000 and m["loop_seconds"] > 0
    history = store(workdir).get_metric_history(run.info.run_id, "loss")
    steps = [p.step for p in history]
    assert steps == list(range(0, 1000, 10)) + [1000]  # every log_every steps, and the final loss
    assert history[-1].value == pytest.approx(m["final_loss"])
    assert history[0].value > 1e3 * history[-1].value
    artifacts = {a.path for a in store(workdir).list_artifacts(run.info.run_id)}
    assert {"result.json", "config.yaml", "loss_curve.png", "fit.png"} <= artifacts
    result = result_json(workdir, run)
    assert set(result) == {"final_loss", "steps", "solution", "metrics", "truth", "final", "best"}
    assert result["final"] == {"loss": m["final_loss"], "step": 1000, "solution": result["solution"], "metrics": result["metrics"]}
    assert result["best"]["loss"] <= m["final_loss"] and result["best"]["loss"] == m["best_loss"]
    assert result["truth"] == {"coefficients": [1.0, 2.0, 3.0]}
    # For reports: each point timed when its step ended, after the loop began; the problem's target.
    started = float(run.data.tags["loop_started_at"])
    stamps = [p.timestamp / 1000 for p in history]
    assert stamps == sorted(stamps) and started - 0.002 <= stamps[0] <= started + m["loop_seconds"] + 0.002
    assert m["loss_optimum"] < 1e-20 and m["loss_optimum"] < m["loss_target"] < history[0].value
    assert result["solution"]["coefficients"] == pytest.approx([1, 2, 3], abs=1e-2)
    assert result["metrics"]["coef_error"] == pytest.approx(m["coef_error"])
    # The console: progress lines while it runs, then a summary naming the run and how to open it.
    assert "step 1000/1000" in proc.stdout
    assert run.info.run_id in proc.stdout and "mlflow ui --backend-store-uri sqlite:///" in proc.stdout
    assert str(workdir / "mlflow.db") in proc.stdout  # the default store, in the launch directory


def test_puzzle_satisfies_all_four_equations(workdir):
    proc = run_cli(workdir, "problem=puzzle", "optim=adam")
    assert proc.returncode == 0, proc.stderr
    run = only_run(workdir)
    assert run.data.metrics["max_residual"] < 1e-3
    sol = result_json(workdir, run)["solution"]
    assert set(sol) == {"A", "B", "C", "D"}
    assert abs(sol["A"] + sol["B"] - 9) < 1e-3 and abs(sol["C"] - sol["D"] - 1) < 1e-3
    assert abs(sol["A"] + sol["C"] - 8) < 1e-3 and abs(sol["B"] - sol["D"] - 2) < 1e-3


@pytest.mark.slow
def test_tutorial_presets_replay_the_tutorial(workdir):
    proc = run_cli(workdir, "experiment=tutorial_poly")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(workdir, "experiment=tutorial_puzzle")
    assert proc.returncode == 0, proc.stderr
    runs = {r.data.tags["problem"]: r for r in all_runs(workdir)}
    poly, puzzle = runs["poly"].data.params, runs["puzzle"].data.params
    assert runs["poly"].data.tags["optim"] == "nadam" and runs["puzzle"].data.tags["optim"] == "nadam"
    assert poly["optim.lr"] == "0.01" and poly["trainer.steps"] == "1000" and poly["problem.loss"] == "sse"
    assert poly["problem.basis"] == "monomial" and poly["problem.scale"] == "false"
    assert puzzle["optim.lr"] == "0.1" and puzzle["trainer.steps"] == "1000"
    # Reported honestly: the tutorial's poly run does not converge from this start.
    assert runs["poly"].data.metrics["coef_error"] > 1e-2
    assert runs["puzzle"].data.metrics["max_residual"] < 1e-2


def test_lbfgs_in_float64_solves_the_default_poly_to_1e_8(workdir):
    proc = run_cli(workdir, "optim=lbfgs", "trainer.dtype=float64")
    assert proc.returncode == 0, proc.stderr
    assert only_run(workdir).data.metrics["coef_error"] < 1e-8


def test_same_seed_same_result_other_seed_other_start(workdir):
    a, b, c = workdir / "a", workdir / "b", workdir / "c"
    for d, seed in ((a, 0), (b, 0), (c, 1)):
        d.mkdir()
        proc = run_cli(d, "optim=sgd", "optim.lr=1e-6", "trainer.steps=50", f"trainer.seed={seed}")
        assert proc.returncode == 0, proc.stderr
    hist = lambda d: [p.value for p in store(d).get_metric_history(only_run(d).info.run_id, "loss")]  # noqa: E731
    assert hist(a) == hist(b)  # bit-identical on CPU
    assert hist(a)[0] != hist(c)[0]  # another seed, another starting point
    assert result_json(a, only_run(a)) == result_json(b, only_run(b))


def test_hand_written_gradient_descent_is_a_plugin_like_any_other(workdir):
    proc = run_cli(workdir, "optim=gd", "optim.lr=0.3", "trainer.tol=1e-10", "trainer.steps=5000")
    assert proc.returncode == 0, proc.stderr
    run = only_run(workdir)
    assert run.data.metrics["final_loss"] <= 1e-10 and run.data.metrics["steps"] < 5000


def test_divergence_is_recorded_failed_with_its_reason(workdir):
    proc = run_cli(workdir, "optim=sgd", "optim.lr=1")  # past 2 / poly's largest curvature (2.75)
    assert proc.returncode == 1
    run = only_run(workdir)
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["error"]
    assert "Traceback" not in proc.stderr
    history = store(workdir).get_metric_history(run.info.run_id, "loss")
    assert history and all(p.step < run.data.metrics["steps"] for p in history)

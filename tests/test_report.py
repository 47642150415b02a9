"""`python -m runner report` and the report a sweep attaches to its parent: computed from MLflow only,
checked here against the same runs read back independently."""
import csv
import math
import shutil
import statistics
from pathlib import Path

import pytest

from conftest import all_runs, run_cli, store

from runner.report import RunData, cost_tables, judge, label, leaderboard

# problem.loss=sse: sgd at its default lr diverges on poly's loss in y's units (a failure on purpose)
SWEEP = ("-m", "problem=poly,puzzle", "optim=adam,sgd", "trainer.seed=0,1", "trainer.steps=200", "problem.loss=sse")


def _children(workdir):
    return [r for r in all_runs(workdir) if r.data.tags.get("sweep") != "true"]


def _expected(client, runs):
    """Per (problem, optim): the leaderboard figures worked out directly from each run's record."""
    out = {}
    for r in runs:
        key = (r.data.tags["problem"], r.data.tags["optim"])
        e = out.setdefault(key, {"runs": 0, "solved": 0, "failures": 0, "finals": [], "steps": []})
        e["runs"] += 1
        if r.info.status != "FINISHED":
            e["failures"] += 1
            continue
        e["finals"].append(r.data.metrics["final_loss"])
        target = r.data.metrics["loss_target"]
        if r.data.metrics["final_loss"] > target:
            continue  # ended above the target: not solved, whatever it reached on the way
        hits = sorted(m.step for m in client.get_metric_history(r.info.run_id, "loss") if m.value <= target)
        if hits:
            e["solved"] += 1
            e["steps"].append(hits[0] + 1)
    return out


def _read_csv(path: Path) -> dict:
    with open(path) as fh:
        return {(row["problem"], row["solver"]): row for row in csv.DictReader(fh)}


@pytest.mark.slow
def test_sweep_attaches_a_report_that_matches_the_store(workdir):
    proc = run_cli(workdir, *SWEEP)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # sgd diverges on poly: failed jobs
    client = store(workdir)
    parent = next(r for r in all_runs(workdir) if r.data.tags.get("sweep") == "true")
    assert "report_error" not in parent.data.tags
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/leaderboard.csv", "report/profiles.png", "report/convergence_poly.png",
            "report/convergence_puzzle.png"} <= names

    local = Path(client.download_artifacts(parent.info.run_id, "report", str(workdir / "dl")))
    rows = _read_csv(local / "leaderboard.csv")
    expected = _expected(client, _children(workdir))
    assert set(rows) == set(expected)
    for key, e in expected.items():
        row = rows[key]
        assert int(row["runs"]) == e["runs"] == 2
        assert int(row["failures"]) == e["failures"]
        assert int(row["solved"]) == e["solved"]
        assert float(row["success_rate"]) == e["solved"] / e["runs"]
        if e["finals"]:
            assert math.isclose(float(row["median_final_loss"]), statistics.median(e["finals"]), rel_tol=1e-12)
        if e["steps"]:
            assert float(row["median_steps_to_target"]) == statistics.median(e["steps"])
    # What this sweep shows: Adam solves both problems from both seeds; sgd diverges on poly.
    assert rows[("poly", "adam")]["solved"] == "2" and rows[("puzzle", "adam")]["solved"] == "2"
    assert rows[("poly", "sgd")]["failures"] == "2" and rows[("poly", "sgd")]["solved"] == "0"

    page = (local / "report.html").read_text()
    assert "Performance and data profiles" in page and "data:image/png;base64," in page
    assert "<h3>poly</h3>" in page and "coefficients[0]" in page  # the truth table: x^2 + 2x + 3
    assert "diverged" in page  # the failed runs with their reasons


@pytest.mark.slow
def test_report_command_on_an_old_store_elsewhere(workdir, tmp_path_factory):
    """Logged earlier, moved, read through tracking.uri: only what MLflow holds is used."""
    assert run_cli(workdir, "-m", "optim=adam,nadam", "trainer.seed=0,1,2", "trainer.steps=150").returncode == 0
    parent = next(r for r in all_runs(workdir) if r.data.tags.get("sweep") == "true")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    shutil.copy(workdir / "mlflow.db", elsewhere / "copy.db")
    shutil.copytree(workdir / "mlartifacts", elsewhere / "mlartifacts") if (workdir / "mlartifacts").exists() else None
    shutil.rmtree(workdir / "multirun")  # the job folders are gone: the report must not need them
    out = tmp_path_factory.mktemp("out")

    by_experiment = run_cli(workdir, "report", f"tracking.uri=sqlite:///{elsewhere / 'copy.db'}", "--out", str(out / "a"))
    assert by_experiment.returncode == 0, by_experiment.stderr
    by_parent = run_cli(workdir, "report", "--parent", parent.info.run_id, "--out", str(out / "b"))
    assert by_parent.returncode == 0, by_parent.stderr
    a, b = _read_csv(out / "a" / "leaderboard.csv"), _read_csv(out / "b" / "leaderboard.csv")
    assert set(a) == set(b) == {("poly", "adam"), ("poly", "nadam")}
    for key in a:
        assert a[key]["runs"] == b[key]["runs"] == "3"
        assert a[key]["median_final_loss"] == b[key]["median_final_loss"]
    assert (out / "a" / "profiles.png").stat().st_size > 10_000

    default = run_cli(workdir, "report")  # the default store and folder
    assert default.returncode == 0 and (workdir / "reports" / "runner" / "report.html").exists()


def test_report_bad_input_is_one_paragraph(workdir):
    assert run_cli(workdir, "trainer.steps=20").returncode == 0
    for args, words in ((["--experiment", "nope"], "no such experiment"), (["--parent", "0" * 32], "no such run"),
                        (["optim=adam"], "is not understood here"), (["--tau", "2"], "out of range")):
        proc = run_cli(workdir, "report", *args)
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def _run(problem, solver, seed, losses, status="FINISHED", target=None):
    r = RunData(run_id=f"{problem}{solver}{seed}", name="", status=status, start_time=seed, problem=problem, optim=solver,
                params={"trainer.seed": str(seed)}, metrics={"final_loss": losses[-1]}, seed=seed, replicas=1, error="")
    if target is not None:
        r.metrics["loss_target"] = target
    r.history = [(10 * i, v, 0.5 * i) for i, v in enumerate(losses)]
    return r


def test_judge_declared_target_fallback_and_failures():
    runs = [
        _run("p", "a", 0, [10, 1, 0.1], target=0.5),  # reaches 0.5 at step 20 (third point) -> 21 steps, 1.0 s
        _run("p", "b", 0, [10, 0.2, 0.1], target=0.5),  # at step 10 -> 11 steps
        _run("p", "b", 1, [10, 0.2, 0.1], status="FAILED", target=0.5),  # failed: never solved
        _run("p", "a", 1, [10, 0.2, 3.0], target=0.5),  # within at step 10, ended above: not solved
        # No declared target: Moré-Wild with fL = 0 (least seen), tau 1e-1: f <= 0 + 0.1 * (f0 - 0)
        _run("q", "a", 0, [100, 50, 9]),  # 9 <= 10: solved at step 20
        _run("q", "b", 0, [100, 11, 0]),  # 0 at step 20 (11 > 10)
    ]
    label(runs)
    criteria = judge(runs, tau=0.1)
    assert "target" in criteria["p"] and "Moré-Wild" in criteria["q"]
    assert [r.steps_to_target for r in runs] == [21, 11, math.inf, math.inf, 21, 21]
    assert runs[0].seconds_to_target == 1.0
    rows = {(r["problem"], r["solver"]): r for r in leaderboard(runs)}
    assert rows[("p", "b")]["success_rate"] == 0.5 and rows[("p", "b")]["failures"] == 1
    assert rows[("p", "a")]["success_rate"] == 0.5 and rows[("p", "a")]["failures"] == 0
    solvers, instances, tables, notes = cost_tables(runs, ("steps", "seconds"))
    assert solvers == ["a", "b"]
    assert instances == [("p", 0, 1), ("p", 1, 1), ("q", 0, 1)]
    assert tables["steps"].tolist() == [[21, 11], [math.inf, math.inf], [21, 21]] and not notes
    solvers, instances, tables, notes = cost_tables(runs[:3] + runs[4:])  # p from seed 1: b only
    assert instances == [("p", 0, 1), ("q", 0, 1)] and notes


def test_figures_draw_text_with_dollar_signs_as_typed(tmp_path):
    """An override or label holding `$`: matplotlib would read it as mathtext and fail to draw."""
    from runner.report.figures import convergence, profiles_figure
    from runner.report.sweep_figures import job_curves, job_table

    hostile = r'problem.equations=["$\frac{x$ = 1"]'
    runs = [_run(hostile, "a$b", 0, [10, 1, 0.1], target=0.5), _run(hostile, "a$b", 1, [10, 2, 0.2], target=0.5)]
    label(runs)
    judge(runs)
    convergence(runs, runs[0].problem_label, tmp_path / "convergence.png")
    solvers, _, tables, _ = cost_tables(runs)
    profiles_figure(solvers, tables, 1, 2, tmp_path / "profiles.png")
    rows = [{"problem": "puzzle $x$", "rank": 1, "job": 0, "run_id": "r0", "name": "n", "overrides": hostile, "status": "FAILED", "final_loss": math.inf,
             "steps": 3, "loop_seconds": 0.1, "error": "cost $5 $\\alpha"}]
    job_curves(rows, {"r0": [(0, 1.0), (10, 0.5)]}, tmp_path / "curves.png")
    job_table(rows, tmp_path / "table.png")
    assert all((tmp_path / f).stat().st_size > 5000 for f in ("convergence.png", "profiles.png", "curves.png", "table.png"))


def test_a_jobs_overrides_tag_splits_back_into_its_overrides():
    """The `overrides` tag joins a job's overrides with spaces; values may hold spaces too."""
    from runner.report.leaderboard import override_list, split_overrides

    overrides = ['problem.equations=["x + y = 3","x - y = 1"]', "optim.betas=[0.9, 0.99]", "+trainer.x='a b'",
                 r"tracking.run_name=my\ run", "~sched", "++problem.loss=sse", "problem.note=x - y = 1 z", "optim@o=adam"]
    assert override_list(" ".join(overrides)) == overrides
    assert override_list("") == [] and override_list("a=1  b=2") == ["a=1", "b=2"]
    shared, varying = split_overrides([{"overrides": " ".join(overrides[:2])}, {"overrides": overrides[0]}])
    assert shared == [overrides[0]] and varying == [overrides[1], ""]

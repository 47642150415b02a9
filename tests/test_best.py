"""A longer run never reports a worse answer than it found (issue 12): the least loss seen, its step
and its parameters' solution and metrics are recorded beside the final ones."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import all_runs, run_cli, store

# Plain gradient descent converges by step 60, then its step, four times larger (past 2 / curvature),
# blows the loss up to a large but finite value by step 90; deterministic, a fraction of a second.
OVERSHOOT = ("optim=gd", "optim.lr=0.5", "sched=multistep", "sched.milestones=[60]", "sched.gamma=4",
             "trainer.steps=90", "trainer.dtype=float64")


def _result(run) -> dict:
    return json.loads((Path(run.info.artifact_uri.removeprefix("file://")) / "result.json").read_text())


def test_a_run_that_got_worse_records_its_best_point(workdir):
    proc = run_cli(workdir, *OVERSHOOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(workdir)
    m = run.data.metrics
    result = _result(run)
    final, best = result["final"], result["best"]
    assert final["step"] == 90 and final["loss"] == m["final_loss"] and final["metrics"]["coef_error"] > 1.0
    assert 0 < best["step"] < 90 and best["loss"] < 1e-9 * final["loss"]
    assert best["metrics"]["coef_error"] < 1e-6
    assert best["solution"]["coefficients"] == pytest.approx([1.0, 2.0, 3.0], abs=1e-6)
    # The record: metrics, the history point of that step, and the console summary.
    assert m["best_loss"] == best["loss"] and m["best_step"] == best["step"]
    assert m["best_coef_error"] == best["metrics"]["coef_error"]
    history = {p.step: p.value for p in store(workdir).get_metric_history(run.info.run_id, "loss")}
    assert history[best["step"]] == pytest.approx(best["loss"], rel=1e-12)
    assert min(history.values()) == pytest.approx(best["loss"], rel=1e-12)  # checked every 10 steps = logged every 10
    assert f"at step {best['step']}" in proc.stdout


@pytest.mark.slow
def test_replicas_keep_each_replicas_best(workdir):
    """Batched replicas (gd is elementwise) keep a best per replica; replica 0 (seed 0) finds the
    best point the single run with seed 0 finds."""
    proc = run_cli(workdir, "-m", *OVERSHOOT, "trainer.replicas=1,3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {r.data.params["trainer.replicas"]: r for r in all_runs(workdir) if "mlflow.parentRunId" in r.data.tags}
    single, many = _result(runs["1"]), _result(runs["3"])
    assert many["replica_mode"] == "batched"
    per = many["replicas"]
    assert len(per) == 3 and [r["seed"] for r in per] == [0, 1, 2]
    for r in per:
        assert r["best"]["step"] < 90 and r["best"]["loss"] < 1e-9 * r["final_loss"]
        assert r["best"]["metrics"]["coef_error"] < 1e-6 < r["metrics"]["coef_error"]
    assert per[0]["best"]["step"] == single["best"]["step"]
    # Both at float64's rounding level of an exact fit (the batched product rounds differently)
    assert per[0]["best"]["loss"] < 1e-15 and single["best"]["loss"] < 1e-15
    assert many["best"]["metrics"]["coef_error"] < 1e-6
    assert runs["3"].data.metrics["best_loss"] == pytest.approx(many["best"]["loss"])

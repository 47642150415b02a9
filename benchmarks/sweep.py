"""Sweep throughput (runs per second for short jobs) for the basic and joblib launchers, and the
per-run cost of the MLflow record against a bare MLflow baseline measured in the same run."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row, runner_cli


def child_record_seconds(db: Path, launcher: str) -> list[float]:
    """Per child run of the sweep made with `launcher`: time from run creation to termination,
    minus the loop itself."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("runner").experiment_id], max_results=10000)
    parents = {r.info.run_id for r in runs if r.data.tags.get("hydra_launcher") == launcher}
    return [(r.info.end_time - r.info.start_time) / 1000 - r.data.metrics["loop_seconds"]
            for r in runs if r.data.tags.get("mlflow.parentRunId") in parents and "loop_seconds" in r.data.metrics]


def bare_mlflow_seconds(db: Path, n: int = 30) -> float:
    """What a hand-written script pays per run: create, 20 params, 20 points, 3 metrics, end."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.create_experiment("bare")
    times = []
    for i in range(n):
        t = time.perf_counter()
        run = client.create_run(exp)
        client.log_batch(run.info.run_id, params=[Param(f"p{k}", str(k)) for k in range(20)],
                         metrics=[Metric("loss", 1.0 / (s + 1), 0, s) for s in range(20)])
        client.log_batch(run.info.run_id, metrics=[Metric(k, 1.0, 0, 0) for k in ("a", "b", "c")])
        client.set_terminated(run.info.run_id)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(quick: bool = False) -> list[Row]:
    import importlib.util

    n = 20 if quick else 100
    sizes = {"basic": n, "joblib": n // 3}  # the per-run target is about the basic launcher's 100 runs
    launchers = [("basic", [])]
    if importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is not None:
        launchers.append(("joblib", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runner_cli(tmp, "trainer.steps=1", "trainer.progress=off", "trainer.device=cpu")  # the store exists: not timed
        rate = {}
        for launcher, extra in launchers:
            start = time.perf_counter()
            proc = runner_cli(tmp, "-m", *extra, f"trainer.seed=range({sizes[launcher]})", "trainer.steps=10", "trainer.device=cpu", "tracking.experiment=runner")
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(f"{launcher} sweep failed:\n{proc.stderr[-2000:]}")
            rate[launcher] = sizes[launcher] / elapsed
            rows.append(Row("sweep", f"{launcher} launcher, {sizes[launcher]} runs of 10 steps", "runs per second", rate[launcher], "runs/s",
                            detail=f"{elapsed:.1f} s for the whole sweep, start-up included"))
        if "joblib" in rate:
            rows.append(Row("sweep", "joblib (2 workers) / basic", "throughput ratio", rate["joblib"] / rate["basic"]))
        else:
            print("  (joblib launcher not installed: pip install -e '.[joblib]'; its rows are left out)", flush=True)
        record = child_record_seconds(tmp / "mlflow.db", "basic")
        joblib = child_record_seconds(tmp / "mlflow.db", "joblib")
        bare = bare_mlflow_seconds(tmp / "bare.db")
        med = statistics.median(record)
        rows.append(Row("sweep", "per-run cost outside the loop (run creation, params, metrics, artifacts, plots), basic launcher",
                        "median, ms", med * 1000, "ms", "<= 100",
                        f"over its {len(record)} runs" + (f"; joblib's {len(joblib)} runs: {statistics.median(joblib) * 1000:.0f} ms (2 jobs at once on 2 cores)" if joblib else "")))
        rows.append(Row("sweep", "same, against a bare MLflow run (create, 20 params, 23 metrics, end)",
                        "ratio", med / bare, detail=f"bare MLflow run {bare * 1000:.1f} ms"))
    return rows

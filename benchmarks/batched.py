"""The batched launcher (hydra/launcher=batched) against the basic launcher, end to end through
the CLI with the record on: a 10 learning rates x 100 seeds grid of poly + adam, 1000 steps each,
log_every 10. The basic launcher runs a 50-job slice of the same grid (5 rates x 10 seeds), scaled
to 1000 jobs; both in the same run, on the same machine state."""
from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row, runner_cli

RATES = "0.001,0.002,0.005,0.01,0.02,0.05,0.1,0.2,0.3,0.5"


def _check_children(db: Path, experiment: str, jobs: int, points: int) -> str:
    """Every child of the sweep is complete in the store: status and its loss points."""
    con = sqlite3.connect(db)
    try:
        exp = con.execute("select experiment_id from experiments where name = ?", (experiment,)).fetchone()[0]
        parent = con.execute("select r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid where r.experiment_id = ? and t.key = 'sweep'", (exp,)).fetchone()[0]
        children = [r for (r,) in con.execute("select run_uuid from tags where key = 'mlflow.parentRunId' and value = ?", (parent,))]
        statuses = dict(con.execute(f"select status, count(*) from runs where run_uuid in ({','.join('?' * len(children))}) group by status", children).fetchall())
        counts = con.execute(f"select count(*) from metrics where key = 'loss' and run_uuid in ({','.join('?' * len(children))}) group by run_uuid", children).fetchall()
    finally:
        con.close()
    full = sum(1 for (c,) in counts if c == points)
    if len(children) != jobs or full != jobs:
        raise RuntimeError(f"{experiment}: {len(children)} children, {full} with {points} loss points, statuses {statuses}")
    return ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))


def run(quick: bool = False) -> list[Row]:
    rates = RATES.split(",")
    seeds, steps = (20, 200) if quick else (100, 1000)
    points = steps // 10 + 1
    jobs = len(rates) * seeds
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runner_cli(tmp, "trainer.steps=1", "trainer.progress=off", "trainer.device=cpu")  # the store exists: not timed
        common = ("problem=poly", "optim=adam", f"trainer.steps={steps}", "trainer.log_every=10", "trainer.device=cpu")

        def sweep(experiment: str, lrs: list[str], n_seeds: int, *launcher: str) -> tuple[float, str]:
            """Seconds of the sweep end to end, after checking every child is complete in the store."""
            start = time.perf_counter()
            proc = runner_cli(tmp, "-m", *launcher, f"optim.lr={','.join(lrs)}", f"trainer.seed=range({n_seeds})", *common,
                              f"tracking.experiment={experiment}", timeout=1800)
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(f"{experiment} sweep failed:\n{proc.stderr[-3000:]}")
            return seconds, _check_children(tmp / "mlflow.db", experiment, len(lrs) * n_seeds, points)

        batched, statuses = sweep("batched", rates, seeds, "hydra/launcher=batched")
        # The same launch with a tenth of the seeds: the difference is what the extra jobs cost
        # inside a batch, without the sweep's fixed costs (start-up, imports, the parent run).
        small_jobs = len(rates) * (seeds // 10)
        small, _ = sweep("batched-small", rates, seeds // 10, "hydra/launcher=batched")
        slice_rates, slice_seeds = rates[:5], max(seeds // 10, 2)
        slice_jobs = len(slice_rates) * slice_seeds
        basic, _ = sweep("basic", slice_rates, slice_seeds)
        basic_scaled = basic / slice_jobs * jobs
        what = f"{len(rates)} lr x {seeds} seeds = {jobs} jobs, poly + adam, {steps} steps, log_every 10"
        rows.append(Row("batched", f"{what}, hydra/launcher=batched, end to end through the CLI", "seconds", batched, "s",
                        "<= 30" if not quick else None, f"every child complete in the store with {points} loss points: {statuses}"))
        rows.append(Row("batched", "same grid, batched / basic launcher throughput", "ratio", basic_scaled / batched, "×",
                        ">= 10" if not quick else None,
                        f"basic: {slice_jobs}-job slice in {basic:.1f} s, scaled to {jobs} jobs: {basic_scaled:.0f} s"))
        rows.append(Row("batched", f"per-job cost inside the batch, record included: ({jobs}-job sweep - {small_jobs}-job sweep) / {jobs - small_jobs} jobs",
                        "ms per job", (batched - small) / (jobs - small_jobs) * 1000, "ms", "<= 20" if not quick else None,
                        f"{small_jobs} jobs: {small:.1f} s end to end; basic launcher: {basic / slice_jobs * 1000:.0f} ms per job"))
        rows.append(Row("batched", "same, the whole sweep's time / jobs (start-up, imports and the parent run included)", "ms per job",
                        batched / jobs * 1000, "ms"))
    return rows

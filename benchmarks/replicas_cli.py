"""trainer.replicas through the CLI with the record on (the path a user takes): the run's own
`loop_seconds` for R=256 and R=4096 against one replica, poly + adam, 1000 steps, log_every 10.
Each repeat runs one, 256 and 4096 back to back and keeps the ratios."""
from __future__ import annotations

import sqlite3
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import Row, runner_cli

STEPS = 1000


def cli_loop_seconds(cwd: Path, replicas: int) -> float:
    proc = runner_cli(cwd, "problem=poly", "optim=adam", f"trainer.replicas={replicas}", f"trainer.steps={STEPS}",
                      "trainer.device=cpu", "trainer.progress=off", "tracking.experiment=replicas")
    if proc.returncode != 0:
        raise RuntimeError(f"R={replicas} failed:\n{proc.stderr[-2000:]}")
    con = sqlite3.connect(cwd / "mlflow.db")
    try:
        (value,) = con.execute("select m.value from latest_metrics m join runs r on r.run_uuid = m.run_uuid "
                               "where m.key = 'loop_seconds' order by r.start_time desc limit 1").fetchone()
    finally:
        con.close()
    return value


def run(quick: bool = False) -> list[Row]:
    repeats = 1 if quick else 3
    seconds: dict[int, list[float]] = {1: [], 256: [], 4096: []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cli_loop_seconds(tmp, 1)  # the store exists, caches are warm: not kept
        for _ in range(repeats):
            for R in seconds:
                seconds[R].append(cli_loop_seconds(tmp, R))
    rows = []
    for R, target in ((256, "<= 1.5"), (4096, "<= 4.0")):
        ratios = [many / one for many, one in zip(seconds[R], seconds[1])]
        rows.append(Row("replicas_cli", f"poly + adam through the CLI (record on), R={R} replicas / one replica, cpu", "loop_seconds ratio",
                        statistics.median(ratios), target=target,
                        detail=f"median of {repeats} back-to-back runs; R={R}: {statistics.median(seconds[R]):.3f} s, one: {statistics.median(seconds[1]):.3f} s"))
    return rows

"""Start-up: the whole default job with one step, on an existing store, against importing the
three libraries it cannot do without. Also `--help`, which must import neither torch nor mlflow."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Row, median_time, runner_cli


def timed(fn, repeats):
    return median_time(fn, repeats=repeats, warmup=0)  # whole processes: the OS cache is warm already


def run(quick: bool = False) -> list[Row]:
    repeats = 3
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runner_cli(tmp, "trainer.steps=1", "trainer.progress=off", "trainer.device=cpu")
        imports = timed(lambda: subprocess.run([sys.executable, "-c", "import torch, hydra, mlflow"], check=True), repeats)
        job = timed(lambda: runner_cli(tmp, "trainer.steps=1", "trainer.progress=off", "trainer.device=cpu"), repeats)
        help_ = timed(lambda: runner_cli(tmp, "--help"), repeats)
    return [
        Row("startup", "default job, trainer.steps=1, existing store / python -c 'import torch, hydra, mlflow'", "ratio", job / imports,
            target="<= 1.4", detail=f"job {job:.2f} s, imports {imports:.2f} s"),
        Row("startup", "python -m runner --help", "seconds", help_, "s", detail="imports neither torch nor mlflow"),
    ]

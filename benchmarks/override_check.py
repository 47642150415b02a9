"""The check of a sweep's overrides before any job starts (runner/override_check.py), on a
1000-job grid, against the start-up work it sits beside in the launching process (registering
the plugins' configs, which imports torch). In-process, warm: the check's own cost."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from benchmarks.common import Row, median_time

GRIDS = {
    "trainer.seed=range(1000)": ["-m", "trainer.seed=range(1000)", "trainer.steps=5"],
    "optim=adam,nadam x 10 lr x trainer.seed=range(50)": [
        "-m", "optim=adam,nadam", "optim.lr=0.001,0.002,0.005,0.01,0.02,0.05,0.1,0.2,0.3,0.5", "trainer.seed=range(50)"],
}


def _register_at_start_up(argv: list[str]) -> float:
    """Registering the configs as a new `python -m runner` process does, imports included (in this
    process they would be warm after the other sections)."""
    code = ("import json, sys, time; began = time.perf_counter(); from runner import configs; "
            "configs.register(json.loads(sys.argv[1])); print(time.perf_counter() - began)")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def run(quick: bool = False) -> list[Row]:
    from runner import configs, override_check

    register = _register_at_start_up(GRIDS["trainer.seed=range(1000)"])
    configs.register(GRIDS["trainer.seed=range(1000)"])
    rows = []
    for what, argv in GRIDS.items():
        override_check.check(argv)  # warm: torch's optimiser machinery is imported once, by the first
        seconds = median_time(lambda: override_check.check(argv), repeats=3 if quick else 5, warmup=0)
        rows.append(Row("override_check", f"checking a 1000-job sweep ({what}) / registering the configs at start-up",
                        "ratio", seconds / register, target="<= 0.10", detail=f"check {seconds * 1000:.0f} ms, register {register:.2f} s"))
    return rows

"""Shared helpers: run the real entry point in a fresh directory and read back what MLflow holds."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from inprocess import needs_process, run_in_process

REPO = Path(__file__).resolve().parent.parent


def run_cli(cwd: Path, *overrides: str, env: dict | None = None, timeout: float = 300,
            process: bool | None = None) -> subprocess.CompletedProcess:
    """`python -m runner OVERRIDES` started in `cwd`, so the default store is cwd/mlflow.db.

    Runs the real entry point inside the test process (tests/inprocess.py: same output, return
    code and record, without a new interpreter per call), or in a real process where the call's
    meaning needs one: `process=True`, an environment that changes what the interpreter imports
    (PYTHONPATH, ...), a launcher that starts workers, or RUNNER_TESTS_IN_PROCESS=0 (every call)."""
    if process is None:
        process = os.environ.get("RUNNER_TESTS_IN_PROCESS") == "0" or needs_process(overrides, env)
    if not process:
        return run_in_process(cwd, overrides, env, timeout)
    return run_process(cwd, *overrides, env=env, timeout=timeout)


def run_process(cwd: Path, *overrides: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m runner OVERRIDES` as a new process started in `cwd`."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "runner", *overrides],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def need(module: str):
    """Import a module of an optional extra that a test exercises. The test environment has every
    extra (README: pip install -e '.[all,test]'), so a missing one fails with that command instead
    of skipping in silence."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"{module} is not installed ({exc}); the tests need every extra: pip install -e '.[all,test]'")


def store(cwd: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


def all_runs(cwd: Path, experiment: str = "runner"):
    client = store(cwd)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], max_results=10000)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def pytest_collection_modifyitems(items):
    """Slow tests first (stable order otherwise): with `-n auto` the longest start while quick
    ones can still fill the other worker, instead of one long test running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

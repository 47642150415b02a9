"""The example plugin packages in examples/, pip-installed as a user would install their own, and
run through the real CLI: a plugin written to runner/contract.py works with no file of the runner
changed; a plugin that breaks the contract is refused with a message naming it, its entry point
and its distribution, and the others still run."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, all_runs, run_cli

pytestmark = pytest.mark.slow  # each call a real process: the example plugins are installed on PYTHONPATH


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Both example packages installed into a folder of their own, put on PYTHONPATH only for
    these tests (the test venv stays as it was: a broken plugin would warn in every other test)."""
    tmp = tmp_path_factory.mktemp("examples")
    site = tmp / "site"
    sources = [shutil.copytree(REPO / "examples" / name, tmp / name) for name in ("rosenbrock", "broken")]  # builds stay out of the repo
    # With setuptools in the venv, build with it (fast, offline); else pip fetches it to build.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *isolation, "--target", str(site), *map(str, sources)],
                   check=True, capture_output=True, text=True, timeout=600)
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)}


def test_a_plugin_written_to_the_contract_runs_through_the_cli(workdir, installed):
    help_text = run_cli(workdir, "--help", env=installed).stdout
    assert "rosenbrock" in help_text and "signsgd" in help_text
    proc = run_cli(workdir, "problem=rosenbrock", "optim=lbfgs", "trainer.dtype=float64", "trainer.steps=60", env=installed)
    assert proc.returncode == 0, proc.stderr
    # Replicas batch (SignSGD declares itself elementwise; vmap batches the problem's loss), and
    # each replica's start comes from its own seed's CPU generator.
    proc = run_cli(workdir, "problem=rosenbrock", "optim=signsgd", "optim.lr=1e-3", "trainer.replicas=3", "trainer.steps=20", env=installed)
    assert proc.returncode == 0, proc.stderr
    runs = {r.data.tags["optim"]: r for r in all_runs(workdir)}
    lbfgs, sign = runs["lbfgs"], runs["signsgd"]
    assert lbfgs.info.status == "FINISHED" and lbfgs.data.metrics["distance"] < 1e-6
    assert lbfgs.data.metrics["loss_optimum"] == 0.0 and lbfgs.data.metrics["loss_target"] == 1e-10
    assert sign.data.tags["replica_mode"] == "batched" and sign.data.params["optim.lr"] == "0.001"
    result = json.loads(Path(sign.data.tags["output_dir"], "result.json").read_text())
    starts = {tuple(r["solution"]["x"]) for r in result["replicas"]}
    assert len(starts) == 3 and result["truth"] == {"x": [1.0, 1.0]}


def test_a_plugin_that_breaks_the_contract_is_refused_by_name(workdir, installed):
    proc = run_cli(workdir, "problem=typo", env=installed)
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr
    assert "problem plugin 'typo'" in message and "runner_broken:MisspelledHook" in message
    assert "runner-broken-example" in message and "'metric'" in message and "did you mean 'metrics'" in message
    assert "Traceback" not in message

    proc = run_cli(workdir, "problem=noloss", env=installed)
    assert proc.returncode == 2 and "no loss() method" in proc.stderr and "runner_broken:NoLoss" in proc.stderr

    proc = run_cli(workdir, "optim=elementwize", env=installed)
    assert proc.returncode == 2 and "did you mean 'elementwise'" in proc.stderr

    assert all_runs(workdir) == []  # refused before any run was created
    # The broken package does not break the others: a warning, and the run goes on.
    proc = run_cli(workdir, "problem=rosenbrock", "trainer.steps=5", env=installed)
    assert proc.returncode == 0, proc.stderr
    assert "skipping problem plugin 'typo'" in proc.stderr
    assert "warnings.warn" not in proc.stderr and "UserWarning" not in proc.stderr  # one line, no source echo

"""`python -m benchmarks.gpu` cannot rot unseen: without CUDA it is a dry run that lists every check
and validates what it will run; a smoke run on the CPU exercises some checks' code end to end."""
import os
import subprocess
import sys

import pytest

from conftest import REPO

from benchmarks import gpu

pytestmark = pytest.mark.slow  # runs benchmarks.gpu as a process


def _gpu_check(*args, cuda_hidden=True, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if cuda_hidden:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_without_cuda_it_is_a_dry_run_that_names_every_check():
    proc = _gpu_check()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dry run: PyTorch sees no CUDA device here" in proc.stdout
    for check in gpu.CHECKS:
        assert f"{check.name:<12} needs CUDA" in proc.stdout
    assert "all checks are ready to run" in proc.stdout and "PROBLEM" not in proc.stdout
    assert "wrote" not in proc.stdout  # a dry run writes nothing


def test_the_dry_run_catches_a_check_that_would_break():
    broken = [gpu.Check("typo", "a key that is not there", lambda ctx: [], [["trainer.devic=cuda"]]),
              gpu.Check("launcher", "a preset that is not there", lambda ctx: [], [["hydra/launcher=nope"]])]
    problems = gpu.validate(broken)
    assert len(problems) == 2 and problems[0].startswith("typo: trainer.devic=cuda does not compose")
    assert gpu.validate([c for c in gpu.CHECKS if c.overrides]) == []
    assert {c.name for c in gpu.CHECKS} >= {"tests", "main", "lbfgs64", "nist", "replicas", "large", "linsys", "sweep", "signals", "determinism"}


def test_smoke_run_on_the_cpu(tmp_path):
    out = tmp_path / "table.md"
    proc = _gpu_check("--device", "cpu", "--quick", "--only", "nist", "determinism", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = out.read_text()
    assert table.startswith("# GPU check: no GPU: every check ran on the CPU")
    assert "| nist | NIST Wampler1" in table and "| determinism | poly + adam, seed 3 twice, cpu | identical | yes |" in table
    assert "**no**" not in table


def test_a_machine_without_mlflow_is_told_how_to_carry_it(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    assert gpu.main(["--device", "cpu", "--only", "determinism"]) == 2
    err = capsys.readouterr().err
    assert "missing mlflow" in err and "carry wheels" in err
    assert ".whl" in gpu.__doc__ and "PYTHONPATH" in gpu.__doc__

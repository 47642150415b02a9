"""The same jobs on a GPU. Skipped, with the reason, where PyTorch sees no CUDA device."""
import pytest
import torch
from conftest import all_runs, run_cli

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False"),
]


@pytest.mark.parametrize("problem, metric, bound", [("poly", "coef_error", 1e-2), ("puzzle", "max_residual", 1e-3)])
def test_default_jobs_on_cuda(workdir, problem, metric, bound):
    proc = run_cli(workdir, f"problem={problem}", "trainer.device=cuda")
    assert proc.returncode == 0, proc.stderr
    (run,) = all_runs(workdir)
    assert run.data.params["trainer.device"] == "cuda" and run.data.metrics[metric] < bound


def test_auto_picks_cuda_and_lbfgs_float64(workdir):
    proc = run_cli(workdir, "optim=lbfgs", "trainer.dtype=float64", "trainer.device=auto")
    assert proc.returncode == 0, proc.stderr
    (run,) = all_runs(workdir)
    assert run.data.metrics["coef_error"] < 1e-8

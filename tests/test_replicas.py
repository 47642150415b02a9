"""trainer.replicas: each replica equals a separate run with its seed, to float round-off."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import all_runs, run_cli, store

from runner_plugins.optimizers.lbfgs import LBFGS
from runner_plugins.optimizers.torch_optim import adam, sgd
from runner_plugins.problems.poly import Poly
from runner.job import Job

CPU, F64 = torch.device("cpu"), torch.float64


class Quartic:
    """A third-party style problem with no batched_loss: vmap must batch it."""

    def initial_params(self, generator, device, dtype):
        return {"w": torch.randn(3, generator=generator, dtype=torch.float64).to(device, dtype)}

    def loss(self, params):
        w = params["w"]
        target = torch.tensor([1.0, -2.0, 0.5], dtype=w.dtype, device=w.device)  # constants on the params' device
        return ((w - target) ** 4).sum() + (w[0] * w[1]) ** 2


def make_job(problem, seeds, factory, **kwargs):
    def initial(generator):
        return {k: v.requires_grad_(True) for k, v in problem.initial_params(generator, CPU, F64).items()}

    return Job(problem, seeds, CPU, F64, lambda leaves: factory(leaves, **kwargs), None, factory, initial)


@pytest.mark.parametrize("problem, factory, kwargs", [(Poly(), adam, {}), (Quartic(), adam, {"lr": 0.01}), (Poly(), sgd, {"lr": 1e-6, "momentum": 0.9})])
def test_batched_replicas_equal_separate_runs(problem, factory, kwargs):
    batched = make_job(problem, [3, 4, 5, 6], factory, **kwargs)
    assert batched.plan.mode == "batched"
    result = batched.run(steps=300)
    for r, seed in enumerate([3, 4, 5, 6]):
        single = make_job(problem, [seed], factory, **kwargs)
        single_result = single.run(steps=300)
        for key, value in single.final_params[0].items():
            np.testing.assert_allclose(batched.final_params[r][key].numpy(), value.detach().numpy(), rtol=1e-9, atol=1e-12)
        # The losses agree to round-off: near the optimum (1e-10 here) summation order alone moves them.
        assert result.final_losses[r] == pytest.approx(single_result.final_loss, rel=1e-8, abs=1e-8)
    assert result.final_loss == pytest.approx(float(np.median(result.final_losses)))
    assert set(result.bands) == {"loss_q10", "loss_q90"} and result.bands["loss_q10"]


def test_coupled_optimiser_runs_replicas_in_sequence():
    job = make_job(Poly(), [0, 1], LBFGS)
    assert job.plan.mode == "sequential" and "couples" in job.plan.reason
    result = job.run(steps=20)
    single = make_job(Poly(), [1], LBFGS)
    single.run(steps=20)
    np.testing.assert_array_equal(job.final_params[1]["c"].detach().numpy(), single.final_params[0]["c"].detach().numpy())
    assert len(result.final_losses) == 2


@pytest.mark.slow
def test_replicas_are_recorded_in_one_run(workdir):
    proc = run_cli(workdir, "trainer.replicas=4", "trainer.steps=200")
    assert proc.returncode == 0, proc.stderr
    (run,) = all_runs(workdir)
    assert run.data.tags["replicas"] == "4" and run.data.tags["replica_mode"] == "batched"
    client = store(workdir)
    median, lo, hi = (client.get_metric_history(run.info.run_id, k) for k in ("loss", "loss_q10", "loss_q90"))
    assert len(median) == 21 and len(lo) == len(hi) == 20
    assert all(a.value <= m.value <= b.value for a, m, b in zip(lo, median, hi))
    result = json.loads(open(client.download_artifacts(run.info.run_id, "result.json", str(workdir))).read())
    assert [r["seed"] for r in result["replicas"]] == [0, 1, 2, 3] and result["replica_mode"] == "batched"
    assert {"coef_error", "coef_error_max", "final_loss_min", "final_loss_max"} <= set(run.data.metrics)


@pytest.mark.slow
def test_help_imports_neither_torch_nor_mlflow():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "poly" in proc.stdout and "Subcommands" in proc.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "mlflow" not in imported and "hydra" not in imported

"""trainer.compile and poly's fused large-data path: the same numbers as the eager design-matrix path."""
import math

import pytest
import torch
from conftest import all_runs, run_cli

from runner_plugins.problems.poly import Poly


def _small_fused(basis: str) -> Poly:
    p = Poly(coefficients=[0.5, -1.0, 2.0, 3.0], n_samples=500, noise=0.3, basis=basis)
    p.FUSED_MIN_ROWS = 0  # the fused path, on data small enough for a test
    return p


@pytest.mark.parametrize("basis", ["chebyshev", "legendre", "monomial"])
def test_fused_loss_and_gradient_match_the_design_matrix_in_float64(basis):
    p = _small_fused(basis)
    params = p.initial_params(torch.Generator().manual_seed(1), torch.device("cpu"), torch.float64)
    c = params["c"].requires_grad_(True)
    fused = p.fused_loss(params)
    (g_fused,) = torch.autograd.grad(fused, c)
    eager = p.loss(params)  # not compiling: the design-matrix path
    (g_eager,) = torch.autograd.grad(eager, c)
    assert "x_int" in p._tensors and fused.item() != 0
    assert math.isclose(fused.item(), eager.item(), rel_tol=1e-12)
    torch.testing.assert_close(g_fused, g_eager, rtol=1e-11, atol=1e-9)


@pytest.mark.slow
def test_compiled_fused_loss_matches_eager_in_float64():
    p = _small_fused("chebyshev")
    params = p.initial_params(torch.Generator().manual_seed(2), torch.device("cpu"), torch.float64)
    c = params["c"].requires_grad_(True)
    compiled = torch.compile(p.loss, dynamic=False)
    loss_c = compiled(params)
    (g_c,) = torch.autograd.grad(loss_c, c)
    loss_e = p.loss(params)
    (g_e,) = torch.autograd.grad(loss_e, c)
    assert math.isclose(loss_c.item(), loss_e.item(), rel_tol=1e-12)
    torch.testing.assert_close(g_c, g_e, rtol=1e-11, atol=1e-9)


@pytest.mark.slow
def test_trainer_compile_true_records_compile_seconds_apart(workdir):
    eager = run_cli(workdir, "trainer.steps=200", "trainer.compile=false", "tracking.run_name=eager")
    compiled = run_cli(workdir, "trainer.steps=200", "trainer.compile=true", "tracking.run_name=compiled")
    assert eager.returncode == 0 and compiled.returncode == 0, compiled.stderr
    assert "compile" in compiled.stdout and "(not in loop)" in compiled.stdout
    runs = {r.info.run_name: r for r in all_runs(workdir)}
    e, c = runs["eager"].data, runs["compiled"].data
    assert e.metrics["compile_seconds"] == 0 and c.metrics["compile_seconds"] > 0
    assert c.tags["compiled"] == "trainer.compile=true" and e.tags["compiled"] == "trainer.compile=false"
    # Same trajectory to float32 round-off: the warm-up leaves no gradient behind.
    assert math.isclose(c.metrics["coef_error"], e.metrics["coef_error"], rel_tol=0.05, abs_tol=1e-5)
    history_e = [m.value for m in sorted(_history(workdir, runs["eager"]), key=lambda m: m.step)][:5]
    history_c = [m.value for m in sorted(_history(workdir, runs["compiled"]), key=lambda m: m.step)][:5]
    assert history_c == pytest.approx(history_e, rel=1e-4)


def _history(workdir, run):
    from conftest import store

    return store(workdir).get_metric_history(run.info.run_id, "loss")


def test_trainer_compile_auto_stays_eager_on_small_data_and_bad_values_are_refused(workdir):
    proc = run_cli(workdir, "trainer.steps=20")
    assert proc.returncode == 0
    run = all_runs(workdir)[0]
    assert run.data.metrics["compile_seconds"] == 0 and run.data.tags["compiled"].startswith("auto: eager")
    bad = run_cli(workdir, "trainer.compile=sometimes")
    assert bad.returncode == 2 and "trainer.compile='sometimes' is not allowed" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_poly_asks_for_compile_only_on_large_float64_data():
    p = Poly()
    assert not p.compile_pays(torch.device("cpu"), torch.float64)
    p.FUSED_MIN_ROWS = 10
    assert p.compile_pays(torch.device("cpu"), torch.float64)
    assert not p.compile_pays(torch.device("cpu"), torch.float32)  # float32 reads no data per step at all

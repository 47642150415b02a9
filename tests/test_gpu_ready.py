"""What a GPU run depends on that a CPU can check: one recorded name per device, the sparse
product's own backward, one compilation, one copy of lstsq's target, the GPU launcher presets,
the compile and device rules of `auto`, and the float32 statistics made without moving Phi."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import REPO, all_runs, run_cli, need

from runner_plugins.optimizers.lstsq import LstSq
from runner_plugins.problems import least_squares
from runner_plugins.problems.least_squares import SparseProduct
from runner_plugins.problems.linsys import Linsys
from runner_plugins.problems.poly import Poly
from runner import compiling, devices
from runner.compose import Experiment
from runner.adapter import ProblemHooks
from runner.job import Job
from runner.job_context import JobContext

CPU = torch.device("cpu")


# -- one device, one name -------------------------------------------------------------------------
@pytest.fixture
def two_gpus(monkeypatch):
    """torch believes in two CUDA devices; nothing is allocated on them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_cuda_and_cuda0_are_one_recorded_device(two_gpus, monkeypatch):
    names = {spec: str(devices.resolve_device(spec)) for spec in ("auto", "cuda", "cuda:0")}
    assert set(names.values()) == {"cuda:0"}, names
    assert str(devices.resolve_device("cuda:1")) == "cuda:1"
    # The same config hash, so tracking.skip_finished finds the run whichever way it was asked for.
    hashes = {Experiment(None, None, {}, None, {"problem": "poly"}, {"trainer": {"device": name}}).config_hash for name in names.values()}
    assert len(hashes) == 1
    # The run name shows the device used, not the word typed.
    for typed in ("cuda", "cuda:0", "auto"):
        ctx = JobContext(Path("."), overrides=(f"trainer.device={typed}",))
        assert ctx.run_name("poly", "adam", None, device=devices.resolve_device(typed)) == "poly-adam-device=cuda:0"


def test_cpu_run_records_cpu_and_its_name(workdir):
    proc = run_cli(workdir, "trainer.steps=5", "trainer.device=auto", "trainer.progress=off")
    assert proc.returncode == 0, proc.stderr
    (run,) = all_runs(workdir)
    # On a GPU machine too: the default poly is small, auto keeps it on the CPU (and says why).
    assert run.data.params["trainer.device"] == "cpu" and run.info.run_name == "poly-adam-steps=5-device=cpu"
    if torch.cuda.is_available():
        assert "too small to gain from a GPU" in run.data.tags["device_note"]


def test_auto_keeps_problems_too_small_for_a_gpu_on_the_cpu(two_gpus):
    cuda = devices.resolve_device("auto")
    small = ProblemHooks(Poly())  # 20 samples x 3 coefficients
    device, why = devices.auto_for_problem("auto", cuda, small, torch.float32)
    assert device == CPU and "too small to gain from a GPU" in why
    big = ProblemHooks(Poly(n_samples=400_000))
    assert devices.auto_for_problem("auto", cuda, big, torch.float64) == (cuda, "")  # 1.2e6 numbers a step
    # float32 steps of the same data read the 3 x 3 statistics only: the CPU again.
    assert devices.auto_for_problem("auto", cuda, big, torch.float32)[0] == CPU
    # Many replicas of a small problem make a large step; an explicit device is always kept.
    assert devices.auto_for_problem("auto", cuda, small, torch.float32, replicas=20_000)[0] == cuda
    assert devices.auto_for_problem("cuda", cuda, small, torch.float32) == (cuda, "")


def test_auto_says_when_a_launcher_hid_the_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    device, why = devices.auto_for_problem("auto", CPU, ProblemHooks(Poly()), torch.float32)
    assert device == CPU and "CUDA_VISIBLE_DEVICES is empty" in why and "ray_gpu" in why


# -- the sparse product ---------------------------------------------------------------------------
def _sparse(n=30, k=7, seed=0):
    m = sp.random(n, k, density=0.3, random_state=seed, format="csr") + sp.eye(n, k, format="csr")
    return m.tocsr()


@pytest.mark.parametrize("replicas", [None, 3])
def test_sparse_product_gradient_is_autograds(replicas):
    m = _sparse()
    Phi, PhiT = least_squares._csr(m, CPU, torch.float64), least_squares._csr(m.T.tocsr(), CPU, torch.float64)
    shape = (m.shape[1],) if replicas is None else (replicas, m.shape[1])
    c = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: SparseProduct.apply(c, Phi, PhiT), (c,))
    # Against autograd's gradient of the dense product, through a loss as the problems use it.
    dense = torch.tensor(m.toarray())
    t = torch.randn(m.shape[0], dtype=torch.float64)
    ours = (SparseProduct.apply(c, Phi, PhiT) - t).square().sum()
    theirs = ((dense @ c if c.dim() == 1 else c @ dense.T) - t).square().sum()
    (g_ours,), (g_theirs,) = torch.autograd.grad(ours, c), torch.autograd.grad(theirs, c)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-12, atol=1e-12)


def test_sparse_linsys_builds_its_transpose_once_and_matches_dense(tmp_path):
    m = _sparse(60, 9, seed=3)
    b = m @ np.arange(1.0, 10.0) + 0.01
    sp.save_npz(tmp_path / "S.npz", m)
    np.save(tmp_path / "A.npy", m.toarray())
    np.save(tmp_path / "b.npy", b)
    sparse, dense = Linsys(A=str(tmp_path / "S.npz"), b=str(tmp_path / "b.npy")), Linsys(A=str(tmp_path / "A.npy"), b=str(tmp_path / "b.npy"))
    ps = sparse.initial_params(torch.Generator().manual_seed(0), CPU, torch.float64)
    pd = dense.initial_params(torch.Generator().manual_seed(0), CPU, torch.float64)
    PhiT = sparse._tensors["PhiT"]
    assert PhiT.layout == torch.sparse_csr and PhiT.shape == (9, 60)
    for p in (ps, pd):
        p["c"].requires_grad_(True)
    ls, ld = sparse.loss(ps), dense.loss(pd)
    (gs,), (gd,) = torch.autograd.grad(ls, ps["c"]), torch.autograd.grad(ld, pd["c"])
    torch.testing.assert_close(ls, ld, rtol=1e-12, atol=0)
    torch.testing.assert_close(gs, gd, rtol=1e-10, atol=1e-12)
    sparse.loss(ps)
    assert sparse._tensors["PhiT"] is PhiT  # made once, in _to, not per step
    # Replicas of a sparse problem stay sparse (no dense n x k copy) and agree with one run each.
    batched = sparse.batched_loss({"c": torch.stack([ps["c"].detach(), 2 * ps["c"].detach()])})
    assert "PhiD" not in sparse._tensors
    torch.testing.assert_close(batched[1], sparse.loss({"c": 2 * ps["c"].detach()}), rtol=1e-12, atol=0)


# -- one compilation ------------------------------------------------------------------------------
def test_compiled_run_compiles_once_final_loss_included(monkeypatch):
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("eager")
    monkeypatch.setattr(compiling, "compile_loss", lambda loss: torch.compile(loss, backend=counter, dynamic=False))
    torch._dynamo.reset()
    problem = Poly(n_samples=50)

    def initial(generator):
        return {k: v.requires_grad_(True) for k, v in problem.initial_params(generator, CPU, torch.float64).items()}

    job = Job(problem, [0], CPU, torch.float64, lambda leaves: torch.optim.Adam(leaves, lr=0.1), None, None, initial, "true")
    result = job.run(steps=30, check_every=10)
    assert job.compile.compile and result.steps == 30 and math.isfinite(result.final_loss)
    assert counter.frame_count == 1, f"{counter.frame_count} compilations: the final loss compiled the loss again"
    # The final loss is the loss at the final parameters, as the eager loss gives it.
    assert result.final_loss == pytest.approx(float(problem.loss(job.params).detach()), rel=1e-12)


# -- lstsq: one copy of its target ----------------------------------------------------------------
def test_lstsq_reads_the_reference_from_the_host_once():
    problem = Poly()
    params = problem.initial_params(torch.Generator().manual_seed(0), CPU, torch.float64)
    c = params["c"].requires_grad_(True)
    opt = LstSq([c], problem=problem)
    calls = []
    real = problem.reference
    problem.reference = lambda: calls.append(1) or real()
    for _ in range(5):
        opt.step(lambda: problem.loss(params))
    assert len(calls) == 1 and opt.target.device == c.device and opt.target.dtype == c.dtype
    np.testing.assert_allclose(c.detach().numpy(), real().c, rtol=0, atol=0)


# -- GPU launcher presets -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("preset, address", [("ray_gpu", None), ("ray_cluster_gpu", "${oc.env:RAY_ADDRESS,auto}")])
def test_ray_gpu_presets_ask_for_a_gpu(preset, address):
    need("hydra_plugins.hydra_ray_launcher")
    proc = subprocess.run([sys.executable, "-m", "runner", "--cfg", "hydra", "--package", "hydra.launcher", f"hydra/launcher={preset}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import yaml

    conf = yaml.safe_load(proc.stdout)
    assert conf["ray"]["remote"] == {"num_cpus": 1, "num_gpus": 1}
    assert conf["ray"]["init"]["address"] == address


# -- trainer.compile=auto by device and steps -----------------------------------------------------
def test_compile_auto_decides_by_device_and_steps():
    plugin = Poly()
    plugin.FUSED_MIN_ROWS = 10  # the problem says a fused pass pays (large float64 data)
    p = ProblemHooks(plugin)
    cuda = torch.device("cuda", 0)
    assert not compiling.decide("auto", p, cuda, torch.float64, steps=1000).compile
    assert "too few" in compiling.decide("auto", p, cuda, torch.float64, steps=1000).reason
    assert compiling.decide("auto", p, cuda, torch.float64, steps=compiling.MIN_STEPS["cuda"]).compile
    assert not compiling.decide("auto", p, CPU, torch.float64, steps=50).compile
    assert compiling.decide("auto", p, CPU, torch.float64, steps=1000).compile
    assert compiling.decide("true", p, cuda, torch.float64, steps=5).compile  # an explicit true is obeyed
    assert not compiling.decide("auto", ProblemHooks(Poly()), CPU, torch.float64, steps=10**6).compile  # the problem says no


# -- float32 statistics on the device, Phi not moved ----------------------------------------------
def test_float32_statistics_are_made_in_blocks_and_phi_stays_on_the_host(monkeypatch):
    monkeypatch.setattr(least_squares, "GRAM_BLOCK", 3 * 1000)  # 1000 rows a block: five blocks
    p = Poly(n_samples=4_500, noise=0.5, coefficients=[1.0, -2.0, 0.5], loss="sse")  # the sum in y's units
    params = p.initial_params(torch.Generator().manual_seed(0), CPU, torch.float32)
    assert set(p._tensors) == {"key", "G", "h", "tt"}  # what a float32 step reads, and nothing else
    Phi = np.asarray(p.Phi, np.float64)
    np.testing.assert_allclose(p._tensors["G"].numpy(), Phi.T @ Phi, rtol=1e-13)
    np.testing.assert_allclose(p._tensors["h"].numpy(), Phi.T @ p.t, rtol=1e-12, atol=1e-9)  # h[0] is ~0: t is centred
    assert float(p._tensors["tt"]) == pytest.approx(float(p.t @ p.t), rel=1e-13)
    residual = Phi @ params["c"].double().numpy() - p.t
    assert float(p.loss(params)) == pytest.approx(p.y_scale**2 * float(residual @ residual), rel=1e-6)
    assert p.work_per_step(torch.float32) == 9 and p.work_per_step(torch.float64) == 4_500 * 3


# -- clocks ---------------------------------------------------------------------------------------
def test_sync_and_eager_warm_up_do_nothing_on_the_cpu():
    devices.sync(CPU)
    devices.sync(None)
    c = torch.ones(3, requires_grad=True)
    calls = []
    compiling.warm_up_eager(lambda: calls.append(1) or (c * c).sum(), [c])
    assert calls == [] and c.grad is None

"""The zoo extra: pytorch-optimizer's whole registry as optimiser plugins, through a plugin source.

The walk over the registry runs in this process through the engine's own pieces (registry, config
from the signature, declared needs, Job and its loop), so 128 optimisers take seconds; a few go
through the real CLI, and a sweep of several checks what MLflow holds."""
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import all_runs, run_cli, need

pytorch_optimizer = need("pytorch_optimizer")

from runner_plugins.optimizers import zoo  # noqa: E402
from runner_plugins.problems.poly import Poly  # noqa: E402
from runner import needs as optim_needs  # noqa: E402
from runner import registry  # noqa: E402
from runner.errors import UserError  # noqa: E402
from runner.job import Job  # noqa: E402
from runner.signature import coerce_arguments, config_defaults  # noqa: E402

CPU = torch.device("cpu")
# A stand-in for an environment without the extra: pytorch_optimizer cannot be found or imported.
BLOCK = '''
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pytorch_optimizer":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Block())
'''


def build(name: str, problem, seeds=(0,), dtype=torch.float32, **overrides):
    """What `python -m runner optim=NAME` does before the run exists (runner/task.py)."""
    factory = registry.get("optim", name).load()
    optim_needs.refuse_if_declared(optim_needs.of(factory, name))
    kwargs = coerce_arguments(factory, {**config_defaults(factory), **overrides}, "optim")
    needs = optim_needs.of(factory, name, kwargs)
    extra = {"total_steps": 200} if "total_steps" in zoo_signature(factory) else {}

    def initial(generator):
        return {k: v.requires_grad_(True) for k, v in problem.initial_params(generator, CPU, dtype).items()}

    return Job(problem, list(seeds), CPU, dtype, lambda leaves: factory(leaves, **kwargs, **extra), None, factory, initial, "false", needs)


def zoo_signature(factory) -> set:
    import inspect

    return set(inspect.signature(factory).parameters)


@pytest.mark.slow
def test_every_registered_optimiser_runs_or_is_refused_with_its_reason():
    """200 steps of poly at its defaults: FINISHED, or FAILED as diverged, or refused with a reason."""
    names = pytorch_optimizer.get_supported_optimizers()
    assert len(names) >= 100
    outcome, why = {}, {}
    for plain in names:
        name = f"zoo.{plain}"
        try:
            job = build(name, Poly())
        except UserError as exc:  # refused (declared, or a need the problem cannot meet) or a required value
            outcome[plain], why[plain] = "refused", str(exc)
            continue
        result = job.run(steps=200)
        if result.stop_reason == "diverged":
            assert result.error.startswith("diverged"), (plain, result.error)
            outcome[plain], why[plain] = "diverged", result.error
        else:
            assert result.stop_reason == "steps" and result.steps == 200 and math.isfinite(result.final_loss), (plain, result)
            outcome[plain] = "finished"
    counts = Counter(outcome.values())
    print(f"\nzoo walk over {len(names)}: {dict(counts)}")
    for plain in sorted(why):
        print(f"  {plain}: {outcome[plain]}: {why[plain][:160]}")
    refused = {p for p, o in outcome.items() if o == "refused"}
    declared = {p for p, n in zoo.NEEDS.items() if n.get("refused") or n.get("needs_matrix")}
    required = {p for p in names if "???" in config_defaults(registry.get("optim", f"zoo.{p}").load()).values()}
    # Refused: exactly the declared refusals, the matrix methods (poly's parameter is a vector)
    # and those with a required argument, each with a paragraph that says why.
    assert refused == declared | required, refused ^ (declared | required)
    assert required - declared == {"bsam"}  # BSAM's num_data (the training-set size) has no default
    for p in refused:
        assert len(why[p]) > 60 and why[p].rstrip().endswith((".", ")")), why[p]
    assert counts["finished"] >= 90


ELEMENTWISE = sorted(p for p, n in zoo.NEEDS.items() if n.get("elementwise"))


@pytest.mark.parametrize("plain", ELEMENTWISE)
def test_declared_elementwise_optimisers_batch_replicas_exactly(plain):
    """trainer.replicas batches an elementwise optimiser: each replica must equal its own run."""
    problem = Poly(loss="mse", x_std=1.0)
    lr = min(config_defaults(registry.get("optim", f"zoo.{plain}").load()).get("lr") or 1e-2, 1e-2)
    batched = build(f"zoo.{plain}", problem, seeds=(3, 4, 5), dtype=torch.float64, lr=lr)
    assert batched.plan.mode == "batched"
    start = {k: v.detach().clone() for k, v in batched.params.items()}
    batched.run(steps=100)
    moved = max(float((batched.params[k].detach() - start[k]).abs().max()) for k in start)
    assert moved > 1e-4, f"{plain} hardly moved: the comparison would prove nothing"
    for r, seed in enumerate((3, 4, 5)):
        single = build(f"zoo.{plain}", problem, seeds=(seed,), dtype=torch.float64, lr=lr)
        single.run(steps=100)
        np.testing.assert_allclose(batched.final_params[r]["c"].numpy(), single.final_params[0]["c"].detach().numpy(), rtol=1e-9, atol=1e-12)


def test_elementwise_is_declared_not_guessed():
    """Undeclared optimisers run replicas one after another, and an option that couples the
    elements (Adan's global gradient-norm clip) turns batching off."""
    assert build("zoo.prodigy", Poly(), seeds=(0, 1)).plan.mode == "sequential"
    assert build("zoo.adan", Poly(), seeds=(0, 1)).plan.mode == "batched"
    assert build("zoo.adan", Poly(), seeds=(0, 1), max_grad_norm=1.0).plan.mode == "sequential"


def test_schedule_free_methods_are_declared_from_their_modes():
    """Every registered class with train()/eval() modes is declared so, and nothing else is."""
    with_modes = {p for p in pytorch_optimizer.get_supported_optimizers() if zoo.has_modes(pytorch_optimizer.load_optimizer(p))}
    declared = {p for p, n in zoo.NEEDS.items() if n.get("train_eval")}
    assert with_modes == declared and {"schedulefreeadamw", "schedulefreesgd", "schedulefreeradam"} <= declared


def test_train_eval_switch_surrounds_the_loop():
    """The loop calls train() before the first step and eval() before the final loss."""
    from runner.loop import optimise

    calls = []
    x = torch.tensor([3.0], requires_grad=True)

    class Modes(torch.optim.SGD):
        def train(self):
            calls.append(("train", len(calls)))

        def eval(self):
            calls.append(("eval", float(x.detach())))
            with torch.no_grad():
                x.zero_()  # the point the method returns

    result = optimise(lambda: (x ** 2).sum(), Modes([x], lr=0.1), steps=5, needs=optim_needs.Needs("m", train_eval=True))
    assert [c[0] for c in calls] == ["train", "eval"] and result.final_loss == 0.0


def test_hessian_methods_get_a_backward_that_keeps_its_graph():
    """AdaHessian differentiates the gradient again: without create_graph it could not step."""
    job = build("zoo.adahessian", Poly(), lr=0.5)
    assert job.needs.create_graph
    assert job.run(steps=200).final_loss < 1e-3


@pytest.mark.slow
def test_matrix_methods_run_on_matrices():
    """Muon on a problem with a matrix parameter: its method on the matrix, AdamW on the bias."""

    class MatrixFit:
        def initial_params(self, generator, device, dtype):
            return {"W": torch.zeros(4, 3, dtype=dtype), "b": torch.zeros(3, dtype=dtype)}

        def loss(self, params):
            g = torch.Generator().manual_seed(0)
            A = torch.randn(20, 4, generator=g, dtype=params["W"].dtype)
            B = A @ torch.randn(4, 3, generator=g, dtype=A.dtype)
            return ((A @ params["W"] + params["b"] - B) ** 2).sum()

    job = build("zoo.muon", MatrixFit())
    start = job.run(steps=1).final_loss
    assert job.run(steps=200).final_loss < 1e-2 * start
    with pytest.raises(UserError, match="every parameter"):
        build("zoo.spectralsphere", MatrixFit())


def test_names_never_shadow_builtins():
    for builtin in registry.plugins("optim"):
        assert builtin not in registry.aliases("optim")
        assert registry.get("optim", builtin).source == "opt-runner"
    assert registry.get("optim", "adam").load().optimizer_class is torch.optim.Adam
    assert registry.get("optim", "zoo.adam").load().optimizer_class is pytorch_optimizer.Adam
    assert registry.get("optim", "lion").load() is registry.get("optim", "zoo.lion").load()
    assert len(registry.aliases("optim")) == len(pytorch_optimizer.get_supported_optimizers()) - len(
        set(pytorch_optimizer.get_supported_optimizers()) & set(registry.plugins("optim")))


# -- through the real CLI -------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_sweep_records_each_outcome(workdir):
    # problem.loss=sse: SGD at lr 0.5 diverges on the loss in y's units (the scaled default it solves)
    proc = run_cli(workdir, "-m", "optim=lion,zoo.adahessian,schedulefreeadamw,muon,lomo,zoo.sgd,ranger21",
                   "optim.lr=0.5", "trainer.steps=200", "problem.loss=sse")
    assert proc.returncode == 1, proc.stderr[-2000:]  # failed jobs are listed, the rest ran
    assert "Traceback" not in proc.stderr + proc.stdout
    runs = {r.data.tags.get("optim"): r for r in all_runs(workdir) if "mlflow.parentRunId" in r.data.tags}
    assert set(runs) == {"zoo.lion", "zoo.adahessian", "zoo.schedulefreeadamw", "zoo.muon", "zoo.lomo", "zoo.sgd", "zoo.ranger21"}
    for name in ("zoo.lion", "zoo.adahessian", "zoo.schedulefreeadamw", "zoo.ranger21"):
        assert runs[name].info.status == "FINISHED" and runs[name].data.params["optim.lr"] == "0.5"
    assert runs["zoo.adahessian"].data.metrics["final_loss"] < 1e-3
    assert runs["zoo.sgd"].info.status == "FAILED" and runs["zoo.sgd"].data.tags["error"].startswith("diverged")
    assert runs["zoo.muon"].info.status == "FAILED" and "matrices" in runs["zoo.muon"].data.tags["error"]
    assert runs["zoo.lomo"].info.status == "FAILED" and "nn.Module" in runs["zoo.lomo"].data.tags["error"]
    assert all(r.info.status != "RUNNING" for r in all_runs(workdir))


@pytest.mark.slow
def test_cli_config_types_and_refusals(workdir):
    proc = run_cli(workdir, "--cfg", "job", "--package", "optim", "optim=lion")
    assert proc.returncode == 0 and "_name_: zoo.lion" in proc.stdout and "lr: 0.0001" in proc.stdout
    for args, words, code in (
        (["optim=lion", "+optim.foo=1"], ["optim.foo", "arguments", "betas"], 2),
        (["optim=lion", "optim.betas=[0.9]"], ["optim.betas", "list of 2 values"], 2),
        (["optim=lomo"], ["optim=zoo.lomo cannot run", "nn.Module"], 2),
        (["optim=muon"], ["optim=zoo.muon works on matrices", "'c' [3]"], 2),
        (["optim=bsam"], ["optim.num_data", "required"], 2),
    ):
        proc = run_cli(workdir, *args, "trainer.steps=5")
        message = proc.stderr + proc.stdout
        assert proc.returncode == code and all(w in message for w in words), message
        assert "Traceback" not in message
    assert all_runs(workdir) == []


@pytest.mark.slow
def test_the_closest_names_of_a_typo_are_the_same_in_every_process(workdir):
    # Equally close zoo names were listed in set order, which changes with the hash seed.
    messages = {run_cli(workdir, "optim=adamw_x", env={"PYTHONHASHSEED": seed}, process=True).stderr for seed in ("1", "3")}
    assert len(messages) == 1 and "closest adamwsn, adamc, adamg" in messages.pop()


@pytest.mark.slow
def test_without_the_extra_the_message_names_it(workdir, tmp_path):
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCK)
    env = {"PYTHONPATH": os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")])}
    # A zoo name alone and in a sweep (each a process: the block is an import hook). A plain run
    # without the zoo is test_a_plain_run_does_not_import_the_zoo's.
    for value in ("zoo.adam", "adam,lion"):
        proc = run_cli(workdir, "-m" if "," in value else "trainer.steps=5", f"optim={value}", env=env)
        assert proc.returncode == 2, proc.stderr
        assert "pip install 'opt-runner[zoo]'" in proc.stderr and "Traceback" not in proc.stderr
    assert "not installed: pip install 'opt-runner[zoo]'" in run_cli(workdir, "--help", env=env).stdout


@pytest.mark.slow
def test_help_lists_the_zoo_without_importing_it():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", "--help"], capture_output=True, text=True)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "pytorch_optimizer" not in imported and "torch" not in imported
    assert "optim=zoo.NAME" in proc.stdout and "--help optim" in proc.stdout
    listing = subprocess.run([sys.executable, "-m", "runner", "--help", "optim"], capture_output=True, text=True).stdout
    assert "lion*" in listing and "adahessian" in listing and "refused here (5)" in listing and "lomo:" in listing


@pytest.mark.slow
def test_a_plain_run_does_not_import_the_zoo(workdir):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", "trainer.steps=5", "trainer.progress=off"],
                          cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0
    assert "pytorch_optimizer" not in {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}


def test_an_optimiser_that_breaks_down_numerically_diverges_and_a_bug_still_raises():
    from runner.loop import optimise

    class Breaks(torch.optim.SGD):
        def __init__(self, params, error, poison):
            super().__init__(params, lr=0.1)
            self.error, self.poison, self.calls = error, poison, 0

        def step(self, closure):
            self.calls += 1
            closure()
            if self.calls == 3:
                if self.poison:
                    with torch.no_grad():
                        self.param_groups[0]["params"][0].fill_(math.nan)
                raise self.error
            return super().step()

    for error, poison in ((ZeroDivisionError("float division by zero"), False), (RuntimeError("std >= 0.0"), True)):
        x = torch.tensor([3.0], requires_grad=True)
        result = optimise(lambda: (x ** 2).sum(), Breaks([x], error, poison), steps=10)
        assert result.stop_reason == "diverged" and f"step 2 raised {type(error).__name__}" in result.error
    x = torch.tensor([3.0], requires_grad=True)
    with pytest.raises(KeyError):  # finite parameters: a bug, not a divergence
        optimise(lambda: (x ** 2).sum(), Breaks([x], KeyError("s"), False), steps=10)


def test_grad_before_step_gives_the_optimiser_a_gradient_at_its_point():
    from runner.loop import optimise

    seen = []
    x = torch.tensor([3.0], requires_grad=True)

    class NeedsGrad(torch.optim.SGD):
        def step(self, closure):
            seen.append(None if x.grad is None else float(x.grad))
            closure()
            return super().step()

    optimise(lambda: (x ** 2).sum(), NeedsGrad([x], lr=0.1), steps=3, needs=optim_needs.Needs("g", grad_before_step=True))
    assert seen[0] == 6.0 and None not in seen

"""A package installed beside the runner adds problem=ITS_NAME and optim=ITS_NAME: no file of
this repository changes. The test installs a real (path-based) distribution with entry points."""
import os
import textwrap

import pytest
from conftest import all_runs, run_cli


@pytest.fixture
def third_party(tmp_path):
    site = tmp_path / "site"
    pkg = site / "toyplugins"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        import torch

        class Rosenbrock:
            """f(x, y) = (a - x)^2 + b (y - x^2)^2, minimum 0 at (a, a^2)."""
            def __init__(self, a: float = 1.0, b: float = 100.0):
                if b <= 0:
                    raise ValueError(f"problem.b must be > 0; got {b}")
                self.a, self.b = a, b

            def initial_params(self, generator, device, dtype):
                return {"xy": torch.tensor([-1.2, 1.0], dtype=dtype, device=device)}

            def loss(self, params):
                x, y = params["xy"]
                return (self.a - x) ** 2 + self.b * (y - x ** 2) ** 2

            def metrics(self, params):
                x, y = params["xy"].tolist()
                return {"distance": ((x - self.a) ** 2 + (y - self.a ** 2) ** 2) ** 0.5}

            def solution(self, params):
                return {"x": params["xy"][0].item(), "y": params["xy"][1].item()}

        def signgd(params, lr: float = 0.01):
            """A callable returning an optimizer is a plugin too."""
            return torch.optim.SGD(params, lr=lr)
    '''))
    dist = site / "toyplugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[runner.problems]\nrosenbrock = toyplugins:Rosenbrock\n\n[runner.optimizers]\nmysgd = toyplugins:signgd\n"
    )
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_installed_plugin_is_listed_and_runs(workdir, third_party):
    help_text = run_cli(workdir, "--help", env=third_party).stdout
    assert "rosenbrock" in help_text and "mysgd" in help_text and "poly" in help_text

    proc = run_cli(workdir, "problem=rosenbrock", "optim=lbfgs", "trainer.dtype=float64", "trainer.steps=50", env=third_party)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(workdir, "problem=rosenbrock", "optim=mysgd", "optim.lr=1e-3", "problem.b=10", "trainer.steps=20", env=third_party)
    assert proc.returncode == 0, proc.stderr
    runs = {r.data.tags["optim"]: r for r in all_runs(workdir)}
    assert runs["lbfgs"].data.metrics["distance"] < 1e-6
    assert runs["mysgd"].data.params["problem.b"] == "10.0" and runs["mysgd"].data.params["optim.lr"] == "0.001"


@pytest.mark.slow
def test_installed_plugin_arguments_are_checked(workdir, third_party):
    proc = run_cli(workdir, "problem=rosenbrock", "problem.b=-1", env=third_party)
    assert proc.returncode == 2 and "problem.b must be > 0" in proc.stderr
    proc = run_cli(workdir, "problem=rosenbrock", "+problem.c=1", env=third_party)
    assert proc.returncode == 2 and "arguments: a, b" in proc.stderr


@pytest.fixture
def third_party_sources(tmp_path):
    """Two plugin sources as a separate distribution would register them: `toy` offers `adam`
    (which must not shadow torch's) and `heavyball`; `broken` cannot even answer `available()`."""
    site = tmp_path / "site"
    pkg = site / "toysource"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        class Toy:
            description = "two toy optimisers"
            install = "pip install toysource"

            def available(self):
                return None

            def plugins(self):
                import torch

                def heavyball(params, lr: float = 1e-6, momentum: float = 0.9):
                    return torch.optim.SGD(params, lr=lr, momentum=momentum)
                heavyball.elementwise = True

                def adam(params, lr: float = 0.05):
                    return torch.optim.Adam(params, lr=lr)
                return {"heavyball": heavyball, "adam": adam}

        class Broken:
            def available(self):
                raise RuntimeError("cannot tell")

        SOURCE, BROKEN = Toy(), Broken()
    '''))
    dist = site / "toysource-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toysource\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[runner.optimizer_sources]\ntoy = toysource:SOURCE\nbroken = toysource:BROKEN\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_plugin_source_offers_many_without_shadowing_builtins(workdir, third_party_sources):
    help_text = run_cli(workdir, "--help", env=third_party_sources).stdout
    assert "optim=toy.NAME" in help_text and "two toy optimisers" in help_text and "cannot tell" in help_text
    listing = run_cli(workdir, "--help", "optim", env=third_party_sources).stdout
    assert "heavyball*" in listing and "plain adam keep" in listing
    for args in (["optim=heavyball", "trainer.replicas=2"], ["optim=toy.adam"], ["optim=adam"]):
        proc = run_cli(workdir, *args, "trainer.steps=20", env=third_party_sources)
        assert proc.returncode == 0, proc.stderr
    runs = {r.data.tags["optim"]: r for r in all_runs(workdir)}
    assert set(runs) == {"toy.heavyball", "toy.adam", "adam"}
    assert runs["toy.heavyball"].data.tags["replica_mode"] == "batched"  # its declared elementwise
    assert runs["toy.adam"].data.params["optim.lr"] == "0.05" and runs["adam"].data.params["optim.lr"] == "0.1"

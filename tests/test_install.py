"""Installed like real software: the wheel carries the configs and the plugins' data and runs
from any directory; the built-ins' import name cannot be taken by another distribution; two
distributions that register one plugin name are refused until one is chosen (`KIND=DIST:NAME`);
a missing optional extra is one paragraph naming it.

Throwaway distributions are pip-installed with `--target` into a temp folder and put on
PYTHONPATH for a subprocess only (the test venv stays as it was), as tests/test_examples.py does."""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, all_runs

PROJECT_FILES = ("pyproject.toml", "README.md", "conf", "runner", "plugins", "hydra_plugins")


def cli(cwd: Path, *args: str, env: dict | None = None, python: str = sys.executable, timeout: float = 300):
    """`python -m runner ARGS` in a separate interpreter (these tests change its environment)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([python, "-m", "runner", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def pip_target(tmp: Path, packages: dict[str, dict[str, str]]) -> dict:
    """Write each throwaway distribution {name: {path: text}}, install them all into tmp/site,
    and return the environment that puts it on PYTHONPATH."""
    site = tmp / "site"
    sources = []
    for name, files in packages.items():
        root = tmp / "src" / name
        for path, text in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(textwrap.dedent(text))
        sources.append(str(root))
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *isolation, "--target", str(site), *sources],
                   check=True, capture_output=True, text=True, timeout=600)
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)}


def pyproject(name: str, modules: list[str], entry_points: dict[str, dict[str, str]]) -> str:
    groups = "".join(
        f'\n[project.entry-points."{group}"]\n' + "".join(f'{k} = "{v}"\n' for k, v in eps.items())
        for group, eps in entry_points.items()
    )
    return (f'[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "{name}"\nversion = "0.1.0"\n{groups}\n[tool.setuptools]\npy-modules = {json.dumps(modules)}\n')


# --- the import name of the built-ins ------------------------------------------------------


def test_every_entry_point_of_the_runner_names_its_own_import_package():
    eps = md.distribution("opt-runner").entry_points
    values = [ep.value for ep in eps if ep.group.startswith("runner.")]
    assert values and all(v.startswith("runner_plugins.") for v in values), [v for v in values if not v.startswith("runner_plugins.")]


@pytest.mark.slow
def test_another_distribution_with_a_top_level_plugins_package_does_not_shadow_the_built_ins(tmp_path):
    env = pip_target(tmp_path, {"sloppy": {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
                          '[project]\nname = "sloppy-plugins"\nversion = "1.0"\n[tool.setuptools]\npackages = ["plugins"]\n',
        "plugins/__init__.py": 'raise ImportError("this is sloppy-plugins\' own plugins package")\n',
    }})
    work = tmp_path / "work"
    work.mkdir()
    proc = cli(work, "problem=nist", "problem.dataset=Norris", "trainer.steps=5", env=env)
    assert proc.returncode == 0, proc.stderr
    assert all_runs(work)[0].info.status == "FINISHED"


# --- two distributions, one plugin name ----------------------------------------------------

TWIN = """\
import torch


class Twin:
    \"\"\"A quadratic whose minimum says which distribution's plugin ran.\"\"\"

    TARGET = {target}

    def initial_params(self, generator, device, dtype):
        return {{"x": torch.zeros(2, dtype=dtype).to(device)}}

    def loss(self, params):
        return ((params["x"] - self.TARGET) ** 2).sum()

    def metrics(self, params):
        return {{"which": self.TARGET}}

    def solution(self, params):
        return {{"x": params["x"].detach().cpu().tolist()}}
"""
OTHER_ADAM = """\
import torch


class Adam(torch.optim.SGD):
    \"\"\"Another distribution's `adam`: plain SGD.\"\"\"

    def __init__(self, params, lr: float = 0.1):
        super().__init__(params, lr=lr)
"""


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("twins")
    return pip_target(tmp, {
        "twin-a": {"pyproject.toml": pyproject("runner-twin-a", ["twin_a"], {"runner.problems": {"twin": "twin_a:Twin"}}),
                   "twin_a.py": TWIN.format(target=1.0)},
        "twin-b": {"pyproject.toml": pyproject("Runner_Twin.B", ["twin_b"], {"runner.problems": {"twin": "twin_b:Twin"},
                                                                              "runner.optimizers": {"adam": "twin_b:Adam"}}),
                   "twin_b.py": TWIN.format(target=2.0) + "\n\n" + OTHER_ADAM},
    })


@pytest.mark.slow
def test_a_name_two_distributions_register_is_refused_naming_both(tmp_path, twins):
    proc = cli(tmp_path, "problem=twin", "optim=sgd", "trainer.steps=5", env=twins)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert "runner-twin-a" in err and "runner-twin-b" in err and "problem=runner-twin-a:twin" in err, err
    assert "Traceback" not in err
    # the default optimiser is ambiguous too once another distribution registers `adam`
    proc = cli(tmp_path, "problem=poly", "trainer.steps=5", env=twins)
    assert proc.returncode == 2 and "opt-runner" in proc.stderr and "runner-twin-b" in proc.stderr, proc.stderr
    assert "optim=opt-runner:adam" in proc.stderr
    # in a sweep, before anything runs
    proc = cli(tmp_path, "-m", "problem=poly,twin", "optim=sgd", "trainer.steps=5", env=twins)
    assert proc.returncode == 2 and "runner-twin-a" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert all_runs(tmp_path) == []


@pytest.mark.slow
def test_a_qualified_name_selects_one_distribution_in_a_run_and_a_sweep(tmp_path, twins):
    proc = cli(tmp_path, "problem=runner-twin-a:twin", "optim=opt-runner:adam", "trainer.steps=5", env=twins)
    assert proc.returncode == 0, proc.stderr
    (run,) = all_runs(tmp_path)
    assert run.data.metrics["which"] == 1.0
    assert run.data.tags["problem"] == "runner-twin-a:twin"
    assert run.data.tags["problem_distribution"] == "runner-twin-a 0.1.0"
    assert run.data.tags["optim_distribution"].startswith("opt-runner ")

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    proc = cli(sweep, "-m", "problem=runner-twin-a:twin,runner-twin-b:twin", "optim=runner-twin-b:adam", "trainer.steps=5", env=twins)
    assert proc.returncode == 0, proc.stderr
    children = [r for r in all_runs(sweep) if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.metrics["which"] for r in children) == [1.0, 2.0]
    assert {r.data.tags["optim_distribution"] for r in children} == {"runner-twin-b 0.1.0"}


@pytest.mark.slow
def test_help_shows_which_distribution_each_plugin_comes_from(tmp_path, twins):
    proc = cli(tmp_path, "--help", env=twins)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any("poly" in line and "opt-runner" in line for line in lines), proc.stdout
    ambiguous = [line for line in lines if "twin" in line and "runner-twin-a:twin" in line]
    assert ambiguous and "runner-twin-b:twin" in ambiguous[0], proc.stdout


# --- a missing optional extra --------------------------------------------------------------

HIDE = """\
import os, sys

HIDDEN = os.environ["RUNNER_TEST_HIDE"].split(",")


class Hide:
    \"\"\"As if these modules were not installed.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if any(name == h or name.startswith(h + ".") for h in HIDDEN):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Hide())
"""


@pytest.mark.slow
@pytest.mark.parametrize("args, hidden, extra", [
    (["hparams_search=poly_adam_lr"], "optuna", "optuna"),
    (["-m", "hydra/launcher=joblib", "optim=adam,sgd"], "hydra_plugins.hydra_joblib_launcher", "joblib"),
    (["-m", "hydra/launcher=ray", "optim=adam,sgd"], "ray", "ray"),
    (["-m", "hydra/launcher=ray_cluster", "optim=adam,sgd"], "hydra_plugins.hydra_ray_launcher", "ray"),
    (["-m", "hydra/launcher=submitit_local", "optim=adam,sgd"], "submitit", "slurm"),
    (["-m", "hydra/launcher=slurm", "optim=adam,sgd"], "hydra_plugins.hydra_submitit_launcher", "slurm"),
])
def test_a_missing_extra_is_one_paragraph_naming_it(tmp_path, args, hidden, extra):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(HIDE)
    work = tmp_path / "work"
    work.mkdir()
    env = {"RUNNER_TEST_HIDE": hidden, "PYTHONPATH": os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH")) if p)}
    proc = cli(work, *args, "trainer.steps=5", env=env)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    err = proc.stderr
    assert f"pip install 'opt-runner[{extra}]'" in err, err
    assert "Traceback" not in err and "report" not in err.lower(), err
    assert len([line for line in err.strip().splitlines() if line.strip()]) <= 3, err  # one paragraph
    assert all_runs(work) == [] and not (work / "multirun").exists() and not (work / "outputs").exists()


# --- the wheel -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of its files (the build leaves nothing in the repo)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in PROJECT_FILES:
        path = REPO / name
        (shutil.copytree(path, src / name, ignore=ignore) if path.is_dir() else shutil.copy2(path, src / name))
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(tmp / "dist"), str(src)],
                   check=True, capture_output=True, text=True, timeout=600)
    (built,) = (tmp / "dist").glob("opt_runner-*.whl")
    return built


@pytest.mark.slow  # builds the wheel (about 8 s)
def test_the_wheel_holds_every_data_file_of_the_project_under_its_installed_name(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "conf", "runner", "plugins", "hydra_plugins"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    installed = {"conf": "runner/conf", "plugins": "runner_plugins"}
    missing = []
    for path in tracked:
        if path.endswith(".gitkeep"):
            continue
        top, _, rest = path.partition("/")
        if f"{installed.get(top, top)}/{rest}" not in names:
            missing.append(path)
    assert not missing, missing
    assert not any(n.startswith("plugins/") for n in names)  # the generic name is not installed
    assert "runner/conf/config.yaml" in names and "runner_plugins/problems/nist_data/Norris.dat" in names


@pytest.mark.slow
def test_the_wheel_runs_the_main_job_a_sweep_and_the_subcommands_from_anywhere(tmp_path, wheel):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=600)
    # The test venv's dependencies (torch, hydra, mlflow, optuna) are visible through a plain path
    # line, which does not run the editable install's own .pth finder: the project comes from the wheel.
    new_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(new_site, "test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PYTHONPATH": ""}
    where = subprocess.run([python, "-c", "import runner, runner_plugins; print(runner.__file__); print(runner_plugins.__file__)"],
                           cwd=work, env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(w).is_relative_to(venv) for w in where), where

    def ok(*args):
        proc = cli(work, *args, env=env, python=python)
        assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-4000:])
        return proc

    help_text = ok("--help").stdout
    assert "tutorial_poly" in help_text and "poly_adam_lr" in help_text and "opt-runner" in help_text
    ok("problem=poly", "optim=adam", "trainer.steps=20")
    ok("problem=nist", "problem.dataset=Norris", "trainer.steps=5")  # the data files
    ok("-m", "experiment=tutorial_poly,tutorial_puzzle", "trainer.steps=5")  # a sweep of the presets
    ok("hparams_search=poly_adam_lr", "hydra.sweeper.n_trials=2", "trainer.steps=5")
    assert "SlurmLauncher" in ok("--cfg", "hydra", "hydra/launcher=slurm").stdout  # conf/hydra/launcher
    runs = all_runs(work)
    assert len(runs) == 2 + 3 + 3 and all(r.info.status == "FINISHED" for r in runs)
    ok("report", "--out", str(work / "report"))
    assert (work / "report").is_dir()
    ok("sync")
    ok("reap")


def test_the_extras_a_message_names_are_the_distributions_own():
    from runner import preflight

    meta = md.metadata("opt-runner")
    assert preflight.DIST == meta["Name"]
    assert set(preflight.EXTRAS) <= set(meta.get_all("Provides-Extra"))

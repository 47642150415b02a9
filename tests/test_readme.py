"""Every command in README.md is exercised, so the documentation cannot drift from behaviour.

`COMMANDS` lists each shell command of the README's ```bash blocks (continuation lines joined,
comments dropped, spaces collapsed) with how it is checked:

- `Run`: run as written in a fresh temporary directory (after `setup`, which writes the files the
  command names), exit status 0. Placeholders
  the README asks the user to fill (RUN_ID) are filled. Runs are `slow` (a process that imports
  torch) except the few that only print (`--help`, `--cfg`).
- `After`: run as written right after the command it builds on (that command's `then`), in its
  directory and test: the sweep a report reads is run once, not once per report.
- `Serve`: `mlflow ui` / `mlflow server` started as written (on a free port, not 5000: other
  processes may hold it), answering HTTP, then stopped.
- `Elsewhere`: exercised by another test or by CI (named; the test checks that it exists):
  installs, cluster commands (Ray, SLURM) through their local equivalents, the suite itself.

A README command missing from `COMMANDS` fails `test_every_readme_command_is_listed`.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest
from conftest import REPO, all_runs, run_cli

README = REPO / "README.md"
SCALE = ("poly + sgd diverges at torch's default lr (issue 12, 'The README's own examples succeed'); "
         "fixed on branch `scale`: flip to a plain Run when both land")


def readme_commands(text: str) -> list[tuple[str, str]]:
    """[(command as listed, command as typed)] from the ```bash blocks, in order."""
    found = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            typed = _without_comment(line).strip()
            if typed:
                found.append((" ".join(typed.split()), typed))
    return found


def _without_comment(line: str) -> str:
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


# -- how each command is checked ----------------------------------------------------------------------
@dataclass
class Run:
    setup: Optional[Callable[[Path], None]] = None
    slow: bool = True  # a run starts a process and imports torch: seconds
    xfail: str = ""
    diverging: bool = False  # a comparison the README says ends with diverged jobs: exit 1, only divergences
    variables: dict = field(default_factory=dict)  # shell variables the user sets (DS=...), given other values here
    then: tuple[str, ...] = ()  # README commands that read what this one recorded: run after it, each exit status 0


@dataclass
class After:
    command: str  # the README command whose `then` runs this one


@dataclass
class Serve:
    pass


@dataclass
class Elsewhere:
    where: tuple[str, ...]  # "tests/FILE.py::test_name" or ".ci/run: TEXT"
    why: str = ""
    also: list = field(default_factory=list)


def my_points(tmp: Path) -> None:
    import numpy as np

    x = np.linspace(-3, 3, 30)
    (tmp / "my_points.csv").write_text("x,y\n" + "\n".join(f"{float(a)!r},{float(0.5 * a**4 - a**3 + 2 * a + 1)!r}" for a in x) + "\n")


def strd_copy(tmp: Path) -> None:
    from runner_plugins.problems.nist import NLS_DATA

    shutil.copy(NLS_DATA / "MGH09.dat", tmp / "MyStRDfile.dat")


def curve_files(tmp: Path) -> None:
    from runner_plugins.problems.nist import NLS_DATA
    from runner_plugins.problems.strd_nls import read_strd_nls

    m = read_strd_nls(NLS_DATA / "Misra1a.dat")
    (tmp / "points.csv").write_text("x,y\n" + "\n".join(f"{float(a)!r},{float(b)!r}" for a, b in zip(m.columns["x"], m.columns["y"])) + "\n")
    n = read_strd_nls(NLS_DATA / "Nelson.dat")
    (tmp / "nelson.csv").write_text("x1,x2,y\n" + "\n".join(
        f"{float(a)!r},{float(b)!r},{float(c)!r}" for a, b, c in zip(n.columns["x1"], n.columns["x2"], n.columns["y"])) + "\n")


def linsys_files(tmp: Path) -> None:
    import numpy as np
    import scipy.io
    import scipy.sparse as sp

    g = np.random.default_rng(0)
    A = g.normal(size=(40, 6)) * (g.random((40, 6)) < 0.6)
    A[:6, :6] += np.eye(6)
    np.save(tmp / "A.npy", A)
    np.save(tmp / "b.npy", A @ np.arange(1.0, 7.0))
    scipy.io.mmwrite(str(tmp / "A.mtx"), sp.csr_matrix(A))


MAIN = "python -m runner problem=poly optim=adam"
NIST_LINEAR = ("python -m runner -m problem=nist 'problem.dataset=Norris,Pontius,NoInt1,NoInt2,Filip,Longley,Wampler1,Wampler2,"
               "Wampler3,Wampler4,Wampler5' optim=lstsq,lbfgs trainer.steps=100 tracking.experiment=nist-accuracy")
ADAM_BASIS_ELSEWHERE = Elsewhere(("tests/test_nist.py::test_adam_with_a_schedule_needs_the_well_conditioned_basis",),
                                 "run as written there, in one store, with the digits the README states asserted")
DS = ("DS=Misra1a,Chwirut2,Chwirut1,Lanczos3,Gauss1,Gauss2,DanWood,Misra1b,Kirby2,Hahn1,Nelson,MGH17,Lanczos1,Lanczos2,"
      "Gauss3,Misra1c,Misra1d,Roszman1,ENSO,MGH09,Thurber,BoxBOD,Rat42,MGH10,Eckerle4,Rat43,Bennett5")
NLS_LM = "python -m runner -m problem=nist problem.dataset=$DS problem.start=1,2 optim=lm tracking.experiment=nist-nls"
# DS is the user's variable: the test gives the nonlinear StRD sweeps 3 of its 27 sets (6 of 54 jobs,
# the suite's time), chosen so that both outcomes the README describes occur: lbfgs diverges on BoxBOD
# from start 1, adam on Misra1c from both starts, the others finish. The 54-instance table is made by
# hand with the README's DS (its figures are not asserted by any test).
NLS_SUBSET = {"DS": "Misra1a,Misra1c,BoxBOD"}
SEEDS = "python -m runner -m optim=adam,nadam 'trainer.seed=range(5)'"
OPTUNA_SGD = ("25 of 30 SGD trials diverge on today's poly (the same badly scaled loss, fixed on branch `scale`) and a sweep "
              "with a failed job exits 1; once `scale` lands, rerun: if trials at lr near 1 still diverge, narrow the README's interval")
INSTALLED = ".ci/run: pip install -q -e '.[all,test]'"  # every extra; the wheel install test of issue 12 lands beside it

COMMANDS = {
    # Quickstart
    "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e '.[all,test]' && .venv/bin/python -m runner problem=poly optim=adam":
        Elsewhere((".ci/run: python3 -m venv", INSTALLED), "a fresh venv and install: CI; its last part is the next command"),
    ".venv/bin/python -m pytest -n auto": Elsewhere((".ci/run: .venv/bin/python -m pytest -n auto",), "the suite itself, in CI"),
    "mlflow ui --backend-store-uri sqlite:///mlflow.db": Serve(),
    # Running experiments
    MAIN: Run(then=("python -m runner report", "python -m runner report --cost steps,evals,seconds")),
    "python -m runner problem=puzzle optim=lbfgs trainer.dtype=float64": Run(),
    "python -m runner optim=sgd optim.lr=0.1 optim.momentum=0.9 trainer.steps=5000": Run(),
    "python -m runner problem.noise=0.5 problem.n_samples=200 problem.degree=3 trainer.seed=3": Run(),
    "python -m runner problem.data=my_points.csv problem.degree=4": Run(setup=my_points),
    """python -m runner problem=puzzle 'problem.equations=["2*x + y = 5", "x - y = 1"]'""": Run(),
    "python -m runner experiment=tutorial_poly": Run(),
    "python -m runner experiment=tutorial_puzzle": Run(),
    "python -m runner -m problem=poly,puzzle optim=adam,sgd,lbfgs": Run(),
    "python -m runner --help": Run(slow=False),
    "python -m runner --cfg job optim=rmsprop": Run(slow=False),
    # pytorch-optimizer
    "pip install -e '.[zoo]'": Elsewhere((INSTALLED,)),
    "python -m runner optim=lion optim.lr=0.1": Run(),
    "python -m runner optim=zoo.adam": Run(),
    "python -m runner --help optim": Run(slow=False),
    "python -m runner --cfg job --package optim optim=prodigy": Run(slow=False),
    "python -m runner -m 'optim=glob(zoo.*)' trainer.steps=200": Elsewhere(
        ("tests/test_zoo.py::test_every_registered_optimiser_runs_or_is_refused_with_its_reason", "tests/test_zoo.py::test_cli_sweep_records_each_outcome"),
        "128 jobs of which the README says 20 diverge and 12 are refused: exit status 1 by design"),
    # NIST StRD
    NIST_LINEAR: Run(then=("python -m runner accuracy --experiment nist-accuracy", "python -m runner report --experiment nist-accuracy --out reports/nist")),
    "python -m runner -m problem=nist problem.dataset=Pontius,Wampler1 optim=adam sched=cosine trainer.steps=20000 trainer.log_every=100 tracking.experiment=nist-accuracy": ADAM_BASIS_ELSEWHERE,
    "python -m runner -m problem=nist problem.dataset=Pontius,Wampler1 optim=adam sched=cosine trainer.steps=20000 trainer.log_every=100 problem.basis=monomial problem.scale=false tracking.experiment=nist-accuracy": ADAM_BASIS_ELSEWHERE,
    "python -m runner accuracy --experiment nist-accuracy": After(NIST_LINEAR),
    "python -m runner problem=nist problem.dataset=MGH09 problem.start=1 optim=lm": Run(),
    "python -m runner problem=nist problem.path=MyStRDfile.dat optim=lm": Run(setup=strd_copy),
    DS: Elsewhere(("tests/test_readme.py::test_readme_command",), "the variable the next commands use: run with them"),
    NLS_LM: Run(variables=NLS_SUBSET, then=("python -m runner accuracy --experiment nist-nls",)),
    "python -m runner -m hydra/launcher=batched optim.lr=0.001,0.01,0.1 'trainer.seed=range(20)' trainer.steps=200": Run(),
    "python -m runner -m hydra/launcher=batched optim=adam,lbfgs optim.lr=0.01,0.1 trainer.steps=200": Run(),
    "python -m runner -m problem=nist problem.dataset=$DS problem.start=1,2 optim=lbfgs trainer.steps=100 tracking.experiment=nist-nls": Run(diverging=True, variables=NLS_SUBSET),
    "python -m runner -m problem=nist problem.dataset=$DS problem.start=1,2 optim=adam sched=cosine trainer.steps=3000 tracking.experiment=nist-nls": Run(diverging=True, variables=NLS_SUBSET),
    "python -m runner accuracy --experiment nist-nls": After(NLS_LM),
    # curve, linsys
    """python -m runner problem=curve "problem.model='b1*(1-exp(-b2*x))'" problem.data=points.csv 'problem.start={b1: 500, b2: 1e-4}' optim=lm""":
        Run(setup=curve_files),
    """python -m runner problem=curve "problem.model='b1 - b2*x1*exp(-b3*x2)'" "problem.response='log(y)'" problem.data=nelson.csv 'problem.start={b1: 2, b2: 1e-4, b3: -0.01}' optim=lm""":
        Run(setup=curve_files),
    "python -m runner problem=linsys problem.A=A.npy problem.b=b.npy optim=lbfgs": Run(setup=linsys_files),
    "python -m runner problem=linsys problem.A=A.mtx problem.b=b.npy optim=lstsq": Run(setup=linsys_files),
    # Sweeps and launchers
    "python -m runner -m problem=poly,puzzle optim=adam,sgd,lbfgs": Run(),
    SEEDS: Run(then=("python -m runner report --parent RUN_ID",)),
    "pip install -e '.[joblib]'": Elsewhere((INSTALLED,)),
    "python -m runner -m hydra/launcher=joblib hydra.launcher.n_jobs=4 problem=poly,puzzle optim=adam,sgd,lbfgs": Run(),
    "pip install -e '.[ray]'": Elsewhere((INSTALLED,)),
    "python -m runner -m hydra/launcher=ray problem=poly,puzzle optim=adam,sgd": Elsewhere(
        ("tests/test_sweeps.py::test_ray_cluster_on_loopback",),
        "a private local Ray starts a cluster of its own (minutes, several GB); the loopback cluster test runs the same launcher"),
    "ray start --head --port 6379": Elsewhere(("tests/test_sweeps.py::test_ray_cluster_on_loopback",), "ray start --head on loopback"),
    "python -m runner -m hydra/launcher=ray_cluster hydra.launcher.ray.init.address=HEAD:6379 tracking.uri=http://TRACKING-HOST:5000 problem=poly,puzzle optim=adam,sgd":
        Elsewhere(("tests/test_sweeps.py::test_ray_cluster_on_loopback", "tests/test_sweeps.py::test_parallel_sweep_against_a_tracking_server"),
                  "HEAD and TRACKING-HOST are the user's machines: a loopback cluster and a local server"),
    "pip install -e '.[slurm]'": Elsewhere((INSTALLED,)),
    "python -m runner -m hydra/launcher=slurm hydra.launcher.partition=cpu problem=poly,puzzle optim=adam,sgd": Elsewhere(
        ("tests/test_readme.py::test_slurm_presets_compose", "tests/test_sweeps.py::test_submitit_local"), "no SLURM here: the preset composes; submitit runs locally"),
    "python -m runner -m hydra/launcher=slurm_gpu hydra.launcher.partition=gpu optim=adam,nadam": Elsewhere(
        ("tests/test_readme.py::test_slurm_presets_compose", "tests/test_sweeps.py::test_submitit_local"), "no SLURM here: the preset composes; submitit runs locally"),
    "python -m runner -m hydra/launcher=submitit_local problem=poly,puzzle optim=adam,sgd": Run(),
    "mlflow server --host 0.0.0.0 --port 5000 --backend-store-uri sqlite:///mlflow.db --workers 4": Serve(),
    "python -m runner -m hydra/launcher=ray_cluster tracking.uri=http://TRACKING-HOST:5000 ...": Elsewhere(
        ("tests/test_sweeps.py::test_ray_cluster_on_loopback", "tests/test_sweeps.py::test_parallel_sweep_against_a_tracking_server"),
        "a sketch (`...`): the two halves are tested"),
    # Optuna
    "pip install -e '.[optuna]'": Elsewhere((INSTALLED,)),
    "python -m runner hparams_search=poly_adam_lr": Run(),
    "python -m runner hparams_search=puzzle_nadam hydra/launcher=joblib": Run(),
    "python -m runner -m hydra/sweeper=optuna hydra.sweeper.n_trials=30 'optim.lr=tag(log,interval(1e-5,0.5))' 'optim.momentum=interval(0,0.99)' optim=sgd":
        Run(),
    # Reports
    "python -m runner report": After(MAIN),
    "python -m runner report --parent RUN_ID": After(SEEDS),
    "python -m runner report --experiment nist-accuracy --out reports/nist": After(NIST_LINEAR),
    "python -m runner report tracking.uri=http://HOST:5000": Elsewhere(
        ("tests/test_report.py::test_report_command_on_an_old_store_elsewhere", "tests/test_readme.py::test_mlflow_serves_what_the_readme_says"),
        "HOST is the user's server: `report` through a local `mlflow server` is run by the Serve check"),
    "python -m runner report --cost steps,evals,seconds": After(MAIN),
    # Speed
    "python -m benchmarks": Elsewhere(("tests/test_output.py::test_partial_benchmarks_never_overwrite_the_committed_table",),
                                      "about 5 minutes of measurements: run by hand to refresh BENCHMARKS.md; its writing is tested"),
    "python -m benchmarks --quick --only replicas large": Run(),
    "python -m benchmarks.gpu": Elsewhere(("tests/test_gpu_check.py::test_without_cuda_it_is_a_dry_run_that_names_every_check",),
                                          "without CUDA it is the dry run"),
    "python -m benchmarks.gpu --dry-run": Run(),  # starts processes: seconds
    "python -m benchmarks.gpu --device cpu --quick": Elsewhere(("tests/test_gpu_check.py::test_smoke_run_on_the_cpu",)),
    # Tests
    '.venv/bin/python -m pytest -n auto -m "not slow"': Run(),  # starts processes: seconds
    ".venv/bin/python -m pytest tests/test_main_job.py -k poly": Run(),  # starts processes: seconds
}


def test_every_readme_command_is_listed():
    listed = set(COMMANDS)
    found = [c for c, _ in readme_commands(README.read_text())]
    missing = [c for c in found if c not in listed]
    assert not missing, "README commands with no check in tests/test_readme.py COMMANDS:\n" + "\n".join(missing)
    stale = listed - set(found)
    assert not stale, "COMMANDS lists commands the README no longer has:\n" + "\n".join(sorted(stale))
    for command, how in COMMANDS.items():  # every After is run by the command it names, and only those
        if isinstance(how, After):
            assert command in COMMANDS[how.command].then, command
        for later in getattr(how, "then", ()):
            assert COMMANDS[later] == After(command), later


@pytest.mark.parametrize("command", [c for c, how in COMMANDS.items() if isinstance(how, Elsewhere)])
def test_commands_checked_elsewhere_name_checks_that_exist(command):
    for where in COMMANDS[command].where:
        if where.startswith(".ci/run: "):
            assert where.removeprefix(".ci/run: ") in (REPO / ".ci" / "run").read_text(), where
        else:
            path, _, name = where.partition("::")
            assert re.search(rf"^def {re.escape(name)}\(", (REPO / path).read_text(), re.M), where


# -- running them -------------------------------------------------------------------------------------
def _typed(command: str) -> str:
    return dict((c, t) for c, t in readme_commands(README.read_text()))[command]


def _variables() -> dict[str, str]:
    return dict(c.split("=", 1) for c, _ in readme_commands(README.read_text()) if re.fullmatch(r"[A-Z_]+=\S+", c))


def _argv(command: str, variables: Optional[dict] = None) -> list[str]:
    typed = _typed(command)
    for name, value in {**_variables(), **(variables or {})}.items():
        typed = typed.replace(f"${name}", value)
    return shlex.split(typed)


def run_readme(cwd: Path, command: str, timeout: float = 1800, variables: Optional[dict] = None) -> subprocess.CompletedProcess:
    argv = _argv(command, variables)
    if "RUN_ID" in argv:  # the sweep run before it: its parent
        parent = next(r for r in all_runs(cwd) if r.data.tags.get("sweep") == "true")
        argv = [parent.info.run_id if a == "RUN_ID" else a for a in argv]
    if argv[:3] == ["python", "-m", "runner"]:
        return run_cli(cwd, *argv[3:], timeout=timeout)
    if argv[:3] == ["python", "-m", "benchmarks"] or argv[:3] == ["python", "-m", "benchmarks.gpu"]:
        shutil.copytree(REPO / "benchmarks", cwd / "benchmarks", ignore=shutil.ignore_patterns("out", "__pycache__"))
        return subprocess.run([sys.executable, *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if argv[:3] == [".venv/bin/python", "-m", "pytest"]:
        # A selection of the suite: it must select something (running it is the suite's job).
        proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *argv[3:]], cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)
        assert re.search(r"^\d+(/\d+)? tests? (collected|selected)", proc.stdout, re.M), proc.stdout[-2000:]
        return proc
    raise AssertionError(f"no way to run {command!r}: give it an Elsewhere entry")


def _params():
    for command, how in COMMANDS.items():
        if isinstance(how, Run):
            marks = [pytest.mark.slow] if how.slow else []
            if how.xfail:
                marks.append(pytest.mark.xfail(strict=True, reason=how.xfail))
            yield pytest.param(command, marks=marks, id=command[:80])


@pytest.mark.parametrize("command", list(_params()))
def test_readme_command(command, tmp_path):
    how: Run = COMMANDS[command]
    if how.setup:
        how.setup(tmp_path)
    for name, value in how.variables.items():  # a part of the README's own value, never another one
        assert set(value.split(",")) <= set(_variables()[name].split(",")), (name, value)
    proc = run_readme(tmp_path, command, variables=how.variables)
    if how.diverging:  # the sweep ran every job; the ones that failed only diverged, as the README says
        failed = [line for line in proc.stdout.splitlines() if re.match(r"\s+#\d+ ", line)]
        assert proc.returncode == 1 and failed and all(": diverged: " in line for line in failed), \
            f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    else:
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    for later in how.then:
        proc = run_readme(tmp_path, later, variables=how.variables)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, f"{later}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


# -- servers ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c, how in COMMANDS.items() if isinstance(how, Serve)])
def test_mlflow_serves_what_the_readme_says(command, tmp_path):
    """Started as written in a directory holding a run (on a free port instead of 5000), it answers
    /health and lists the run's experiment; `report tracking.uri=http://HOST:PORT` reads through it."""
    proc = run_cli(tmp_path, "problem=puzzle", "trainer.steps=20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    argv = _argv(command)
    port = _free_port()
    if "--port" in argv:
        argv[argv.index("--port") + 1] = str(port)
    else:
        argv += ["--port", str(port)]
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    server = subprocess.Popen([mlflow, *argv[1:]], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-3000:]
                assert time.monotonic() < deadline, "no answer on /health"
                time.sleep(1)
        with urllib.request.urlopen(url + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=runner", timeout=30) as answer:
            assert b'"runner"' in answer.read()
        report = run_cli(tmp_path, "report", f"tracking.uri={url}", "--out", str(tmp_path / "through-server"))
        assert report.returncode == 0, report.stderr[-3000:]
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait(timeout=30)


@pytest.mark.slow  # starts submitit's launcher plugin: seconds
def test_slurm_presets_compose(tmp_path):
    """No SLURM here: the presets the README names compose into submitit's SLURM launcher with the
    partition given (the jobs themselves run through submitit_local in tests/test_sweeps.py)."""
    for preset, partition in (("slurm", "cpu"), ("slurm_gpu", "gpu")):
        proc = run_cli(tmp_path, f"hydra/launcher={preset}", f"hydra.launcher.partition={partition}", "--cfg", "hydra", "--package", "hydra.launcher")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "SlurmLauncher" in proc.stdout and f"partition: {partition}" in proc.stdout, proc.stdout

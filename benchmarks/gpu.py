"""`python -m benchmarks.gpu`: the GPU check, one command for the first minutes on a CUDA machine.

On a machine with CUDA it runs every check below (about 5 minutes; the whole must stay under 8),
prints a table and writes it to BENCHMARKS-GPU.md beside BENCHMARKS.md, with the device named.
Without CUDA it is a dry run: it lists each check and that it needs CUDA, and checks that what
the checks will run still exists (their runner overrides compose, their code imports), so that
it cannot rot unseen (tests/test_gpu_check.py runs it). `--device cpu` runs every check on the
CPU instead (cuda-vs-cpu rows then compare the CPU with itself): a smoke run of the check's code.

    python -m benchmarks.gpu                      # CUDA: run and write BENCHMARKS-GPU.md; else: dry run
    python -m benchmarks.gpu --dry-run            # list the checks, run nothing
    python -m benchmarks.gpu --only tests signals # some checks
    python -m benchmarks.gpu --device cpu --quick # smoke run on the CPU, small sizes, nothing written

Checks: the CUDA test file (tests/test_cuda.py); the main job and the puzzle on cuda vs cpu;
float64 lbfgs; NIST Wampler1 digits on cuda vs cpu (within 1); 4096 replicas batched vs one;
poly with 1e7 samples, float32 and float64, eager and compiled, per step against a bandwidth
probe (and where a compile breaks even, against trainer.compile=auto's rule); sparse linsys per
step; a joblib sweep of 8 jobs on one GPU (no "re-initialize CUDA" error); Ctrl-C and SIGTERM on
a CUDA run (KILLED, exit 130 / 143); the same seed twice gives the same history.

On a bare GPU machine (PyTorch with CUDA, numpy, scipy, matplotlib, joblib, pytest there; no
Hydra, no MLflow, no network), carry the missing packages as wheels in .whl/ (ignored by git):
what a run, its MLflow helper and a joblib sweep import here that the workplace's H200 image
(KINDS.md's package list) lacks, at the versions of this project's venv (unpinned, pip takes
newer ones that need still more: importlib-metadata 10.2 wants `lazy_importer`). Here, in the
repository's root, for that machine's Python (3.12):

    NAMES='hydra-core|omegaconf|hydra-joblib-launcher|mlflow|mlflow-skinny|mlflow-tracing|sqlalchemy|alembic|mako|sqlparse|cachetools|databricks-sdk|google-auth|google-api-core|googleapis-common-protos|pyasn1|pyasn1-modules|rsa|opentelemetry-api|opentelemetry-sdk|opentelemetry-proto|opentelemetry-semantic-conventions|opentelemetry-exporter-prometheus|pydantic|pydantic-core|annotated-types|typing-inspection|fastapi|starlette|importlib-metadata|cffi|pycparser|cryptography'
    PINS=$(.venv/bin/python -m pip freeze | sed 's/_/-/g' | grep -iE "^($NAMES)==")
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl $PINS
    python3 -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3   # an sdist on PyPI: build it here
    python3 -m pip wheel --no-deps -w .whl .                                # this project, for its entry points

(34 wheels, 34 MB when tried here for Python 3.11; a device call carries 64 MiB with the tree.)
There, from the repository's root:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=$PWD:/tmp/site       # this tree first; /tmp/site for Hydra, MLflow and the entry points
    python3 -m benchmarks.gpu

The runner's plugins are found through entry points (the project's installed metadata, here from
its wheel in /tmp/site); the engine (`runner`) is imported from this tree, which comes first on the
path, and the built-in plugins from the wheel (installed as `runner_plugins`; rebuild the wheel
after changing plugins/).
Tried here in a venv holding only torch and the image's packages: `--device cpu --quick --only
tests main sweep signals` passed. A package still missing there shows as a failed check with its
ModuleNotFoundError (or the preflight names it): add its wheel.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parent.parent
BUDGET_SECONDS = 480  # the whole check, on the GPU machine


@dataclass
class Result:
    what: str
    value: str
    ok: Optional[bool] = None  # None: a figure, no pass/fail
    detail: str = ""


@dataclass
class Context:
    device: str  # "cuda" normally; "cpu" for a smoke run
    quick: bool
    tmp: Path

    @property
    def other(self) -> str:
        """What the device is compared with: the CPU."""
        return "cpu"


@dataclass
class Check:
    name: str
    what: str
    run: Callable[[Context], list[Result]]
    overrides: list[list[str]] = field(default_factory=list)  # runner overrides it uses (dry run: must compose)


# -- running the runner ---------------------------------------------------------------------------
def _env() -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def runner(ctx: Context, name: str, *overrides: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, Path]:
    """One `python -m runner` in a folder of its own; returns the process and its job folder."""
    cwd = ctx.tmp / name
    cwd.mkdir(parents=True, exist_ok=True)
    out = cwd / "job"
    proc = subprocess.run([sys.executable, "-m", "runner", *overrides, "trainer.progress=off", f"hydra.run.dir={out}"],
                          cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    return proc, out


def record(folder: Path) -> dict:
    """The job folder's record.json (what the run recorded, without asking MLflow)."""
    path = folder / "record.json"
    return json.loads(path.read_text()) if path.exists() else {}


def losses(folder: Path) -> list[tuple[int, float]]:
    """The loss history from the job folder's metrics.csv (name, step, value, time)."""
    path = folder / "metrics.csv"
    rows = [line.split(",") for line in path.read_text().splitlines()] if path.exists() else []
    return [(int(r[1]), float(r[2])) for r in rows if r and r[0] == "loss"]


def failed(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip().splitlines()[-1][:200] if (proc.stderr or proc.stdout).strip() else ''}"


# -- the checks -----------------------------------------------------------------------------------
def check_tests(ctx: Context) -> list[Result]:
    env = _env()
    if ctx.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a smoke run: the file must skip, with its reason
    try:
        import xdist  # noqa: F401

        parallel = ["-n", "4"]
    except ImportError:
        parallel = []
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/test_cuda.py", "-q", "-rs", "-p", "no:cacheprovider", *parallel],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    summary = next((line for line in reversed(proc.stdout.splitlines()) if " in " in line and ("passed" in line or "skipped" in line or "failed" in line)), proc.stdout[-200:])
    ok = proc.returncode == 0 and ("failed" not in summary and "error" not in summary)
    if ctx.device == "cuda":
        ok = ok and "skipped" not in summary
    return [Result("tests/test_cuda.py", summary.strip("= "), ok, f"{time.perf_counter() - start:.0f} s")]


def check_main_jobs(ctx: Context) -> list[Result]:
    out = []
    for problem, metric, bound in (("poly", "coef_error", 1e-2), ("puzzle", "max_residual", 1e-3)):
        seen = {}
        for device in dict.fromkeys((ctx.device, ctx.other)):  # once on a CPU smoke run
            proc, folder = runner(ctx, f"{problem}-{device}", f"problem={problem}", f"trainer.device={device}")
            m = record(folder).get("final_metrics", {})
            seen[device] = (proc, m, record(folder).get("params", {}).get("trainer.device"))
        proc, m, recorded = seen[ctx.device]
        if proc.returncode != 0:
            out.append(Result(f"{problem}, default job, {ctx.device}", "failed", False, failed(proc)))
            continue
        cpu = seen[ctx.other][1]
        ratio = m["loop_seconds"] / cpu["loop_seconds"] if cpu.get("loop_seconds") else float("nan")
        out.append(Result(f"{problem}, default job (1000 adam steps), {ctx.device} vs cpu", f"{metric} {m[metric]:.2g}",
                          m[metric] < bound and recorded == ("cuda:0" if ctx.device == "cuda" else "cpu"),
                          f"recorded device {recorded}; loop {m['loop_seconds']:.3f} s vs cpu {cpu.get('loop_seconds', float('nan')):.3f} s "
                          f"({ratio:.2f}x); compile {m.get('compile_seconds', 0):.1f} s"))
    return out


def check_lbfgs64(ctx: Context) -> list[Result]:
    proc, folder = runner(ctx, "lbfgs64", "optim=lbfgs", "trainer.dtype=float64", f"trainer.device={ctx.device}")
    if proc.returncode != 0:
        return [Result("poly, lbfgs, float64", "failed", False, failed(proc))]
    m = record(folder)["final_metrics"]
    return [Result(f"poly, lbfgs, float64, {ctx.device}", f"coef_error {m['coef_error']:.2g}", m["coef_error"] < 1e-8, f"loop {m['loop_seconds']:.3f} s")]


def check_nist(ctx: Context) -> list[Result]:
    lre = {}
    for device in dict.fromkeys((ctx.device, ctx.other)):  # once on a CPU smoke run
        proc, folder = runner(ctx, f"nist-{device}", "problem=nist", "problem.dataset=Wampler1", "optim=lbfgs", "trainer.steps=100", f"trainer.device={device}")
        if proc.returncode != 0:
            return [Result(f"NIST Wampler1, lbfgs, {device}", "failed", False, failed(proc))]
        lre[device] = record(folder)["final_metrics"]["min_lre"]
    diff = lre[ctx.device] - lre[ctx.other]
    return [Result(f"NIST Wampler1, lbfgs 100 steps, float64: min LRE {ctx.device} vs cpu", f"{lre[ctx.device]:.1f} vs {lre[ctx.other]:.1f} digits",
                   abs(diff) <= 1.0, "the same digits within 1")]


def check_replicas(ctx: Context) -> list[Result]:
    import torch

    from benchmarks.replicas import loop_seconds

    device = torch.device(ctx.device, 0) if ctx.device == "cuda" else torch.device("cpu")
    R = 256 if ctx.quick else 4096
    loop_seconds(1, device)
    loop_seconds(R, device)  # first use of the batched kernels: not timed
    ratios = []
    for _ in range(3):
        one, many = loop_seconds(1, device), loop_seconds(R, device)
        ratios.append(many / one)
    ratio = statistics.median(ratios)
    return [Result(f"poly + adam, R={R} replicas batched / one replica, {ctx.device}, 1000 steps", f"{ratio:.2f}x",
                   ratio <= 1.5 if ctx.device == "cuda" else None, f"median of 3 back-to-back pairs; last: one {one:.3f} s, R={R} {many:.3f} s")]


def check_large(ctx: Context) -> list[Result]:
    import torch

    from runner_plugins.problems.poly import Poly
    from runner.compiling import MIN_STEPS

    device = torch.device(ctx.device, 0) if ctx.device == "cuda" else torch.device("cpu")
    n = 100_000 if ctx.quick else 10_000_000
    problem = Poly(n_samples=n)
    out = []
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor(problem.x, dtype=dtype, device=device)
        t = torch.tensor(problem.t, dtype=dtype, device=device)
        read = _median_seconds(lambda: (x.sum() + t.sum()).item(), device)
        eager = _poly_step(problem, device, dtype, compiled=False)
        fused, compile_s = _poly_step(problem, device, dtype, compiled=True)
        name = str(dtype).removeprefix("torch.")
        saved = eager[0] - fused
        even = compile_s / saved if saved > 0 else float("inf")
        out.append(Result(f"poly {n:.0e} samples, {name}, adam, {ctx.device}: eager step / reading x and t once", f"{eager[0] / read:.2f}x",
                          None, f"{eager[0] * 1e3:.3f} ms per step, probe {read * 1e3:.3f} ms"))
        out.append(Result(f"same, compiled: step / reading x and t once", f"{fused / read:.2f}x", None,
                          f"{fused * 1e3:.3f} ms per step; compile {compile_s:.1f} s, which pays back after about {even:.0f} steps "
                          f"(trainer.compile=auto compiles from {MIN_STEPS.get(device.type)} steps on {device.type}, where the problem asks for it)"))
    return out


def _median_seconds(fn, device, repeats: int = 7) -> float:
    from runner.devices import sync

    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _poly_step(problem, device, dtype, compiled: bool):
    """Seconds per step (after untimed first steps); compiled: (seconds, compile seconds)."""
    import torch

    from runner.compiling import CompilePlan, compile_loss, warm_up
    from runner.loop import optimise

    params = problem.initial_params(torch.Generator().manual_seed(0), device, dtype)
    c = params["c"].requires_grad_(True)
    opt = torch.optim.Adam([c], lr=0.1)
    loss = problem.loss
    plan = CompilePlan(False, "")
    if compiled:
        plan = CompilePlan(True, "gpu check")
        loss = compile_loss(problem.loss)
        warm_up(plan, lambda: loss(params), [c])
    optimise(lambda: loss(params), opt, steps=3, device=device)
    steps = 20
    seconds = optimise(lambda: loss(params), opt, steps=steps, device=device).seconds / steps
    return (seconds, plan.seconds) if compiled else (seconds,)


def check_linsys(ctx: Context) -> list[Result]:
    import benchmarks.linsys as linsys

    rows = linsys.run(quick=ctx.quick, parts=("sparse",), only=ctx.device)
    return [Result(r.what, f"{r.value:.4g} {r.unit}", None, r.detail) for r in rows]


def check_sweep(ctx: Context) -> list[Result]:
    try:
        import hydra_plugins.hydra_joblib_launcher  # noqa: F401
    except ImportError:
        return [Result("joblib sweep, 8 jobs", "not run", False, "hydra-joblib-launcher is not installed (carry its wheel)")]
    cwd = ctx.tmp / "sweep"
    cwd.mkdir(parents=True, exist_ok=True)
    workers = 2 if ctx.quick else 4
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "runner", "-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={workers}",
                           f"trainer.device={ctx.device}", "trainer.seed=range(8)", "trainer.steps=200", f"hydra.sweep.dir={cwd / 'jobs'}"],
                          cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - start
    records = [record(p) for p in sorted((cwd / "jobs").glob("[0-9]*"))]
    finished = sum(r.get("status") == "FINISHED" for r in records)
    reinit = "re-initialize CUDA" in proc.stderr + proc.stdout
    ok = proc.returncode == 0 and finished == 8 and not reinit
    return [Result(f"joblib sweep, 8 jobs on {workers} workers, one {ctx.device}", f"{finished}/8 FINISHED", ok,
                   f"exit {proc.returncode}, {took:.0f} s" + ("; 're-initialize CUDA' seen" if reinit else "") + (f"; {failed(proc)}" if proc.returncode else ""))]


def check_signals(ctx: Context) -> list[Result]:
    runner(ctx, "signals-store", "trainer.steps=1", "trainer.device=cpu")  # the store exists before the signalled runs
    out = []
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        folder = ctx.tmp / "signals-store" / f"job-{sig.name}"
        proc = subprocess.Popen([sys.executable, "-m", "runner", "trainer.steps=100000000", f"trainer.device={ctx.device}", "trainer.progress=off",
                                 f"hydra.run.dir={folder}"], cwd=ctx.tmp / "signals-store", env=_env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and len(losses(folder)) < 5:
            time.sleep(0.3)
        if proc.poll() is not None:
            _, err = proc.communicate()
            out.append(Result(f"{sig.name} on a {ctx.device} run", "exited early", False, err.strip()[-200:]))
            continue
        sent = time.time()
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        status = record(folder).get("status")
        ok = proc.returncode == code and status == "KILLED" and "Traceback" not in err
        out.append(Result(f"{sig.name} on a {ctx.device} run", f"exit {proc.returncode}, {status}", ok,
                          f"expected exit {code} and KILLED; stopped {time.time() - sent:.1f} s after the signal, {len(losses(folder))} loss points kept"))
    return out


def check_determinism(ctx: Context) -> list[Result]:
    histories = []
    for i in range(2):
        proc, folder = runner(ctx, f"seed-{i}", "trainer.seed=3", "trainer.steps=300", "optim.lr=0.05", f"trainer.device={ctx.device}")
        if proc.returncode != 0:
            return [Result("same seed twice", "failed", False, failed(proc))]
        histories.append(losses(folder))
    same = histories[0] == histories[1] and len(histories[0]) > 10
    return [Result(f"poly + adam, seed 3 twice, {ctx.device}", "identical" if same else "different", same, f"{len(histories[0])} loss points compared exactly")]


DEV = "trainer.device=cuda"
CHECKS = [
    Check("tests", "tests/test_cuda.py: every built-in problem, replicas, compile, sparse linsys, a sweep, an interrupt, determinism", check_tests),
    Check("main", "the main job and the puzzle on cuda vs cpu (accuracy, recorded device, loop time)", check_main_jobs,
          [["problem=poly", DEV], ["problem=puzzle", DEV], ["problem=poly", "trainer.device=cpu"]]),
    Check("lbfgs64", "poly with lbfgs in float64 on cuda (coef_error < 1e-8)", check_lbfgs64, [["optim=lbfgs", "trainer.dtype=float64", DEV]]),
    Check("nist", "NIST Wampler1 digits on cuda, the same as on the cpu within 1", check_nist,
          [["problem=nist", "problem.dataset=Wampler1", "optim=lbfgs", "trainer.steps=100", DEV]]),
    Check("replicas", "4096 replicas batched against one replica, loop time on cuda", check_replicas),
    Check("large", "poly with 1e7 samples, float32 and float64, eager and compiled, per step against a bandwidth probe", check_large),
    Check("linsys", "sparse linsys (1e7 nonzeros) per step on cuda, and autograd's own backward beside it", check_linsys),
    Check("sweep", "a joblib sweep of 8 jobs on one GPU: all FINISHED, no 're-initialize CUDA'", check_sweep,
          [["hydra/launcher=joblib", "hydra.launcher.n_jobs=4", DEV, "trainer.seed=7", "trainer.steps=200"]]),
    Check("signals", "Ctrl-C and SIGTERM on a CUDA run: KILLED, exit 130 and 143", check_signals, [["trainer.steps=100000000", DEV]]),
    Check("determinism", "the same seed twice on cuda gives the same loss history", check_determinism,
          [["trainer.seed=3", "trainer.steps=300", "optim.lr=0.05", DEV]]),
]


def preflight() -> list[str]:
    """What a run needs that this Python lacks (see the docstring for a bare GPU machine)."""
    import importlib.metadata as md
    import importlib.util

    missing = [m for m in ("hydra", "omegaconf", "mlflow", "sqlalchemy", "alembic") if importlib.util.find_spec(m) is None]
    if not list(md.entry_points(group="runner.problems")):
        missing.append("the runner's entry points (pip install -e ., or its wheel on PYTHONPATH)")
    return missing


# -- dry run --------------------------------------------------------------------------------------
def validate(checks: list[Check]) -> list[str]:
    """What the checks will run, checked without running it: their overrides compose against the
    runner's config (keys, plugin names, launcher presets), and the code they call imports."""
    problems = []
    import importlib

    for module in ("benchmarks.replicas", "benchmarks.linsys", "runner_plugins.problems.poly", "runner.compiling", "runner.loop", "runner.devices"):
        try:
            importlib.import_module(module)
        except Exception as exc:
            problems.append(f"{module} does not import: {type(exc).__name__}: {exc}")
    try:
        from hydra import compose, initialize_config_dir

        from runner import configs
        from runner.app import CONF_DIR
    except ImportError as exc:
        return problems + [f"the runner's configs cannot be composed here ({exc}); see this module's docstring"]
    configs.register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for check in checks:
            for overrides in check.overrides:
                try:
                    compose("config", overrides=overrides, return_hydra_config=True)
                except Exception as exc:
                    problems.append(f"{check.name}: {' '.join(overrides)} does not compose: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    return problems


# -- the table ------------------------------------------------------------------------------------
def device_line(device: str) -> str:
    import platform

    import torch

    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        gpu = f"{torch.cuda.get_device_name(0)} (cuda:0, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})"
    else:
        gpu = "no GPU: every check ran on the CPU (smoke run)"
    return f"{gpu}; {os.cpu_count()} CPU cores; Python {platform.python_version()}, torch {torch.__version__}"


def markdown(results: list[tuple[str, Result]], device: str, seconds: float, argv: list[str]) -> str:
    lines = [
        f"# GPU check: {device_line(device)}",
        "",
        f"Command: `python -m benchmarks.gpu{' ' + ' '.join(argv) if argv else ''}` ({seconds:.0f} s, budget {BUDGET_SECONDS} s).",
        "",
        "| check | what | result | ok | detail |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in results:
        ok = "" if r.ok is None else ("yes" if r.ok else "**no**")
        lines.append(f"| {name} | {r.what} | {r.value} | {ok} | {r.detail} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="list the checks and validate them; run nothing")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="cpu: run every check on the CPU (a smoke run)")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--only", nargs="*", choices=[c.name for c in CHECKS], help="run only these checks")
    parser.add_argument("--out", help="Markdown file to write (default: BENCHMARKS-GPU.md on CUDA; nothing on a smoke run)")
    args = parser.parse_args(argv)
    argv = list(argv if argv is not None else sys.argv[1:])
    checks = [c for c in CHECKS if not args.only or c.name in args.only]
    import torch

    cuda = torch.cuda.is_available()
    device = args.device or ("cuda" if cuda else None)
    if args.dry_run or device is None:
        why = "dry run" if args.dry_run else "dry run: PyTorch sees no CUDA device here"
        print(f"GPU check ({why}). Each check below needs CUDA; run `python -m benchmarks.gpu` on a GPU machine "
              "(or --device cpu for a smoke run on this one).")
        for c in checks:
            print(f"  {c.name:<12} needs CUDA   {c.what}")
        problems = validate(checks)
        for p in problems:
            print(f"  PROBLEM: {p}")
        print("all checks are ready to run" if not problems else f"{len(problems)} problem(s): the check would break on the GPU")
        return 1 if problems else 0
    if device == "cuda" and not cuda:
        print("--device cuda: PyTorch sees no CUDA device here.", file=sys.stderr)
        return 2
    missing = preflight()
    if missing:
        print(f"Cannot run the GPU check: missing {', '.join(missing)}. On a bare GPU machine, carry wheels: "
              "see `python -c 'import benchmarks.gpu as g; print(g.__doc__)'`.", file=sys.stderr)
        return 2
    results: list[tuple[str, Result]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        ctx = Context(device, args.quick, Path(tmp))
        for c in checks:
            print(f"== {c.name}: {c.what}", flush=True)
            began = time.perf_counter()
            try:
                got = c.run(ctx)
            except Exception as exc:  # one broken check must not hide the others' figures
                got = [Result(c.what, "error", False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")]
            for r in got:
                ok = "" if r.ok is None else ("  ok" if r.ok else "  FAILED")
                print(f"  {r.what}: {r.value}{ok}  {r.detail}", flush=True)
                results.append((c.name, r))
            print(f"   ({time.perf_counter() - began:.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    if not args.only:
        results.append(("total", Result("the whole check", f"{seconds:.0f} s", seconds < BUDGET_SECONDS if device == "cuda" else None, f"budget {BUDGET_SECONDS} s")))
    out = args.out or (str(REPO / "BENCHMARKS-GPU.md") if device == "cuda" else None)
    if out:
        Path(out).write_text(markdown(results, device, seconds, argv))
        print(f"\nwrote {out}")
    bad = [f"{n}: {r.what}" for n, r in results if r.ok is False]
    print(f"\n{len(bad)} check(s) failed" + "".join(f"\n  {b}" for b in bad) if bad else "\nevery check passed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

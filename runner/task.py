"""One experiment: compose plugins from the config, run the loop, record everything in MLflow.

Everything that can be wrong with the input is checked before a run is created; once a run
exists it always ends FINISHED, FAILED (with an `error` tag) or KILLED, never RUNNING.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner import registry
from runner.errors import UserError
from runner.job import Job
from runner.naming import short_value
from runner.signature import coerce_arguments

log = logging.getLogger("runner")
PROGRESS_MODES = ("auto", "bar", "lines", "off")
# Overrides that change how a run is shown or logged, not what it computes.
_NOT_IN_NAME = {"trainer.progress", "trainer.log_every", "trainer.check_every"}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so the same clean-up runs."""


class RunFailed(Exception):
    """The run failed and is already recorded FAILED in MLflow with its reason."""


def hydra_task(cfg: DictConfig) -> float:
    """The function Hydra calls for each job. Returns the final loss, for sweepers to minimise.

    In a sweep a failed job is recorded and returns NaN, so the other jobs still run (and an
    Optuna trial is marked failed); a single run exits non-zero instead.
    """
    multirun = _is_multirun()
    try:
        return run(cfg)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        if not multirun:
            sys.exit(exc.exit_code)
        _record_failure_before_start(cfg, str(exc))
    except RunFailed:
        if not multirun:
            sys.exit(1)
    except KeyboardInterrupt as exc:
        if multirun:
            raise  # the sweep stops; the entry point closes its parent run
        print(f"Stopped: {'SIGTERM' if isinstance(exc, Terminated) else 'Ctrl-C'}. The run is recorded KILLED with its history so far.", file=sys.stderr)
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    except Exception as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        where = _output_dir() / "traceback.txt"
        where.write_text(traceback.format_exc())
        message = f"{type(exc).__name__}: {exc}"
        print(f"Error: the run failed with {message}\n(full traceback in {where})", file=sys.stderr)
        if not multirun:
            sys.exit(1)
        _record_failure_before_start(cfg, message)
    return math.nan


def run(cfg: DictConfig) -> float:
    _start_recorder(cfg)  # MLflow imports in the helper while this process imports torch
    import torch

    from runner.devices import resolve_device, resolve_dtype
    from runner.tracking import check_reachable, resolve_uri

    trainer = _check_trainer(cfg.trainer)
    device = resolve_device(trainer["device"])
    resolve_dtype(trainer["dtype"])  # a bad name is refused before the problem reads its data
    problem_name, problem_factory = _plugin("problem", cfg.problem)
    problem_kwargs = coerce_arguments(problem_factory, cfg.problem, "problem")
    problem = _construct(problem_factory, "problem", problem_name, **problem_kwargs)
    dtype = resolve_dtype(trainer["dtype"], problem)
    optim_name, optim_factory = _plugin("optim", cfg.optim)
    optim_kwargs = coerce_arguments(optim_factory, cfg.optim, "optim")

    torch.manual_seed(trainer["seed"])  # for plugins that draw from the global generator
    optim_extra = {"problem": problem} if "problem" in _parameters(optim_factory) else {}  # lstsq asks for it

    def make_optimizer(leaves):
        return _construct(optim_factory, "optim", optim_name, leaves, **optim_kwargs, **optim_extra)

    make_scheduler, sched_name, sched_kwargs = None, None, {}
    if cfg.get("sched") is not None:
        sched_name, sched_factory = _plugin("sched", cfg.sched)
        sched_kwargs = coerce_arguments(sched_factory, cfg.sched, "sched")
        extra = {"total_steps": trainer["steps"]} if "total_steps" in _parameters(sched_factory) else {}

        def make_scheduler(optimizer):
            return _construct(sched_factory, "sched", sched_name, optimizer, **sched_kwargs, **extra)

    seeds = list(range(trainer["seed"], trainer["seed"] + trainer["replicas"]))
    job = Job(problem, seeds, device, dtype, make_optimizer, make_scheduler, optim_factory,
              lambda generator: _initial_params(problem, problem_name, generator, device, dtype), trainer["compile"])

    parent = _sweep_parent()
    uri = parent["uri"] if parent else resolve_uri(cfg.tracking.uri)
    check_reachable(uri)
    # The record shows the values the plugins received (10 -> 10.0 for a float argument).
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["problem"], resolved["optim"] = _plain(problem_kwargs), _plain(optim_kwargs)
    if sched_name is not None:
        resolved["sched"] = _plain(sched_kwargs)
    resolved["trainer"].update(device=str(device), dtype=str(dtype).removeprefix("torch."))
    plugins = {"problem": problem_name, "optim": optim_name, **({"sched": sched_name} if sched_name else {})}
    return _record_and_optimise(cfg, resolved, trainer, plugins, problem, job, uri, device)


def _start_recorder(cfg: DictConfig) -> None:
    """Start the MLflow helper of the store this job will use; a bad URI is reported later, in order."""
    from runner.recorder import recorder_for
    from runner.tracking import resolve_uri

    parent = _sweep_parent()
    try:
        recorder_for(parent["uri"] if parent else resolve_uri(cfg.tracking.uri))
    except UserError:
        pass


def _parameters(factory) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


def _plain(kwargs: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def _record_and_optimise(cfg, resolved, trainer, plugins, problem, job, uri, device) -> float:
    from runner.console import Progress, summary
    from runner.record import LocalRecord
    from runner.recorder import recorder_for
    from runner.tracking import MetricWriter, flatten

    problem_name, optim_name = plugins["problem"], plugins["optim"]
    import matplotlib.figure  # noqa: F401  (for the figures: now, while the helper may still be importing MLflow)

    client = recorder_for(uri)
    experiment_id = _open_experiment(client, uri, cfg.tracking.experiment)
    name = cfg.tracking.run_name or _run_name(problem_name, optim_name, plugins.get("sched"))
    out_dir = _output_dir()
    config_hash = _config_hash(plugins, resolved)
    if cfg.tracking.get("skip_finished"):
        done = client.finished_run(experiment_id, config_hash)
        if done is not None:
            return _reuse(client, experiment_id, done, name, plugins, config_hash)
    tags = {**plugins, "mlflow.source.name": "runner", "output_dir": str(out_dir), "config_hash": config_hash, **_sweep_tags()}
    if job.replicas > 1:
        tags.update(replicas=str(job.replicas), replica_mode=job.plan.mode, replica_note=job.plan.reason)
    run_id = client.create_run(experiment_id, name, tags)
    flat_params = flatten(resolved)
    record = LocalRecord(out_dir, run_id=run_id, tracking_uri=uri, experiment=cfg.tracking.experiment,
                         experiment_id=experiment_id, run_name=name, tags=tags, params=flat_params)
    store = _Store(client, run_id)
    status, error, result, loop = "FINISHED", None, None, None
    history: list[tuple[int, float]] = []
    writer = MetricWriter(client, run_id, out_dir / "metrics.csv")
    mode = trainer["progress"]
    if mode == "auto" and _is_multirun():
        mode = "off"  # jobs of a sweep may run side by side: one line each at the end instead
    progress = Progress(trainer["steps"], mode, label=f"{problem_name}+{optim_name}")

    def on_points(done: int, points, times):
        history.extend(points)
        writer.put("loss", points, times)
        progress.update(done, points[-1][1] if points else None)

    previous_sigterm = _raise_on_sigterm()
    try:
        params_list = list(flat_params.items())
        for i in range(0, len(params_list), 100):
            store.call(client.log_batch, run_id, params=params_list[i : i + 100], wait=False)  # done while the loop runs
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        loop = job.run(
            steps=trainer["steps"],
            log_every=trainer["log_every"],
            check_every=trainer["check_every"],
            tol=trainer["tol"],
            on_points=on_points,
            device=device,
        )
        progress.close()
        if loop.stop_reason == "diverged":
            status, error = "FAILED", loop.error
        if math.isfinite(loop.final_loss):
            history.append((loop.steps, loop.final_loss))
            writer.put("loss", [(loop.steps, loop.final_loss)], [loop.started_at + loop.seconds])
        for key, points in (loop.bands or {}).items():
            writer.put(key, points)
        result = _result(problem, job, loop)
        (out_dir / "result.json").write_text(json.dumps(result, indent=2, allow_nan=True))
    except KeyboardInterrupt as exc:
        progress.close()
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # a second Ctrl-C leaves at once
        status = "KILLED"
        error = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
        raise
    except Exception as exc:
        progress.close()
        status, error = "FAILED", f"{type(exc).__name__}: {exc}"
        (out_dir / "traceback.txt").write_text(traceback.format_exc())
        print(f"Error: the run failed with {error}\n(full traceback in {out_dir / 'traceback.txt'})", file=sys.stderr)
        raise RunFailed(error) from exc
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        writer.close()
        if writer.error is not None:
            store.failed = writer.error  # the store is gone: do not wait on it again
        final = {}
        if loop is not None:
            final = {"final_loss": loop.final_loss, "steps": float(loop.steps), "loop_seconds": loop.seconds,
                     "compile_seconds": job.compile.seconds}
        if result is not None:
            final.update(result["metrics"])
        if loop is not None:
            final.update(_targets(problem))
        if loop is not None and loop.final_losses is not None:
            finite = [v for v in loop.final_losses if math.isfinite(v)]
            final.update(replicas_diverged=float(len(loop.final_losses) - len(finite)),
                         final_loss_min=min(finite, default=math.nan), final_loss_max=max(finite, default=math.nan))
        end_tags = [("error", error[:5000])] if error else []
        if loop is not None:  # the origin of the loss points' timestamps: reports plot loss against seconds
            end_tags += [("loop_started_at", f"{loop.started_at:.6f}"), ("compiled", job.compile.reason)]
        # Sent without waiting: the helper records them while this process draws the figures.
        store.call(client.log_batch, run_id, metrics=[(k, v, _now_ms(), 0) for k, v in final.items()], tags=end_tags, wait=False)
        artifacts = [p for p in (out_dir / "result.json", out_dir / "config.yaml") if p.exists()] if cfg.tracking.artifacts else []
        for path in artifacts:
            store.call(client.log_artifact, run_id, str(path), wait=False)
        if result is not None and status != "KILLED":
            figures = _figures(client, store, problem, job, history, name, out_dir)
            for path in figures if cfg.tracking.artifacts else []:
                store.call(client.log_artifact, run_id, str(path), wait=False)
                artifacts.append(path)
        record.update(status=status, error=error, final_metrics=final, artifacts=[p.name for p in artifacts])
        store.call(client.set_terminated, run_id, status)  # its answer comes after every one sent before
        record.update(synced=store.failed is None)
        if loop is not None and result is not None and _is_multirun():
            job_num = _hydra().job.num
            print(f"[job {job_num}] {name}: {status}{f' ({error})' if error else ''}  final loss {loop.final_loss:.6g}  {loop.steps} steps  {loop.seconds:.3f} s  run {run_id}")
        elif loop is not None and result is not None:
            print(summary(title=name, status=status, result=result, seconds=loop.seconds, compile_seconds=job.compile.seconds, run_id=run_id, uri=uri, experiment_id=experiment_id, error=error))
        elif error:
            print(f"{name}: {status} ({error}); MLflow run {run_id}", file=sys.stderr)
        if store.failed is not None:
            print(f"Warning: the tracking store {uri} stopped answering during the run ({str(store.failed).splitlines()[0][:200]}). "
                  f"The full record is kept in {out_dir}; upload it with: python -m runner sync {out_dir}", file=sys.stderr)
    if status == "FAILED":
        raise RunFailed(error)
    return loop.final_loss


def _figures(client, store, problem, job, history, name: str, out_dir: Path) -> list[Path]:
    """loss_curve.png and the problem's own figures. A figure that cannot be drawn is a warning
    (and a `figures_error` tag), not a failed run: the optimisation's record is complete without it."""
    from runner.figures import save_loss_curve, save_problem_figures

    figures = [out_dir / "loss_curve.png"]
    title = f"{name}: loss" + (f" (median of {job.replicas} replicas)" if job.replicas > 1 else "")
    try:
        if _is_multirun():  # the helper draws it while this process draws the problem's figures
            client.draw_loss_curve(history, str(figures[0]), title)
        else:  # a single run: the helper would first have to import matplotlib
            save_loss_curve(history, figures[0], title)
        figures += save_problem_figures(problem, job.final_params[0], out_dir)
    except Exception as exc:
        (out_dir / "figures_traceback.txt").write_text(traceback.format_exc())
        log.warning("A figure of the run could not be drawn (%s: %s); traceback in %s.", type(exc).__name__, exc, out_dir / "figures_traceback.txt")
        store.call(client.set_tag, store.run_id, "figures_error", f"{type(exc).__name__}: {exc}"[:5000])
        figures += [p for p in out_dir.glob("*.png") if p not in figures]  # those drawn before it failed
    store.call(client.wait)  # the helper's loss curve is drawn (a failure to draw it is only logged)
    return [p for p in figures if p.exists()]


def _targets(problem) -> dict[str, float]:
    """`loss_optimum` (the known minimum) and `loss_target` (solved at or below it), where the problem
    knows them: reports count a run as solved when its loss reaches the target."""
    out = {}
    for key, method in (("loss_optimum", "optimum_loss"), ("loss_target", "target_loss")):
        try:
            value = getattr(problem, method)() if hasattr(problem, method) else None
        except Exception as exc:  # an optional extra must not fail a finished run
            log.warning("%s() of the problem failed: %s", method, exc)
            value = None
        if value is not None and math.isfinite(value):
            out[key] = float(value)
    return out


def _result(problem, job, loop) -> dict:
    """result.json: one replica's solution and metrics, or for R replicas the median of each
    metric (and its max), each replica's seed, final loss and solution, and the spread."""
    def metrics_of(p):
        return {k: float(v) for k, v in (problem.metrics(p) if hasattr(problem, "metrics") else {}).items()}

    def solution_of(p):
        return problem.solution(p) if hasattr(problem, "solution") else {}

    known = problem.truth() if hasattr(problem, "truth") else None
    truth = {"truth": known} if known else {}

    if job.replicas == 1:
        p = job.final_params[0]
        return {"final_loss": loop.final_loss, "steps": loop.steps, "solution": solution_of(p), "metrics": metrics_of(p), **truth}
    import numpy as np

    per = [{"seed": s, "final_loss": f, "solution": solution_of(p), "metrics": metrics_of(p)}
           for s, f, p in zip(job.seeds, loop.final_losses, job.final_params)]
    keys = per[0]["metrics"].keys()
    metrics = {k: float(np.nanmedian([r["metrics"][k] for r in per])) for k in keys}
    metrics.update({f"{k}_max": float(np.nanmax([r["metrics"][k] for r in per])) for k in keys})
    best = min(per, key=lambda r: r["final_loss"] if math.isfinite(r["final_loss"]) else math.inf)
    return {"final_loss": loop.final_loss, "steps": loop.steps, "solution": best["solution"], "metrics": metrics,
            "replicas": per, "replica_mode": job.plan.mode, **truth}


class _Store:
    """MLflow calls after the run exists: the first failure is remembered, later calls skipped."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id, self.failed = client, run_id, None

    def call(self, fn, *args, **kwargs) -> bool:
        if self.failed is not None:
            return False
        try:
            fn(*args, **kwargs)  # the helper retries a busy SQLite store itself
            return True
        except Exception as exc:  # the local record keeps everything; sync uploads it later
            self.failed = exc
            return False


def _config_hash(plugins: dict, resolved: dict) -> str:
    """A stable hash of what determines the result: plugins and config, not tracking or display."""
    import hashlib

    config = {k: v for k, v in resolved.items() if k != "tracking"}
    config["trainer"] = {k: v for k, v in config.get("trainer", {}).items() if k != "progress"}
    text = json.dumps({"plugins": plugins, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _open_experiment(client, uri: str, name: str) -> str:
    from runner.recorder import StoreError

    try:
        return client.open_experiment(name)
    except StoreError as exc:
        raise UserError(f"The tracking store {uri} could not open experiment '{name}': {str(exc).splitlines()[0][:300]}") from None


def _reuse(client, experiment_id: str, done, name: str, plugins: dict, config_hash: str) -> float:
    """tracking.skip_finished: report the recorded result instead of running again. In a sweep the
    job still appears under the new parent, as a FINISHED child that points at the original."""
    done_id, m = done
    final_loss = m.get("final_loss", math.nan)
    print(f"{name}: already FINISHED as run {done_id} (same config, hash {config_hash}); final loss {final_loss:.6g}. Not run again.")
    if _sweep_parent() is not None:
        tags = {**plugins, "config_hash": config_hash, "reused_run_id": done_id, **_sweep_tags()}
        run_id = client.create_run(experiment_id, name, tags)
        client.log_batch(run_id, metrics=[(k, m[k], _now_ms(), 0) for k in ("final_loss", "steps", "loop_seconds") if k in m])
        client.set_terminated(run_id, "FINISHED")
    return final_loss


# -- input checks ---------------------------------------------------------------------------------
def _check_trainer(t: DictConfig) -> dict[str, Any]:
    t = OmegaConf.to_container(t, resolve=True)
    positive = {"steps": "the number of optimiser steps", "replicas": "the number of replicas", "log_every": "steps between logged loss points", "check_every": "steps between checks of tol and divergence"}
    for key, what in positive.items():
        if t[key] < 1:
            raise UserError(f"trainer.{key}={t[key]} is out of range: it is {what} and must be at least 1.")
    if t["tol"] is not None and not (t["tol"] >= 0):
        raise UserError(f"trainer.tol={t['tol']} is out of range: it must be >= 0, or null to run every step.")
    from runner.compiling import MODES, normalise

    t["compile"] = normalise(t["compile"])
    if t["compile"] not in MODES:
        raise UserError(f"trainer.compile={t['compile']!r} is not allowed; allowed: {', '.join(MODES)} "
                        "(auto: compile the loss where the problem says it pays).")
    if t["progress"] not in PROGRESS_MODES:
        raise UserError(f"trainer.progress={t['progress']!r} is not allowed; allowed: {', '.join(PROGRESS_MODES)}.")
    return t


def _plugin(kind: str, node: DictConfig):
    if node is None or "_name_" not in node:
        raise UserError(f"No {kind} selected: choose one with {kind}=NAME (available: {', '.join(registry.plugins(kind))}).")
    name = node["_name_"]
    if "_broken_" in node:
        raise UserError(f"The {kind} plugin '{name}' could not be loaded: {node['_broken_']}")
    return name, registry.get(kind, name).load()


def _construct(factory, kind: str, name: str, *args, **kwargs):
    """Call a plugin's factory; its ValueError/TypeError is a bad-input message, not a crash."""
    try:
        return factory(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        raise UserError(f"{kind}={name} rejected its arguments: {message}" + ("" if message.endswith(".") else ".")) from None


def _initial_params(problem, name, generator, device, dtype) -> dict:
    import torch

    params = problem.initial_params(generator, device, dtype)
    if not isinstance(params, dict) or not params or not all(isinstance(v, torch.Tensor) and v.is_floating_point() for v in params.values()):
        raise UserError(f"The problem plugin '{name}' broke its contract: initial_params must return a non-empty dict of floating-point tensors.")
    for key, value in params.items():
        params[key] = value.detach().requires_grad_(True)
    return params


# -- sweeps ---------------------------------------------------------------------------------------
def _sweep_parent():
    if not _is_multirun():
        return None
    from runner.sweep import parent_of_job

    return parent_of_job()


def _sweep_tags() -> dict:
    parent, hc = _sweep_parent(), _hydra()
    if not parent or hc is None:
        return {}
    return {"mlflow.parentRunId": parent["run_id"], "sweep_job": str(hc.job.num), "overrides": " ".join(hc.overrides.task)}


def _record_failure_before_start(cfg: DictConfig, error: str) -> None:
    """A sweep job that failed before its run existed still gets a FAILED child run."""
    parent = _sweep_parent()
    if parent is None:
        return
    try:
        from runner.recorder import recorder_for
        from runner.tracking import flatten

        client = recorder_for(parent["uri"])
        names = {k: str(OmegaConf.select(cfg, f"{k}._name_", default="?")) for k in ("problem", "optim")}
        run_id = client.create_run(parent["experiment_id"], _run_name(names["problem"], names["optim"]), {**names, "error": error[:5000], **_sweep_tags()})
        params = list(flatten(OmegaConf.to_container(cfg, resolve=False)).items())
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i : i + 100])
        client.set_terminated(run_id, "FAILED")
    except Exception as exc:  # the tracking store itself is the problem: the console still says why
        print(f"(could not record the failed job in MLflow: {exc})", file=sys.stderr)


# -- Hydra context --------------------------------------------------------------------------------
def _hydra():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _is_multirun() -> bool:
    hc = _hydra()
    return hc is not None and str(hc.mode) == "RunMode.MULTIRUN"


def _output_dir() -> Path:
    hc = _hydra()
    path = Path(hc.runtime.output_dir) if hc is not None else Path(tempfile.mkdtemp(prefix="runner-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_name(problem: str, optim: str, sched: str | None = None) -> str:
    """poly-adam-lr=0.1-seed=3: the plugins, then the overrides that differ from the defaults."""
    parts = [problem, optim] + ([sched] if sched else [])
    hc = _hydra()
    for override in hc.overrides.task if hc is not None else []:
        key, _, value = override.lstrip("+~").partition("=")
        if key in ("problem", "optim", "sched") or key in _NOT_IN_NAME or key.startswith(("tracking.", "hydra")):
            continue
        if key == "experiment":
            parts.insert(0, value)
        elif key != "hparams_search":  # the sweep's parent run carries the preset's name
            parts.append(f"{key.rsplit('.', 1)[-1]}={short_value(value)}")
    return "-".join(parts)


def _raise_on_sigterm():
    import threading

    if threading.current_thread() is not threading.main_thread():
        return signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)

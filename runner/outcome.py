"""What a finished loop amounts to: result.json and the run's final metrics."""
from __future__ import annotations

import logging
import math

from runner.replicas import Finals

log = logging.getLogger("runner")


def result(problem, job, loop) -> dict:
    """result.json: one replica's solution and metrics, or for R replicas the median of each
    metric (and its max), each replica's seed, final loss and solution, and the spread.
    `problem`: a adapter.ProblemHooks."""
    known = problem.truth()
    truth = {"truth": known} if known else {}
    if job.replicas == 1:
        p = job.final_params[0]
        return {"final_loss": loop.final_loss, "steps": loop.steps, "solution": problem.solution(p), "metrics": problem.metrics(p), **truth}
    import numpy as np

    per = [{"seed": s, "final_loss": f, "solution": problem.solution(p), "metrics": problem.metrics(p)}
           for s, f, p in zip(job.seeds, loop.final_losses, job.final_params)]
    keys = per[0]["metrics"].keys()
    metrics = {k: float(np.nanmedian([r["metrics"][k] for r in per])) for k in keys}
    metrics.update({f"{k}_max": float(np.nanmax([r["metrics"][k] for r in per])) for k in keys})
    best = min(per, key=lambda r: r["final_loss"] if math.isfinite(r["final_loss"]) else math.inf)
    return {"final_loss": loop.final_loss, "steps": loop.steps, "solution": best["solution"], "metrics": metrics,
            "replicas": per, "replica_mode": job.plan.mode, **truth}


def final_metrics(problem, job, loop, result_json, with_targets: bool = True) -> dict[str, float]:
    """The run's final metrics: the loop's figures, the problem's metrics, its targets, and for
    replicas how many diverged and the spread. Whatever part exists when the run ends.
    `with_targets=False` (an interrupted run): no more computation (a reference solve can take long)."""
    if loop is None:
        return {}
    final = {"final_loss": loop.final_loss, "steps": float(loop.steps), "loop_seconds": loop.seconds,
             "compile_seconds": job.compile.seconds}
    if result_json is not None:
        final.update(result_json["metrics"])
    if with_targets:
        final.update(targets(problem))
    if loop.final_losses is not None:
        final.update(Finals(loop.final_losses).metrics())
    return final


def targets(problem) -> dict[str, float]:
    """`loss_optimum` (the known minimum) and `loss_target` (solved at or below it), where the problem
    knows them: reports count a run as solved when its loss reaches the target."""
    out = {}
    for key, hook in (("loss_optimum", problem.optimum_loss), ("loss_target", problem.target_loss)):
        try:
            value = hook()
        except Exception as exc:  # an optional extra must not fail a finished run
            log.warning("%s() of the problem failed: %s", hook.__name__, exc)
            value = None
        if value is not None and math.isfinite(value):
            out[key] = float(value)
    return out

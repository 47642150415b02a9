"""What a finished loop amounts to: result.json and the run's final metrics."""
from __future__ import annotations

import logging
import math
import statistics

from runner.replicas import Finals

log = logging.getLogger("runner")


def result(problem, job, loop) -> dict:
    """result.json: one replica's solution and metrics, or for R replicas the median of each
    metric (and its max), each replica's seed, final loss and solution, and the spread.
    The top-level figures are the final parameters'; `final` and `best` say the same for the
    final point and for the least loss seen (runner/best.py), labelled alike: loss, step,
    solution, metrics. `problem`: a adapter.ProblemHooks."""
    known = problem.truth()
    truth = {"truth": known} if known else {}
    best = loop.best
    if job.replicas == 1:
        p = job.final_params[0]
        final = {"loss": loop.final_loss, "step": loop.steps, "solution": problem.solution(p), "metrics": problem.metrics(p)}
        out = {"final_loss": loop.final_loss, "steps": loop.steps, "solution": final["solution"], "metrics": final["metrics"],
               "final": final, **truth}
        if best is not None and job.best_params:
            out["best"] = _point(problem, best.losses[0], best.steps[0], job.best_params[0], final, loop.steps)
        return out
    import numpy as np

    per = [{"seed": s, "final_loss": f, "solution": problem.solution(p), "metrics": problem.metrics(p)}
           for s, f, p in zip(job.seeds, loop.final_losses, job.final_params)]
    if best is not None and len(job.best_params) == len(per):
        for r, loss, step, p in zip(per, best.losses, best.steps, job.best_params):
            r["best"] = _point(problem, loss, step, p, {"solution": r["solution"], "metrics": r["metrics"]}, loop.steps)
    keys = per[0]["metrics"].keys()
    metrics = {k: float(np.nanmedian([r["metrics"][k] for r in per])) for k in keys}
    metrics.update({f"{k}_max": float(np.nanmax([r["metrics"][k] for r in per])) for k in keys})
    lowest = min(per, key=lambda r: r["final_loss"] if math.isfinite(r["final_loss"]) else math.inf)
    out = {"final_loss": loop.final_loss, "steps": loop.steps, "solution": lowest["solution"], "metrics": metrics,
           "final": {"loss": loop.final_loss, "step": loop.steps, "solution": lowest["solution"], "metrics": metrics},
           "replicas": per, "replica_mode": job.plan.mode, **truth}
    if all("best" in r for r in per):
        bests = [r["best"] for r in per]
        winner = min(bests, key=lambda b: b["loss"] if math.isfinite(b["loss"]) else math.inf)
        bkeys = bests[0]["metrics"].keys()
        out["best"] = {"loss": _median([b["loss"] for b in bests]), "step": _median([b["step"] for b in bests]),
                       "solution": winner["solution"],
                       "metrics": {k: float(np.nanmedian([b["metrics"][k] for b in bests])) for k in bkeys}}
    return out


def _point(problem, loss: float, step: int, params, final: dict, final_step: int) -> dict:
    """{loss, step, solution, metrics} of the best point; the final's figures when it is the final point."""
    if step == final_step:
        return {"loss": loss, "step": step, "solution": final["solution"], "metrics": final["metrics"]}
    return {"loss": loss, "step": step, "solution": problem.solution(params), "metrics": problem.metrics(params)}


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(statistics.median(finite)) if finite else math.nan


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
        best = result_json.get("best")
        if best is not None:  # the least loss seen, its step and the problem's metrics there
            final.update({"best_loss": best["loss"], "best_step": float(best["step"]),
                          **{f"best_{k}": v for k, v in best["metrics"].items() if isinstance(v, (int, float))}})
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

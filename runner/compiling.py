"""`trainer.compile=auto|true|false`: torch.compile the problem's loss where it pays.

Compiling costs seconds (about 10 cold, 1.5 warm on this machine's CPU) and pays only where a
step is long enough for fused kernels to win them back: large data read in one pass. `auto`
asks the problem (`compile_pays(device, dtype) -> bool`, optional; no answer means no).
The compilation happens in a warm-up call before the loop, timed as `compile_seconds`, so that
`loop_seconds` stays a steady-state figure. A loss that cannot be compiled runs eagerly, and the
record says why.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import torch

log = logging.getLogger("runner")
MODES = ("auto", "true", "false")


@dataclass
class CompilePlan:
    compile: bool
    reason: str  # for the record: why compiled or not
    seconds: float = 0.0  # the warm-up that compiled, forward and backward


def normalise(mode) -> str:
    """trainer.compile as typed: true/false (Hydra gives bools), or auto."""
    text = str(mode).strip().lower()
    return {"1": "true", "0": "false", "yes": "true", "no": "false", "on": "true", "off": "false"}.get(text, text)


def decide(mode: str, problem, device, dtype) -> CompilePlan:
    if mode == "false":
        return CompilePlan(False, "trainer.compile=false")
    if mode == "true":
        return CompilePlan(True, "trainer.compile=true")
    if problem.compile_pays(device, dtype):  # a contract.ProblemHooks
        return CompilePlan(True, "auto: the problem's data are large enough for a fused pass to pay")
    return CompilePlan(False, "auto: eager is faster for this problem (compiling costs seconds)")


def compile_loss(loss: Callable) -> Callable:
    """The compiled loss; shapes do not change during a run, so no dynamic shapes."""
    return torch.compile(loss, dynamic=False)


def warm_up(plan: CompilePlan, loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> None:
    """Call the compiled loss once, forward and backward, outside the loop and its timing; the
    gradients are cleared after, so the optimiser's trajectory is the eager one's. When compiling
    fails, `plan.compile` becomes False and the reason is recorded: the loop then runs eagerly."""
    if not plan.compile:
        return
    start = time.perf_counter()
    try:
        loss = loss_fn()
        (loss.sum() if loss.dim() else loss).backward()
    except Exception as exc:  # no C++ compiler, an op inductor does not support...
        plan.compile, plan.reason = False, f"compiling failed, ran eagerly ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        log.warning("trainer.compile: %s", plan.reason)
    finally:
        for p in params:
            p.grad = None
        plan.seconds = time.perf_counter() - start

"""`trainer.compile=auto|true|false`: torch.compile the problem's loss where it pays.

Compiling costs seconds (about 10 cold, 1.5 warm on this machine's CPU) and pays only where a
step is long enough for fused kernels to win them back: large data read in one pass. `auto`
asks the problem (`compile_pays(device, dtype) -> bool`, optional; no answer means no), and
then the run's length: a fused step saves tens to hundreds of milliseconds on a CPU but a fraction
of a millisecond on a GPU, where a cold compile (Triton) costs tens of seconds, so `auto` compiles
only from MIN_STEPS[device type] steps on.
The compilation happens in a warm-up call before the loop, timed (device synchronised) as
`compile_seconds`, so that `loop_seconds` stays a steady-state figure. On CUDA an eager loss is
warmed up too, untimed: the first call pays library set-up and kernel loading. A loss that cannot
be compiled runs eagerly, and the record says why.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import torch

from runner.devices import sync

log = logging.getLogger("runner")
MODES = ("auto", "true", "false")
# trainer.compile=auto: the fewest steps for which compiling can win its cost back, by device type.
# CPU: compiling takes 2-10 s and a fused step saves 20-200 ms (poly, 1e6-1e7 samples, float64).
# CUDA: a cold compile takes tens of seconds and a fused step saves well under a millisecond.
MIN_STEPS = {"cpu": 200, "cuda": 20_000}


@dataclass
class CompilePlan:
    compile: bool
    reason: str  # for the record: why compiled or not
    seconds: float = 0.0  # the warm-up that compiled, forward and backward


def normalise(mode) -> str:
    """trainer.compile as typed: true/false (Hydra gives bools), or auto."""
    text = str(mode).strip().lower()
    return {"1": "true", "0": "false", "yes": "true", "no": "false", "on": "true", "off": "false"}.get(text, text)


def decide(mode: str, problem, device, dtype, steps: int | None = None) -> CompilePlan:
    if mode == "false":
        return CompilePlan(False, "trainer.compile=false")
    if mode == "true":
        return CompilePlan(True, "trainer.compile=true")
    if not problem.compile_pays(device, dtype):  # a adapter.ProblemHooks
        return CompilePlan(False, "auto: eager is faster for this problem (compiling costs seconds)")
    kind = torch.device(device).type
    least = MIN_STEPS.get(kind, MIN_STEPS["cuda"])
    if steps is not None and steps < least:
        return CompilePlan(False, f"auto: eager, {steps} steps are too few to win back compiling on {kind} "
                                  f"(auto compiles from {least} steps; trainer.compile=true forces it)")
    return CompilePlan(True, "auto: the problem's data are large enough for a fused pass to pay")


def compile_loss(loss: Callable) -> Callable:
    """The compiled loss; shapes do not change during a run, so no dynamic shapes."""
    return torch.compile(loss, dynamic=False)


def warm_up(plan: CompilePlan, loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> None:
    """Call the compiled loss once, forward and backward, outside the loop and its timing; the
    gradients are cleared after, so the optimiser's trajectory is the eager one's. When compiling
    fails, `plan.compile` becomes False and the reason is recorded: the loop then runs eagerly.
    The clock is read after the device has finished (a GPU compile's first kernels included)."""
    if not plan.compile:
        return
    device = params[0].device if params else None
    sync(device)
    start = time.perf_counter()
    try:
        _forward_backward(loss_fn)
        sync(device)
    except Exception as exc:  # no C++ compiler, an op inductor does not support...
        plan.compile, plan.reason = False, f"compiling failed, ran eagerly ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        log.warning("trainer.compile: %s", plan.reason)
    finally:
        for p in params:
            p.grad = None
        plan.seconds = time.perf_counter() - start


def warm_up_eager(loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> None:
    """On CUDA, one untimed forward and backward before the loop: the first call pays cuBLAS and
    cuSPARSE set-up and kernel loading, which would otherwise land in the first step's time
    (loop_seconds). The gradients are cleared after, so the trajectory does not change. Nothing on
    the CPU: there the first call costs little, and a run stays exactly as it was."""
    device = params[0].device if params else None
    if device is None or device.type != "cuda":
        return
    try:
        _forward_backward(loss_fn)
        sync(device)
    finally:
        for p in params:
            p.grad = None


def _forward_backward(loss_fn: Callable[[], torch.Tensor]) -> None:
    loss = loss_fn()
    (loss.sum() if loss.dim() else loss).backward()

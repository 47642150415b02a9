"""Turn trainer.device / trainer.dtype strings into torch objects, with clear errors.

One device, one name: `auto` on a GPU machine, `cuda` and `cuda:0` are the same device and are
recorded the same way, as `cuda:0` (params, config_hash, run name), so that runs on it compare
and `tracking.skip_finished` finds them whichever way the device was asked for.
"""
from __future__ import annotations

import os
import re

import torch

from runner.errors import UserError

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# trainer.device=auto keeps a problem on the CPU when a step reads fewer numbers than this (over
# all replicas): there a GPU step is bound by kernel launches (~5-10 us each), which a CPU does
# faster, and every process of a sweep would open a CUDA context of its own for nothing.
AUTO_GPU_MIN_WORK = 1_000_000


def resolve_device(spec: str) -> torch.device:
    """The device, always with its index on CUDA (`cuda` -> `cuda:0`): its str() is the record's."""
    allowed = "allowed: auto, cpu, cuda, cuda:N"
    if spec == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")  # no CUDA init here
    if spec == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not m:
        raise UserError(f"trainer.device={spec!r} is not a device this runner knows; {allowed}.")
    if not torch.cuda.is_available():
        raise UserError(
            f"trainer.device={spec} is not available: PyTorch sees no CUDA device on this machine "
            f"(torch {torch.__version__}). Use trainer.device=cpu or trainer.device=auto."
        )
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UserError(
            f"trainer.device={spec} is not available: this machine has {torch.cuda.device_count()} CUDA "
            f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}."
        )
    return torch.device("cuda", index)


def auto_for_problem(spec: str, device: torch.device, problem, dtype: torch.dtype, replicas: int = 1) -> tuple[torch.device, str]:
    """trainer.device=auto, once the problem is known: the CPU when the problem says a step is too
    small to gain from a GPU (optional `work_per_step(dtype)`: about how many numbers one step of
    one replica reads). An explicit device is always kept. Returns the device and why."""
    if spec == "auto" and device.type == "cpu" and os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return device, ("auto: cpu, CUDA_VISIBLE_DEVICES is empty: the launcher hid the GPUs from this job "
                        "(Ray does for a job that asks for none: hydra/launcher=ray_gpu asks for one)")
    if spec != "auto" or device.type != "cuda":
        return device, ""
    try:
        work = problem.work_per_step(dtype)  # a adapter.ProblemHooks: None when the plugin does not say
        if work is None:
            return device, ""
        work = int(work) * max(replicas, 1)
    except Exception:  # an optional hint must never stop a run
        return device, ""
    if work < AUTO_GPU_MIN_WORK:
        return torch.device("cpu"), (f"auto: cpu, a step reads about {work} numbers (< {AUTO_GPU_MIN_WORK}): "
                                     "too small to gain from a GPU; trainer.device=cuda forces it")
    return device, ""


def sync(device) -> None:
    """Wait for the device's queued work, so that a clock read after it times the work itself.
    A no-op on the CPU (work there is done when the call returns)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def resolve_dtype(spec: str, problem=None) -> torch.dtype:
    """`auto`: the problem's `preferred_dtype` ("float64" for certified-accuracy fits), else float32.
    `problem`: a adapter.ProblemHooks."""
    if spec == "auto":
        spec = (problem.preferred_dtype if problem is not None else None) or "float32"
    if spec not in DTYPES:
        raise UserError(f"trainer.dtype={spec!r} is not supported; allowed: auto, {', '.join(DTYPES)}.")
    return DTYPES[spec]

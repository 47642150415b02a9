"""Turn trainer.device / trainer.dtype strings into torch objects, with clear errors."""
from __future__ import annotations

import re

import torch

from runner.errors import UserError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(spec: str) -> torch.device:
    allowed = "allowed: auto, cpu, cuda, cuda:N"
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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


def resolve_dtype(spec: str, problem=None) -> torch.dtype:
    """`auto`: the problem's `preferred_dtype` ("float64" for certified-accuracy fits), else float32.
    `problem`: a contract.ProblemHooks."""
    if spec == "auto":
        spec = (problem.preferred_dtype if problem is not None else None) or "float32"
    if spec not in DTYPES:
        raise UserError(f"trainer.dtype={spec!r} is not supported; allowed: auto, {', '.join(DTYPES)}.")
    return DTYPES[spec]

"""What an optimiser plugin asks of the loop: the attributes runner/contract.py's `Optimizer`
lists (elementwise, elementwise_unless, create_graph, train_eval, grad_before_step, needs_matrix,
refused), read once into `Needs`; absent means False / None. The loop (runner/loop.py), the job
and the replica plan honour them, and the refusals here happen before a run exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from runner.errors import UserError

MATRIX = ("all", "any")


@dataclass(frozen=True)
class Needs:
    name: str
    elementwise: bool = False
    create_graph: bool = False
    train_eval: bool = False
    grad_before_step: bool = False
    needs_matrix: Optional[str] = None
    refused: Optional[str] = None


def of(factory: Any, name: str, kwargs: Optional[Mapping[str, Any]] = None) -> Needs:
    """The needs of `factory` as configured with `kwargs` (an option may turn `elementwise` off)."""
    kwargs = kwargs or {}
    coupling = [k for k in getattr(factory, "elementwise_unless", ()) if kwargs.get(k)]
    matrix = getattr(factory, "needs_matrix", None)
    if matrix is not None and matrix not in MATRIX:
        raise UserError(f"The optim plugin '{name}' declares needs_matrix={matrix!r}; allowed: {', '.join(MATRIX)}.")
    return Needs(
        name=name,
        elementwise=bool(getattr(factory, "elementwise", False)) and not coupling,
        create_graph=bool(getattr(factory, "create_graph", False)),
        train_eval=bool(getattr(factory, "train_eval", False)),
        grad_before_step=bool(getattr(factory, "grad_before_step", False)),
        needs_matrix=matrix,
        refused=getattr(factory, "refused", None) or None,
    )


def refuse_if_declared(needs: Needs) -> None:
    if needs.refused:
        raise UserError(f"optim={needs.name} cannot run in this runner: {needs.refused}")


def check_parameters(needs: Needs, shapes: Mapping[str, tuple]) -> None:
    """Refuse a matrix method on a problem without the matrices it works on (one replica's shapes)."""
    if needs.needs_matrix is None:
        return
    matrices = [k for k, s in shapes.items() if len(s) >= 2]
    if (needs.needs_matrix == "all" and len(matrices) < len(shapes)) or not matrices:
        shown = ", ".join(f"'{k}' {list(s)}" for k, s in shapes.items())
        which = "every parameter" if needs.needs_matrix == "all" else "at least one parameter"
        raise UserError(
            f"optim={needs.name} works on matrices: it needs {which} with two or more dimensions, and "
            f"this problem's parameters are {shown}. On vectors it would "
            + ("not run at all" if needs.needs_matrix == "all" else "only run its fallback for non-matrix parameters (an AdamW-like update), which is not the method")
            + "; choose a problem with matrix parameters or another optimiser."
        )

"""Plugins are found through Python entry points, built-ins and third-party alike.

Groups: `runner.problems`, `runner.optimizers` and `runner.schedulers`. Listing names reads package
metadata only (`--help` imports no plugin); a plugin's module is imported when its config or class
is first needed, and checked then against the written contract (runner/contract.py).
"""
from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass
from functools import cache
from typing import Any

from runner.errors import UserError

GROUPS = {"problem": "runner.problems", "optim": "runner.optimizers", "sched": "runner.schedulers"}


@dataclass(frozen=True)
class Plugin:
    kind: str  # "problem", "optim" or "sched"
    name: str
    entry_point: md.EntryPoint

    @property
    def source(self) -> str:
        dist = getattr(self.entry_point, "dist", None)
        return dist.name if dist is not None else "?"

    @property
    def where(self) -> str:
        return f"The {self.kind} plugin '{self.name}' (entry point {self.entry_point.value} from package '{self.source}')"

    def load(self) -> Any:
        """The plugin's class or factory, imported and checked against the contract."""
        from runner import contract

        try:
            obj = self.entry_point.load()
        except Exception as exc:
            raise UserError(f"{self.where} could not be imported: {type(exc).__name__}: {exc}") from exc
        try:
            contract.check(self.kind, obj)
        except ValueError as exc:
            raise UserError(f"{self.where} breaks the plugin contract of runner/contract.py: {exc}.") from None
        return obj


@cache
def plugins(kind: str) -> dict[str, Plugin]:
    """All registered plugins of one kind, by name. The first registration of a name wins."""
    found: dict[str, Plugin] = {}
    for ep in md.entry_points(group=GROUPS[kind]):
        found.setdefault(ep.name, Plugin(kind, ep.name, ep))
    return dict(sorted(found.items()))


def get(kind: str, name: str) -> Plugin:
    available = plugins(kind)
    if name not in available:
        listed = ", ".join(available) or "none (is the project installed? pip install -e .)"
        raise UserError(f"Unknown {kind} '{name}'. Available {kind} plugins: {listed}.")
    return available[name]

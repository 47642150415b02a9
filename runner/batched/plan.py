"""Which jobs of a sweep may share one program, read from their overrides alone.

Two jobs may share a batch when their overrides differ only in *values along the batch axis*:
`trainer.seed` and numeric values of the optimiser's and the schedule's arguments (`optim.lr=0.01`,
`optim.betas=[0.9,0.99]`, `sched.gamma=0.9`). Every other override (a group selection such as
`problem=puzzle`, a problem argument, `trainer.steps`, a boolean optimiser flag, an addition `+k=v`
or deletion `~k`) must be the same for all of them: it forms the group's key, and the group's
config is composed by Hydra once. Whether a group really batches (an elementwise optimiser, a
problem vmap can batch, ...) is decided after that, on the composed configs (runner/batched/launch.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

AXIS_PREFIXES = ("optim.", "sched.")


@dataclass
class Group:
    key: tuple[str, ...]  # the overrides every job of the group shares
    jobs: list[int] = field(default_factory=list)  # positions in the sweep's list of jobs
    values: list[dict[str, Any]] = field(default_factory=list)  # each job's batch-axis values, by key


def _numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, list) and bool(value) and all(_numeric(v) and not isinstance(v, list) for v in value)


def on_axis(override) -> bool:
    """A plain `key=value` override along the batch axis (a Hydra `Override`)."""
    if override.package is not None or override.is_add() or override.is_delete() or override.is_force_add():
        return False
    key = override.key_or_group
    if key == "trainer.seed":
        return isinstance(override.value(), int) and not isinstance(override.value(), bool)
    return key.startswith(AXIS_PREFIXES) and key.count(".") == 1 and _numeric(override.value())


def group(job_overrides: list[list[str]]) -> list[Group]:
    """The jobs grouped by their shared overrides, groups in the order of their first job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed: dict[str, Any] = {}  # each distinct override parsed once: a 10 x 100 grid has 110 of them, not 2000

    def parse(text: str):
        if text not in parsed:
            parsed[text] = parser.parse_overrides([text])[0]
        return parsed[text]

    groups: dict[tuple[str, ...], Group] = {}
    for position, overrides in enumerate(job_overrides):
        shared, values = [], {}
        for o in map(parse, overrides):
            if on_axis(o) and o.key_or_group not in values:
                values[o.key_or_group] = o.value()
            else:
                shared.append(o.input_line)
        key = tuple(sorted(shared)) + tuple(f"{k}=" for k in sorted(values))  # the same keys on the axis, too
        g = groups.setdefault(key, Group(key))
        g.jobs.append(position)
        g.values.append(values)
    return list(groups.values())

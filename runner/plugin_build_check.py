"""The check of a sweep's plugin argument values by building the plugin, before Hydra starts.

Some values only the plugin can judge (Adam's lr=-1, poly's n_samples=0): the schema checks of
runner/override_check.py know an argument's name and type, not its range. So each swept value of a
plugin argument is tried by building the plugin once, here, where a bad value refuses the whole
sweep before any job runs, rather than failing some of its jobs.
"""
from __future__ import annotations

from typing import Any, Optional

from runner.errors import UserError
from runner.override_check import PLUGIN_GROUPS, override_values


def check_swept_values(params: dict, overrides, multirun: bool = False) -> None:
    """A sweep's values that only a plugin can judge (Adam's lr=-1, poly's n_samples=0): each
    swept value of `G.ARG` is given to each chosen plugin of G, built once with the command
    line's other G arguments (and the first value of each other swept one) and once with that
    value too. Only a value that turns a build that works into one that fails refuses the sweep,
    so a plugin that cannot be built here (it needs the run's problem, or a required file) is
    left to its jobs. Values are judged one at a time;
    a combination that fails only together fails its job (recorded FAILED).

    `params`: group -> chosen plugin -> argument -> inspect.Parameter (override_check.Schema.params);
    `overrides`: Hydra's parsed overrides of the command line and the sweeper's search space."""
    for group in PLUGIN_GROUPS:
        fixed, swept, fixed_lines = {}, [], {}
        for o in overrides:
            key = o.key_or_group
            if key.startswith(group + ".") and "." not in key[len(group) + 1:] and not key[len(group) + 1:].startswith("_") and not o.is_delete():
                if o.is_sweep_override():
                    swept.append((key[len(group) + 1:], o))
                else:
                    fixed[key[len(group) + 1:]] = o.value()
                    fixed_lines[key[len(group) + 1:]] = o.input_line or key
        if not (swept or (multirun and fixed)) or any(isinstance(v, str) and "${" in v for v in fixed.values()):
            continue  # nothing swept (nor fixed in a sweep), or an interpolation only Hydra resolves
        for name, args in params[group].items():
            if multirun and fixed:
                _check_fixed_values(group, name, args, fixed, fixed_lines, swept)
            for arg, o in swept:
                # The base is one real job: the fixed arguments and the first value of every
                # other swept one (problem.start=1,2 is judged on the swept dataset, not the default).
                base = {k: _convert(args[k].annotation, v) for k, v in fixed.items()}
                base |= {k: _convert(args[k].annotation, override_values(other)[0]) for k, other in swept
                         if k != arg and override_values(other) and not (isinstance(override_values(other)[0], str) and "${" in override_values(other)[0])}
                if _build(group, name, base) is not None:
                    continue  # the base itself fails (or cannot be built here): the jobs say why
                for value in override_values(o):
                    if isinstance(value, str) and "${" in value:
                        continue
                    why = _build(group, name, {**base, arg: _convert(args[arg].annotation, value)})
                    if why is not None:
                        raise UserError(f"{group}={name} refuses {group}.{arg}={value!r} (in {o.input_line}): {why.rstrip('.')}. "
                                        "A bad value anywhere in a sweep refuses the whole sweep; nothing was run.")


def _check_fixed_values(group: str, name: str, args: dict, fixed: dict, lines: dict, swept: list) -> None:
    """In a sweep, the fixed arguments of `group` that plugin `name` refuses: every one of its jobs
    would fail, so the sweep is refused as for a bad swept value (`-m optim=adam,sgd optim.lr=-1`).
    Judged like a swept value: on a build with the first value of each swept argument that works,
    one fixed argument at a time, then all of them together."""
    base = {k: _convert(args[k].annotation, override_values(o)[0]) for k, o in swept
            if override_values(o) and not (isinstance(override_values(o)[0], str) and "${" in override_values(o)[0])}
    if _build(group, name, base) is not None:
        return  # cannot be built here, or fails without them: the jobs say why
    converted = {k: _convert(args[k].annotation, v) for k, v in fixed.items()}
    for culprits in [[k] for k in converted] + ([list(converted)] if len(converted) > 1 else []):
        why = _build(group, name, {**base, **{k: converted[k] for k in culprits}})
        if why is not None:
            shown = " ".join(lines[k] for k in culprits)
            raise UserError(f"{group}={name} refuses {shown}: {why.rstrip('.')}. Every job of the sweep with "
                            f"{group}={name} would fail; a bad value anywhere in a sweep refuses the whole sweep; nothing was run.")


def _convert(annotation: Any, value: Any) -> Any:
    from runner.signature import _coerce

    return _coerce(value, annotation, "")  # types were checked already


def _build(group: str, name: str, kwargs: dict) -> Optional[str]:
    """Build plugin `name` of `group` with `kwargs` (an optimiser on one small parameter, a schedule
    on SGD over it): None if it builds, else why not. A plugin that needs what only a job has
    (the problem, an argument without default) counts as failing, so it is never judged here."""
    import inspect

    import torch

    from runner import registry
    from runner.signature import config_parameters

    factory = registry.get(group, name).load()
    required = [k for k, p in config_parameters(factory).items() if p.default is inspect.Parameter.empty and k not in kwargs]
    try:
        asked = set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        asked = set()
    if required or "problem" in asked:
        return "it needs what only its job has"
    extra = {"total_steps": 1000} if "total_steps" in asked else {}
    try:
        if group == "problem":
            factory(**kwargs)
        else:
            param = torch.zeros(3, requires_grad=True)
            if group == "optim":
                factory([param], **kwargs, **extra)
            else:
                factory(torch.optim.SGD([param], lr=0.1), **kwargs, **extra)
    except (ValueError, TypeError, UserError) as exc:
        return str(exc) or type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - anything else is the job's to report
        return f"{type(exc).__name__}: {exc}"
    return None

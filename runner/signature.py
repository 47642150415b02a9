"""A plugin's keyword arguments are its config.

`config_defaults` turns a callable's signature into the plain config node Hydra composes;
`coerce_arguments` checks a composed node against the same signature and converts it to the
Python values the callable expects, with an error that names the key at fault.
"""
from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from runner.contract import ENGINE_SUPPLIED  # supplied by the engine, never config (checked at load)
from runner.errors import UserError

_MISSING = inspect.Parameter.empty
# Keys the runner itself puts in a plugin's node: the plugin's registered name, a load failure.
RESERVED = frozenset({"_name_", "_broken_"})


def config_parameters(factory: Any) -> dict[str, inspect.Parameter]:
    """The keyword arguments of `factory` that a user can set from the config (read once per
    factory and process: a batched sweep checks a thousand jobs' arguments against one)."""
    try:
        if factory not in _parameters:
            _parameters[factory] = _read_parameters(factory)
        return dict(_parameters[factory])
    except TypeError:  # an unhashable callable: read every time
        return _read_parameters(factory)


_parameters: dict = {}


def _read_parameters(factory: Any) -> dict[str, inspect.Parameter]:
    target = factory.__init__ if isinstance(factory, type) and "__signature__" not in vars(factory) else factory
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return {}
    hints = _type_hints(target)
    out = {}
    for name, p in sig.parameters.items():
        if name in ENGINE_SUPPLIED or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            continue
        if p.default is not _MISSING and not _is_config_value(p.default):
            continue  # e.g. a callable default: not expressible in YAML
        out[name] = p.replace(annotation=hints.get(name, p.annotation))
    return out


def config_defaults(factory: Any) -> dict[str, Any]:
    """Default values of the settable arguments; required ones are `???` (Hydra's MISSING)."""
    out = {}
    for name, p in config_parameters(factory).items():
        out[name] = "???" if p.default is _MISSING else _to_config(p.default)
    return out


def coerce_arguments(factory: Any, values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Check `values` (a composed config node) against `factory`'s signature."""
    params = config_parameters(factory)
    values = _plain(values)  # a missing value (???) stays text here, for our own message
    kwargs = {}
    for key, value in values.items():
        if key in RESERVED:
            continue
        if key.startswith("_"):
            raise UserError(
                f"'{prefix}.{key}' is not allowed: plugins are chosen only by their registered name "
                f"({prefix}=NAME), never by a Python path or callable, and their arguments are "
                f"{prefix}.ARG=VALUE (see python -m runner --help)."
            )
        if key not in params:
            allowed = ", ".join(sorted(params)) or "none"
            raise UserError(f"Unknown key '{prefix}.{key}'. Allowed keys: {allowed}.")
        if value == "???":
            raise UserError(f"'{prefix}.{key}' is required: set it on the command line ({prefix}.{key}=...).")
        kwargs[key] = _coerce(value, params[key].annotation, f"{prefix}.{key}")
    for key, p in params.items():
        if key not in kwargs and p.default is _MISSING and key not in values:
            raise UserError(f"'{prefix}.{key}' is required: set it on the command line ({prefix}.{key}=...).")
    return kwargs


def with_defaults(factory: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """`kwargs` and the defaults of the settable arguments they leave out (a key deleted with
    `~optim.lr`): every value the callable runs with, for the record and the run's name."""
    defaults = {k: _to_config(p.default) for k, p in config_parameters(factory).items() if p.default is not _MISSING}
    return {**defaults, **kwargs}


def _type_hints(target: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        return getattr(target, "__annotations__", {}) or {}


def _is_config_value(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_is_config_value(x) for x in v)
    if isinstance(v, Mapping):
        return all(isinstance(k, str) and _is_config_value(x) for k, x in v.items())
    return False


def _to_config(v: Any) -> Any:
    if isinstance(v, enum.Enum):  # an IntEnum or str Enum default: its plain value
        return v.value
    if isinstance(v, tuple):
        return [_to_config(x) for x in v]
    return v


_SIMPLE = (int, float, bool, str, type(None))


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is inspect.Parameter.empty or tp is Any:
        return "any value"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        # Types a config cannot hold (a Tensor beside a float, say) are left out of the message.
        args = typing.get_args(tp)
        shown = [_describe(a) for a in args if a is not type(None) and (a in _SIMPLE or typing.get_origin(a))]
        text = " or ".join(shown or [_describe(a) for a in args if a is not type(None)])
        return text + (", or null" if type(None) in args else "")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if origin is tuple and args and Ellipsis not in typing.get_args(tp):
            return f"a list of {len(args)} values, each {_describe(args[0])}"
        return f"a list whose items are each {_describe(args[0])}" if args else "a list"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` as type `tp`, or raise a UserError naming `key`."""
    try:
        return _convert(_plain(value), tp)
    except (TypeError, ValueError):
        raise UserError(f"'{key}' must be {_describe(tp)}; got {value!r}.") from None


def _plain(value: Any) -> Any:
    # OmegaConf containers become plain lists and dicts.
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf always ships with hydra
        pass
    return value


def _convert(value: Any, tp: Any) -> Any:
    if tp is inspect.Parameter.empty or tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        # Try the simple types first so "1" is not taken as a Tensor or similar.
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg)
            except (TypeError, ValueError):
                continue
        raise TypeError
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError
        if origin is tuple and args and Ellipsis not in args:
            if len(args) != len(value):
                raise ValueError
            return tuple(_convert(v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        items = [_convert(v, inner) for v in value]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise TypeError
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if isinstance(tp, type):
        # An annotation we cannot express in YAML (a Tensor, say): accept plain numbers for it.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, tp):
            return value
        raise TypeError
    return value

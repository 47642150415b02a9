"""Config is data, not code: what a composed `hydra.*` node may make Python import and call.

Hydra instantiates some of its own nodes: `hydra.callbacks.*` (any `_target_`), the launcher and
the sweeper (with nested `_target_`s instantiated recursively), and the logging configs
(`hydra.job_logging`, `hydra.hydra_logging`: logging.config.dictConfig, whose `()`, `class` and
`ext://` name any importable callable or object). Hydra itself blocks a few targets only, so a
command-line override such as `hydra.callbacks.x._target_=builtins.open` would call open().

The runner's policy, checked on every composed config before Hydra instantiates anything in it
(the job's, a sweep's and each sweep job's):
- `hydra.callbacks`: only the runner's own callbacks (Callback classes defined in the runner package,
  runner.sweep.SweepCallback) and Hydra's
  own callbacks (hydra.experimental.callbacks);
- `hydra.launcher` / `hydra.sweeper`: only a registered Hydra plugin class (Hydra checks that)
  and no other `_target_` anywhere inside them;
- no other `_target_` anywhere under `hydra`;
- logging configs: handler, formatter and filter classes and factories from Python's `logging`
  package (and colorlog's formatter, Hydra's colorlog plugin), `ext://` only for sys.stdout and
  sys.stderr;
- `hydra.job.env_set` may not set variables that load code into processes the job starts
  (LD_*, DYLD_*, PYTHON*, BASH_ENV, ENV).
Paths in the config (output folders, log files, data files) still say where to read and write,
with the user's own permissions: that is what they are for.
"""
from __future__ import annotations

import inspect
import re
import sys
from typing import Any, Iterator

RUNNER_PACKAGE = "runner"  # Hydra callbacks defined in its modules (runner.sweep.SweepCallback) are allowed
LOGGING_FACTORIES_EXTRA = frozenset({"colorlog.ColoredFormatter"})
EXT_ALLOWED = frozenset({"ext://sys.stdout", "ext://sys.stderr"})
ENV_FORBIDDEN = re.compile(r"^(LD_|DYLD_|PYTHON)|^(BASH_ENV|ENV)$", re.IGNORECASE)


class ConfigNotAllowed(Exception):
    """A composed config names code the runner will not let Hydra run."""


def _hydra_callbacks() -> set[str]:
    from hydra.experimental import callbacks

    return {f"{c.__module__}.{c.__qualname__}" for _, c in inspect.getmembers(callbacks, inspect.isclass)
            if c.__module__ == callbacks.__name__}


def _runner_callback(target: str) -> bool:
    """A Hydra Callback class defined in the runner's own package (runner.sweep's): only our own
    modules are imported to check it, and nothing but the class is looked up."""
    import importlib

    from hydra.experimental.callback import Callback

    module, _, name = target.rpartition(".")
    if not module.startswith(RUNNER_PACKAGE + ".") or not name.isidentifier():
        return False
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return False
    return inspect.isclass(found) and issubclass(found, Callback) and found.__module__ == module


def _logging_classes() -> set[str]:
    import logging
    import logging.handlers

    names = set(LOGGING_FACTORIES_EXTRA)
    for module in (logging, logging.handlers):
        for _, c in inspect.getmembers(module, inspect.isclass):
            if c.__module__ in ("logging", "logging.handlers"):
                names.add(f"{module.__name__}.{c.__name__}")
    return names


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """(dotted path, key, value) of every entry below node, without resolving interpolations."""
    from omegaconf import DictConfig, ListConfig

    if isinstance(node, DictConfig):
        items = ((k, node._get_node(k)) for k in node.keys())
    elif isinstance(node, ListConfig):
        items = ((i, node._get_node(i)) for i in range(len(node)))
    else:
        return
    for key, child in items:
        where = f"{path}.{key}" if path else str(key)
        if not isinstance(child, (DictConfig, ListConfig)) and child._is_interpolation():
            # `hydra.callbacks.x=${evil}`: a node elsewhere in the config, seen through its reference
            try:
                target = child._maybe_dereference_node(throw_on_resolution_failure=False)
            except Exception:  # a value Hydra fills in later (hydra.runtime.*): text, not a node
                target = None
            if isinstance(target, (DictConfig, ListConfig)):
                child = target
        value = child._value() if not isinstance(child, (DictConfig, ListConfig)) else child
        yield where, key, value
        if isinstance(child, (DictConfig, ListConfig)):
            yield from _walk(child, where)


def _refuse(where: str, value: Any, why: str) -> ConfigNotAllowed:
    return ConfigNotAllowed(
        f"{where}={value!r} is not allowed: {why} Config is data, not code: only the runner's own callbacks, "
        "registered Hydra launchers and sweepers, and Python's logging classes may be instantiated from it "
        "(README, 'Trust boundaries').")


def check(cfg) -> None:
    """Raise ConfigNotAllowed for the first thing in cfg.hydra the policy above refuses."""
    from omegaconf import OmegaConf

    hydra = OmegaConf.select(cfg, "hydra", default=None) if cfg is not None else None
    if hydra is None:
        return
    callbacks = None
    for where, key, value in _walk(hydra, "hydra"):
        parts = where.split(".")
        if key == "_target_":
            if len(parts) == 4 and parts[1] == "callbacks":
                callbacks = callbacks if callbacks is not None else _hydra_callbacks()
                if str(value) not in callbacks and not _runner_callback(str(value)):
                    raise _refuse(where, value, "hydra.callbacks may name only the runner's own callbacks (runner.sweep) and "
                                  + ", ".join(sorted(callbacks)) + ".")
            elif len(parts) == 3 and parts[1] in ("launcher", "sweeper"):
                continue  # Hydra instantiates only registered plugin classes from the hydra_plugins package here
            else:
                raise _refuse(where, value, "no other node under hydra is instantiated from a _target_.")
        elif parts[1] in ("job_logging", "hydra_logging"):
            _check_logging(where, key, value)
        elif len(parts) == 4 and parts[1:3] == ["job", "env_set"] and ENV_FORBIDDEN.search(str(key)):
            raise _refuse(where, value, "this variable loads code into the processes the job starts.")


_logging_names: set[str] | None = None


def _check_logging(where: str, key: Any, value: Any) -> None:
    global _logging_names
    if isinstance(value, str) and value.startswith("ext://") and value not in EXT_ALLOWED:
        raise _refuse(where, value, "logging configs may refer only to ext://sys.stdout and ext://sys.stderr.")
    if key in ("()", "class") and isinstance(value, str):
        _logging_names = _logging_names or _logging_classes()
        if value not in _logging_names:
            raise _refuse(where, value, "logging configs may name only classes of Python's logging package.")
    elif key in ("()", "class") and value is not None and not isinstance(value, str):
        raise _refuse(where, value, "logging factories must be named classes of Python's logging package.")


def install() -> None:
    """Check every config Hydra composes in this process, before Hydra instantiates any of it.
    A refusal is one paragraph and exit status 2, like every bad input."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    if getattr(ConfigLoaderImpl.load_configuration, "_runner_checked", False):
        return
    compose = ConfigLoaderImpl.load_configuration

    def load_configuration(self, *args, **kwargs):
        cfg = compose(self, *args, **kwargs)
        try:
            check(cfg)
        except ConfigNotAllowed as exc:
            print(f"Error: {exc}", file=sys.stderr)
            sys.exit(2)
        return cfg

    load_configuration._runner_checked = True  # type: ignore[attr-defined]
    ConfigLoaderImpl.load_configuration = load_configuration


# -- the environment does not leak into the record --------------------------------------------------
ENV_RESOLVERS = ("oc.env", "env")


def check_no_environment(cfg, what: str = "the job's config") -> None:
    """Refuse `${oc.env:NAME}` (directly or through other interpolations) in the config outside
    `hydra`: every such value is recorded (run name, params, config.yaml) in a store that others
    may read, and resolving the environment into it would publish the variable. The message
    says to write the value itself (a shell expands `$NAME` on the command line, visibly)."""
    from omegaconf import OmegaConf
    from omegaconf.basecontainer import BaseContainer

    from runner.errors import UserError

    seen: list[str] = []

    def refuse(name, *args, **kwargs):
        seen.append(str(name))
        return ""

    saved = {name: BaseContainer._resolvers.get(name) for name in ENV_RESOLVERS}
    try:
        for name, original in saved.items():
            if original is not None:
                OmegaConf.register_new_resolver(name, refuse, replace=True)
        for key in list(cfg.keys()):
            if key == "hydra":
                continue
            try:
                node = cfg._get_node(key)
                if OmegaConf.is_config(node):
                    OmegaConf.to_container(node, resolve=True)
                else:
                    getattr(cfg, str(key))
            except Exception:  # any other resolution problem is reported where the value is used
                pass
    finally:
        for name, original in saved.items():
            if original is not None:
                BaseContainer._resolvers[name] = original
    if seen:
        names = ", ".join(sorted(set(seen)))
        raise UserError(f"{what} reads the environment (${{oc.env:{seen[0]}}}; variables: {names}). Every config value "
                        "is recorded in MLflow (run name, params, config.yaml), where it would publish the variable to "
                        "whoever reads the store. Write the value itself (on the command line the shell expands "
                        "$NAME, visibly), or keep it out of the config.")


def redact_uri(uri: str) -> str:
    """http://user:secret@host -> http://user:***@host: a password in a tracking URI is not a param."""
    return re.sub(r"^([a-zA-Z][\w+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", uri) if isinstance(uri, str) else uri

"""Checks of the command line that need no composed config, made before Hydra starts and before
any run or sweep folder exists: a missing optional extra (the sweeper or launcher a command asks
for is not installed) and a plugin name that two installed distributions register. Either is one
paragraph on stderr and exit status 2; nothing is run or recorded.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Iterator, Optional

DIST = "opt-runner"  # pyproject.toml's [project] name, as pip knows it

# An extra of pyproject.toml -> modules it installs, any of which missing means it is not installed.
EXTRAS = {
    "optuna": ("optuna",),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    "ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
}
# Hydra's option names (hydra/launcher=NAME, hydra/sweeper=NAME) that an extra provides. Our own
# presets in conf/hydra/launcher name one of these in their defaults and are followed there.
PROVIDED = {
    "hydra/launcher": {"joblib": "joblib", "ray": "ray", "submitit_local": "slurm", "submitit_slurm": "slurm"},
    "hydra/sweeper": {"optuna": "optuna"},
}
PRESET_GROUPS = ("experiment", "hparams_search")  # presets whose defaults may choose a sweeper or launcher


def check(argv: list[str]) -> None:
    """Exit 2 with one paragraph if the command line needs a missing extra or names an ambiguous plugin."""
    message = missing_extra(argv) or ambiguous_plugin(argv)
    if message:
        print(f"Error: {message}", file=sys.stderr)
        sys.exit(2)


def missing_extra(argv: list[str]) -> Optional[str]:
    for asked, group, option in _needs(argv):
        extra = PROVIDED[group].get(option)
        if extra is None:
            continue
        absent = next((m for m in EXTRAS[extra] if not _importable(m)), None)
        if absent is not None:
            return (f"{asked} needs the optional extra '{extra}', which is not installed here (no module "
                    f"'{absent}'). Install it with: pip install '{DIST}[{extra}]' (from a checkout: "
                    f"pip install -e '.[{extra}]'), or use all the extras: pip install '{DIST}[all]'. Nothing was run.")
    return None


def _needs(argv: list[str]) -> Iterator[tuple[str, str, str]]:
    """(the argument as typed, 'hydra/launcher' or 'hydra/sweeper', option) for each choice the
    command line makes directly or through a preset of conf/."""
    for arg in argv:
        key, eq, value = arg.lstrip("+~").partition("=")
        if not eq:
            continue
        for option in _values(value):
            if key in PROVIDED:
                for group, leaf in _follow(key, option):
                    yield arg, group, leaf
            elif key in PRESET_GROUPS:
                for group, chosen in _preset_choices(_conf_dir() / key / f"{option}.yaml"):
                    for group2, leaf in _follow(group, chosen):
                        yield arg, group2, leaf


def _follow(group: str, option: str, depth: int = 0) -> Iterator[tuple[str, str]]:
    """An option of ours (conf/hydra/launcher/slurm.yaml) leads to the one it extends (submitit_slurm)."""
    yield group, option
    preset = _conf_dir() / group / f"{option}.yaml"
    if depth < 5 and preset.is_file():
        for entry in _defaults(preset):
            if isinstance(entry, str) and entry != "_self_":
                yield from _follow(group, entry, depth + 1)


def _preset_choices(path: Path) -> Iterator[tuple[str, str]]:
    """`override /hydra/sweeper: optuna` in a preset's defaults -> ('hydra/sweeper', 'optuna')."""
    for entry in _defaults(path) if path.is_file() else ():
        if isinstance(entry, dict):
            for key, value in entry.items():
                group = str(key).removeprefix("override").strip().lstrip("/")
                if group in PROVIDED and isinstance(value, str):
                    yield group, value


def _defaults(path: Path) -> list:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []  # Hydra reports a broken preset itself
    defaults = loaded.get("defaults") if isinstance(loaded, dict) else None
    return defaults if isinstance(defaults, list) else []


def _values(value: str) -> list[str]:
    """The options of `KEY=A` or of a simple sweep `KEY=A,B` (other sweep syntax: left to Hydra)."""
    return [v.strip() for v in value.split(",") if v.strip()] if "(" not in value and "[" not in value else []


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _conf_dir() -> Path:
    from runner.app import CONF_DIR

    return CONF_DIR


def ambiguous_plugin(argv: list[str]) -> Optional[str]:
    """`problem=twin` where two distributions register `twin`, asked on the command line (a sweep's
    every value included) or by config.yaml's default when the command line does not choose."""
    from runner import registry

    chosen: dict[str, list[str]] = {}
    presets = False
    for arg in argv:
        key, eq, value = arg.lstrip("+~").partition("=")
        if eq and key in registry.GROUPS:
            chosen.setdefault(key, []).extend(_values(value))
        presets |= bool(eq) and key in PRESET_GROUPS
    for kind in registry.GROUPS:
        ambiguous = registry.ambiguous(kind)
        if not ambiguous:
            continue
        names = chosen.get(kind) if kind in chosen else ([] if presets else [_default(kind)])
        for name in names:
            if name in ambiguous:
                return registry.ambiguity_message(kind, name) + ("" if kind in chosen else f" ({kind}={name} is the default.)")
    return None


def _default(kind: str) -> Optional[str]:
    for entry in _defaults(_conf_dir() / "config.yaml"):
        if isinstance(entry, dict) and kind in entry:
            return entry[kind]
    return None

"""Plugins are found through Python entry points, built-ins and third-party alike.

Groups: `runner.problems`, `runner.optimizers` and `runner.schedulers`, one entry point a plugin.
Listing their names reads package metadata only (`--help` imports no plugin); a plugin's module is
imported when its config or class is first needed, and checked then against the written contract
(runner/contract.py).

A **plugin source** registers many plugins at once (group `runner.optimizer_sources`): its entry
point names an object with

    description: str                      shown by --help
    install: str                           what to install when it is missing
    distribution: str (optional)           whose version --help shows
    available() -> None | str              None when usable, else why not; cheap (no heavy import)
    plugins() -> dict[str, factory]        its plugins by plain name (may import its library)

Its plugins are `optim=SOURCE.NAME` (SOURCE: the entry point's name), and plain `optim=NAME`
where no entry-point plugin and no other source has that name: a source never shadows a
built-in (`adam` stays torch's; `zoo.adam` is the source's).

**One name, two distributions.** When two installed distributions register the same name in one
group, neither wins: the plain name is refused with a message naming both, and each is selected
as `KIND=DIST:NAME` (DIST: the distribution's normalised name, `opt-runner` for the built-ins),
which Hydra's override grammar takes as it is, in sweeps too. A run records the distribution it
used (tags `problem_distribution`, `optim_distribution`, `sched_distribution`).
"""
from __future__ import annotations

import importlib.metadata as md
import re
import warnings
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Callable, Optional

from runner.errors import UserError

GROUPS = {"problem": "runner.problems", "optim": "runner.optimizers", "sched": "runner.schedulers"}
SOURCE_GROUPS = {"optim": "runner.optimizer_sources"}


@dataclass(frozen=True)
class Plugin:
    kind: str  # "problem", "optim" or "sched"
    name: str
    entry_point: Optional[md.EntryPoint] = None
    loader: Optional[Callable[[], Any]] = field(default=None, compare=False)  # a source's plugin
    origin: str = ""  # a source's plugin: "SOURCE (distribution VERSION)"

    @property
    def source(self) -> str:
        if self.origin:
            return self.origin
        dist = getattr(self.entry_point, "dist", None)
        return dist.name if dist is not None else "?"

    @property
    def distribution(self) -> str:
        """`NAME VERSION` of the distribution that registered it (normalised name), for the record."""
        if self.origin:
            return self.origin
        dist = getattr(self.entry_point, "dist", None)
        return f"{dist_key(dist.name)} {dist.version}" if dist is not None else "?"

    @property
    def where(self) -> str:
        how = f"entry point {self.entry_point.value}" if self.entry_point is not None else "plugin source"
        return f"The {self.kind} plugin '{self.name}' ({how} from package '{self.source}')"

    def load(self) -> Any:
        """The plugin's class or factory, imported and checked against the contract."""
        from runner import adapter

        try:
            obj = self.loader() if self.loader is not None else self.entry_point.load()
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"{self.where} could not be imported: {type(exc).__name__}: {exc}") from exc
        try:
            adapter.check(self.kind, obj)
        except ValueError as exc:
            raise UserError(f"{self.where} breaks the plugin contract of runner/contract.py: {exc}.") from None
        return obj


def dist_key(name: str) -> str:
    """A distribution's normalised name (PEP 503): `Runner_Twin.B` -> `runner-twin-b`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_of(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist_key(dist.name) if dist is not None and dist.name else "unknown"


@cache
def _by_name(kind: str) -> dict[str, list[Plugin]]:
    """Every entry-point registration of one kind, by name, one per distribution."""
    found: dict[str, dict[str, Plugin]] = {}
    for ep in md.entry_points(group=GROUPS[kind]):
        found.setdefault(ep.name, {}).setdefault(_dist_of(ep), Plugin(kind, ep.name, ep))
    return {name: list(by_dist.values()) for name, by_dist in found.items()}


@cache
def plugins(kind: str) -> dict[str, Plugin]:
    """The entry-point plugins of one kind, by name (package metadata only: cheap). A name that
    several distributions register is listed only as `DIST:NAME`, once for each (see ambiguous())."""
    found: dict[str, Plugin] = {}
    for name, registered in _by_name(kind).items():
        if len(registered) == 1:
            found[name] = registered[0]
            continue
        for plugin in registered:
            qualified = f"{_dist_of(plugin.entry_point)}:{name}"
            found[qualified] = Plugin(kind, qualified, plugin.entry_point)
    return dict(sorted(found.items()))


def ambiguous(kind: str) -> dict[str, list[str]]:
    """Plain names that several distributions register -> their qualified names."""
    return {name: [f"{_dist_of(p.entry_point)}:{name}" for p in registered]
            for name, registered in sorted(_by_name(kind).items()) if len(registered) > 1}


def ambiguity_message(kind: str, name: str) -> str:
    choices = ambiguous(kind)[name]
    dists = [c.split(":", 1)[0] for c in choices]
    listed = ", ".join(f"'{d}' ({p.entry_point.value})" for d, p in zip(dists, _by_name(kind)[name]))
    return (f"The {kind} plugin '{name}' is registered by {len(choices)} installed distributions: {listed}. "
            f"The runner does not guess which one you mean: choose one with "
            + " or ".join(f"{kind}={c}" for c in choices)
            + f" (in a sweep too: -m {kind}={','.join(choices)}), or uninstall the one you do not want.")


@dataclass
class Source:
    """A registered plugin source: its object is loaded (cheap), its plugins only on request."""

    kind: str
    name: str
    entry_point: md.EntryPoint
    obj: Any = None
    problem: Optional[str] = None  # why it cannot be used (not installed, broken)

    @property
    def description(self) -> str:
        return str(getattr(self.obj, "description", "")) or self.entry_point.value

    @property
    def install(self) -> str:
        return str(getattr(self.obj, "install", ""))

    @property
    def version(self) -> str:
        dist = getattr(self.obj, "distribution", None)
        try:
            return f"{dist} {md.version(dist)}" if dist else ""
        except md.PackageNotFoundError:
            return ""


@cache
def sources(kind: str) -> dict[str, Source]:
    """The plugin sources of one kind, by name, with why each cannot be used (if so). Cheap: a
    source's `available()` must not import its library."""
    found: dict[str, Source] = {}
    group = SOURCE_GROUPS.get(kind)
    for ep in md.entry_points(group=group) if group else ():
        if ep.name in found:
            continue
        src = Source(kind, ep.name, ep)
        try:
            src.obj = ep.load()
            src.problem = src.obj.available()
        except Exception as exc:
            src.problem = f"the source could not be loaded: {type(exc).__name__}: {exc}"
        found[ep.name] = src
    return dict(sorted(found.items()))


@cache
def source_plugins(kind: str) -> dict[str, Plugin]:
    """Every plugin of the usable sources, by canonical name `SOURCE.NAME` (imports their
    libraries). A source that fails here is skipped with a warning, like a broken plugin."""
    found: dict[str, Plugin] = {}
    for src in sources(kind).values():
        if src.problem is not None:
            continue
        try:
            offered = dict(src.obj.plugins())
        except Exception as exc:
            src.problem = f"its plugins could not be listed: {type(exc).__name__}: {exc}"
            warnings.warn(f"skipping the {kind} plugin source '{src.name}': {src.problem}", stacklevel=1)
            continue
        origin = f"{src.name}: {src.version or src.entry_point.value}"
        for plain, factory in sorted(offered.items()):
            name = f"{src.name}.{plain}"
            found[name] = Plugin(kind, name, loader=lambda f=factory: f, origin=origin)
    return found


@cache
def aliases(kind: str) -> dict[str, str]:
    """Plain names of source plugins that are unique (no entry-point plugin, no other source)."""
    taken = set(plugins(kind)) | set(_by_name(kind))  # an ambiguous plain name is not a source's either
    counts: dict[str, list[str]] = {}
    for name in source_plugins(kind):
        counts.setdefault(name.split(".", 1)[1], []).append(name)
    return {plain: names[0] for plain, names in sorted(counts.items()) if len(names) == 1 and plain not in taken}


def all_plugins(kind: str) -> dict[str, Plugin]:
    """Entry-point plugins, then the sources' plugins by canonical name."""
    return {**plugins(kind), **source_plugins(kind)}


def missing_sources(kind: str) -> list[Source]:
    return [s for s in sources(kind).values() if s.problem is not None]


def unknown_name_message(kind: str, name: str) -> str:
    listed = ", ".join(plugins(kind)) or "none (is the project installed? pip install -e .)"
    text = f"Unknown {kind} '{name}'. Registered {kind} plugins: {listed}"
    usable = [s for s in sources(kind).values() if s.problem is None]
    if usable:
        text += "; and from " + ", ".join(f"{s.name} ({s.description}) as {kind}={s.name}.NAME" for s in usable)
        text += f" (python -m runner --help {kind} lists them)"
    text += "."
    for src in missing_sources(kind):
        asked = name.startswith(f"{src.name}.")
        text += (f" {kind}={name} comes from" if asked else " More come from") + (
            f" the plugin source '{src.name}' ({src.description}), which cannot be used: {src.problem}"
        ) + ("" if src.problem.endswith(".") else ".")
    return text


def distribution_tags(selected: dict[str, str]) -> dict[str, str]:
    """{kind: name} of a run -> {"KIND_distribution": "DIST VERSION"}: what the run used. Read
    once per selection and process (reading a distribution's metadata costs milliseconds: a
    thousand jobs of a batched sweep ask for the same)."""
    key = tuple(sorted(selected.items()))
    if key not in _distribution_tags:
        _distribution_tags[key] = _read_distribution_tags(selected)
    return dict(_distribution_tags[key])


_distribution_tags: dict[tuple, dict[str, str]] = {}


def _read_distribution_tags(selected: dict[str, str]) -> dict[str, str]:
    tags = {}
    for kind, name in selected.items():
        try:
            tags[f"{kind}_distribution"] = get(kind, name).distribution
        except (UserError, KeyError):
            continue
    return tags


def get(kind: str, name: str) -> Plugin:
    if name in ambiguous(kind):
        raise UserError(ambiguity_message(kind, name))
    available = plugins(kind)
    if name in available:
        return available[name]
    if kind in SOURCE_GROUPS:
        name = aliases(kind).get(name, name)
        if name in source_plugins(kind):
            return source_plugins(kind)[name]
    raise UserError(unknown_name_message(kind, name))

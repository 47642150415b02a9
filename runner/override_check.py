"""Every override on the command line is checked against the schema before Hydra starts: the key
exists, a plugin or preset name is registered, a value has the key's type and range. A sweep is
checked for every value of every swept key, so a bad value refuses the whole sweep before any job
runs, any folder is made or any parent run is opened. Here: the keys (unknown key, nearest valid
key), plugin and preset names, and each value's type; a swept plugin argument's values that only
the plugin can judge are then tried by building it (runner/plugin_build_check.py).

The schema: `trainer.*` and `tracking.*` (runner/configs.py), the plugin groups `problem`, `optim`,
`sched` and the presets `experiment`, `hparams_search`, and the constructor arguments of the
plugins the command line selects (a sweep over plugins: of each of them). `hydra.*` and
`hydra/...` are Hydra's and left to it, except a sweeper's search space (`hydra.sweeper.params`),
whose keys and values are ours.

Hydra would otherwise accept `+lr=0.01` (a new key nothing reads) and answer a typo without `+`
with "To append to your config use +x": both are refused here, naming the nearest valid key.
Values are checked one override at a time: a check that needs two keys at once (trainer.seed +
trainer.replicas) and a plugin's own check of its arguments run when the job is built.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Iterable, Optional

from runner.errors import UserError

PLUGIN_GROUPS = ("problem", "optim", "sched")
PRESET_GROUPS = ("experiment", "hparams_search")
DEFAULT_CHOICES = {"problem": ["poly"], "optim": ["adam"], "sched": [None]}  # conf/config.yaml's defaults list
SEARCH_SPACE = "hydra.sweeper.params."


def check(argv: list[str]) -> None:
    """Raise UserError for the first override that is not part of the schema or whose value is bad."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from runner.plugin_build_check import check_swept_values

    texts = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(texts)
    except HydraException:  # Hydra reports a malformed override itself
        return
    ours, searched = [], []
    for o in overrides:
        key = o.key_or_group
        if key.startswith(SEARCH_SPACE):
            searched.append((key[len(SEARCH_SPACE):], (o.input_line or "=").split("=", 1)[1]))  # the text: a sweep has no str()
        elif key == SEARCH_SPACE.rstrip(".") and isinstance(o.value(), dict):  # hydra.sweeper.params={optim.lr: '…'}
            searched += [(str(k), str(v)) for k, v in o.value().items()]
        elif not (key == "hydra" or key.startswith(("hydra.", "hydra/"))):
            ours.append(o)
    # A node with a private key (`+evil._target_=…`) is refused as a whole by the trust checks
    # (runner/trust.py, signature.py), with their reason: its other keys are not ours to name.
    private = {o.key_or_group.split(".")[0] for o in ours if any(p.startswith("_") for p in o.key_or_group.split("."))}
    ours = [o for o in ours if o.key_or_group.split(".")[0] not in private or o.key_or_group in PLUGIN_GROUPS]
    choices = _choices(ours)
    schema = Schema(choices)
    for o in ours:
        schema.check_override(o.key_or_group, o, o.input_line or f"{o.key_or_group}=...")
    space = []
    for key, text in searched:
        try:
            inner = OverridesParser.create().parse_override(f"{key}={text}")
        except HydraException:
            inner = None
        schema.check_override(key, inner, f"{key}: {text} in the sweeper's search space (hydra.sweeper.params)")
        if inner is not None:
            space.append(inner)
    multirun = bool(space) or any(a in ("-m", "--multirun") for a in argv)
    check_swept_values(schema.params, ours + space, multirun)  # swept values (a grid's, a search space's), and in a sweep the fixed ones


def override_values(o) -> list[Any]:
    """The values an override takes: one, each of a sweep's, an interval's ends; a glob's matches are
    filtered against the names it may match by the caller."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

    value = o.value()
    if isinstance(value, IntervalSweep):
        return [value.start, value.end]
    if isinstance(value, (ChoiceSweep, RangeSweep)):  # quoted strings as plain ones, in lists too (`k=["a b"],["c"]`)
        return [Override._convert_value(v) for v in o.sweep_iterator()]
    return [value]


def _choices(overrides) -> dict[str, list]:
    """The plugins each group may be: the command line's, else a chosen preset's, else the default."""
    from hydra.core.override_parser.types import Glob

    out: dict[str, list] = {}
    for o in overrides:
        group = o.key_or_group
        if group in PLUGIN_GROUPS and not o.is_delete():
            if isinstance(o.value(), Glob):
                out[group] = o.value().filter(sorted(_names(group)))
                if not out[group]:
                    raise UserError(f"{o.input_line}: the pattern matches no {group} plugin; registered: {_listing(group, '')}.")
            else:
                out[group] = [_plugin_name(group, v, o.input_line) for v in override_values(o)]
    for o in overrides:
        if o.key_or_group in PRESET_GROUPS and not o.is_delete():
            for preset in override_values(o):
                _check_preset(o.key_or_group, preset, o.input_line)
                for group, name in _preset_choices(o.key_or_group, preset).items():
                    if group not in {x.key_or_group for x in overrides}:
                        out.setdefault(f"preset:{group}", []).append(name)
    for group in PLUGIN_GROUPS:
        if group not in out:
            out[group] = out.pop(f"preset:{group}", None) or DEFAULT_CHOICES[group]
        out.pop(f"preset:{group}", None)
        out[group] = list(dict.fromkeys(out[group]))
    return out


def _names(group: str) -> set[str]:
    from runner import registry

    names = set(registry.plugins(group))
    if group in registry.SOURCE_GROUPS:
        names |= set(registry.source_plugins(group)) | set(registry.aliases(group))
    return names


def _plugin_name(group: str, value: Any, line: str) -> Optional[str]:
    from runner import registry

    if value is None and group == "sched":
        return None
    name = str(value)
    if name in registry.plugins(group):
        return name
    if group in registry.SOURCE_GROUPS and (name in registry.aliases(group) or name in registry.source_plugins(group)):
        return name
    if group in registry.SOURCE_GROUPS and registry.missing_sources(group):
        raise UserError(registry.unknown_name_message(group, name))  # it names the extra to install
    raise UserError(f"Unknown {group} '{name}' (in {line}): valid names, closest first: {_listing(group, name)}.")


def _listing(group: str, name: str) -> str:
    """Registered names, closest to `name` first; a plugin source's many names are summarised."""
    from runner import registry

    plain = sorted(registry.plugins(group), key=lambda n: (-_similarity(name, n), n))
    text = ", ".join(plain) + (", null (no schedule)" if group == "sched" else "")
    usable = [s for s in registry.sources(group).values() if s.problem is None] if group in registry.SOURCE_GROUPS else []
    if usable:
        close = [n for n in sorted(_names(group) - set(plain), key=lambda n: (-_similarity(name, n), n))[:5] if _similarity(name, n) >= 0.6]
        text += "; and " + ", ".join(f"{s.name}.NAME ({s.description})" for s in usable)
        text += (f", closest {', '.join(close)}" if close else "") + f" (python -m runner --help {group} lists them)"
    return text


def _presets(group: str) -> list[str]:
    from runner.app import CONF_DIR

    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _check_preset(group: str, name: Any, line: str) -> None:
    if name is None or str(name) in _presets(group):
        return
    valid = sorted(_presets(group), key=lambda n: -_similarity(str(name), n))
    raise UserError(f"Unknown {group} '{name}' (in {line}): valid names, closest first: {', '.join(valid) or 'none'}.")


def _preset_choices(group: str, name: Any) -> dict[str, str]:
    """The plugins a preset selects with `override /problem: NAME` in its defaults list."""
    if name is None:
        return {}
    from omegaconf import OmegaConf

    from runner.app import CONF_DIR

    out = {}
    for entry in OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{name}.yaml")).get("defaults", []):
        if isinstance(entry, dict):
            for k, v in entry.items():
                target = k.replace("override", "").strip().lstrip("/")
                if target in PLUGIN_GROUPS:
                    out[target] = v
    return out


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


class Schema:
    """The valid keys for the plugins chosen, with a check of each value."""

    def __init__(self, choices: dict[str, list]):
        from runner import registry
        from runner.configs import TrackingConfig, TrainerConfig
        from runner.signature import config_parameters

        self.choices = choices
        self._nodes: dict = {}
        self.sections = {"trainer": TrainerConfig, "tracking": TrackingConfig}
        self.params: dict[str, dict[str, dict]] = {}  # group -> plugin -> arg -> inspect.Parameter
        for group in PLUGIN_GROUPS:
            self.params[group] = {}
            for name in choices[group]:
                if name is not None:
                    self.params[group][name] = config_parameters(registry.get(group, name).load())
        self.keys = set(PLUGIN_GROUPS) | set(PRESET_GROUPS)
        for section, cls in self.sections.items():
            self.keys |= {f"{section}.{f.name}" for f in dataclasses.fields(cls)}
        for group, plugins in self.params.items():
            for args in plugins.values():
                self.keys |= {f"{group}.{a}" for a in args}

    def check_override(self, key: str, o, line: str) -> None:
        head, _, rest = key.partition(".")
        if key in PLUGIN_GROUPS or key in PRESET_GROUPS:
            return  # names were checked when the choices were read
        if key.startswith("_") or rest.startswith("_"):
            return  # `optim._target_=…`: refused with its own reason when the job is built (runner/trust.py, signature.py)
        if head in self.sections and rest:
            field = rest.split(".")[0]
            if field not in {f.name for f in dataclasses.fields(self.sections[head])}:
                raise self.unknown(key, line)
            if o is not None and not o.is_delete():
                for value in override_values(o):
                    self._check_section_value(head, field, value, line)
            return
        if head in PLUGIN_GROUPS and rest:
            arg = rest.split(".")[0]
            lacking = [name for name, args in self.params[head].items() if arg not in args]
            if not self.params[head] or lacking:
                raise self.unknown(key, line, head, lacking)
            if o is not None and not o.is_delete() and "." not in rest:
                for name, args in self.params[head].items():
                    for value in override_values(o):
                        self._check_argument(f"{head}.{arg}", args[arg].annotation, value, line)
            return
        if head in self.sections and not rest:
            return  # trainer={...}: Hydra checks the node against its schema
        raise self.unknown(key, line)

    def unknown(self, key: str, line: str, group: str = "", lacking: Iterable[str] = ()) -> UserError:
        nearest = self.nearest(key)
        lacking = list(lacking)
        if group and not self.params[group]:
            what = f"no {group} is selected, so '{key}' sets nothing"
        elif group and len(lacking) < len(self.params[group]):
            having = [n for n in self.params[group] if n not in lacking]
            return UserError(f"'{key}' (in {line}) is an argument of the {group} {', '.join(having)} but not of "
                             f"{', '.join(lacking)}: the jobs with {', '.join(lacking)} would fail. Sweep those "
                             f"separately, or leave '{key}' out; nothing was run.")
        elif group:
            which = ", ".join(lacking)
            args = sorted(set().union(*(self.params[group][n] for n in lacking)))
            what = f"the {group} {which} has no argument '{key.split('.')[1]}' (its arguments: {', '.join(args) or 'none'})"
        else:
            what = "no part of this runner reads it, so it would change nothing"
        hint = f" Did you mean {nearest}?" if nearest else ""
        return UserError(f"Unknown key '{key}' (in {line}): {what}.{hint} Every key with its value: "
                         f"python -m runner --cfg job; nothing was run.")

    def nearest(self, key: str) -> Optional[str]:
        last = key.rsplit(".", 1)[-1]

        def score(candidate: str) -> float:
            return max(_similarity(key, candidate), _similarity(last, candidate.rsplit(".", 1)[-1]) - 0.01)

        best = max(self.keys, key=lambda c: (score(c), c == key), default=None)
        return best if best is not None and score(best) >= 0.6 else None

    def _check_section_value(self, section: str, field: str, value: Any, line: str) -> None:
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(value, str) and "${" in value:
            return  # an interpolation: resolved by Hydra
        if section not in self._nodes:  # one node a section, reused: a 1000-value sweep costs milliseconds
            node = OmegaConf.structured(self.sections[section])
            self._nodes[section] = (node, OmegaConf.to_container(node))
        node, defaults = self._nodes[section]
        try:
            node[field] = value
            converted = node[field]
        except OmegaConfBaseException as exc:
            wanted = self.sections[section].__annotations__.get(field, "")
            raise UserError(f"'{section}.{field}' cannot be {value!r} (in {line}): it must be {_type_name(wanted)}"
                            f" ({str(exc).splitlines()[0]}); nothing was run.") from None
        if section == "trainer":
            from runner.compose import check_trainer

            check_trainer({**defaults, field: converted})

    def _check_argument(self, key: str, annotation: Any, value: Any, line: str) -> None:
        from runner.signature import _coerce

        if isinstance(value, str) and "${" in value:
            return
        try:
            _coerce(value, annotation, key)
        except UserError as exc:
            raise UserError(f"{str(exc).rstrip('.')} (in {line}); nothing was run.") from None


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("Optional[", "").rstrip("]")
    return {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}.get(text, text or "valid")

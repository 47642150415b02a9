"""`sched=null`: no schedule, alone or as one value of a sweep (`-m sched=null,cosine`).

Hydra reads `GROUP=null` as a config name of None and raises (a traceback; in a sweep after its
parent run was opened). For the optional plugin groups it means what Hydra spells `~GROUP`: no
config from the group. Every override list Hydra composes (a run's, each job of a sweep's) is
rewritten so before composition."""
from __future__ import annotations

OPTIONAL_GROUPS = ("sched",)  # problem and optim are required: null for them is refused as "No optim selected"


def _rewritten(overrides):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    out = []
    for text in overrides:
        key = text.lstrip("+").split("=", 1)[0]
        if key in OPTIONAL_GROUPS and "=" in text:
            try:
                o = OverridesParser.create().parse_override(text)
            except HydraException:  # malformed: Hydra says so itself
                o = None
            if o is not None and not o.is_sweep_override() and o.value() is None:
                text = f"~{key}"
        out.append(text)
    return out


def install() -> None:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    if getattr(ConfigLoaderImpl.load_configuration, "_runner_null_group", False):
        return
    compose = ConfigLoaderImpl.load_configuration

    def load_configuration(self, config_name, overrides, *args, **kwargs):
        return compose(self, config_name, _rewritten(overrides), *args, **kwargs)

    load_configuration._runner_null_group = True  # type: ignore[attr-defined]
    load_configuration._runner_checked = getattr(compose, "_runner_checked", False)  # type: ignore[attr-defined]
    ConfigLoaderImpl.load_configuration = load_configuration

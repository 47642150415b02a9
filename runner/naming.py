"""Readable values in run names and report labels (the params keep the exact values)."""
from __future__ import annotations


def short_value(value: str) -> str:
    """0.025766385746 -> 0.02577: names stay readable; the params hold the exact value."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if len(value) <= 8 or not any(c in value for c in ".e") else f"{number:.4g}"


NAME_LIMIT = 60  # a sweep parent's name, so the MLflow UI's run list shows it whole


def sweep_name(overrides: list[str], limit: int = NAME_LIMIT) -> str:
    """A sweep parent's name: what the sweep varies, then what it fixes, within `limit` characters.

    `sweep-problem=poly,puzzle-optim=adam,sgd` when the swept overrides fit whole (the fixed ones
    follow while they fit); otherwise each swept key's last part with its number of values,
    `sweep-dataset×11-optim×2-problem=nist`; a name that still does not fit is cut with an ellipsis. Control
    characters become spaces. The params (`sweep.overrides`) keep every override exactly."""
    swept, fixed = _classify([o for o in overrides if not o.lstrip("+~").startswith("hydra")])
    name = "sweep-" + "-".join(_clean(o) for o, _, _ in swept)
    if not swept or len(name) > limit:
        name = "sweep-" + "-".join(_clean(key.rsplit(".", 1)[-1]) + (f"×{count}" if count else "") for _, key, count in swept)
    for o in fixed:  # then what the sweep fixes, while it fits (at least the first, cut)
        if len(name) + 1 + len(_clean(o)) > limit and name != "sweep-":
            break
        name += ("-" if swept or name != "sweep-" else "") + _clean(o)
    name = name.rstrip("-")
    return name if len(name) <= limit else name[:limit - 1] + "…"


def _classify(overrides: list[str]) -> tuple[list[tuple[str, str, int]], list[str]]:
    """([(override, key, number of values or 0)] of the swept overrides, [the fixed ones])."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # not Hydra's grammar: treat every override as fixed text
        return [], overrides
    swept, fixed = [], []
    for text, o in zip(overrides, parsed):
        if o.is_sweep_override():
            try:
                count = len(list(o.sweep_string_iterator()))
            except Exception:  # an interval or another sweep without a list of values
                count = 0
            swept.append((text, o.key_or_group, count))
        else:
            fixed.append(text)
    return swept, fixed


def _clean(text: str) -> str:
    return "".join(" " if not c.isprintable() else c for c in text.lstrip("+~"))

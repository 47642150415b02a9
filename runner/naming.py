"""Readable values in run names and report labels (the params keep the exact values)."""
from __future__ import annotations


def short_value(value: str) -> str:
    """0.025766385746 -> 0.02577: names stay readable; the params hold the exact value."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if len(value) <= 8 or not any(c in value for c in ".e") else f"{number:.4g}"

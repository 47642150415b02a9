"""The log relative error (LRE): how many digits of an estimate agree with a certified value.

One definition for the NIST problem's metrics (`lre_B0`, `min_lre`) and the report's table of
solutions against the truth.
"""
from __future__ import annotations

import math

MAX_LRE = 15.0  # NIST's certified values carry 15 significant digits: no more can be said to agree


def lre(estimate: float, certified: float, cap: float = MAX_LRE) -> float:
    """-log10(|estimate - certified| / |certified|), the absolute error where the certified value
    is 0; `cap` when they are equal, 0 when the estimate is not finite, always within [0, cap].
    `cap`: the digits the certified value carries (15 for NIST's linear sets, 11 for the nonlinear)."""
    error = abs(estimate - certified)
    if error == 0:
        return cap
    if not math.isfinite(error):
        return 0.0
    value = -math.log10(error / abs(certified)) if certified != 0 else -math.log10(error)
    return max(0.0, min(cap, value))

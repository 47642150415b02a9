"""Fit a formula to a CSV file: what people use scipy's curve_fit or lmfit for.

    python -m runner problem=curve problem.model='b1*(1-exp(-b2*x))' problem.data=points.csv \
        'problem.start={b1: 500, b2: 1e-4}' optim=lm

The CSV has a header naming its columns; the model's names that are columns are data (x, or x1,
x2, ...), the others are parameters, each with a starting value in `start`. `response` is the
fitted quantity, a formula of the columns (default `y`; `log(y)` as NIST writes Nelson's model).
Loss: the residual sum of squares (`loss=mse`: its mean). Metrics: rss, rmse.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from runner_plugins.problems.formula import FormulaError, parse
from runner_plugins.problems.formula_fit import FormulaFit, check_start

MAX_CSV_BYTES = 500_000_000


class Curve(FormulaFit):
    def __init__(self, model: str = "???", data: str = "???", response: str = "y",
                 start: Optional[dict[str, float]] = None, loss: Literal["sse", "mse"] = "sse"):
        try:
            formula = parse(model, "model (problem.model)")
            lhs = parse(response, "response (problem.response)")
        except FormulaError as exc:
            raise ValueError(str(exc)) from None
        header, columns = read_columns_csv(data)
        needed = [n for n in lhs.names if n not in header]
        if needed:
            raise ValueError(f"problem.response={response!r} uses {', '.join(needed)}, which is not a column of "
                             f"problem.data={data!r} (its columns: {', '.join(header)}).")
        parameters = [n for n in formula.names if n not in header]
        if not parameters:
            raise ValueError(f"The model {model!r} names no parameter: every name in it ({', '.join(formula.names) or 'none'}) "
                             f"is a column of {data!r}. Name the unknowns (b1, b2, ...) in the model.")
        if not any(n in header for n in formula.names) and not lhs.names:
            raise ValueError(f"The model {model!r} and response {response!r} use no column of {data!r}.")
        starts = check_start(parameters, start, model)
        self.data_path = data
        self.setup_fit(formula, lhs, {k: columns[k] for k in header}, parameters, starts, loss)


def read_columns_csv(path: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """Every column of a CSV file with a header row; every cell a finite number."""
    p = Path(path).expanduser()
    allowed = "a CSV file with a header row naming its columns (x, y, ...) and one finite number per cell"
    try:
        if not p.is_file():
            raise OSError("not a regular file")
        if p.stat().st_size > MAX_CSV_BYTES:
            raise OSError(f"{p.stat().st_size} bytes, more than {MAX_CSV_BYTES}")
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"problem.data={path!r} cannot be read ({exc}); expected {allowed}.") from None
    rows = list(csv.reader(line for line in text.splitlines() if line.strip()))
    if not rows:
        raise ValueError(f"problem.data={path!r} is empty; expected {allowed}.")
    header = [h.strip() for h in rows[0]]
    for h in header:
        if not h.isidentifier():
            raise ValueError(f"problem.data={path!r}: column name {h!r} is not a plain name (letters, digits, _); expected {allowed}.")
    if len(set(header)) != len(header):
        raise ValueError(f"problem.data={path!r}: the header {rows[0]} names a column twice.")
    values = []
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"problem.data={path!r}, row {lineno}: {len(row)} cells for {len(header)} columns.")
        try:
            nums = [float(c) for c in row]
        except ValueError:
            raise ValueError(f"problem.data={path!r}, row {lineno}: {','.join(row)[:80]!r} does not hold numbers; expected {allowed}.") from None
        if not all(math.isfinite(v) for v in nums):
            raise ValueError(f"problem.data={path!r}, row {lineno}: values must be finite; got {','.join(row)[:80]!r}.")
        values.append(nums)
    if not values:
        raise ValueError(f"problem.data={path!r} has a header but no data rows; expected {allowed}.")
    data = np.array(values, np.float64)
    return header, {h: data[:, i].copy() for i, h in enumerate(header)}

"""Reader for NIST StRD nonlinear least-squares regression files (.dat).

Each file states where its parts are ("Starting Values (lines 41 to 44)", "Certified Values (lines
41 to 49)", "Data (lines 61 to 71)"); the model is written after "Model:" as `y = f(x; b1..bk) + e`
(Nelson: `log[y] = ...`, two predictors), possibly over several lines. The model text is parsed by
plugins/problems/formula.py (never evaluated as code). Every refusal names the file and the line.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runner_plugins.problems.formula import FormulaError, parse
from runner.datafiles import DataFileError, read_data_bytes

MAX_BYTES = 20_000_000  # StRD files are a few kB; anything this large is not one
MAX_HEADER_LINES = 200
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][-+]?\d+)?"
_RANGE = re.compile(r"(Starting Values|Certified Values|Data)\s*\(lines\s+(\d+)\s+to\s+(\d+)\)")
_PARAM = re.compile(rf"^\s*(b\d+)\s*=\s*({_NUMBER})\s+({_NUMBER})\s+({_NUMBER})\s+({_NUMBER})\s*$")


class StrdNlsError(ValueError):
    pass


@dataclass
class NlsDataset:
    name: str
    model: str  # right-hand side, e.g. "b1*(1-exp[-b2*x])"
    response: str  # left-hand side: "y", or "log[y]" (Nelson)
    parameters: list[str]  # b1, b2, ...
    starts: tuple[dict[str, float], dict[str, float]]  # NIST's Start 1 and Start 2
    certified: dict[str, float]
    certified_sd: dict[str, float]
    certified_rss: float
    residual_sd: float
    columns: dict[str, np.ndarray]  # "y", "x" (or "x1", "x2", ...)


def read_strd_nls(path: str | Path) -> NlsDataset:
    path = Path(path)
    where = f"NIST StRD nonlinear file {str(path)!r}"
    try:  # runner/datafiles.py: a FIFO, a device or a directory is refused, never opened for reading
        text = read_data_bytes(path, "problem.path", "a NIST StRD nonlinear regression file", MAX_BYTES).decode("latin-1")
    except DataFileError as exc:
        raise StrdNlsError(str(exc)) from None
    lines = text.replace("\r", "").split("\n")

    def fail(lineno: int, message: str) -> StrdNlsError:
        shown = lines[lineno - 1].strip()[:80] if 0 < lineno <= len(lines) else ""
        return StrdNlsError(f"{where}, line {lineno}: {message}" + (f" (the line reads {shown!r})" if shown else ""))

    ranges: dict[str, tuple[int, int]] = {}
    for lineno, line in enumerate(lines[:MAX_HEADER_LINES], 1):
        if (m := _RANGE.search(line)) and m.group(1) not in ranges:
            a, b = int(m.group(2)), int(m.group(3))
            if not 1 <= a <= b <= len(lines):
                raise fail(lineno, f"the range of lines {a} to {b} lies outside the file's {len(lines)} lines.")
            ranges[m.group(1)] = (a, b)
    missing = [k for k in ("Starting Values", "Certified Values", "Data") if k not in ranges]
    if missing:
        raise StrdNlsError(f"{where} is not a NIST StRD nonlinear regression file: its header (first "
                           f"{MAX_HEADER_LINES} lines) lacks the '{missing[0]} (lines A to B)' line.")
    name_match = re.search(r"Dataset Name:\s*(\S+)", "\n".join(lines[:10]))
    name = name_match.group(1) if name_match else path.stem

    model_line, response, model = _model(lines[: ranges["Starting Values"][0]], fail, where)

    # Parameters: "b1 = start1 start2 certified sd" in the starting-values range.
    a, b = ranges["Starting Values"]
    params, start1, start2, certified, sd = [], {}, {}, {}, {}
    for lineno in range(a, b + 1):
        m = _PARAM.match(lines[lineno - 1])
        if not m:
            raise fail(lineno, "expected 'bN = start1 start2 certified standard-deviation'.")
        p = m.group(1)
        if p in certified:
            raise fail(lineno, f"parameter {p} is listed twice.")
        params.append(p)
        start1[p], start2[p], certified[p], sd[p] = (_number(m.group(i), fail, lineno) for i in range(2, 6))
    summary = {}
    a, b = ranges["Certified Values"]
    for lineno in range(a, b + 1):
        m = re.match(rf"^\s*(Residual Sum of Squares|Residual Standard Deviation):\s*({_NUMBER})\s*$", lines[lineno - 1])
        if m:
            summary[m.group(1)] = _number(m.group(2), fail, lineno)
    if "Residual Sum of Squares" not in summary:
        raise fail(a, f"no 'Residual Sum of Squares:' line within the certified values (lines {a} to {b}).")

    try:
        formula = parse(model, "model")
        lhs = parse(response, "response")
    except FormulaError as exc:
        raise fail(model_line, str(exc)) from None
    unknown = [n for n in formula.names if n not in params and not re.fullmatch(r"x\d*", n)]
    if unknown:
        raise fail(model_line, f"the model uses {', '.join(unknown)}, neither a parameter listed "
                               f"({', '.join(params)}) nor a predictor x, x1, x2, ...")
    unused = [p for p in params if p not in formula.names]
    if unused:
        raise fail(model_line, f"the model does not use parameter(s) {', '.join(unused)}.")
    predictors = sorted((n for n in formula.names if n not in params), key=lambda n: int(n[1:] or 0))
    if lhs.names != ("y",):
        raise fail(model_line, f"the response {response!r} must be a function of y alone.")

    a, b = ranges["Data"]
    rows = []
    for lineno in range(a, b + 1):
        line = lines[lineno - 1]
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 1 + len(predictors):
            raise fail(lineno, f"expected {1 + len(predictors)} numbers (y then {', '.join(predictors)}); found {len(fields)}.")
        rows.append([_number(f, fail, lineno) for f in fields])
    if len(rows) < len(params):
        raise fail(a, f"{len(rows)} observations in lines {a} to {b}: fewer than the {len(params)} parameters.")
    data = np.array(rows, dtype=np.float64)
    header = lines[a - 2].split() if a >= 2 else []
    order = header[1:] if header[:1] == ["Data:"] and len(header) == 2 + len(predictors) and header[1] == "y" else ["y", *predictors]
    if sorted(order[1:]) != sorted(predictors):
        raise fail(a - 1, f"the data's columns {order} do not match the model's predictors {predictors}.")
    columns = {col: data[:, i].copy() for i, col in enumerate(order)}
    return NlsDataset(name, model, response, params, (start1, start2), certified, sd,
                      summary["Residual Sum of Squares"], summary.get("Residual Standard Deviation", math.nan), columns)


def _model(head: list[str], fail, where: str) -> tuple[int, str, str]:
    """(line number, response, right-hand side) of the model written after 'Model:'."""
    try:
        start = next(i for i, line in enumerate(head) if line.strip().startswith("Model:"))
    except StopIteration:
        raise StrdNlsError(f"{where}: no 'Model:' section before the starting values.") from None
    for i in range(start + 1, len(head)):
        m = re.match(r"^\s*(y|log\[y\]|ln\[y\]|log\(y\)|ln\(y\))\s*=(.*)$", head[i])
        if not m:
            continue
        parts = [m.group(2)]
        for j in range(i + 1, min(i + 10, len(head))):  # continuation lines, up to a blank one
            if not head[j].strip():
                break
            parts.append(head[j])
        rhs = " ".join(p.strip() for p in parts)
        rhs = re.sub(r"\+\s*e\s*$", "", rhs).strip()
        if not rhs:
            raise fail(i + 1, "the model line has no right-hand side.")
        return i + 1, m.group(1), rhs
    raise fail(start + 1, "no model line 'y = ...' (or 'log[y] = ...') follows 'Model:'.")


def _number(text: str, fail, lineno: int) -> float:
    try:
        value = float(text.replace("D", "E").replace("d", "e"))
    except ValueError:
        raise fail(lineno, f"{text!r} is not a number.") from None
    if not math.isfinite(value):
        raise fail(lineno, f"{text!r} is not a finite number.")
    return value

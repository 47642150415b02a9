"""Reader for NIST StRD linear least-squares regression files (.dat).

It reads what each file states about itself: the line ranges of the certified values and of the
data, the model equation (powers of one x, several predictors, with or without B0), the
certified estimates and their standard deviations, and the residual standard deviation.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runner.datafiles import DataFileError, read_data_bytes

FILE_LIMIT = 64 << 20  # NIST's files are a few KB
MAX_TERMS = 100  # coefficients (and powers) of a model; NIST's datasets have up to 11
_RANGE = r"\(lines\s+(\d+)\s+to\s+(\d+)\)"
_TERM = re.compile(r"B(\d+)\s*(?:\*\s*\(?\s*(x\d*)\s*(?:\*\*\s*(\d+))?\s*\)?)?")


@dataclass
class StrdDataset:
    name: str
    y: np.ndarray
    x: np.ndarray  # (n, predictors)
    terms: list[tuple[str, int, int]]  # (B name, predictor column or -1 for the constant, power)
    certified: dict[str, float]
    certified_text: dict[str, str]  # the estimates as written in the file
    certified_sd: dict[str, float]
    residual_sd: float

    @property
    def intercept(self) -> bool:
        return any(col < 0 for _, col, _ in self.terms)

    @property
    def polynomial_degree(self) -> int | None:
        """The degree when the model is a polynomial in one x (B_k multiplies x^k), else None."""
        if self.x.shape[1] != 1:
            return None
        powers = [p for _, col, p in self.terms]
        start = 0 if self.intercept else 1
        return max(powers) if powers == list(range(start, max(powers) + 1)) else None

    def design(self) -> np.ndarray:
        """X with one column per certified coefficient, in B order."""
        cols = [np.ones(len(self.y)) if col < 0 else self.x[:, col] ** p for _, col, p in self.terms]
        return np.stack(cols, 1)


def _fill_ellipsis(terms: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """'B2*(x**2) + ... + B9*(x**9)' or 'B1*x1 + ... + B6*x6': the missing terms follow the pattern
    of their neighbours (power or predictor number rising with the coefficient's index)."""
    out = [terms[0]]
    for nxt in terms[1:]:
        prev = out[-1]
        i, j = int(prev[0][1:]), int(nxt[0][1:])
        for k in range(i + 1, j):
            if prev[1] == nxt[1]:  # same x: the power rises
                out.append((f"B{k}", prev[1], prev[2] + (k - i)))
            else:  # another predictor each time
                out.append((f"B{k}", prev[1] + (k - i), 1))
        out.append(nxt)
    return out


class StrdError(ValueError):
    pass


def read_strd(path: str | Path) -> StrdDataset:
    path = Path(path)
    where = f"NIST StRD file {str(path)!r}"
    try:  # a FIFO, a device, a directory or an oversized file is refused before a byte is read
        text = read_data_bytes(path, "problem.path", "a NIST StRD linear regression file (.dat)", FILE_LIMIT).decode("latin-1")
    except DataFileError as exc:
        raise StrdError(str(exc)) from None
    except OSError as exc:
        raise StrdError(f"{where} cannot be read: {exc}") from None
    lines = text.replace("\r", "").split("\n")
    header = "\n".join(lines[:60])
    cert_range = re.search(r"Certified Values\s+" + _RANGE, header)
    data_range = re.search(r"Data\s+" + _RANGE, header)
    model = re.search(r"^\s*y\s*=\s*(B.+?)(?:\s*\+\s*e)?\s*$", header, re.MULTILINE)  # "+ e" is not always written
    if not (cert_range and data_range and model):
        raise StrdError(f"{where} is not a NIST StRD linear regression file: its header lacks the "
                        "'Certified Values (lines A to B)', 'Data (lines A to B)' or 'y = B0 + ...' lines.")
    name_match = re.search(r"Dataset Name:\s*(\S+)", header)
    name = name_match.group(1) if name_match else path.stem

    terms = []
    for m in _TERM.finditer(model.group(1)):
        b, var, power = m.group(1), m.group(2), m.group(3)
        if var is None:
            terms.append((f"B{b}", -1, 0))
        else:
            col = int(var[1:]) - 1 if len(var) > 1 else 0
            terms.append((f"B{b}", col, int(power) if power else 1))
    if not terms:
        raise StrdError(f"{where}: the model line {model.group(0).strip()!r} names no coefficient B0, B1, ...")
    if "..." in model.group(1):
        declared = max(int(t[0][1:]) for t in terms) - min(int(t[0][1:]) for t in terms) + 1
        if declared > MAX_TERMS:  # checked before the ellipsis is filled: 'B0 + ... + B99999999'
            raise StrdError(f"{where}: the model line {model.group(0).strip()[:120]!r} spans {declared} coefficients; "
                            f"at most {MAX_TERMS} are supported (NIST's datasets have up to 11).")
        terms = _fill_ellipsis(terms)
    if len(terms) > MAX_TERMS:
        raise StrdError(f"{where}: the model has {len(terms)} coefficients; at most {MAX_TERMS} are supported.")
    too_high = [f"{b}*x**{p}" for b, _, p in terms if p > MAX_TERMS]
    if too_high:
        raise StrdError(f"{where}: the model raises x to the power {too_high[0].split('**')[1]} ({too_high[0]}); "
                        f"at most {MAX_TERMS} is supported.")

    certified, certified_text, certified_sd, residual_sd = {}, {}, {}, None
    a, b = int(cert_range.group(1)), int(cert_range.group(2))
    for lineno, line in enumerate(lines[a - 1 : b], start=a):
        m = re.match(r"\s*(B\d+)\s+(\S+)\s+(\S+)\s*$", line)
        if m:
            certified_text[m.group(1)] = m.group(2)
            certified[m.group(1)] = _number(m.group(2), where, lineno, f"the certified value of {m.group(1)}")
            certified_sd[m.group(1)] = _number(m.group(3), where, lineno, f"the standard deviation of {m.group(1)}")
        m = re.match(r"\s*Standard Deviation\s+(\S+)", line)
        if m:
            residual_sd = _number(m.group(1), where, lineno, "the residual standard deviation")
    missing = [t for t, _, _ in terms if t not in certified]
    if missing:
        raise StrdError(f"{where}: no certified value for {', '.join(missing)} in lines {a} to {b}.")

    a, b = int(data_range.group(1)), int(data_range.group(2))
    numbered = [(lineno, line.split()) for lineno, line in enumerate(lines[a - 1 : b], start=a) if line.strip()]
    rows = [r for _, r in numbered]
    try:
        data = np.array(rows, dtype=np.float64)
    except ValueError:
        raise StrdError(f"{where}: lines {a} to {b} should hold the data, numbers in columns; they do not.") from None
    if data.size and not np.all(np.isfinite(data)):
        bad = int(np.argmax(~np.all(np.isfinite(data.reshape(len(rows), -1)), axis=1)))
        raise StrdError(f"{where}, line {numbered[bad][0]}: {' '.join(rows[bad])[:120]!r} holds a value that is not a finite "
                        "number (nan or inf); every data value must be finite.")
    if data.ndim != 2 or data.shape[1] < 2:
        raise StrdError(f"{where}: lines {a} to {b} should hold columns y x1 ...; found shape {data.shape}.")
    n_predictors = max([c for _, c, _ in terms] + [0]) + 1
    if data.shape[1] != 1 + n_predictors:
        raise StrdError(f"{where}: the model uses {n_predictors} predictor(s) but the data have {data.shape[1] - 1}.")
    dataset = StrdDataset(name, data[:, 0], data[:, 1:], terms, certified, certified_text, certified_sd, residual_sd or float("nan"))
    with np.errstate(over="ignore"):
        design = dataset.design()
    if not np.all(np.isfinite(design)):
        raise StrdError(f"{where}: the model's terms overflow float64 on these data (a power too high for the x values).")
    return dataset


def _number(text: str, where: str, lineno: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise StrdError(f"{where}, line {lineno}: {what} {text!r} is not a number.") from None
    if not math.isfinite(value):
        raise StrdError(f"{where}, line {lineno}: {what} is {text!r}; it must be a finite number.")
    return value

"""Parse linear equations written as text ("2*A - B/3 = 4") into A x = b. Never evaluates code.

A small recursive-descent parser over numbers, unknowns, + - * / ^ ** and parentheses. Products and
quotients are allowed only where one side is a constant, so everything accepted is linear.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[^\W\d]\w*)|(?P<op>\*\*|[-+*/^()=]))"
)
_BLANK = re.compile(r"\s*\Z")
_SPACE = re.compile(r"\s*")
_MAX_DEPTH = 100
# Text systems are small by nature; a dense A of MAX_EQUATIONS x MAX_UNKNOWNS is 160 MB.
MAX_EQUATIONS = 10_000
MAX_UNKNOWNS = 2_000
MAX_EQUATION_CHARS = 100_000
_HELP = "Write each equation as sums of numbers times unknowns, e.g. '2*A - B/3 = 4' or '0.5 x1 + x2 = 1'."


class EquationError(ValueError):
    """A malformed or non-linear equation; the message quotes it."""


@dataclass
class Linear:
    """coef[name] * name + ... + const"""

    coef: dict[str, float] = field(default_factory=dict)
    const: float = 0.0

    @property
    def is_constant(self) -> bool:
        return not any(self.coef.values())

    def scaled(self, k: float) -> "Linear":
        return Linear({n: c * k for n, c in self.coef.items()}, self.const * k)

    def plus(self, other: "Linear", sign: float = 1.0) -> "Linear":
        coef = dict(self.coef)
        for n, c in other.coef.items():
            coef[n] = coef.get(n, 0.0) + sign * c
        return Linear(coef, self.const + sign * other.const)

    def names(self) -> str:
        return "*".join(n for n, c in self.coef.items() if c) or "a constant"


@dataclass
class LinearSystem:
    names: list[str]
    A: np.ndarray  # (equations, unknowns), float64
    b: np.ndarray  # (equations,)
    equations: list[str]


def parse_system(equations: list[str]) -> LinearSystem:
    if not equations:
        raise EquationError("No equations given: problem.equations needs at least one. " + _HELP)
    if len(equations) > MAX_EQUATIONS:
        raise EquationError(f"{len(equations)} equations given; at most {MAX_EQUATIONS} are supported as text "
                            "(a larger system belongs in files: problem=linsys, sparse as .mtx or .npz).")
    rows = [parse_equation(e) for e in equations]
    index: dict[str, int] = {}  # first appearance order; a dict, not a list scan per name
    for row in rows:
        for n in row.coef:
            index.setdefault(n, len(index))
    if len(index) > MAX_UNKNOWNS:
        raise EquationError(f"The equations name {len(index)} unknowns; at most {MAX_UNKNOWNS} are supported as text "
                            "(a larger system belongs in files: problem=linsys, sparse as .mtx or .npz).")
    names = list(index)
    A = np.zeros((len(rows), len(names)))
    for i, row in enumerate(rows):
        for n, c in row.coef.items():
            A[i, index[n]] = c
    b = np.array([-row.const for row in rows], dtype=np.float64)
    return LinearSystem(names, A, b.reshape(len(rows)), list(equations))


def parse_equation(text: str) -> Linear:
    """`left = right` as one linear form `left - right` (== 0)."""
    if not isinstance(text, str):
        raise EquationError(f"Equation {text!r} is not text. " + _HELP)
    if len(text) > MAX_EQUATION_CHARS:
        raise EquationError(f"Equation '{text[:60]}...' is {len(text)} characters long; at most {MAX_EQUATION_CHARS} are supported.")
    parser = _Parser(text)
    left = parser.expression()
    parser.expect("=")
    right = parser.expression()
    parser.expect_end()
    form = left.plus(right, -1.0)
    if any(not math.isfinite(v) for v in [*form.coef.values(), form.const]):
        raise EquationError(f"Equation '{text}' has a number too large to represent.")
    if form.is_constant:
        raise EquationError(f"Equation '{text}' has no unknowns (or they cancel out). " + _HELP)
    return form


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if _BLANK.match(text, pos):  # only whitespace left (without copying the rest: linear time)
                break
            m = _TOKEN.match(text, pos)
            if not m:
                at = _SPACE.match(text, pos).end()
                raise EquationError(
                    f"Equation '{text}' is malformed: unexpected character {text[at]!r} at position "
                    f"{at + 1}. " + _HELP
                )
            kind = m.lastgroup or "op"
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0
        self.depth = 0

    # -- helpers
    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def fail(self, what: str) -> EquationError:
        tok = self.peek()
        where = f"at '{self.text[tok[2]:]}'" if tok else "at the end"
        return EquationError(f"Equation '{self.text}' is malformed: expected {what} {where}. " + _HELP)

    def accept(self, *ops: str) -> str | None:
        tok = self.peek()
        if tok and tok[0] == "op" and tok[1] in ops:
            self.i += 1
            return tok[1]
        return None

    def expect(self, op: str) -> None:
        if not self.accept(op):
            raise self.fail(f"'{op}'")

    def expect_end(self) -> None:
        if self.peek() is not None:
            raise self.fail("the end of the equation (only one '=' is allowed)")

    def nonlinear(self, a: Linear, b: Linear, how: str) -> EquationError:
        return EquationError(
            f"Equation '{self.text}' is not linear: it {how} {a.names()} by {b.names()}. " + _HELP
        )

    # -- grammar
    def expression(self) -> Linear:
        value = self.term()
        coef = dict(value.coef)  # accumulated in place: a sum of n terms costs O(n), not O(n^2)
        const = value.const
        while op := self.accept("+", "-"):
            term, sign = self.term(), 1.0 if op == "+" else -1.0
            for n, c in term.coef.items():
                coef[n] = coef.get(n, 0.0) + sign * c
            const += sign * term.const
        return Linear(coef, const)

    def term(self) -> Linear:
        value = self.unary()
        while True:
            if op := self.accept("*", "/"):
                rhs = self.unary()
            elif self._implicit_product_follows():
                op, rhs = "*", self.unary()
            else:
                return value
            if op == "*":
                if value.is_constant:
                    value = rhs.scaled(value.const)
                elif rhs.is_constant:
                    value = value.scaled(rhs.const)
                else:
                    raise self.nonlinear(value, rhs, "multiplies")
            else:
                if not rhs.is_constant:
                    raise self.nonlinear(value, rhs, "divides")
                if rhs.const == 0:
                    raise EquationError(f"Equation '{self.text}' divides by zero.")
                value = value.scaled(1.0 / rhs.const)

    def _implicit_product_follows(self) -> bool:
        # "2A", "2 (A + B)", "(A)(2)": a factor directly after a factor multiplies it.
        tok = self.peek()
        return tok is not None and (tok[0] in ("num", "name") or tok[1] == "(")

    def unary(self) -> Linear:
        if op := self.accept("+", "-"):
            return self._nested(self.unary).scaled(1.0 if op == "+" else -1.0)
        return self.power()

    def power(self) -> Linear:
        base = self.atom()
        if self.accept("^", "**"):
            exponent = self._nested(self.unary)
            if not exponent.is_constant:
                raise self.nonlinear(base, exponent, "raises")
            e = exponent.const
            if base.is_constant:
                try:
                    value = float(base.const) ** e
                except (OverflowError, ZeroDivisionError):
                    raise EquationError(f"Equation '{self.text}' has a power that cannot be computed.") from None
                if isinstance(value, complex) or not math.isfinite(value):
                    raise EquationError(f"Equation '{self.text}' has a power that cannot be computed.")
                return Linear({}, value)
            if e == 1:
                return base
            if e == 0:
                return Linear({}, 1.0)
            raise EquationError(
                f"Equation '{self.text}' is not linear: it raises {base.names()} to the power {e:g}. " + _HELP
            )
        return base

    def atom(self) -> Linear:
        tok = self.peek()
        if tok is None:
            raise self.fail("a number, an unknown or '('")
        kind, text, _ = tok
        if kind == "num":
            self.i += 1
            value = float(text)
            if not math.isfinite(value):
                raise EquationError(f"Equation '{self.text}' has a number too large to represent: {text}.")
            return Linear({}, value)
        if kind == "name":
            self.i += 1
            return Linear({text: 1.0}, 0.0)
        if self.accept("("):
            value = self._nested(self.expression)
            self.expect(")")
            return value
        raise self.fail("a number, an unknown or '('")

    def _nested(self, rule):
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise EquationError(f"Equation '{self.text[:60]}...' is nested too deeply (more than {_MAX_DEPTH} levels).")
        try:
            return rule()
        finally:
            self.depth -= 1

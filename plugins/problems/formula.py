"""Formulas as text ("b1*(1-exp[-b2*x])") compiled into torch functions. Never evaluates code.

A small Pratt parser over numbers, names, + - * / ** ^, unary signs, ( ) and [ ], the functions
exp, log (ln), sqrt, sin, cos, tan, arctan (atan), and the constant pi. The text becomes a tree of
tuples, and the tree becomes nested Python closures over torch operations: autograd, float64,
CUDA and torch.func (vmap, jacfwd) see ordinary tensor code. Anything else is refused with a
ValueError that quotes the formula: an unknown function, a name of a Python builtin, attribute
access, a character outside the grammar, a formula nested or sized beyond fixed limits.

Precedence, loosest first: + -; * /; unary + -; ** and ^ (right-associative, binding tighter
than a unary sign on their left: -x**2 is -(x**2); x**-2 is allowed).
"""
from __future__ import annotations

import builtins
import keyword
import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Union

import numpy as np
import torch

MAX_LENGTH = 10_000  # characters
MAX_DEPTH = 60  # nesting of brackets, signs and powers: well inside Python's recursion limit
FUNCTIONS: dict[str, Callable] = {
    "exp": torch.exp, "log": torch.log, "ln": torch.log, "sqrt": torch.sqrt,
    "sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "arctan": torch.atan, "atan": torch.atan,
}
_NUMPY = {"exp": np.exp, "log": np.log, "ln": np.log, "sqrt": np.sqrt, "sin": np.sin, "cos": np.cos,
          "tan": np.tan, "arctan": np.arctan, "atan": np.arctan}
CONSTANTS = {"pi": math.pi}
_FORBIDDEN = frozenset(dir(builtins)) | frozenset(keyword.kwlist)  # names that read as Python: refused outright
_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_]\w*)|(?P<op>\*\*|[-+*/^()\[\]]))")
_CLOSE = {"(": ")", "[": "]"}
HELP = ("Allowed: numbers, names, + - * / ** ^, parentheses or square brackets, and the functions "
        f"{', '.join(FUNCTIONS)} and the constant pi.")

# ("num", float) | ("name", str) | ("neg", Node) | ("pow", Node, Node) | ("call", fn, Node)
# | ("sum", ((+1 or -1, Node), ...)) | ("prod", (("*" or "/", Node), ...))
Node = tuple


class FormulaError(ValueError):
    """A formula that is refused; the message quotes it."""


@dataclass(frozen=True)
class Formula:
    text: str
    tree: Node
    names: tuple[str, ...]  # every variable it reads, in order of first appearance

    def compile(self) -> Callable[[Mapping[str, Union[torch.Tensor, float]]], torch.Tensor]:
        """A function of {name: tensor or float} built from torch operations only."""
        return _compile(_fold(self.tree))

    def evaluate_numpy(self, env: Mapping[str, np.ndarray]) -> np.ndarray:
        """The same formula in numpy float64 (for checks; warnings of overflow are silenced)."""
        with np.errstate(all="ignore"):
            return _numpy_eval(self.tree, env)


def parse(text: str, what: str = "formula") -> Formula:
    if not isinstance(text, str):
        raise FormulaError(f"The {what} {text!r} is not text. {HELP}")
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"The {what} '{text[:60]}...' is {len(text)} characters long; at most {MAX_LENGTH} are allowed.")
    parser = _Parser(text, what)
    tree = parser.sum()
    if parser.peek() is not None:
        raise parser.fail("an operator or the end of the formula")
    names: list[str] = []
    _collect_names(tree, names)
    return Formula(text, tree, tuple(names))


def _children(node: Node) -> list:
    kind = node[0]
    if kind in ("neg",):
        return [node[1]]
    if kind == "call":
        return [node[2]]
    if kind == "pow":
        return [node[1], node[2]]
    if kind in ("sum", "prod"):
        return [child for _, child in node[1]]
    return []


def _collect_names(node: Node, out: list[str]) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        if n[0] == "name" and n[1] not in out:
            out.append(n[1])
        stack.extend(reversed(_children(n)))


class _Parser:
    """Recursive descent, one rule a precedence level; sums and products are n-ary nodes, so a
    long sum is a flat list, and the tree's depth is bounded by the nesting the parser counts."""

    def __init__(self, text: str, what: str):
        self.text, self.what = text, what
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while text[pos:].strip():
            m = _TOKEN.match(text, pos)
            if not m:
                at = len(text) - len(text[pos:].lstrip())
                bad = text[at]
                if bad == "." and self.tokens and (self.tokens[-1][0] == "name" or self.tokens[-1][1] in ")]"):
                    raise FormulaError(f"The {what} '{text}' uses attribute access ('.' at position {at + 1}), "
                                       f"which is not allowed. {HELP}")
                raise FormulaError(f"The {what} '{text}' has an unexpected character {bad!r} at position {at + 1}. {HELP}")
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i, self.depth = 0, 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def accept(self, *ops: str):
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] in ops:
            self.i += 1
            return tok[1]
        return None

    def fail(self, expected: str) -> FormulaError:
        tok = self.peek()
        where = f"at '{self.text[tok[2]:][:40]}' (position {tok[2] + 1})" if tok else "at the end"
        return FormulaError(f"The {self.what} '{self.text}' is malformed: expected {expected} {where}. {HELP}")

    def nested(self, rule):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FormulaError(f"The {self.what} '{self.text[:60]}{'...' if len(self.text) > 60 else ''}' is nested "
                               f"too deeply (more than {MAX_DEPTH} levels of brackets, signs or powers).")
        try:
            return rule()
        finally:
            self.depth -= 1

    def sum(self) -> Node:
        terms = [(1, self.product())]
        while op := self.accept("+", "-"):
            terms.append((1 if op == "+" else -1, self.product()))
        return terms[0][1] if len(terms) == 1 else ("sum", tuple(terms))

    def product(self) -> Node:
        factors = [("*", self.unary())]
        while op := self.accept("*", "/"):
            factors.append((op, self.unary()))
        return factors[0][1] if len(factors) == 1 else ("prod", tuple(factors))

    def unary(self) -> Node:
        if op := self.accept("+", "-"):
            operand = self.nested(self.unary)
            return operand if op == "+" else ("neg", operand)
        return self.power()

    def power(self) -> Node:
        base = self.atom()
        if self.accept("**", "^"):  # right-associative, and the exponent may carry a sign: x**-2
            return ("pow", base, self.nested(self.unary))
        return base

    def atom(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise self.fail("a number, a name, a function or a bracket")
        kind, text, _ = tok
        if kind == "num":
            self.i += 1
            return ("num", float(text))
        if kind == "name":
            self.i += 1
            return self.name(text)
        if opening := self.accept("(", "["):
            inner = self.nested(self.sum)
            self.close(opening)
            return inner
        raise self.fail("a number, a name, a function or a bracket")

    def close(self, opening: str) -> None:
        if not self.accept(_CLOSE[opening]):
            raise self.fail(f"'{_CLOSE[opening]}' to close '{opening}'")

    def name(self, text: str) -> Node:
        nxt = self.peek()
        calls = nxt is not None and nxt[1] in ("(", "[")
        if text.startswith("_") or (text in _FORBIDDEN and text not in FUNCTIONS):
            raise FormulaError(f"The {self.what} '{self.text}' uses the name '{text}', which is refused (a Python "
                               f"builtin or keyword, or a name starting with '_'). Rename it. {HELP}")
        if calls and text in FUNCTIONS:
            opening = self.accept("(", "[")
            inner = self.nested(self.sum)
            self.close(opening)
            return ("call", text, inner)
        if text in FUNCTIONS:
            raise FormulaError(f"The {self.what} '{self.text}' uses the function '{text}' without an argument in brackets: write {text}(...).")
        if calls:
            raise FormulaError(f"The {self.what} '{self.text}' calls '{text}', which is not a known function. {HELP}")
        if text in CONSTANTS:
            return ("num", CONSTANTS[text])
        return ("name", text)


def _fold(node: Node) -> Node:
    """Constant sub-expressions computed once, in float64 (1/3, 2*pi/12)."""
    kind = node[0]
    if kind in ("num", "name"):
        return node
    if kind == "neg":
        folded = ("neg", _fold(node[1]))
    elif kind == "call":
        folded = ("call", node[1], _fold(node[2]))
    elif kind == "pow":
        folded = ("pow", _fold(node[1]), _fold(node[2]))
    else:
        folded = (kind, tuple((op, _fold(child)) for op, child in node[1]))
    if all(child[0] == "num" for child in _children(folded)):
        # With the same torch operations the compiled function would apply: folding changes no bit.
        return ("num", float(_compile(folded, constant=lambda v: torch.tensor(v, dtype=torch.float64))({})))
    return folded


def _compile(node: Node, constant=lambda v: v):
    kind = node[0]
    if kind == "num":
        value = constant(node[1])
        return lambda env: value
    if kind == "name":
        key = node[1]
        return lambda env: env[key]
    if kind == "neg":
        f = _compile(node[1], constant)
        return lambda env: -f(env)
    if kind == "call":
        fn, f = FUNCTIONS[node[1]], _compile(node[2], constant)
        return lambda env: fn(_as_tensor(f(env)))
    if kind == "pow":
        f, g = _compile(node[1], constant), _compile(node[2], constant)
        return lambda env: f(env) ** g(env)
    parts = [(op, _compile(child, constant)) for op, child in node[1]]
    if kind == "sum":
        def total(env):
            sign, f = parts[0]
            out = f(env) if sign > 0 else -f(env)
            for sign, f in parts[1:]:
                out = out + f(env) if sign > 0 else out - f(env)
            return out
        return total

    def product(env):
        out = parts[0][1](env)
        for op, f in parts[1:]:
            out = out * f(env) if op == "*" else out / f(env)
        return out
    return product


def _as_tensor(v):
    return v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=torch.float64)


def _numpy_eval(node: Node, env):
    kind = node[0]
    if kind == "num":
        return np.float64(node[1])
    if kind == "name":
        return np.asarray(env[node[1]], np.float64)
    if kind == "neg":
        return -_numpy_eval(node[1], env)
    if kind == "call":
        return _NUMPY[node[1]](_numpy_eval(node[2], env))
    if kind == "pow":
        return np.power(_numpy_eval(node[1], env), _numpy_eval(node[2], env))
    values = [(op, _numpy_eval(child, env)) for op, child in node[1]]
    out = values[0][1] if values[0][0] in (1, "*") else -values[0][1]
    for op, v in values[1:]:
        out = out + v if op == 1 else out - v if op == -1 else out * v if op == "*" else np.divide(out, v)
    return out

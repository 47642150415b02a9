"""A plugin's signature is its config: defaults out, typed and checked values in."""
from typing import Literal, Optional

import pytest

from runner.errors import UserError
from runner.signature import coerce_arguments, config_defaults


class Example:
    def __init__(self, n: int = 3, lr: float = 0.1, name: str = "a", flag: bool = False,
                 values: Optional[list[float]] = None, pair: tuple[float, float] = (0.9, 0.99),
                 kind: Literal["sse", "mse"] = "sse", required: int = None, fn=print):  # noqa: B008
        pass


def needs(x: float, y: int = 1):
    pass


def test_defaults_come_from_the_signature():
    d = config_defaults(Example)
    assert d == {"n": 3, "lr": 0.1, "name": "a", "flag": False, "values": None, "pair": [0.9, 0.99],
                 "kind": "sse", "required": None}  # fn=print cannot be config: left out
    assert config_defaults(needs) == {"x": "???", "y": 1}


def test_values_are_converted_to_what_the_callable_expects():
    out = coerce_arguments(Example, {"n": 5, "lr": 1, "pair": [0.5, 0.6], "values": [1, 2], "_name_": "ex"}, "problem")
    assert out == {"n": 5, "lr": 1.0, "pair": (0.5, 0.6), "values": [1.0, 2.0]}
    assert isinstance(out["lr"], float) and isinstance(out["pair"], tuple)


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"n": "abc"}, "'problem.n' must be an integer; got 'abc'"),
        ({"n": 1.5}, "'problem.n' must be an integer"),
        ({"n": True}, "'problem.n' must be an integer"),
        ({"flag": 1}, "'problem.flag' must be true or false"),
        ({"lr": "fast"}, "'problem.lr' must be a number"),
        ({"kind": "mae"}, "one of 'sse', 'mse'"),
        ({"pair": [0.9]}, "a list of 2 values"),
        ({"values": ["x"]}, "'problem.values' must be a list"),
        ({"bogus": 1}, "Unknown key 'problem.bogus'. Allowed keys: flag, kind, lr, n, name, pair, required, values"),
        ({"_target_": "os.system"}, "'problem._target_' is not allowed"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(values, fragment):
    with pytest.raises(UserError) as err:
        coerce_arguments(Example, values, "problem")
    assert fragment in str(err.value)


def test_missing_required_argument_is_reported():
    with pytest.raises(UserError, match="'optim.x' is required"):
        coerce_arguments(needs, {"x": "???", "y": 2}, "optim")


def test_torch_optimizer_signatures_are_config():
    from runner_plugins.optimizers import torch_optim

    d = config_defaults(torch_optim.adam)
    assert d["lr"] == 0.1 and d["betas"] == [0.9, 0.999] and "params" not in d
    assert coerce_arguments(torch_optim.adam, {"lr": 0.01, "betas": [0.8, 0.9]}, "optim") == {"lr": 0.01, "betas": (0.8, 0.9)}
    from runner_plugins.optimizers.lbfgs import LBFGS

    assert config_defaults(LBFGS)["line_search_fn"] == "strong_wolfe" and config_defaults(LBFGS)["tolerance_grad"] == 0.0

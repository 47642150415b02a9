"""runner/contract.py (checked and adapted by runner/adapter.py): what it refuses, what it allows, and the defaults the engine gets through
ProblemHooks. (The refusal through the CLI, with a pip-installed package, is tests/test_examples.py.)"""
import pytest
import torch

from runner import adapter, contract, registry


class Good(contract.Problem):
    def __init__(self, n: int = 2):
        self.n = n

    def initial_params(self, generator, device, dtype):
        return {"x": torch.randn(self.n, generator=generator, dtype=dtype).to(device)}

    def loss(self, params):
        return (params["x"] ** 2).sum()

    def reference(self):  # a public method of its own (lstsq calls such a one): allowed
        return 0.0


def test_every_installed_plugin_keeps_the_contract():
    for kind in registry.GROUPS:
        for plugin in registry.plugins(kind).values():
            plugin.load()  # raises UserError naming the plugin otherwise


@pytest.mark.parametrize("body, why", [
    ("def initial_param(self, generator, device, dtype): ...\n    def loss(self, params): ...", r"no initial_params\(\) method"),
    ("def initial_params(self, generator, device, dtype): ...\n    def loss(self, params): ...\n    def metric(self, params): ...", "did you mean 'metrics'"),
    ("def initial_params(self, generator, device, dtype): ...\n    def loss(self): ...", r"loss\(\) does not take 1 argument"),
    ("def __init__(self, total_steps: int = 3): ...\n    def initial_params(self, generator, device, dtype): ...\n    def loss(self, params): ...", "total_steps"),
])
def test_a_problem_that_breaks_the_contract_is_refused(body, why):
    namespace: dict = {}
    exec(f"class P:\n    {body}\n", namespace)
    with pytest.raises(ValueError, match=why):
        adapter.check("problem", namespace["P"])


class WithHelpers(Good):
    """Helpers named like hooks, beside the hooks themselves: the plugin's own methods."""

    def metrics(self, params):
        return {"norm": float(params["x"].detach().norm())}

    def losses(self, params):
        return params["x"] ** 2

    def solution(self, params):
        return {"x": params["x"].tolist()}

    def solutions(self, many):
        return [self.solution(p) for p in many]


def test_helpers_named_like_implemented_hooks_are_allowed_and_a_miss_of_a_missing_hook_is_not():
    adapter.check("problem", WithHelpers)
    namespace: dict = {}
    exec("class P(WithHelpers):\n    def figure(self, params): ...\n", {"WithHelpers": WithHelpers}, namespace)
    with pytest.raises(ValueError, match="did you mean 'figures'"):
        adapter.check("problem", namespace["P"])


def test_a_good_problem_passes_and_gets_the_defaults():
    adapter.check("problem", Good)
    hooks = adapter.ProblemHooks(Good(), "good")
    params = hooks.initial_params(torch.Generator().manual_seed(0), torch.device("cpu"), torch.float64)
    assert params["x"].requires_grad and params["x"].dtype == torch.float64
    assert hooks.metrics(params) == {} and hooks.solution(params) == {} and hooks.figures(params) == {}
    assert hooks.truth() is None and hooks.optimum_loss() is None and not hooks.compile_pays("cpu", torch.float32)
    assert hooks.preferred_dtype is None
    batched = {"x": torch.stack([params["x"].detach(), 2 * params["x"].detach()])}
    assert torch.allclose(hooks.batched_loss(batched), torch.stack([(b ** 2).sum() for b in batched["x"]]))


class StaticHooks(Good):
    @staticmethod
    def truth():
        return {"x": [0.0, 0.0]}

    @classmethod
    def optimum_loss(cls):
        return 0.0


def test_hooks_written_as_static_or_class_methods_are_accepted_and_called():
    adapter.check("problem", StaticHooks)  # the engine calls them as problem.truth(): no self to count
    hooks = adapter.ProblemHooks(StaticHooks(), "static")
    assert hooks.truth() == {"x": [0.0, 0.0]} and hooks.optimum_loss() == 0.0
    namespace: dict = {}
    exec("class P(StaticHooks):\n    @staticmethod\n    def truth(extra): ...\n", {"StaticHooks": StaticHooks}, namespace)
    with pytest.raises(ValueError, match=r"truth\(\) does not take 0"):
        adapter.check("problem", namespace["P"])


def test_injected_arguments_go_only_to_those_who_ask():
    def sched(optimizer, total_steps: int, gamma: float = 0.5): ...
    def plain(optimizer, gamma: float = 0.5): ...
    assert adapter.injected_arguments("sched", sched, total_steps=7) == {"total_steps": 7}
    assert adapter.injected_arguments("sched", plain, total_steps=7) == {}
    assert adapter.injected_arguments("problem", sched, total_steps=7) == {}

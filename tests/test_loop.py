"""The loop alone: step accounting, tolerance, divergence, logged points."""
import math

import pytest
import torch

from runner.loop import optimise


def quadratic(lr=0.1, target=3.0):
    x = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([x], lr=lr)
    return x, opt, lambda: ((x - target) ** 2).sum()


def test_runs_every_step_and_logs_every_nth_point():
    x, opt, loss = quadratic()
    seen = []
    res = optimise(loss, opt, steps=95, log_every=10, check_every=7, on_points=lambda done, pts, times: seen.extend(pts))
    assert res.steps == 95 and res.stop_reason == "steps"
    assert [s for s, _ in seen] == list(range(0, 95, 10))
    assert seen[0][1] == pytest.approx(18.0)  # the loss before the first update
    assert res.final_loss == pytest.approx(float(loss().detach()))
    assert torch.allclose(x, torch.full((2,), 3.0), atol=1e-5)


def test_stops_at_tolerance():
    _, opt, loss = quadratic()
    res = optimise(loss, opt, steps=10_000, tol=1e-6, check_every=5)
    assert res.stop_reason == "tol" and res.steps < 200 and res.steps % 5 == 0
    assert res.final_loss <= 1e-6


def test_divergence_stops_at_the_first_non_finite_loss_and_keeps_the_history():
    x = torch.ones(1, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.0)
    calls = [0]

    def loss():
        calls[0] += 1
        bad = calls[0] > 23  # the 24th evaluation is step 23
        return (x * (math.nan if bad else 1.0)).sum()

    seen = []
    res = optimise(loss, opt, steps=100, log_every=1, check_every=10, on_points=lambda d, p, t: seen.extend(p))
    assert res.stop_reason == "diverged" and res.steps == 23
    assert "nan" in res.error and "step 23" in res.error
    assert [s for s, _ in seen] == list(range(23))


def test_lbfgs_closure_and_interrupt_flushes_points():
    x = torch.zeros(3, requires_grad=True)
    opt = torch.optim.LBFGS([x], line_search_fn="strong_wolfe")
    res = optimise(lambda: ((x - 1) ** 2).sum(), opt, steps=5)
    assert res.final_loss < 1e-12

    y = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([y], lr=0.01)
    seen, n = [], [0]

    def loss():
        n[0] += 1
        if n[0] == 8:
            raise KeyboardInterrupt
        return (y - 1).square().sum()

    with pytest.raises(KeyboardInterrupt):
        optimise(loss, opt, steps=100, log_every=1, check_every=50, on_points=lambda d, p, t: seen.extend(p))
    assert [s for s, _ in seen] == list(range(7))


def test_fused_optimisers_are_used_where_torch_has_them_and_follow_the_same_path():
    import torch

    from plugins.optimizers.torch_optim import adam, nadam, sgd
    from plugins.problems.poly import Poly

    c = torch.zeros(3, requires_grad=True)
    assert adam([c]).defaults["fused"] is True and sgd([c]).defaults["fused"] is True
    assert adam([c], fused=False).defaults["fused"] is False  # the user's choice wins
    assert adam([c], foreach=True).defaults["fused"] is None
    assert nadam([c]).defaults.get("fused") is None  # torch has no fused NAdam

    problem = Poly()
    finals = []
    for fused in (True, False):
        params = problem.initial_params(torch.Generator().manual_seed(0), torch.device("cpu"), torch.float64)
        params["c"].requires_grad_(True)
        opt = adam([params["c"]], fused=fused)
        for _ in range(300):
            opt.zero_grad()
            problem.loss(params).backward()
            opt.step()
        finals.append(params["c"].detach())
    torch.testing.assert_close(finals[0], finals[1], rtol=1e-10, atol=1e-12)
